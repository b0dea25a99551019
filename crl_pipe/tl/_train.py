"""Fit a registered model on CRLData."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..models import CRLData, CRLModel, get_model

log = logging.getLogger("crl_pipe")


def train(data: CRLData, *, model: str, params: Mapping[str, Any] | None = None, seed: int = 0) -> CRLModel:
    """Fit ``model`` (a name of :func:`crl_pipe.models.model_names`) with ``params`` on ``data``.

    Parameters
    ----------
    data
        Aligned cells, interventions and anchors (:meth:`CRLData.from_artifacts`).
    model
        Registered model name, e.g. ``"linear"``.
    params
        Keyword arguments of the model class.
    seed
        Seed of every random choice; fits are deterministic on the CPU for a fixed seed.
    """
    cls = get_model(model)
    log.info(
        "training %s on %d cells x %d features (%d perturbations)",
        model,
        data.n_cells,
        len(data.features),
        len(data.perturbations),
    )
    return cls(**dict(params or {})).fit(data, seed=seed)
