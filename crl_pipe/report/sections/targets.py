"""Section "Which program each perturbation hits": per model, the target heatmap and the assignment."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ... import pl
from ...pl._cells import cell_counts
from ...pl._common import HEATMAP_MAX_ROWS, assigned_targets, ordered_unique
from .._blocks import Table, figure
from .._format import count, join, num
from .._inputs import ReportInputs

CAPTION = (
    "Rows are perturbations, columns latent programs; red raises and blue lowers the program, boxes mark the "
    "program the model assigns. Look for one strong box per row and few strong unboxed cells."
)


def targets_section(inputs: ReportInputs) -> dict[str, Any]:
    """One heatmap per model and one table of every perturbation's assigned program(s) per model."""
    blocks = []
    assigned: dict[str, pd.DataFrame] = {}
    for m in inputs.models:
        assigned[m.name] = assigned_targets(m.targets)
        n = m.targets["intervention"].nunique()
        caption = CAPTION
        if n > HEATMAP_MAX_ROWS:
            caption += (
                f" Only the {HEATMAP_MAX_ROWS} of {n} perturbations with the strongest effect are drawn;"
                " the table below lists all."
            )
        fig = pl.target_heatmap(m.targets, title=f"{inputs.dataset}: {m.name}: which program each perturbation hits")
        blocks.append({"model": m.name, "figure": figure(fig, caption)})
    labels = inputs.labels
    counts = cell_counts(labels).set_index("intervention")["n_cells"]
    targets_by_label = labels.drop_duplicates("intervention").set_index("intervention")["targets"]
    names: list[str] = []
    for m in inputs.models:
        names += [i for i in ordered_unique(m.targets["intervention"]) if i not in set(names)]
    rows = []
    for name in names:
        row: list[Any] = [name, join(targets_by_label.get(name)), count(counts.get(name, 0))]
        for m in inputs.models:
            hits = assigned[m.name][assigned[m.name]["intervention"] == name]
            row.append(", ".join(f"{r.latent} ({num(r.score)})" for r in hits.itertuples(index=False)) or "none")
        rows.append(row)
    table = Table(
        ["perturbation", "targets", "cells", *[f"{m.name}: assigned program (score)" for m in inputs.models]],
        rows,
        summary=f"Assigned program of each perturbation ({len(rows)} perturbations)",
        numeric=[2],
    )
    return {"blocks": blocks, "table": table}
