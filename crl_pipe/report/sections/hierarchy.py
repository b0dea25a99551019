"""Section "Concept levels": genes -> programs -> modules, memberships with stability, what each level identifies."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ... import pl
from ...io import read_table
from .._blocks import Table, figure
from .._format import num
from .._inputs import ModelArtifacts, ReportInputs

CAPTION = (
    "Bottom: each program's top anchor genes; middle: programs; top: modules, named by their programs' gene sets"
    " (line width = loading). Arrows are causal edges given the modules (blue raises, orange lowers);"
    " edges a module explains are not drawn."
)

#: Files of rule learn_hierarchy in a model folder.
FILES = ("hierarchy", "module_graph", "graph_given_modules")


def has_hierarchy(inputs: ReportInputs) -> bool:
    """Whether some model's folder holds the outputs of rule learn_hierarchy (else the section is left out)."""
    return any(_learned(m) for m in inputs.models)


def hierarchy_section(inputs: ReportInputs) -> list[dict[str, Any]]:
    """One block per model whose folder holds the hierarchy outputs (rule learn_hierarchy)."""
    return [_block(m, inputs) for m in inputs.models if _learned(m)]


def _learned(m: ModelArtifacts) -> bool:
    return all((m.directory / f"{f}.parquet").exists() for f in FILES)


def _block(m: ModelArtifacts, inputs: ReportInputs) -> dict[str, Any]:
    membership = read_table(m.directory / "hierarchy.parquet", "hierarchy")
    module_graph = read_table(m.directory / "module_graph.parquet", "graph")
    program_graph = read_table(m.directory / "graph_given_modules.parquet", "graph")
    summary_path = m.directory / "hierarchy.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else {}
    level2 = membership[membership["level"] == 2]
    upper = membership[membership["level"] >= 2]  # level 3 and deeper (module -> modules) after level 2
    anchors = membership[membership["level"] == 1]
    names = dict(summary.get("module_names") or {})  # module id -> readable name (its programs' gene sets)
    if "parent_name" in level2:
        names |= {str(p): str(n) for p, n in zip(level2["parent"], level2["parent_name"], strict=True) if pd.notna(n)}

    def named(module: object) -> str:
        return names.get(str(module), str(module))

    genes = {p: ", ".join(g.sort_values("weight", ascending=False)["child"].astype(str).head(3))
             for p, g in anchors.groupby("parent")}  # fmt: skip
    members = Table(
        ["module", "member (level 3 and up: a module)", "top anchor genes of the program", "loading", "stability"],
        [
            [
                named(r.parent),
                named(r.child) if r.level > 2 else str(r.child),
                genes.get(r.child, ""),
                num(r.weight),
                num(r.stability),
            ]
            for r in upper.itertuples(index=False)
        ],  # fmt: skip
        summary=f"Memberships ({len(upper)})",
        numeric=[3, 4],
    )
    explained = program_graph[program_graph["status"] == "explained"] if "status" in program_graph else None
    explained_table = Table(
        ["source", "target", "one-level weight", "explained by"],
        []
        if explained is None
        else [
            [str(r.source), str(r.target), num(r.weight), named(r.explained_by)]
            for r in explained.itertuples(index=False)
        ],  # fmt: skip
        summary=f"Program edges a module explains ({0 if explained is None else len(explained)})",
        numeric=[2],
    )
    ident = Table(
        ["module", "programs", "programs of this module only", "identifiable", "why"],
        [
            [
                named(r["module"]),
                str(r["n_members"]),
                str(r["n_exclusive"]),
                "yes" if r["identifiable"] else "no",
                str(r["reason"]),
            ]
            for r in summary.get("identifiability", [])
        ],  # fmt: skip
        numeric=[1, 2],
    )
    fig = pl.concept_graph(membership, program_graph, module_graph, title=f"{inputs.dataset}: {m.name}")
    return {
        "model": m.name,
        "figure": figure(fig, CAPTION),
        "members": members,
        "explained": explained_table,
        "identifiability": ident,
        "notes": [str(n) for n in summary.get("notes", [])],
        "n_modules": int(level2["parent"].nunique()),
        "module_targets": [f"{r['intervention']} -> {named(r['module'])}" for r in summary.get("module_targets", [])],
    }
