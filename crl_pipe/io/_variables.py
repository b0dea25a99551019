"""Observed variables with intervention indicator columns (e.g. Sachs 2005 flow cytometry) -> AnnData.

One row per sample, one numeric column per measured variable, and one 0/1 column per
intervention (a reagent, a drug) saying whether it was applied to that sample. The variables
become ``X``; the indicators stay in ``obs`` and are joined into one label per row,
``obs["perturbation"]``: the active interventions joined with ``+`` (``"A+B"``), or ``"control"``
where none is active, the form :func:`crl_pipe.pp.label_interventions` reads.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._errors import InputError

#: obs column holding each row's intervention label, and the label of rows with none active.
LABEL_KEY = "perturbation"
CONTROL_LABEL = "control"
_MAX_SHOWN = 10


def read_variable_table(
    path: str | os.PathLike,
    *,
    interventions: str | Sequence[str],
    variables: Sequence[str] | None = None,
) -> ad.AnnData:
    """Read a table of observed variables whose interventions are indicator columns.

    Parameters
    ----------
    path
        A ``.csv``, ``.tsv``/``.txt``/``.tab`` (tab- or comma-separated, told by the header line),
        optionally ``.gz``, or ``.parquet`` file with a header row. Opened read-only.
    interventions
        The indicator columns (values 0/1 or true/false), or their common name prefix. A row's
        label joins its active ones, sorted, with ``+``; rows with none active are controls.
    variables
        The measured variables (default: every numeric column that is not an indicator). Other
        columns are kept in ``obs``.

    Returns
    -------
    AnnData with ``X`` = the variables as they are in the file (dense float32; transformed and
    standardised later by :func:`crl_pipe.pp.preprocess_table`), ``obs`` index ``row<i>`` (the
    row's position in the file), the indicator columns as booleans, the other columns, and
    ``obs["perturbation"]``; ``var`` index = variable names.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: variable table does not exist")
    frame = _read(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_unique_columns(frame, path)
    indicators = _indicator_columns(frame, path, interventions)
    variables = _variable_columns(frame, path, variables, indicators)
    flags = pd.DataFrame({c: _as_flags(frame[c], path, c) for c in indicators}, index=frame.index)
    X = frame[variables].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        cols = [variables[j] for j in np.flatnonzero(bad.any(axis=0))][:_MAX_SHOWN]
        raise InputError(
            f"{path}: {int(bad.sum())} missing or infinite value(s) in variable(s) {cols}; expected finite numbers"
        )
    if LABEL_KEY in frame.columns and LABEL_KEY not in indicators:
        raise InputError(f"{path}: column {LABEL_KEY!r} would be overwritten by the intervention labels; rename it")
    obs = frame.drop(columns=[*variables, *indicators]).assign(**{c: flags[c].to_numpy() for c in indicators})
    obs[LABEL_KEY] = _labels(flags)
    obs.index = pd.Index([f"row{i}" for i in range(len(frame))], dtype=str)
    var = pd.DataFrame(index=pd.Index(variables, dtype=str))
    if len(obs) == 0:
        raise InputError(f"{path}: the table has no rows; expected one row per sample")
    return ad.AnnData(X=X.astype(np.float32), obs=obs, var=var)


def _read(path: Path) -> pd.DataFrame:
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if {".parquet", ".pq"} & set(suffixes):
            return pd.read_parquet(path)
        if {".csv", ".tsv", ".txt", ".tab"} & set(suffixes):
            return pd.read_csv(path, sep=_separator(path))
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise InputError(f"{path}: not a readable table ({type(err).__name__}: {err})") from None
    raise InputError(f"{path}: unknown table suffix {path.suffix!r}; expected .csv, .tsv, .txt or .parquet")


def _separator(path: Path) -> str:
    """Tab when the header line holds one (Tetrad/Sachs ``.txt`` files are tab-separated), else comma."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    return "\t" if "\t" in header else ","


def _check_unique_columns(frame: pd.DataFrame, path: Path) -> None:
    dup = frame.columns[frame.columns.duplicated()].unique()
    if len(dup):
        raise InputError(f"{path}: duplicated column name(s) {list(dup)[:_MAX_SHOWN]}; expected unique names")


def _indicator_columns(frame: pd.DataFrame, path: Path, interventions: str | Sequence[str]) -> list[str]:
    if isinstance(interventions, str):
        found = [c for c in frame.columns if c.startswith(interventions) and c != interventions]
        if not found:
            raise InputError(
                f"{path}: no column starts with the intervention prefix {interventions!r} "
                f"(columns: {list(frame.columns)[:_MAX_SHOWN]})"
            )
        return found
    columns = [str(c) for c in interventions]
    if not columns:
        raise InputError(
            f"{path}: no intervention columns given; expected the 0/1 indicator column of each intervention"
        )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{path}: intervention column(s) {missing} not found; expected 0/1 indicator columns "
            f"(columns: {list(frame.columns)[:20]})"
        )
    clash = [c for c in columns if c.casefold() == CONTROL_LABEL or re.search(r"[+,|;]", c)]
    if clash:
        raise InputError(
            f"{path}: intervention column name(s) {clash} cannot be labels; expected names other than "
            f"{CONTROL_LABEL!r} and without '+', ',', '|' or ';'"
        )
    return list(dict.fromkeys(columns))


def _variable_columns(
    frame: pd.DataFrame, path: Path, variables: Sequence[str] | None, indicators: list[str]
) -> list[str]:
    if variables is None:
        found = [c for c in frame.columns if c not in indicators and pd.api.types.is_numeric_dtype(frame[c])]
        if not found:
            raise InputError(f"{path}: no numeric column besides the intervention columns; expected measured variables")
        return found
    variables = [str(v) for v in variables]
    missing = [v for v in variables if v not in frame.columns]
    if missing:
        raise InputError(f"{path}: variable column(s) {missing} not found (columns: {list(frame.columns)[:20]})")
    both = [v for v in variables if v in indicators]
    if both:
        raise InputError(
            f"{path}: column(s) {both} are named both as variables and as interventions; expected one role each"
        )
    text = [v for v in variables if not pd.api.types.is_numeric_dtype(frame[v]) or pd.api.types.is_bool_dtype(frame[v])]
    if text:
        raise InputError(f"{path}: variable column(s) {text} are not numeric; expected measured values")
    if not variables:
        raise InputError(f"{path}: no variables given; expected at least one measured column")
    return list(dict.fromkeys(variables))


def _as_flags(column: pd.Series, path: Path, name: str) -> np.ndarray:
    """An indicator column as booleans; anything but 0/1 (or true/false) is an error."""
    if pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=bool)
    values = pd.to_numeric(column, errors="coerce")
    bad = ~values.isin([0, 1])
    if bad.any():
        example = column[bad].tolist()[0]  # a plain Python value, for a readable repr
        raise InputError(
            f"{path}: intervention column {name!r} holds {int(bad.sum())} value(s) other than 0/1 "
            f"(e.g. {example!r}); expected 1 where the intervention was applied, else 0"
        )
    return values.to_numpy() == 1


def _labels(flags: pd.DataFrame) -> np.ndarray:
    names = sorted(flags.columns)
    active = flags[names].to_numpy()
    joined = {}
    labels = np.empty(len(flags), dtype=object)
    for i, row in enumerate(active):
        key = row.tobytes()
        if key not in joined:
            joined[key] = "+".join(n for n, on in zip(names, row, strict=True) if on) or CONTROL_LABEL
        labels[i] = joined[key]
    return labels
