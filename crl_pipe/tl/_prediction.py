"""How well a generative model predicts held-out perturbation combinations (``A+B`` from ``A`` and ``B``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import ConfigError, InputError, ModelError
from ..models import CRLData, CRLModel, model_names
from ..pp import parse_perturbation
from ._rollout import split_episodes

#: predictors scored side by side: the model, the control mean, and the additive baseline
#: (control mean plus the observed single-perturbation changes), the usual bar in combination prediction
PREDICTORS = ("model", "control", "additive")


def hold_out(
    data: CRLData, held_out: Sequence[str] | Mapping, *, where: str = "held_out", source: str = "the data"
) -> CRLData:
    """``data`` without the cells of the ``held_out`` labels, which the models must never see
    (:func:`held_out_cells`: a held-out single takes the combinations that include it along).

    The labels are checked by :func:`resolve_held_out`; a bad one is a :class:`ConfigError` naming it.
    A robot log's ``held_out`` is a mapping, ``{episodes: [3, 7]}``: those episodes' frames are dropped
    (:func:`crl_pipe.tl.split_episodes`).
    """
    if isinstance(held_out, Mapping):
        return split_episodes(data, held_out, where=where)[0]
    dropped = held_out_cells(data, resolve_held_out(data, held_out, where=where, source=source))
    return data.subset(~dropped)


def held_out_cells(data: CRLData, labels: Sequence[str]) -> np.ndarray:
    """Cells no model may see: those of the held-out ``labels``, and of every combination that
    includes a held-out single (so that nothing of a held-out perturbation is trained on)."""
    singles = {label for label in labels if "+" not in label}
    present = set(data.intervention[~data.is_control])
    with_single = [p for p in present if "+" in p and singles.intersection(p.split("+"))]
    return np.isin(data.intervention, [*labels, *with_single]) & ~data.is_control


def resolve_held_out(
    data: CRLData, held_out: Sequence[str], *, where: str = "held_out", source: str = "the data"
) -> list[str]:
    """The ``held_out`` labels as ``data`` names them, checked for prediction from their parts.

    A label is taken as written, else as the labelling step writes it (``"B,A"`` is ``"A+B"``).
    Each must have cells in ``data``. A combination's parts must keep cells once every held-out
    label is dropped, so that a model trained without them can predict it; a single perturbation
    is predicted from prior knowledge by steering (:func:`crl_pipe.tl.evaluate_singles`) and needs
    a route to a program: a target gene that is measured or in a gene set. Anything else is a
    :class:`ConfigError` naming the label (``where``: the config key; ``source``: where the labels
    come from).
    """
    held_out = [held_out] if isinstance(held_out, str) else [str(label) for label in held_out]
    present = set(data.intervention[~data.is_control])
    labels = []
    for given in held_out:
        targets = parse_perturbation(given)
        label = given if given in present else "+".join(targets or ())
        if label not in present:
            combos = sorted(p for p in present if "+" in p)
            shown = ", ".join(map(repr, combos[:5])) or "none in this data"
            raise ConfigError(
                f"{where}: {given!r} has no cells in {source}; expected a combination label ({shown}) or a single one"
            )
        labels.append(label)
    members = set(data.features) | {g for genes in data.anchors.values() for g in genes}
    for given, label in zip(held_out, labels, strict=True):
        targets = data.targets.get(label, ())
        if "+" not in label and not members.intersection(targets):
            raise ConfigError(
                f"{where}: single {given!r} has no route to a program: its target(s) {list(targets)} are neither "
                "measured nor in a gene set; expected a perturbation of a measured or gene-set gene"
            )
    seen = present - set(labels)
    for given, label in zip(held_out, labels, strict=True):
        unseen = [part for part in label.split("+") if part not in seen and "+" in label]
        if unseen:
            raise ConfigError(
                f"{where}: {given!r} cannot be predicted from its parts: {', '.join(map(repr, unseen))} "
                "not trained on its own (absent from the data or held out too)"
            )
    return labels


def combinations(labels: Sequence[str]) -> list[str]:
    """The combination labels (``A+B``) among held-out ``labels``; the others are single perturbations."""
    return [label for label in labels if "+" in label]


def held_out_metrics(scores: pd.DataFrame, *, prefix: str = "heldout_") -> pd.DataFrame:
    """``metric, value`` rows of :func:`evaluate_combinations` scores, averaged over the held-out labels.

    The model's metrics are ``heldout_<metric>`` (``heldout_r2_top20``, ``heldout_mmd`` ...), the
    baselines' ``heldout_<metric>_control`` and ``heldout_<metric>_additive``.
    """
    if scores.empty:
        return pd.DataFrame({"metric": pd.Series([], dtype=str), "value": pd.Series([], dtype=float)})
    means = scores.groupby(["predictor", "metric"], sort=False)["value"].mean()
    rows = []
    for (predictor, metric), value in means.items():
        name = prefix + metric.removesuffix("_genes")
        rows.append((name if predictor == "model" else f"{name}_{predictor}", float(value)))
    rows.append((f"{prefix}n_labels", float(scores["intervention"].nunique())))
    return pd.DataFrame(rows, columns=["metric", "value"])


def evaluate_combinations(
    model: CRLModel,
    data: CRLData,
    held_out: Sequence[str],
    *,
    n_cells: int = 1000,
    top_n: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Score predicted cells of held-out combinations against the observed ones.

    Parameters
    ----------
    model
        A fitted model with ``predict(label, n_cells, seed=...)`` (``causal_vae``), trained
        without the held-out labels.
    data
        Cells that include the held-out labels' observed cells and the controls (the singles are
        needed for the additive baseline only).
    held_out
        Labels to score, e.g. ``["A+B"]``; each must have observed cells in ``data``.
    n_cells
        Cells generated per label (and at most this many observed cells enter the MMD).
    top_n
        The most changed genes (largest |observed mean - control mean|) of the second R².
    seed
        Seed of the generated cells and of the MMD subsamples.

    Returns
    -------
    Long table ``intervention, predictor, metric, value`` with predictor ``model``, ``control``
    or ``additive`` and metric ``mmd`` (RBF kernel, median-heuristic bandwidth, on log
    expression of all genes), ``r2_all_genes`` and ``r2_top{top_n}_genes`` (R² between predicted
    and observed mean expression over those genes), and ``r2_delta_top{top_n}_genes`` (the same
    on changes from the control mean, which a constant prediction cannot get right).
    """
    if not model.capabilities.predicts:
        raise ModelError(f"model {model.name}: cannot generate cells; expected one of {model_names('predicts')}")
    features = list(model.features)  # a predicting model generates cells over the features it was fit on
    X = _columns(data, features)
    control = _dense(X[data.is_control])
    if not len(control):
        raise InputError("evaluate_combinations: data has no control cells to compare against")
    rng = np.random.default_rng(seed)
    rows = []
    for label in held_out:
        observed = _dense(X[data.intervention == label])
        if not len(observed):
            raise InputError(f"evaluate_combinations: held-out label {label!r} has no cells in the data")
        predictions = {
            "model": model.predict(label, n_cells=n_cells, seed=seed),
            "control": control,
            "additive": _additive(X, data, label, control),
        }
        for name, predicted in predictions.items():
            if predicted is None:
                continue
            for metric, value in _scores(predicted, observed, control, top_n, rng).items():
                rows.append((label, name, metric, value))
    return pd.DataFrame(rows, columns=["intervention", "predictor", "metric", "value"])


def _columns(data: CRLData, features: list[str]) -> np.ndarray:
    index = {f: i for i, f in enumerate(data.features)}
    missing = [f for f in features if f not in index]
    if missing:
        raise InputError(f"evaluate_combinations: features of the model missing from the data: {missing[:5]}")
    return data.X if features == data.features else data.X[:, [index[f] for f in features]]


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _additive(X: np.ndarray, data: CRLData, label: str, control: np.ndarray) -> np.ndarray | None:
    """Control cells shifted by the summed mean changes of the label's parts, when every part was observed."""
    parts = label.split("+")
    deltas = []
    for part in parts:
        cells = _dense(X[data.intervention == part])
        if not len(cells):
            return None
        deltas.append(cells.mean(0) - control.mean(0))
    return control + np.sum(deltas, axis=0)


def _scores(predicted: np.ndarray, observed: np.ndarray, control: np.ndarray, top_n: int, rng) -> dict[str, float]:
    pred_mean, obs_mean, ctrl_mean = predicted.mean(0), observed.mean(0), control.mean(0)
    top = np.argsort(-np.abs(obs_mean - ctrl_mean), kind="stable")[:top_n]
    return {
        "mmd": _mmd(predicted, observed, rng),
        "r2_all_genes": _r2(pred_mean, obs_mean),
        f"r2_top{top_n}_genes": _r2(pred_mean[top], obs_mean[top]),
        f"r2_delta_top{top_n}_genes": _r2(pred_mean[top] - ctrl_mean[top], obs_mean[top] - ctrl_mean[top]),
    }


def _r2(predicted: np.ndarray, observed: np.ndarray) -> float:
    total = np.sum((observed - observed.mean()) ** 2)
    return float(1.0 - np.sum((observed - predicted) ** 2) / total) if total > 0 else float("nan")


def _mmd(a: np.ndarray, b: np.ndarray, rng, max_cells: int = 1000) -> float:
    """Squared MMD (biased estimate) with an RBF kernel whose bandwidth is the median pairwise distance."""
    a = a[rng.choice(len(a), size=min(len(a), max_cells), replace=False)].astype(np.float64)
    b = b[rng.choice(len(b), size=min(len(b), max_cells), replace=False)].astype(np.float64)
    both = np.vstack([a, b])
    sq = np.sum(both**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * both @ both.T, 0.0)
    bandwidth = np.median(d2[np.triu_indices(len(both), k=1)])
    k = np.exp(-d2 / max(bandwidth, 1e-12))
    n = len(a)
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean())
