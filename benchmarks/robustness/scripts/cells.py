"""The cells of the robustness atlas from its config: the clean base and each knob at each level."""

from __future__ import annotations

from typing import Any

#: Name of the clean cell every knob departs from.
BASE = "base"


def cell_name(axis: str, level: Any) -> str:
    """File-safe name of ``axis`` at ``level`` (``knockdown-0.5``)."""
    return f"{axis}-{level}"


def cells_of(config: dict) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, cell) -> parameters of every distinct cell; a knob at its base level is the base cell."""
    out = {}
    for kind in ("screen", "robot"):
        if kind not in config:
            continue
        base = dict(config[kind]["base"])
        out[(kind, BASE)] = base
        for axis, levels in config[kind]["axes"].items():
            if axis not in base:
                raise ValueError(f"robustness config: {kind}.axes.{axis} has no value in {kind}.base")
            for level in levels:
                if level != base[axis]:
                    out[(kind, cell_name(axis, level))] = base | {axis: level}
    return out


def cell_of(config: dict, kind: str, axis: str, level: Any) -> str:
    """The cell that holds ``axis`` at ``level`` (the base cell at the base level)."""
    return BASE if level == config[kind]["base"][axis] else cell_name(axis, level)
