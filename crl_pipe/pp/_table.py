"""Tables of observed variables (e.g. protein levels) -> what the models see: known targets,
scaled values, identity anchors."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._errors import InputError

log = logging.getLogger("crl_pipe")

#: Transforms of :func:`preprocess_table`.
TRANSFORMS = ("none", "log", "log1p", "arcsinh")


def map_targets(interventions: pd.DataFrame, target_map: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Replace each intervention's targets by the variables it is known to act on.

    ``interventions`` comes from :func:`crl_pipe.pp.label_interventions`, whose targets are the
    label's tokens (for a reagent table, the reagent names). Each token is replaced by its
    variables in ``target_map``; a token missing there, or mapped to ``[]``, has no known target
    (e.g. a general stimulus). ``is_control`` is left as it is: a reagent with no known target is
    still an intervention.
    """
    tokens = {t for targets in interventions["targets"] for t in targets}
    unused = sorted(set(target_map) - tokens)
    if unused:
        log.warning(
            "intervention targets given for %s, which label no kept sample (labels use %s)", unused, sorted(tokens)
        )
    mapped = [sorted({v for t in targets for v in target_map.get(t, ())}) for targets in interventions["targets"]]
    return interventions.assign(targets=mapped, n_targets=np.array([len(t) for t in mapped], dtype=np.int64))


def preprocess_table(
    adata: ad.AnnData, interventions: pd.DataFrame, *, transform: str = "none", cofactor: float = 5.0
) -> ad.AnnData:
    """Transform the variables and standardise them by the control samples.

    Continuous measurements such as protein levels need neither library-size normalisation nor
    gene selection. ``transform``: ``"none"`` for data already on a log scale (the Sachs file holds
    natural logs), ``"arcsinh"`` (``arcsinh(x / cofactor)``) for raw cytometry intensities (linear
    near zero, logarithmic for large values, defined for the negative values that compensation
    leaves), ``"log"`` or ``"log1p"`` for positive measurements. Each variable is then centred and
    scaled by the mean and standard deviation of the control samples, so that values read as
    control SDs, the unit of the models' shifts and edge weights.

    Returns
    -------
    New AnnData of the labelled samples (order of ``adata``): dense float32 ``X``; ``obs`` gains
    ``intervention`` and ``is_control``; ``var`` gains ``perturbed`` (a known target of some
    intervention), ``control_mean`` and ``control_sd`` (after the transform); the parameters land
    in ``uns["crl_pipe_preprocess"]``.
    """
    if transform not in TRANSFORMS:
        raise InputError(f"transform={transform!r}: expected one of {list(TRANSFORMS)}")
    if isinstance(cofactor, bool) or not isinstance(cofactor, int | float) or not 0 < cofactor < np.inf:
        raise InputError(f"cofactor={cofactor!r}: expected a finite number > 0 (arcsinh(x / cofactor))")
    labels = interventions.set_index(interventions["sample_id"].astype(str))
    keep = adata.obs_names.isin(labels.index)
    if not keep.any():
        raise InputError("interventions table: no sample_id matches a row of the variable table")
    out = adata[keep].to_memory() if adata.isbacked else adata[keep].copy()
    labels = labels.loc[out.obs_names]
    _check_targets(labels, out.var_names)
    X = _transform(np.asarray(out.X, dtype=np.float64), transform, cofactor, out.var_names)
    control = labels["is_control"].to_numpy(dtype=bool)
    if control.sum() < 2:
        raise InputError(
            f"interventions table: {int(control.sum())} control sample(s); expected >= 2 to standardise by"
        )
    mean, sd = X[control].mean(axis=0), X[control].std(axis=0)
    flat = list(out.var_names[sd <= 0])
    if flat:
        raise InputError(f"variable(s) {flat[:10]} are constant in the control samples; expected varying measurements")
    out.X = ((X - mean) / sd).astype(np.float32)
    out.obs["intervention"] = pd.Categorical(labels["intervention"].astype(str).to_numpy())
    out.obs["is_control"] = control
    targeted = {str(t) for targets in labels["targets"] for t in targets}
    out.var["perturbed"] = out.var_names.isin(targeted)
    out.var["control_mean"], out.var["control_sd"] = mean, sd
    out.uns["crl_pipe_preprocess"] = {
        "transform": transform,
        "cofactor": float(cofactor),
        "standardise": "control mean and SD",
        "n_cells": int(out.n_obs),
        "n_variables": int(out.n_vars),
    }
    log.info("preprocess: %d samples x %d variables (transform %s, standardised by %d controls)",
             out.n_obs, out.n_vars, transform, int(control.sum()))  # fmt: skip
    return out


def _check_targets(labels: pd.DataFrame, variables: pd.Index) -> None:
    """Known targets must be variables of the table (a typo would silently leave an intervention untargeted)."""
    per_label = labels.drop_duplicates("intervention").set_index("intervention")["targets"]
    for label, targets in per_label.items():
        missing = [t for t in targets if t not in variables]
        if missing and not labels.loc[labels["intervention"] == label, "is_control"].iloc[0]:
            raise InputError(
                f"interventions table: target(s) {missing} of {label!r} are not variables of the table; expected "
                f"some of {list(variables)[:15]} (set the known targets in interventions.targets, [] if unknown)"
            )


def _transform(X: np.ndarray, transform: str, cofactor: float, names: pd.Index) -> np.ndarray:
    if transform == "arcsinh":
        return np.arcsinh(X / cofactor)
    if transform in ("log", "log1p"):
        floor = 0.0 if transform == "log" else -1.0
        bad = X <= floor
        if bad.any():
            cols = list(names[bad.any(axis=0)])[:10]
            raise InputError(
                f"transform {transform!r}: {int(bad.sum())} value(s) <= {floor:g} in variable(s) {cols}; "
                "expected positive measurements (or use transform 'arcsinh')"
            )
        return np.log(X) if transform == "log" else np.log1p(X)
    return X
