"""Tools: train a model, recover its causal graph with stability, evaluate against truth, steer by concept."""

from __future__ import annotations

from ._atlas import ATLAS_KINDS, AtlasPlace, place_on_atlas, read_atlas
from ._atlas import KNOBS as ATLAS_KNOBS
from ._baselines import BASELINES, baseline_graph, fit_baseline
from ._evaluate import evaluate, graph_metrics, map_latents, mean_correlation, predicted_targets, target_accuracy
from ._graph import GRAPH_COLUMNS, EdgeCalls, recover_graph
from ._held_out_singles import SINGLE_PREDICTORS, evaluate_singles
from ._hierarchy import HierarchyResult, check_given_hierarchy, hierarchy, module_metrics, module_names
from ._identifiability import identifiability
from ._knockdown import knockdown
from ._prediction import combinations, evaluate_combinations, held_out_metrics, hold_out, resolve_held_out
from ._resample import bootstrap_episodes, bootstrap_rows, complementary_halves
from ._rollout import (
    ROLLOUT_HORIZONS,
    ROLLOUT_PREDICTORS,
    CommandSteerer,
    score_rollouts,
    split_episodes,
    steer_commands,
)
from ._steer import STEERING_COLUMNS, Steerer, module_members, steer
from ._train import train

__all__ = [
    "ATLAS_KINDS",
    "ATLAS_KNOBS",
    "AtlasPlace",
    "place_on_atlas",
    "read_atlas",
    "BASELINES",
    "SINGLE_PREDICTORS",
    "STEERING_COLUMNS",
    "ROLLOUT_HORIZONS",
    "ROLLOUT_PREDICTORS",
    "CommandSteerer",
    "score_rollouts",
    "split_episodes",
    "steer_commands",
    "module_members",
    "Steerer",
    "combinations",
    "evaluate_singles",
    "steer",
    "HierarchyResult",
    "baseline_graph",
    "EdgeCalls",
    "GRAPH_COLUMNS",
    "bootstrap_episodes",
    "bootstrap_rows",
    "check_given_hierarchy",
    "complementary_halves",
    "evaluate",
    "evaluate_combinations",
    "fit_baseline",
    "graph_metrics",
    "held_out_metrics",
    "hierarchy",
    "hold_out",
    "identifiability",
    "knockdown",
    "map_latents",
    "mean_correlation",
    "module_metrics",
    "module_names",
    "predicted_targets",
    "recover_graph",
    "resolve_held_out",
    "target_accuracy",
    "train",
]
