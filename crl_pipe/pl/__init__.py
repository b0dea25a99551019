"""Figures: one function per figure, each returning a :class:`matplotlib.figure.Figure`.

The report (:mod:`crl_pipe.report`) assembles them; each can also be called on its own table::

    import crl_pipe
    fig = crl_pipe.pl.target_heatmap(crl_pipe.io.read_table("targets.parquet", "targets"), title="demo: linear")
    fig.savefig("targets.png")

Figures are created through :mod:`matplotlib.pyplot`; close them (``plt.close(fig)``) when done.
"""

from __future__ import annotations

from ._camera import latent_frames, latent_traversal
from ._cells import cells_per_perturbation
from ._graph import causal_graph, graph_comparison
from ._guides import guide_calls, guide_umis, knockdown
from ._heatmap import target_heatmap
from ._hierarchy import concept_graph
from ._observed import n_self_driven, observed_causes, strongest_observed_causes
from ._qc import qc_distribution
from ._steering import steering_rollout
from ._training import training_curves

__all__ = [
    "causal_graph",
    "concept_graph",
    "cells_per_perturbation",
    "graph_comparison",
    "guide_calls",
    "guide_umis",
    "knockdown",
    "latent_frames",
    "latent_traversal",
    "n_self_driven",
    "observed_causes",
    "qc_distribution",
    "steering_rollout",
    "strongest_observed_causes",
    "target_heatmap",
    "training_curves",
]
