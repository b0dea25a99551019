"""How the report writes numbers, counts, lists and parameters in its tables."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from .._provenance import _jsonable


def num(value: Any) -> str:
    """A value with three significant digits; ``n/a`` for missing or non-numeric values."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if x != x:
        return "n/a"
    return f"{x:.3g}"


def count(value: Any) -> str:
    """A whole number with thousands separators (``12,345``); ``n/a`` for missing values."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{x:,.0f}" if x == x else "n/a"


def join(values: Any) -> str:
    """The items of a list cell (targets, perturbations) separated by commas; empty for a missing cell."""
    if values is None or isinstance(values, float):
        return ""
    return ", ".join(str(v) for v in values)


def compact_json(value: Any) -> str:
    """Parameters on one line, keys sorted; empty when there are none."""
    return json.dumps(_jsonable(value), sort_keys=True, separators=(", ", ": ")) if value else ""


def natural_sorted(names: list[str]) -> list[str]:
    """``P2`` before ``P10``: digits compare as numbers."""
    return sorted(names, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])


def p_value(p: float) -> str:
    """A p-value in scientific notation, floored at ``< 1e-300``."""
    if not np.isfinite(p):
        return "n/a"
    return "< 1e-300" if p < 1e-300 else f"{p:.1e}"
