"""Preprocessing: guide calling, perturbation labels, quality control, normalisation and gene selection, anchors."""

from __future__ import annotations

from ._anchors import build_anchors, data_driven_anchors
from ._guides import CONTROL_TARGET, call_guides, guide_target
from ._labels import CONTROL_TOKENS, label_interventions, parse_perturbation
from ._preprocess import preprocess
from ._qc import qc_metrics
from ._robot_labels import default_action_map, robot_interventions
from ._robot_preprocess import preprocess_robot, robot_anchors

__all__ = [
    "CONTROL_TARGET",
    "CONTROL_TOKENS",
    "build_anchors",
    "call_guides",
    "data_driven_anchors",
    "default_action_map",
    "guide_target",
    "label_interventions",
    "parse_perturbation",
    "preprocess",
    "preprocess_robot",
    "qc_metrics",
    "robot_anchors",
    "robot_interventions",
]
