"""Targets and latent graph read from intervention mean shifts of latents, as the linear model reads them.

Any model whose latents are (close to) linear in the true programs can hand its per-cell latents,
in control standard deviations, to :meth:`ShiftReadout._fit_shift_graph` and get the same
``get_targets``/``get_adjacency`` semantics as ``linear``: score = exogenous shift ``(I - B) d``
in control SD units, ``z_score`` = score / its standard error, ``is_target``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._data import CRLData
from .linear import LinearSEM, _group_shifts, _residual

READOUT_DEFAULTS: dict[str, Any] = {"edge_threshold": 0.15, "ridge": 1e-3, "max_iter": 20, "min_target_z": 3.0}


class ShiftReadout:
    """Mixin for a :class:`CRLModel` whose ``params`` hold the keys of :data:`READOUT_DEFAULTS`."""

    params: dict[str, Any]
    intervention_names: list[str]

    def _fit_shift_graph(self, scores: np.ndarray, data: CRLData) -> float:
        """Targets and graph from ``scores`` (cells x latents, controls at mean 0, SD 1); returns the residual."""
        labels, shifts, counts = _group_shifts(scores, data)
        self.intervention_names = labels
        n_targets = [max(1, len(data.targets.get(lab, ()))) for lab in labels]
        # the linear model's alternation of peeling order, graph fit and target assignment, verbatim
        solver = LinearSEM(**{key: self.params[key] for key in READOUT_DEFAULTS})
        B, targets = solver._alternate(shifts, counts, n_targets)
        exo = shifts @ (np.eye(scores.shape[1]) - B).T
        se = np.sqrt(1.0 / counts + 1.0 / data.is_control.sum())
        self.register_buffer("B", torch.tensor(B))
        self.register_buffer("exogenous_shift", torch.tensor(exo))
        self.register_buffer("shift_se", torch.tensor(se))
        self.register_buffer("target_mask", torch.tensor(targets))
        return _residual(shifts, counts, targets, B)

    # same buffers, same tables: reuse the linear model's readers rather than copy them
    get_targets = LinearSEM.get_targets
    get_adjacency = LinearSEM.get_adjacency
