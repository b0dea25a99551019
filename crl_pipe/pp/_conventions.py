"""The obs conventions of perturbation labels seen in the field, detected and rewritten to crl-pipe's form."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._constants import CONTROL_TARGET
from .._errors import InputError
from ._guides import guide_target
from ._perturbation import parse_perturbation

log = logging.getLogger("crl_pipe")

#: ``perturbation_key`` values that ask for detection.
AUTO = "auto"
_MAX_SHOWN = 5


@dataclass(frozen=True)
class Convention:
    """How one tool or dataset writes perturbation labels into ``obs``.

    ``rewrite`` turns one raw label (and, where the convention needs it, the cell's row of
    ``obs``) into crl-pipe's form: target genes joined by ``+``, control labels left as they are
    (they are built-in control tokens); ``None`` for an unlabelled cell.
    """

    name: str
    key: str
    example: str
    rewrite: Callable[[object], object] | None = None

    def labels(self, obs: pd.DataFrame) -> pd.Series:
        """The ``key`` column of ``obs`` rewritten to crl-pipe's form (one call per distinct label)."""
        column = obs[self.key]
        if self.key == "perturbation" and "nperts" in obs:  # scPerturb: A_B with nperts == 2
            return _scperturb(column, obs["nperts"])
        if self.rewrite is None:
            return column
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        rewritten = np.asarray([self.rewrite(u) for u in uniques] + [None], dtype=object)
        return pd.Series(rewritten[codes], index=obs.index, name=self.key)


def _norman(label: object) -> object:
    """Norman et al. 2019 ``guide_ids``: ``A,B``; an empty string marks control cells."""
    return "control" if isinstance(label, str) and label.strip() == "" else label


def _feature_call(label: object) -> object:
    """Cell Ranger ``feature_call``: guide names joined by ``|``, mapped to their targets by the naming rule."""
    if not isinstance(label, str) or not label.strip():
        return None
    genes = sorted({guide_target(g) for g in label.split("|") if g.strip()} - {CONTROL_TARGET})
    return "+".join(genes) if genes else CONTROL_TARGET


def _scperturb(column: pd.Series, nperts: pd.Series) -> pd.Series:
    """scPerturb joins the genes of a combination with ``_`` and counts them in ``nperts``."""
    multi = pd.to_numeric(nperts, errors="coerce").fillna(1).to_numpy() > 1
    out = column.astype(object).copy()
    out[multi] = column[multi].astype(str).str.replace("_", "+", regex=False)
    return out


#: Conventions tried in order when ``perturbation_key`` is not given (or ``"auto"``); the first
#: column that holds both control and perturbed cells wins.
CONVENTIONS: tuple[Convention, ...] = (
    Convention("pertpy / scPerturb", "perturbation", "'control', 'GENE', 'A_B' (scPerturb, with nperts)"),
    Convention("GEARS", "condition", "'ctrl', 'GENE+ctrl', 'A+B'"),
    Convention("Norman 2019", "guide_ids", "'' (control), 'GENE', 'A,B'", _norman),
    Convention("10x Cell Ranger", "feature_call", "guide names joined by '|', e.g. 'GATA1-1|NT-2'", _feature_call),
    Convention("gene", "gene", "'non-targeting' or 'NT', 'GENE'"),
    Convention("target_gene", "target_gene", "'non-targeting' or 'NT', 'GENE'"),
)


def convention_for(key: str) -> Convention:
    """The convention of obs column ``key``: a known one, else labels taken as they are."""
    known = {c.key: c for c in CONVENTIONS}
    return known.get(key, Convention("configured", key, "as given"))


def detect_convention(obs: pd.DataFrame, control_values: Sequence[str] = (), *, where: str = "") -> Convention:
    """Find the obs column that holds the perturbation labels, by the conventions of :data:`CONVENTIONS`.

    Parameters
    ----------
    obs
        ``adata.obs`` of the screen.
    control_values
        Labels of control cells besides the built-in control tokens.
    where
        Prefix of error messages (the file).

    Returns
    -------
    The first convention whose column holds at least one control and one perturbed cell.

    Raises
    ------
    InputError
        No convention fits; the message lists the obs columns and why each convention failed.
    """
    tried = []
    for convention in CONVENTIONS:
        if convention.key not in obs.columns:
            tried.append(f"{convention.name} obs[{convention.key!r}] (absent)")
            continue
        problem = _problem(convention.labels(obs), control_values)
        if problem is None:
            log.info(
                "perturbation labels: obs[%r] detected (%s convention: %s)",
                convention.key,
                convention.name,
                convention.example,
            )
            return convention
        tried.append(f"{convention.name} obs[{convention.key!r}] ({problem})")
    raise InputError(
        f"{where}perturbation_key not set and no obs column follows a known convention of perturbation labels "
        f"(obs columns: {list(obs.columns)}); tried {'; '.join(tried)}; set perturbation_key (and control_values)"
    )


def _problem(labels: pd.Series, control_values: Sequence[str]) -> str | None:
    """Why ``labels`` cannot be the perturbation column (``None``: they can)."""
    counts = labels.value_counts(dropna=True)
    if counts.empty:
        return "every value is missing"
    parsed = [parse_perturbation(label, control_values) for label in counts.index]
    has_control = any(p == () for p in parsed)
    has_perturbed = any(p for p in parsed)
    if has_control and has_perturbed:
        return None
    shown = ", ".join(f"{label!r}" for label in counts.index[:_MAX_SHOWN])
    return f"{'no perturbed cells' if has_control else 'no control label'} among {shown}"
