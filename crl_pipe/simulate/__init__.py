"""Simulators with known causes: Perturb-seq screens over a latent causal graph, robot logs with commanded joints."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._provenance import provenance
from ._robot import SimulatedRobot, simulate_arm, simulate_robot, write_robot_simulation
from ._data import screen_to_crl_data
from ._screen import CONTROL_LABEL, SimulatedScreen, simulate_screen

__all__ = [
    "CONTROL_LABEL",
    "SimulatedRobot",
    "SimulatedScreen",
    "simulate_arm",
    "simulate_robot",
    "screen_to_crl_data",
    "simulate_screen",
    "write_robot_simulation",
    "write_simulation",
]


def write_simulation(
    screen: SimulatedScreen,
    *,
    out_h5ad: str | os.PathLike,
    out_gmt: str | os.PathLike,
    out_truth_dir: str | os.PathLike,
    params: Mapping[str, Any] | None = None,
) -> None:
    """Write the screen (h5ad), its anchor gene sets (GMT) and the truth tables (Parquet)."""
    from ..io import write_gmt, write_h5ad, write_table

    prov = provenance("simulate", {}, params)
    truth = Path(out_truth_dir)
    write_table(screen.graph.assign(stability=1.0), truth / "graph.parquet", "graph", prov)
    write_table(screen.targets, truth / "targets.parquet", "truth_targets", prov)
    write_table(screen.latents, truth / "latents.parquet", "latents", prov)
    write_gmt(screen.gene_sets, out_gmt)
    write_h5ad(screen.adata, out_h5ad, prov)
