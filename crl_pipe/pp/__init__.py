"""Preprocessing: perturbation labels, quality control, normalisation and gene selection, anchors."""

from __future__ import annotations

from ._anchors import build_anchors, data_driven_anchors
from ._labels import CONTROL_TOKENS, label_interventions, parse_perturbation
from ._preprocess import preprocess
from ._qc import qc_metrics

__all__ = [
    "CONTROL_TOKENS",
    "build_anchors",
    "data_driven_anchors",
    "label_interventions",
    "parse_perturbation",
    "preprocess",
    "qc_metrics",
]
