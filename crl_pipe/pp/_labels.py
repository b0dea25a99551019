"""Perturbation labels -> the ``interventions.parquet`` table."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._errors import InputError
from ._conventions import AUTO, convention_for, detect_convention
from ._perturbation import CONTROL_TOKENS, SEPARATORS, parse_perturbation

log = logging.getLogger("crl_pipe")

_MAX_SHOWN = 10
#: Label words that suggest a control, shown when a configured control value matches no label.
_CONTROL_LIKE = re.compile(
    r"ctrl|control|non.?target|safe.?target|scrambl|negative|intergenic|luciferase|lacz|(?:^|[^a-z])ntc?(?:$|[^a-z])",
    re.IGNORECASE,
)


def label_interventions(
    adata: ad.AnnData,
    *,
    perturbation_key: str | None = None,
    control_values: Sequence[str] = (),
    min_cells: int = 1,
    control_label: str = "control",
) -> pd.DataFrame:
    """One row per labelled cell in the ``interventions`` schema.

    Only ``adata.obs`` is read, so a backed AnnData works without loading ``X``.

    Parameters
    ----------
    adata
        The ingested screen.
    perturbation_key
        ``obs`` column holding each cell's perturbation label (see :func:`parse_perturbation`);
        ``None`` or ``"auto"``: detected by the conventions of :data:`crl_pipe.pp.CONVENTIONS`
        (pertpy/scPerturb ``perturbation``, GEARS ``condition``, Norman 2019 ``guide_ids``,
        Cell Ranger ``feature_call``, ``gene``, ``target_gene``). A known column is read by its
        convention, e.g. ``feature_call`` guide names become their targets.
    control_values
        Labels that mark control cells, in addition to the built-in control tokens.
    min_cells
        Interventions with fewer cells are dropped (with a logged warning); controls are kept.
    control_label
        The ``intervention`` label given to control cells.

    Returns
    -------
    DataFrame with ``sample_id``, ``intervention`` (``"+"``-joined sorted targets, or
    ``control_label``), ``targets`` (list of genes), ``n_targets``, ``is_control``, in the cell
    order of ``adata``. Unlabelled cells (missing label) are left out.
    """

    where = f"{adata.filename}: " if adata.isbacked else ""
    if isinstance(control_values, str):  # one label, not its characters
        control_values = [control_values]
    if isinstance(min_cells, bool) or not isinstance(min_cells, int | np.integer) or min_cells < 1:
        raise InputError(f"min_cells={min_cells!r}: expected an integer >= 1 (cells an intervention needs to be kept)")
    if perturbation_key is None or perturbation_key == AUTO:
        perturbation_key = detect_convention(adata.obs, control_values, where=where).key
    if not isinstance(perturbation_key, str) or not perturbation_key:
        raise InputError(
            f"{where}perturbation_key={perturbation_key!r}: expected the name of the obs column holding the "
            f"perturbation labels (available obs columns: {list(adata.obs.columns)})"
        )
    if perturbation_key not in adata.obs.columns:
        raise InputError(
            f"{where}obs column {perturbation_key!r} not found; expected the perturbation labels there "
            f"(available obs columns: {list(adata.obs.columns)})"
        )
    column = convention_for(perturbation_key).labels(adata.obs)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    parsed = [parse_perturbation(u, control_values) for u in uniques]
    unlabelled = np.array([p is None for p in parsed] + [True])  # last entry: code -1 (NaN)
    _check_controls(column, uniques, parsed, control_values, where, perturbation_key)

    keep = ~unlabelled[codes]
    if (~keep).any():
        n_out = int((~keep).sum())
        log.info("%d of %d cells have no perturbation label in obs[%r]; left out", n_out, len(keep), perturbation_key)
    targets = [list(p) if p is not None else [] for p in parsed]
    names = ["+".join(t) if t else control_label for t in targets]
    table = pd.DataFrame(
        {
            "sample_id": np.asarray(adata.obs_names, dtype=str)[keep],
            "intervention": np.asarray(names, dtype=object)[codes[keep]],
            "targets": [targets[c] for c in codes[keep]],
            "n_targets": np.array([len(t) for t in targets], dtype=np.int64)[codes[keep]],
        }
    )
    table["is_control"] = table["n_targets"] == 0
    return _drop_rare(table, min_cells, where, perturbation_key)


def _check_controls(
    column: pd.Series,
    uniques: Iterable[object],
    parsed: list[tuple[str, ...] | None],
    control_values: Sequence[str],
    where: str,
    key: str,
) -> None:
    if not any(p == () for p in parsed):
        common = column.value_counts().head(_MAX_SHOWN)
        shown = ", ".join(f"{lab!r} ({n})" for lab, n in common.items()) or f"none, all {len(column)} are missing"
        raise InputError(
            f"{where}obs[{key!r}]: no control cells; looked for {list(control_values)} and the built-in control "
            f"tokens {sorted(CONTROL_TOKENS)}, most common labels: {shown}"
        )
    for value in control_values:
        # A control value "matches" when it is a whole label or one token of a label. One that matches
        # nothing is a config mistake (shifts are measured against the controls): stop before training.
        folded = str(value).strip().casefold()
        hit = any(
            str(u).strip().casefold() == folded or folded in {t.strip().casefold() for t in SEPARATORS.split(str(u))}
            for u in uniques
        )
        if not hit:
            raise InputError(
                f"{where}obs[{key!r}]: control value {value!r} matches no label; "
                f"labels that look like controls: {_control_like(column)}; expected control_values to name those"
            )


def _control_like(column: pd.Series) -> str:
    """Labels that look like controls (every token a built-in control token or a control-like word,
    so that a GEARS single ``STAT1+ctrl`` is not one), with their cell counts."""
    counts = column.dropna().astype(str).value_counts()
    like = [
        (label, n)
        for label, n in counts.items()
        if all(parse_perturbation(t) == () or _CONTROL_LIKE.search(t) for t in SEPARATORS.split(label))
    ]
    return ", ".join(f"{label!r} ({n} cells)" for label, n in like[:_MAX_SHOWN]) or "none"


def _drop_rare(table: pd.DataFrame, min_cells: int, where: str, key: str) -> pd.DataFrame:
    sizes = table.loc[~table["is_control"], "intervention"].value_counts()
    rare = sizes[sizes < min_cells]
    if len(rare):
        shown = ", ".join(f"{lab} ({n})" for lab, n in rare.sort_index().head(_MAX_SHOWN).items())
        more = f" and {len(rare) - _MAX_SHOWN} more" if len(rare) > _MAX_SHOWN else ""
        log.warning("%d intervention(s) with fewer than %d cells dropped: %s%s", len(rare), min_cells, shown, more)
        table = table[~table["intervention"].isin(rare.index) | table["is_control"]]
    if table["is_control"].all():
        reason = f"with at least min_cells={min_cells} cells " if len(rare) else ""
        raise InputError(f"{where}obs[{key!r}]: no perturbed (non-control) cells {reason}remain; expected at least one")
    return table.reset_index(drop=True)
