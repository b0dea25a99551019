"""Reading every input layout and reading/writing every artifact."""

from __future__ import annotations

from ._artifacts import SCHEMAS, check_table, empty_table, read_model_meta, read_provenance, read_table, write_table
from ._chunked import (
    CHUNKED,
    IN_MEMORY,
    H5adRows,
    ScreenChunks,
    Storage,
    is_large,
    is_large_screen,
    read_h5ad_parts,
    storage_for,
    storage_for_screen,
    write_h5ad_chunks,
)
from ._export import to_anndata
from ._gmt import read_gmt, write_gmt
from ._graph import read_graph, write_graphml
from ._guides import read_guide_counts, read_guide_map
from ._h5ad import read_h5ad, write_h5ad
from ._lerobot import read_lerobot, write_lerobot
from ._robot import read_robot
from ._rosbag import read_rosbag
from ._screen import read_screen
from ._table import read_robot_table
from ._tenx import read_10x
from ._variables import read_variable_table

__all__ = [
    "CHUNKED",
    "IN_MEMORY",
    "H5adRows",
    "SCHEMAS",
    "ScreenChunks",
    "Storage",
    "check_table",
    "empty_table",
    "is_large",
    "is_large_screen",
    "read_10x",
    "read_gmt",
    "read_graph",
    "read_guide_counts",
    "read_guide_map",
    "read_h5ad",
    "read_h5ad_parts",
    "read_lerobot",
    "read_model_meta",
    "read_provenance",
    "read_robot",
    "read_robot_table",
    "read_rosbag",
    "read_screen",
    "read_variable_table",
    "storage_for",
    "storage_for_screen",
    "read_table",
    "to_anndata",
    "write_gmt",
    "write_graphml",
    "write_h5ad",
    "write_h5ad_chunks",
    "write_lerobot",
    "write_table",
]
