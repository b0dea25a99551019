"""Section "Guides and knockdown": how guides were called and whether each targeted gene went down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ... import pl, tl
from ...io import read_h5ad
from ...pl._guides import MAX_GUIDES_SHOWN, MAX_TARGETS_SHOWN, guide_summary, guides_per_cell_counts
from .._blocks import Table, figure
from .._format import count, num, p_value
from .._inputs import ReportInputs

#: How each calling method reads in the report's sentence "Guides were called ... (by ...)".
METHOD_TEXT = {
    "mixture": "a Poisson background / log-normal signal mixture fitted per guide",
    "threshold": "a fixed UMI threshold",
    "cellranger": "Cell Ranger's own protospacer calls",
}


def guides_section(inputs: ReportInputs) -> dict[str, Any]:
    """Guide-calling figures and tables (when ``guides.parquet`` holds calls) and the knockdown check
    (when ``expression``, the preprocessed h5ad, measures some single target)."""
    calls = inputs.guides
    has_calls = calls is not None and bool(calls["called"].any())
    return {
        "calls": _calls(inputs.dataset, calls, len(inputs.qc)) if has_calls else None,
        "knockdown": _knockdown(inputs.dataset, inputs.labels, inputs.expression) if inputs.expression else None,
    }


def _calls(dataset: str, calls: pd.DataFrame, n_cells: int) -> dict[str, Any]:
    per_cell = guides_per_cell_counts(calls, n_cells)
    total = max(int(per_cell.sum()), 1)
    summary = guide_summary(calls)
    methods = sorted({str(m) for m in summary["method"] if str(m)})
    facts = {
        "single": f"{100 * per_cell.get(1, 0) / total:.1f}%",
        "several": f"{100 * per_cell[per_cell.index >= 2].sum() / total:.1f}%",
        "none": f"{100 * per_cell.get(0, 0) / total:.1f}%",
        "guides": count(len(summary)),
        "median_cells": count(float(summary["n_called"].median())),
        "methods": "; ".join(METHOD_TEXT.get(m, m) for m in methods) or "an unrecorded method",
    }
    umi_caption = (
        "Left: UMI counts of every detected cell-guide pair, grey where no guide was called (background, ambient "
        "RNA) and blue where it was. Right: one row per guide, darker = more cells; the blue tick is the guide's "
        "threshold. Look for two humps per guide, background left and signal right, with the tick between them."
    )
    if len(summary) > MAX_GUIDES_SHOWN:
        umi_caption += f" The {MAX_GUIDES_SHOWN} guides called in most cells are drawn; the table lists all."
    figures = [
        figure(
            pl.guide_calls(calls, dataset=dataset, n_cells=n_cells),
            "Left: cells by number of called guides; in a low-MOI screen most cells should carry exactly one. "
            "Right: cells in which each guide is called, control guides in orange; guides far below the median "
            "give the least reliable estimates.",
        ),
        figure(pl.guide_umis(calls, dataset=dataset), umi_caption),
    ]
    table = Table(
        ["guide", "target", "how called", "UMI threshold", "cells detected", "cells called", "median UMIs (called)"],
        [
            [
                r.guide,
                r.target,
                r.method,
                num(r.threshold) if np.isfinite(r.threshold) else "never called",
                count(r.n_detected),
                count(r.n_called),
                num(r.median_umis_called),
            ]
            for r in summary.itertuples(index=False)
        ],
        summary=f"Guides ({len(summary)}), most called first",
        numeric=[3, 4, 5, 6],
    )
    return {"facts": facts, "figures": figures, "table": table}


def _knockdown(dataset: str, labels: pd.DataFrame, expression: Path) -> dict[str, Any]:
    adata = read_h5ad(expression, backed=True)
    try:
        result = tl.knockdown(adata, labels)
    finally:
        if adata.isbacked:
            adata.file.close()
    if result.empty:
        return {"figure": None, "table": None, "summary": ""}
    lower = int((result["log_fc"] < 0).sum())
    significant = int(((result["log_fc"] < 0) & (result["p_value"] < 0.05)).sum())
    caption = (
        "Left: mean expression of each targeted gene in the cells carrying its perturbation (blue) and in the "
        "control cells (orange). Right: the perturbed cells' expression as a percentage of the controls'. "
        "CRISPRi/knockout should pull blue left of orange; a target that does not move suggests weak guides or "
        "mislabelled cells."
    )
    if len(result) > MAX_TARGETS_SHOWN:
        caption += f" The {MAX_TARGETS_SHOWN} strongest and weakest of {len(result)} are drawn; the table lists all."
    table = Table(
        [
            "perturbation",
            "gene",
            "cells",
            "control cells",
            "mean perturbed",
            "mean control",
            "log fold change",
            "% remaining",
            "p-value",
        ],
        [
            [
                r.intervention,
                r.gene,
                count(r.n_cells),
                count(r.n_control),
                num(r.mean_perturbed),
                num(r.mean_control),
                num(r.log_fc),
                f"{100 * r.remaining:.0f}" if np.isfinite(r.remaining) else "n/a",
                p_value(r.p_value),
            ]
            for r in result.itertuples(index=False)
        ],
        summary=f"Knockdown per targeted gene ({len(result)}), strongest first",
        numeric=[2, 3, 4, 5, 6, 7, 8],
    )
    return {
        "figure": figure(pl.knockdown(result, dataset=dataset), caption),
        "table": table,
        "summary": f"{lower} of {len(result)} measured target genes are lower in their perturbed cells than in the "
        f"controls ({significant} with p < 0.05, two-sided Mann-Whitney U test).",
    }
