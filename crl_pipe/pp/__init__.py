"""Preprocessing: guide calling, perturbation labels, quality control, normalisation and gene selection, anchors."""

from __future__ import annotations

from ._anchors import build_anchors, data_driven_anchors, identity_anchors, robot_anchors
from ._conventions import CONVENTIONS, Convention, detect_convention
from ._guides import CONTROL_TARGET, call_guides, guide_target
from ._imported_calls import import_guide_calls
from ._labels import label_interventions
from ._perturbation import CONTROL_TOKENS, parse_perturbation
from ._preprocess import preprocess
from ._preprocess_chunked import preprocess_chunked
from ._qc import qc_metrics
from ._robot_labels import default_action_map, robot_interventions
from ._robot_preprocess import preprocess_robot
from ._table import map_targets, preprocess_table

__all__ = [
    "CONTROL_TARGET",
    "CONTROL_TOKENS",
    "CONVENTIONS",
    "Convention",
    "build_anchors",
    "call_guides",
    "data_driven_anchors",
    "detect_convention",
    "default_action_map",
    "guide_target",
    "identity_anchors",
    "import_guide_calls",
    "label_interventions",
    "map_targets",
    "parse_perturbation",
    "preprocess",
    "preprocess_chunked",
    "preprocess_robot",
    "preprocess_table",
    "qc_metrics",
    "robot_anchors",
    "robot_interventions",
]
