"""Write a simulated screen: its counts (h5ad), anchor gene sets (GMT) and truth tables (Parquet)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from .._provenance import provenance
from ..io import write_gmt, write_h5ad, write_h5ad_chunks, write_table
from ._screen import SimulatedScreen


def write_simulation(
    screen: SimulatedScreen,
    *,
    out_h5ad: str | os.PathLike,
    out_gmt: str | os.PathLike,
    out_truth_dir: str | os.PathLike,
    params: Mapping[str, Any] | None = None,
    blocks: Iterable[sp.spmatrix] | None = None,
) -> None:
    """Write the screen (h5ad), its anchor gene sets (GMT) and the truth tables (Parquet); a screen
    with modules adds ``hierarchy``, ``module_graph``, ``module_targets`` and ``modules.parquet``.

    ``blocks``: the counts as CSR blocks of cells (:func:`simulate_screen_chunks`), appended to the
    h5ad one at a time instead of ``screen.adata.X``.
    """
    prov = provenance("simulate", {}, params)
    truth = Path(out_truth_dir)
    write_table(screen.graph.assign(stability=1.0), truth / "graph.parquet", "graph", prov)
    write_table(screen.targets, truth / "targets.parquet", "truth_targets", prov)
    write_table(screen.latents, truth / "latents.parquet", "latents", prov)
    if screen.hierarchy is not None:  # a two-level screen: its modules' truth
        write_module_truth(screen, truth, prov)
    write_gmt(screen.gene_sets, out_gmt)
    if blocks is None:
        write_h5ad(screen.adata, out_h5ad, prov)
        return
    obs, var = screen.adata.obs, screen.adata.var
    with write_h5ad_chunks(out_h5ad, obs, var, prov, max_nnz=len(obs) * len(var)) as out:
        for block in blocks:
            out.append(block)


def write_module_truth(screen: SimulatedScreen, out_truth_dir: str | os.PathLike, prov: Mapping[str, Any]) -> None:
    """The module truth of a two-level screen: ``hierarchy``, ``module_graph``, ``module_targets``, ``modules``."""
    truth = Path(out_truth_dir)
    write_table(screen.hierarchy, truth / "hierarchy.parquet", "hierarchy", prov)
    write_table(screen.module_graph.assign(stability=1.0), truth / "module_graph.parquet", "graph", prov)
    write_table(screen.module_targets, truth / "module_targets.parquet", "truth_module_targets", prov)
    write_table(screen.modules, truth / "modules.parquet", "modules", prov)
