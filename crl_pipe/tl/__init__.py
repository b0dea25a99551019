"""Tools: train a model, recover its causal graph with stability, evaluate against truth."""

from __future__ import annotations

from ._evaluate import evaluate, graph_metrics, map_latents, mean_correlation, predicted_targets, target_accuracy
from ._graph import bootstrap_rows, recover_graph
from ._identifiability import identifiability
from ._train import train

__all__ = [
    "bootstrap_rows",
    "evaluate",
    "graph_metrics",
    "identifiability",
    "map_latents",
    "mean_correlation",
    "predicted_targets",
    "recover_graph",
    "target_accuracy",
    "train",
]
