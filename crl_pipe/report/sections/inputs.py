"""Section "What went in": samples per label, how many targets each carries, quality control."""

from __future__ import annotations

from typing import Any

from ... import pl
from ...pl._cells import cell_counts
from .._blocks import Table, figure
from .._format import count, join
from .._inputs import ReportInputs

QC_CAPTION = (
    "Counts and detected genes per cell. Look for one smooth peak; a second low peak or a long left tail "
    "means empty droplets or dying cells passed filtering."
)


def inputs_section(inputs: ReportInputs) -> dict[str, Any]:
    """Facts, the samples-per-label figure and tables, and the QC figure where it means something."""
    words, labels = inputs.vocabulary, inputs.labels
    counts = cell_counts(labels)
    unit, label = words.samples, words.label
    targets_by_label = labels.drop_duplicates("intervention").set_index("intervention")["targets"]
    n_cells = len(labels)
    per_label = Table(
        [label, "targets", unit, words.control],
        [
            [
                r.intervention,
                join(targets_by_label.get(r.intervention)),
                count(r.n_cells),
                "yes" if r.is_control else "",
            ]
            for r in counts.itertuples(index=False)
        ],
        summary=f"{unit.capitalize()} per {label} ({len(counts)} labels)",
        numeric=[2],
    )
    n_targets = labels["n_targets"].astype(int)
    kinds = [
        (f"{words.control} (0 targets)", n_targets == 0),
        ("single (1 target)", n_targets == 1),
        ("double (2 targets)", n_targets == 2),
        ("3 or more targets", n_targets >= 3),
    ]
    per_kind = Table(
        [f"{unit} with", unit, f"% of {unit}", "labels"],
        [
            [
                name,
                count(int(sel.sum())),
                f"{100 * sel.sum() / max(n_cells, 1):.1f}",
                count(labels.loc[sel, "intervention"].nunique()),
            ]
            for name, sel in kinds
            if sel.any() or name.startswith((words.control, "single"))
        ],
        numeric=[1, 2, 3],
    )
    perturbed = counts.loc[~counts["is_control"], "n_cells"]
    figures = [
        figure(pl.cells_per_perturbation(labels, dataset=inputs.dataset), words.samples_per_label_caption()),
        figure(pl.qc_distribution(inputs.qc, dataset=inputs.dataset), QC_CAPTION) if words.qc_figure else None,
    ]
    facts = {
        "unit": unit,
        "label": label,
        "n_cells": count(n_cells),
        "n_perturbations": count(int((~counts["is_control"]).sum())),
        "n_control": count(int(labels["is_control"].sum())),
        "median_cells": count(float(perturbed.median())) if len(perturbed) else "n/a",
        "min_cells": count(int(perturbed.min())) if len(perturbed) else "n/a",
    }
    return {"facts": facts, "per_kind": per_kind, "per_label": per_label, "figures": figures}
