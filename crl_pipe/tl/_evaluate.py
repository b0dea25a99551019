"""Compare a recovered model with the ground truth: target accuracy, SHD, MCC, edge precision/recall.

Latents carry no inherent meaning, so they are first mapped to the true programs *through the
interventions*: the one-to-one map that agrees with the most single-target perturbations
(Hungarian assignment). Latents that no intervention maps (all of them without true targets; on a
robot, variables nobody commands) are matched to true variables by name.
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
    mapping = map_latents(predicted, true_targets) if true_targets is not None else {}
    taken = set(mapping.values())
    mapping |= {n: n for n in latent_names if n in truth_nodes and n not in mapping and n not in taken}
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
        rows += list(r2_summary(latents, true_latents, mapping).items())
    return pd.DataFrame(rows, columns=["metric", "value"]).astype({"value": float})


def predicted_targets(targets: pd.DataFrame) -> pd.Series:
    """Each intervention's strongest latent (largest |score|)."""
    best = targets.loc[targets["score"].abs().groupby(targets["intervention"]).idxmax()]
    return best.set_index("intervention")["latent"]


def _single_truth(true_targets: pd.DataFrame) -> pd.Series:
    counts = true_targets.groupby("intervention")["program"].transform("size")
    return true_targets[counts == 1].set_index("intervention")["program"]


def map_latents(predicted: pd.Series, true_targets: pd.DataFrame) -> dict[str, str]:
    """One-to-one latent -> program map agreeing with the most single-target interventions.

    Among maps that agree equally, a latent keeps the program of its own name (an anchored
    latent is named after its program): a latent that takes both perturbations of another program
    as well as its own is not renamed to that program by a tie.
    """
    truth = _single_truth(true_targets)
    shared = predicted.index.intersection(truth.index)
    if shared.empty:
        return {}
    table = pd.crosstab(predicted[shared], truth[shared])
    same_name = table.index.to_numpy()[:, None] == table.columns.to_numpy()[None, :]
    rows, cols = linear_sum_assignment(-(table.to_numpy() + 0.5 * same_name / same_name.size))
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

    Edges touching an unmapped latent cannot match anything and count as extra edges. An edge is a
    pair: its ``lag`` does not matter here (a pair found at another lag, or at two lags, is right
    once); where both tables have lags, ``instantaneous_recall`` and ``instantaneous_precision``
    score the lag-0 edges alone. The plain scores count every reported edge, tentative ones too;
    where the graph has confidence calls (:func:`crl_pipe.tl.recover_graph`), ``shd_confident``,
    ``n_edges_confident``, ``edge_precision_confident`` and ``edge_recall_confident`` score the
    confident edges alone: the findings a reader is told to trust.
    """
    scores = _pair_scores(graph, true_graph, mapping) | _instantaneous_metrics(graph, true_graph, mapping)
    if "confidence" in graph and graph["confidence"].notna().any():
        confident = _pair_scores(graph[graph["confidence"] == "confident"], true_graph, mapping)
        scores |= {f"{key}_confident": value for key, value in confident.items() if key != "n_edges_true"}
        scores["n_edges_confident"] = scores.pop("n_edges_predicted_confident")
    return scores


def _pair_scores(graph: pd.DataFrame, true_graph: pd.DataFrame, mapping: dict[str, str]) -> dict[str, float]:
    est = {
        (mapping.get(s, f"?{s}"), mapping.get(t, f"?{t}"))
        for s, t in zip(graph["source"], graph["target"], strict=True)
    }
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


def _instantaneous_metrics(graph: pd.DataFrame, true_graph: pd.DataFrame, mapping: dict[str, str]) -> dict[str, float]:
    if "lag" not in graph or "lag" not in true_graph or graph["lag"].isna().all() or true_graph["lag"].isna().all():
        return {}
    est = {(mapping.get(s, f"?{s}"), mapping.get(t, f"?{t}")) for s, t in _lag0(graph)}
    true = set(_lag0(true_graph))
    return {
        "instantaneous_recall": len(est & true) / len(true) if true else float("nan"),
        "instantaneous_precision": len(est & true) / len(est) if est else float("nan"),
    }


def _lag0(edges: pd.DataFrame) -> list[tuple[str, str]]:
    lag0 = edges["lag"].fillna(-1).to_numpy() == 0
    return list(zip(edges["source"][lag0], edges["target"][lag0], strict=True))


def r2_matrix(latents: pd.DataFrame, true_latents: pd.DataFrame) -> pd.DataFrame:
    """R² of a linear fit of each true variable (columns) on each latent (rows), over shared samples."""
    merged = latents.merge(true_latents, on="sample_id", suffixes=("", "__true"))
    est_cols = [c for c in latents.columns if c != "sample_id"]
    true_names = [c for c in true_latents.columns if c != "sample_id"]
    true_cols = [c if c not in latents.columns else f"{c}__true" for c in true_names]
    est, tru = merged[est_cols].to_numpy(dtype=float), merged[true_cols].to_numpy(dtype=float)
    if len(merged) < 2:
        return pd.DataFrame(np.nan, index=est_cols, columns=true_names)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant column has no R²
        corr = np.corrcoef(est.T, tru.T)[: len(est_cols), len(est_cols) :]
    return pd.DataFrame(corr**2, index=est_cols, columns=true_names)


def r2_summary(latents: pd.DataFrame, true_latents: pd.DataFrame, mapping: dict[str, str]) -> dict[str, float]:
    """``r2_diag``: mean R² of each latent with its matched true variable; ``r2_offdiag_max``: the
    largest R² of a latent with any other true variable (CITRIS-style; a true variable driven by
    another legitimately raises the off-diagonal).

    Latents are matched by ``mapping`` (interventions, names), else by the best one-to-one R².
    """
    r2 = r2_matrix(latents, true_latents)
    pairs = [(lat, tru) for lat, tru in mapping.items() if lat in r2.index and tru in r2.columns]
    if not pairs:
        rows, cols = linear_sum_assignment(-np.nan_to_num(r2.to_numpy()))
        pairs = [(r2.index[r], r2.columns[c]) for r, c in zip(rows, cols, strict=True)]
    if not pairs:
        return {"r2_diag": float("nan"), "r2_offdiag_max": float("nan")}
    diag = [r2.at[lat, tru] for lat, tru in pairs]
    off = r2.loc[[lat for lat, _ in pairs]].copy()
    for lat, tru in pairs:
        off.at[lat, tru] = np.nan
    off_max = float(np.nanmax(off.to_numpy())) if np.isfinite(off.to_numpy()).any() else float("nan")
    return {"r2_diag": float(np.nanmean(diag)), "r2_offdiag_max": off_max}


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
