"""Section "Programs": each program's anchor genes, dropped gene sets, each model's top features per latent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ...pl._common import ordered_unique
from .._blocks import Table, Token
from .._format import count
from .._inputs import ModelArtifacts, ReportInputs

TOP_GENES = 10
MAX_ANCHORS_SHOWN = 15


def programs_section(inputs: ReportInputs) -> dict[str, Any]:
    """The anchors table, the dropped programs and, per model with loadings, its top features per latent."""
    anchors = inputs.anchors.assign(
        program=inputs.anchors["program"].astype(str), feature=inputs.anchors["feature"].astype(str)
    )
    rows = []
    for program, group in anchors.groupby("program", sort=False):
        group = group.sort_values("weight", ascending=False, kind="stable")
        genes = [Token(g) for g in group["feature"].head(MAX_ANCHORS_SHOWN)]
        if len(group) > MAX_ANCHORS_SHOWN:
            genes.append(Token(f"+ {len(group) - MAX_ANCHORS_SHOWN} more"))
        rows.append([program, count(len(group)), genes])
    programs = Table(
        ["program", "anchor genes", "anchors (highest weight first)"],
        rows,
        summary=f"Programs ({len(rows)})",
        numeric=[1],
    )
    dropped_records = inputs.anchor_provenance.get("dropped_programs") or []
    dropped = Table(
        ["program", "genes in set", "genes in data", "reason"],
        [
            [str(r.get("program", "")), count(r.get("n_in_set")), count(r.get("n_in_data")), str(r.get("reason", ""))]
            for r in dropped_records
            if isinstance(r, Mapping)
        ],
        summary=f"Dropped programs ({len(dropped_records)})",
        numeric=[1, 2],
    )
    return {
        "programs": programs,
        "dropped": dropped,
        **_set_aside(anchors, inputs),
        "loadings": [_top_features(m, anchors, inputs) for m in inputs.models if m.loadings is not None],
        "models_without_loadings": [m.name for m in inputs.models if m.loadings is None],
    }


def _set_aside(anchors: pd.DataFrame, inputs: ReportInputs) -> dict[str, Any]:
    """Per model that checks its anchors (``model.json``: ``extra.anchor_sets``), the anchors it set aside."""
    listed = {p: list(g["feature"]) for p, g in anchors.groupby("program", sort=False)}
    checked, rows = [], []
    for m in inputs.models:
        kept = (m.meta.get("extra") or {}).get("anchor_sets")
        if not isinstance(kept, Mapping) or not kept:
            continue
        checked.append(m.name)
        for program, genes in kept.items():
            used = set(map(str, genes))
            aside = [g for g in listed.get(str(program), []) if g not in used]
            if aside:
                rows.append([m.name, str(program), count(len(aside)), [Token(g) for g in aside]])
    table = Table(
        ["model", "program", "set aside", "anchors whose shifts do not follow the program's"],
        rows,
        summary=f"Anchors set aside ({len(rows)} programs)",
        numeric=[2],
    )
    return {"anchors_checked_by": checked, "set_aside": table}


def _top_features(m: ModelArtifacts, anchors: pd.DataFrame, inputs: ReportInputs) -> dict[str, Any]:
    """A model's top features by |loading| per latent (anchors in bold), and the program each overlaps most."""
    unit = inputs.vocabulary.features
    anchor_sets = {p: set(g["feature"]) for p, g in anchors.groupby("program", sort=False)}
    all_anchors = set(anchors["feature"])
    table = m.loadings.assign(latent=m.loadings["latent"].astype(str), feature=m.loadings["feature"].astype(str))
    table = table.assign(abs=table["loading"].abs()).sort_values("abs", ascending=False, kind="stable")
    order = [n for n in m.latent_names if n in set(table["latent"])]
    order += [n for n in ordered_unique(table["latent"]) if n not in set(order)]
    top = table.groupby("latent", sort=False).head(TOP_GENES)
    rows = []
    for latent in order:
        genes = list(top.loc[top["latent"] == latent, "feature"])
        rows.append([latent, [Token(g, g in all_anchors) for g in genes], _best_program(genes, anchor_sets)])
    header = ["latent", f"top {TOP_GENES} {unit} by |loading|"]
    if inputs.vocabulary.closest_program:
        header = [header[0], f"{header[1]} (anchor genes in bold)", "closest program (anchors among top genes)"]
    else:  # each variable is its own anchor channel: the closest program says nothing
        rows = [row[:2] for row in rows]
    return {
        "model": m.name,
        "unit": unit,
        "table": Table(header, rows, summary=f"{m.name}: top {unit} per latent ({len(rows)} latents)"),
    }


def _best_program(genes: list[str], anchor_sets: Mapping[str, set[str]]) -> str:
    overlap = {p: len(s.intersection(genes)) for p, s in anchor_sets.items()}
    best = max(overlap, key=lambda p: overlap[p], default=None)
    if best is None or overlap[best] == 0:
        return "none"
    return f"{best} ({overlap[best]}/{len(genes)})"
