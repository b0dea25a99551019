"""Compare a recovered model with the ground truth: target accuracy, SHD, MCC, edge precision/recall.

Latents carry no inherent meaning, so they are first mapped to the true programs *through the
interventions*: the one-to-one map that agrees with the most single-target perturbations
(Hungarian assignment). Without true targets, latents are matched to true variables by name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment


def evaluate(
    *,
    graph: pd.DataFrame,
    targets: pd.DataFrame,
    latents: pd.DataFrame,
    true_graph: pd.DataFrame | None = None,
    true_targets: pd.DataFrame | None = None,
    true_latents: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Metrics table ``metric, value`` for every comparison the given truth allows.

    Parameters
    ----------
    graph, targets, latents
        The model's ``graph.parquet``, ``targets.parquet`` and ``latents.parquet`` tables.
    true_graph
        True edges ``source, target`` among true programs.
    true_targets
        ``intervention, program``: the true program(s) each intervention hits.
    true_latents
        ``sample_id`` plus one column per true program.
    """
    latent_names = [c for c in latents.columns if c != "sample_id"]
    predicted = predicted_targets(targets)
    truth_nodes = set() if true_graph is None else set(true_graph["source"]) | set(true_graph["target"])
    if true_targets is not None:
        mapping = map_latents(predicted, true_targets)
    else:
        mapping = {name: name for name in latent_names if name in truth_nodes}
    rows = [("n_latents", len(latent_names)), ("n_mapped_latents", len(mapping))]
    # observed graph nodes that are not latents (e.g. robot actions) keep their own names
    observed = (set(graph["source"]) | set(graph["target"])) - set(latent_names)
    mapping |= {n: n for n in observed if n in truth_nodes}
    if true_targets is not None:
        rows.append(("target_accuracy", target_accuracy(predicted, true_targets, mapping)))
    if true_graph is not None:
        rows += list(graph_metrics(graph, true_graph, mapping).items())
    if true_latents is not None:
        rows.append(("mcc", mean_correlation(latents, true_latents)))
    return pd.DataFrame(rows, columns=["metric", "value"]).astype({"value": float})


def predicted_targets(targets: pd.DataFrame) -> pd.Series:
    """Each intervention's strongest latent (largest |score|)."""
    best = targets.loc[targets["score"].abs().groupby(targets["intervention"]).idxmax()]
    return best.set_index("intervention")["latent"]


def _single_truth(true_targets: pd.DataFrame) -> pd.Series:
    counts = true_targets.groupby("intervention")["program"].transform("size")
    return true_targets[counts == 1].set_index("intervention")["program"]


def map_latents(predicted: pd.Series, true_targets: pd.DataFrame) -> dict[str, str]:
    """One-to-one latent -> program map agreeing with the most single-target interventions."""
    truth = _single_truth(true_targets)
    shared = predicted.index.intersection(truth.index)
    if shared.empty:
        return {}
    table = pd.crosstab(predicted[shared], truth[shared])
    rows, cols = linear_sum_assignment(-table.to_numpy())
    return {table.index[r]: table.columns[c] for r, c in zip(rows, cols, strict=True) if table.iat[r, c] > 0}


def target_accuracy(predicted: pd.Series, true_targets: pd.DataFrame, mapping: dict[str, str]) -> float:
    """Fraction of single-target interventions whose strongest latent maps to their true program."""
    truth = _single_truth(true_targets)
    shared = predicted.index.intersection(truth.index)
    if shared.empty:
        return float("nan")
    return float(np.mean([mapping.get(predicted[i]) == truth[i] for i in shared]))


def graph_metrics(graph: pd.DataFrame, true_graph: pd.DataFrame, mapping: dict[str, str]) -> dict[str, float]:
    """SHD (a reversed edge counts once), edge precision and recall after mapping latents to programs.

    Edges touching an unmapped latent cannot match anything and count as extra edges.
    """
    est = {(mapping.get(s, f"?{s}"), mapping.get(t, f"?{t}")) for s, t in zip(graph["source"], graph["target"], strict=True)}
    true = set(zip(true_graph["source"], true_graph["target"], strict=True))
    correct = est & true
    reversed_ = {(s, t) for s, t in est - true if (t, s) in true}
    shd = len(est - true - reversed_) + len(true - est - {(t, s) for s, t in reversed_}) + len(reversed_)
    return {
        "shd": float(shd),
        "n_edges_true": float(len(true)),
        "n_edges_predicted": float(len(est)),
        "edge_precision": len(correct) / len(est) if est else float("nan"),
        "edge_recall": len(correct) / len(true) if true else float("nan"),
    }


def mean_correlation(latents: pd.DataFrame, true_latents: pd.DataFrame) -> float:
    """MCC: mean |Pearson correlation| of latents and true latents under the best one-to-one matching."""
    merged = latents.merge(true_latents, on="sample_id", suffixes=("", "__true"))
    if merged.empty:
        return float("nan")
    est = merged[[c for c in latents.columns if c != "sample_id"]].to_numpy(dtype=float)
    true_cols = [c if c not in latents.columns else f"{c}__true" for c in true_latents.columns if c != "sample_id"]
    tru = merged[true_cols].to_numpy(dtype=float)
    k = est.shape[1]
    corr = np.abs(np.corrcoef(est.T, tru.T)[:k, k:])
    rows, cols = linear_sum_assignment(-np.nan_to_num(corr))
    return float(corr[rows, cols].mean())
