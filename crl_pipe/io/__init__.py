"""Reading every input layout and reading/writing every artifact."""

from __future__ import annotations

from ._artifacts import SCHEMAS, check_table, read_provenance, read_table, write_table
from ._gmt import read_gmt, write_gmt
from ._graph import read_graph, write_graphml
from ._h5ad import read_h5ad, write_h5ad
from ._screen import read_screen

__all__ = [
    "SCHEMAS",
    "check_table",
    "read_gmt",
    "read_graph",
    "read_h5ad",
    "read_provenance",
    "read_screen",
    "read_table",
    "write_gmt",
    "write_graphml",
    "write_h5ad",
    "write_table",
]
