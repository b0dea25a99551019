"""Reading every input layout and reading/writing every artifact."""

from __future__ import annotations

from ._artifacts import SCHEMAS, check_table, read_provenance, read_table, write_table
from ._h5ad import read_h5ad, write_h5ad

__all__ = ["SCHEMAS", "check_table", "read_h5ad", "read_provenance", "read_table", "write_h5ad", "write_table"]
