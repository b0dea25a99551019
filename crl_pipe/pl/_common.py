"""Shared figure machinery: style, palettes, sizing and the target-assignment rule."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axis import Axis
from matplotlib.ticker import FuncFormatter, NullFormatter

from .._errors import InputError

F = TypeVar("F", bound=Callable[..., Any])

#: Okabe-Ito colours (safe for the common colour-vision deficiencies).
BLUE = "#0072B2"
ORANGE = "#D55E00"
GREY = "#999999"
CONTROL = "#E69F00"
NEUTRAL = "#56B4E9"

#: Heatmaps show at most this many rows (the strongest interventions); the caption says so.
HEATMAP_MAX_ROWS = 60

_STYLE = {
    # Names are user data: never let "$...$" in a gene or guide name switch on mathtext.
    "text.parse_math": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "svg.fonttype": "none",
}


def styled(func: F) -> F:
    """Build the figure under the package style (without touching the caller's global rcParams)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with mpl.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def clamp(value: float, low: float, high: float) -> float:
    return float(min(max(value, low), high))


def require_columns(df: pd.DataFrame, columns: list[str], what: str) -> None:
    """Raise :class:`InputError` naming the table and the columns it lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{what}: missing column(s) {missing}; expected at least {columns}")


def ordered_unique(values: pd.Series) -> list[str]:
    """Unique values in order of first appearance (keeps a model's latent order, unlike sorting)."""
    return [str(v) for v in pd.unique(values)]


def assigned_targets(targets: pd.DataFrame) -> pd.DataFrame:
    """The latent(s) each intervention is assigned to, one row per ``(intervention, latent)``.

    Uses the model's ``is_target`` column where present; otherwise the latent with the largest
    ``|score|`` for each intervention. Returns ``intervention, latent, score`` ordered by
    intervention (first appearance) and decreasing ``|score|``.
    """
    require_columns(targets, ["intervention", "latent", "score"], "targets table")
    df = targets[["intervention", "latent", "score"] + (["is_target"] if "is_target" in targets else [])].copy()
    df["abs"] = df["score"].abs().fillna(-np.inf)
    if "is_target" in df:
        picked = df[df["is_target"].fillna(False).astype(bool)]
    else:
        idx = df.groupby("intervention", sort=False)["abs"].idxmax()
        picked = df.loc[idx.dropna()]
    order = {name: i for i, name in enumerate(ordered_unique(targets["intervention"]))}
    picked = picked.assign(_order=picked["intervention"].map(order))
    picked = picked.sort_values(["_order", "abs"], ascending=[True, False], kind="stable")
    return picked[["intervention", "latent", "score"]].reset_index(drop=True)


def plain_log_ticks(axis: Axis) -> None:
    """Plain-number tick labels on a log axis (the default ones need mathtext, which the style turns off)."""
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.10g}"))
    axis.set_minor_formatter(NullFormatter())


def short(label: object, limit: int = 28) -> str:
    """``label`` as text, cut to ``limit`` characters with an ellipsis (tick labels must not squeeze the plot away)."""
    text = str(label)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
