"""What the sections hand to the templates: tables, words of a table cell, embedded figures."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

#: Tables with more rows than this start collapsed.
OPEN_TABLE_ROWS = 15


@dataclass
class Token:
    """One word of a table cell; ``strong`` renders it bold (the text itself is always escaped)."""

    text: str
    strong: bool = False


@dataclass
class Table:
    """A plain table for the template: a header row and rows of cells (str or list of :class:`Token`).

    ``summary`` is the line a collapsible table shows when closed; ``numeric`` the indices of the
    right-aligned columns.
    """

    headers: list[str]
    rows: list[list[Any]]
    summary: str = ""
    numeric: list[int] = field(default_factory=list)

    @property
    def collapsed(self) -> bool:
        return len(self.rows) > OPEN_TABLE_ROWS


@dataclass
class FigureBlock:
    """An embedded figure: the PNG as a data URI and the one-line caption saying what to look for."""

    uri: str
    caption: str


def figure(fig: Figure, caption: str) -> FigureBlock:
    """Embed ``fig`` as a PNG data URI (100 dpi, no software tag) and close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)
    return FigureBlock("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), caption)
