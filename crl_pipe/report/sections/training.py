"""Section "Training curves": loss per epoch of each model trained over several epochs."""

from __future__ import annotations

from typing import Any

from ... import pl
from .._blocks import figure
from .._inputs import ReportInputs

CAPTION = (
    "Loss per epoch for each split. Look for curves that flatten out; a validation loss that rises while "
    "the training loss falls means overfitting."
)


def training_section(inputs: ReportInputs) -> dict[str, Any]:
    """A curve per model trained over several epochs; the names of those fitted in one step."""
    figures, single = [], []
    for m in inputs.models:
        if m.training is None or m.training["epoch"].nunique() <= 1:
            single.append(m.name)
            continue
        fig = pl.training_curves(m.training, title=f"{inputs.dataset}: {m.name}: training loss")
        figures.append({"model": m.name, "figure": figure(fig, CAPTION)})
    return {"figures": figures, "single": single}
