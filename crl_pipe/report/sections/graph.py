"""Section "Causal graph among programs": each model's graph beside the truth, its edges, what is identifiable."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ... import pl
from ..._constants import MISFIT_WARNING, STARVED_COUNTS, STARVED_WARNING
from ...io import read_table
from ...pl._common import ordered_unique
from ...tl import identifiability
from .._blocks import Table, Token, figure
from .._format import count, join, natural_sorted, num
from .._inputs import ModelArtifacts, ReportInputs

CAPTION = (
    "Arrows point from cause to effect; thick = strong, blue = raises, orange = lowers the target program, "
    "faint = kept by few refits, dashed = tentative (the table says why). Trust the solid arrows."
)
DRIVERS_CAPTION = (
    "Rows are the causal variables, columns the observed causes (commands); boxes mark each row's "
    "strongest cause. A diagonal of boxes means each command drives its own variable."
)


def graph_section(inputs: ReportInputs) -> list[dict[str, Any]]:
    """One block per model and baseline: the graph figure, its edge table, and (for models of a screen)
    which programs and edges these data can identify (:func:`crl_pipe.tl.identifiability`)."""
    identifiable = {
        m.name: identifiability(inputs.labels, m.targets, list(m.latent_names), inputs.anchors, m.graph)
        for m in inputs.models
    }
    return [_block(i, m, inputs, identifiable.get(m.name)) for i, m in enumerate(inputs.fitted)]


def _block(
    i: int, m: ModelArtifacts, inputs: ReportInputs, identifiable: tuple[pd.DataFrame, pd.DataFrame] | None
) -> dict[str, Any]:
    dataset, truth = inputs.dataset, inputs.truth
    nodes = list(m.latent_names)
    graph, true_graph = m.graph, truth
    shown = _natural_sorted_nodes(truth) if truth is not None else None
    observed = set(m.graph["source"]) - set(nodes)  # commands of a robot log: the drivers heatmap shows them
    if observed:
        if truth is not None:
            observed |= set(truth["source"]) - set(nodes)
            true_graph = truth[~truth["source"].isin(observed)]
            shown = [n for n in shown if n not in observed]
        graph = m.graph[~m.graph["source"].isin(observed)]
    if truth is not None:
        fig = pl.graph_comparison(graph, true_graph, dataset=dataset, model=m.name, nodes=nodes, truth_nodes=shown)
        text = CAPTION + " The true graph is on the right; its programs have their own names (the metrics match them)."
    else:
        among = "variables" if observed else "programs"
        fig = pl.causal_graph(graph, title=f"{dataset}: {m.name}: causal graph among {among}", nodes=nodes)
        text = CAPTION
    if observed:
        text += " Only edges among the causal variables are drawn; the commands' edges are in the heatmap below."
    if "undirected" in m.graph and m.graph["undirected"].any():
        text += " Arrows both ways mark edges the method left undirected (the data do not orient them)."
    n_explained, n_pairs = _n_explained_by_modules(m)
    text += _explained_by_modules(n_explained)
    programs, support = identifiable or (None, None)
    table = _edge_table(m, support)
    edges = m.graph
    if "lag" in edges and edges["lag"].notna().any():  # a model with a time axis: which edges are instantaneous
        table = _with_lags(table, _by_stability(m))
        text += " In the table, lag 0 marks an instantaneous (same-frame) edge; a pair can have a lagged edge too."
    block = {"id": f"graph-{i + 1}", "model": m.name, "figure": figure(fig, text), "table": table, "drivers": None}
    block["misfit"] = _misfit_warning(m, n_explained, n_pairs)
    block["starved"] = _starved_warning(m)
    # anchors and single-target perturbations identify screen programs; a robot's variables are measured
    block["identifiability"] = (
        _identifiability_block(programs, support) if programs is not None and not observed else None
    )
    if (~m.graph["source"].isin(m.latent_names) & m.graph["target"].isin(m.latent_names)).any():
        drive = pl.observed_causes(
            m.graph, list(m.latent_names), title=f"{dataset}: {m.name}: what drives each variable"
        )
        block["drivers"] = figure(drive, DRIVERS_CAPTION)
    return block


def _starved_warning(m: ModelArtifacts) -> str | None:
    """A warning when programs took over nearly the whole library of many cells (``starved_cells``)."""
    share = (m.meta.get("extra") or {}).get("starved_cells")
    if share is None or share <= STARVED_WARNING:
        return None
    return (
        f"Programs took over nearly the whole library in {share:.0%} of the cells: {STARVED_COUNTS} counts or fewer"
        " were left on the genes no program drives, which size each cell. Such a cell says little about the programs"
        f" that lost their counts. On simulated screens with more than {STARVED_WARNING:.0%} of such cells linear's"
        " graph missed the truth by 12 edges or more (by 8 or fewer up to a third), so read this graph as a sketch."
    )


def _misfit_warning(m: ModelArtifacts, n_explained: int = 0, n_pairs: int = 0) -> str | None:
    """A warning when the model's graph equations leave too much of the perturbations' shifts unexplained;
    it points to the concept levels when they explain program pairs by a module (``n_pairs``), of which
    ``n_explained`` are edges of this graph."""
    misfit = (m.meta.get("extra") or {}).get("equation_misfit")
    if misfit is None or misfit <= MISFIT_WARNING:
        return None
    leaves = (
        f"its equations leave {misfit:.0%} of the perturbations' shifts on programs they do not target"
        f" unexplained (under {MISFIT_WARNING:.1%} on every simulated screen without modules where linear drew the"
        " graph within an edge)"
    )
    if n_pairs:
        explained = (
            f"modules explain {_edges(n_explained)} here"
            if n_explained
            else f"modules explain the shifts of {_pairs(n_pairs)}, none drawn as an edge here"
        )
        return (
            f"Read this graph with the concept levels: {leaves}. Perturbations that act on a module move all its"
            f" programs, which one level can only draw as edges among them: {explained}."
        )
    return (
        f"Do not trust this graph yet: {leaves}. The programs, the targets or the linear mean-shift equations"
        " do not hold here; every edge, confident or not, is a lead to check."
    )


def _n_explained_by_modules(m: ModelArtifacts) -> tuple[int, int]:
    """How many of this graph's edges the hierarchy explains by a module, and how many program pairs in all
    (``graph_given_modules.parquet``: the hierarchy's own program graph, which can hold pairs this one drops)."""
    path = m.directory / "graph_given_modules.parquet"
    if not path.exists():
        return 0, 0
    given = read_table(path, "graph")
    if "status" not in given:
        return 0, 0
    explained = given[given["status"] == "explained"]
    drawn = set(zip(m.graph["source"], m.graph["target"], strict=True))
    in_graph = sum(pair in drawn for pair in zip(explained["source"], explained["target"], strict=True))
    return in_graph, len(explained)


def _edges(n: int) -> str:
    return "1 edge" if n == 1 else f"{n} edges"


def _pairs(n: int) -> str:
    return "1 program pair" if n == 1 else f"{n} program pairs"


def _explained_by_modules(n: int) -> str:
    """A pointer to Concept levels when the hierarchy explains ``n`` of these edges by a module."""
    if not n:
        return ""
    verb, pronoun = ("is", "it") if n == 1 else ("are", "them")
    return (
        f" {_edges(n)} of this graph {verb} explained by a module (Concept levels, below): read {pronoun} as the"
        " module's effect, not as an arrow between programs."
    )


def _natural_sorted_nodes(truth: pd.DataFrame) -> list[str]:
    return natural_sorted(ordered_unique(pd.concat([truth["source"], truth["target"]])))


def _by_stability(m: ModelArtifacts) -> pd.DataFrame:
    """Confident edges first, then the most stable and strongest."""
    graph = m.graph.assign(abs=m.graph["weight"].abs())
    graph = graph.assign(sure=graph["confidence"] == "confident") if "confidence" in graph else graph.assign(sure=True)
    return graph.sort_values(["sure", "stability", "abs"], ascending=False, kind="stable")


def _edge_table(m: ModelArtifacts, support: pd.DataFrame | None) -> Table:
    supported_by = (
        support.assign(source=support["source"].astype(str), target=support["target"].astype(str))
        .drop_duplicates(["source", "target"])
        .set_index(["source", "target"])["supported_by"]
        if support is not None and len(support)
        else pd.Series(dtype=str)
    )
    edges = _by_stability(m)
    return Table(
        ["source", "target", "weight", "stability", "call", "supported by (perturbations of the source alone)"],
        [
            [str(r.source), str(r.target), num(r.weight), f"{r.stability:.2f}", _call_cell(r),
             _edge_support_cell(supported_by.get((str(r.source), str(r.target))))]
            for r in edges.itertuples(index=False)
        ],
        summary=f"{m.name}: edges ({len(edges)}): {_call_summary(edges)}",
        numeric=[2, 3],
    )  # fmt: skip


def _call_cell(edge: Any) -> list[Token] | str:
    """``confident`` in bold, or ``tentative`` with why (weak, unstable, orientation undecided)."""
    confidence = getattr(edge, "confidence", None)
    if confidence is None or pd.isna(confidence):
        return "not assessed (a baseline, or a graph written before confidence calls)"
    if confidence == "confident":
        return [Token("confident", strong=True)]
    return f"tentative: {edge.reason}"


def _call_summary(edges: pd.DataFrame) -> str:
    """How many edges are confident, and the stability selection bound on false edges among them."""
    if "confidence" not in edges or edges["confidence"].isna().all():
        return "most stable first"
    confident = edges[edges["confidence"] == "confident"]
    text = f"{len(confident)} confident, {len(edges) - len(confident)} tentative"
    bound = pd.to_numeric(confident["false_edges_bound"], errors="coerce").max() if len(confident) else float("nan")
    if pd.notna(bound):
        text += f"; expected false edges among the confident ones at most {bound:.2g} (stability selection bound)"
    return text


def _with_lags(table: Table, edges: pd.DataFrame) -> Table:
    """``table`` with a lag column after the weight (0 = instantaneous)."""
    lags = ["" if pd.isna(lag) else ("0 (instantaneous)" if lag == 0 else str(int(lag))) for lag in edges["lag"]]
    return Table(
        [*table.headers[:3], "lag (frames)", *table.headers[3:]],
        [[*row[:3], lag, *row[3:]] for row, lag in zip(table.rows, lags, strict=True)],
        summary=table.summary,
        numeric=[2, 4],
    )


def _edge_support_cell(support: str | None) -> list[Token] | str:
    if support is None:
        return ""
    if support == "nothing":
        return [Token("nothing: rests on the model's assumptions", strong=True)]
    return support


def _identifiability_block(programs: pd.DataFrame, edges: pd.DataFrame) -> dict[str, Any]:
    rows = [
        [
            str(r.program),
            count(r.n_anchors),
            join(r.single_target) or "none",
            count(r.single_target_cells),
            join(r.multi_target) or "none",
            [Token(r.explanation, strong=r.verdict == "nothing")],
        ]
        for r in programs.itertuples(index=False)
    ]
    n_ok = int((programs["verdict"] == "identified").sum())
    n_bare = int(edges["rests_on_nothing"].sum()) if len(edges) else 0
    summary = f"{n_ok} of {len(programs)} programs are fully identifiable"
    if len(edges):
        summary += f"; {n_bare} of {len(edges)} edges rest on no intervention of their cause"
    table = Table(
        [
            "program",
            "anchor genes",
            "single-target perturbations",
            "their cells",
            "multi-target perturbations",
            "what holds",
        ],
        rows,
        summary=f"Identifiability per program ({len(programs)} programs)",
        numeric=[1, 3],
    )
    return {"summary": summary, "table": table}
