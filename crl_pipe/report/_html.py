"""Assemble the self-contained HTML report of one dataset across its models.

Every figure comes from :mod:`crl_pipe.pl` and is embedded as a base64 PNG data URI built here;
every string from the data (gene, guide, program, model, dataset names, config values) reaches
the page only through Jinja2 with autoescaping on, never marked safe. The page loads nothing:
no external CSS, JavaScript, fonts or images.
"""

from __future__ import annotations

import base64
import io
import json
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import jinja2
import matplotlib.pyplot as plt
import pandas as pd
import yaml
from matplotlib.figure import Figure

from .. import __version__, pl
from .._errors import InputError
from .._provenance import _jsonable, atomic_path
from ..io import read_provenance, read_table
from ..pl._cells import cell_counts
from ..pl._common import HEATMAP_MAX_ROWS, assigned_targets, ordered_unique, require_columns

PathLike = str | os.PathLike

#: Section anchors and headings, in page order (the table of contents); numbered when rendered.
SECTIONS: list[tuple[str, str]] = [
    ("inputs", "What went in"),
    ("guides", "Guides and knockdown"),
    ("targets", "Which program each perturbation hits"),
    ("programs", "Programs"),
    ("graph", "Causal graph among programs"),
    ("metrics", "Metrics"),
    ("training", "Training curves"),
    ("run", "How this was run"),
]
#: Sections a robot log's report leaves out (it has no guides).
ROBOT_OMITS = {"guides"}

#: Packages whose versions the report records (looked up without importing them).
VERSION_PACKAGES = [
    "crl-pipe",
    "torch",
    "scanpy",
    "anndata",
    "snakemake",
    "numpy",
    "pandas",
    "pyarrow",
    "matplotlib",
    "seaborn",
    "networkx",
]

#: What a metric means and which way is better, matched on the lower-cased metric name.
METRIC_HELP: list[tuple[str, str]] = [
    (
        "heldout_r2_delta",
        "held-out combinations: R² of predicted vs observed changes from the control mean of the "
        "20 most changed genes; 1 = perfect; the baselines: Held-out combinations below",
    ),
    (
        "heldout_r2",
        "held-out combinations: R² of predicted vs observed mean expression (all genes, or the 20 most "
        "changed); 1 = perfect; the baselines: Held-out combinations below",
    ),
    ("heldout_n_labels", "held-out combinations scored (averaged in the heldout_ rows)"),
    (
        "r2_offdiag",
        "largest R² of a latent with a true variable other than its own; low = disentangled "
        "(a true variable driven by another raises it legitimately)",
    ),
    ("r2_diag", "mean R² of each latent with its matched true variable; 1 = perfect"),
    ("mcc", "mean correlation between recovered and true programs after matching; 1 = perfect"),
    ("instantaneous_recall", "fraction of the true instantaneous (lag-0) edges recovered as lag-0 edges; 1 = perfect"),
    ("instantaneous_precision", "fraction of the recovered lag-0 edges that are true lag-0 edges; 1 = perfect"),
    ("shd", "structural Hamming distance to the true graph (edges to add, remove or flip); 0 = perfect"),
    ("target", "fraction of perturbations assigned to their true program; 1 = perfect"),
    ("mmd", "maximum mean discrepancy between predicted and held-out cells; 0 = perfect"),
    ("auroc", "area under the ROC curve of edge scores against true edges; 1 = perfect, 0.5 = chance"),
    ("auprc", "area under the precision-recall curve of edge scores; 1 = perfect"),
    ("precision", "fraction of recovered edges that are true; 1 = perfect"),
    ("recall", "fraction of true edges recovered; 1 = perfect"),
    ("f1", "harmonic mean of edge precision and recall; 1 = perfect"),
]

TOP_GENES = 10
MAX_ANCHORS_SHOWN = 15
OPEN_TABLE_ROWS = 15

_TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Token:
    """One word of a table cell; ``strong`` renders it bold (the text itself is always escaped)."""

    text: str
    strong: bool = False


@dataclass
class Table:
    """A plain table for the template: a header row and rows of cells (str or list of :class:`Token`)."""

    headers: list[str]
    rows: list[list[Any]]
    summary: str = ""
    numeric: list[int] = field(default_factory=list)

    @property
    def collapsed(self) -> bool:
        return len(self.rows) > OPEN_TABLE_ROWS


@dataclass
class FigureBlock:
    """An embedded figure: the PNG as a data URI and the one-line caption saying what to look for."""

    uri: str
    caption: str


@dataclass
class ModelArtifacts:
    """Everything the report reads from one model directory."""

    name: str
    directory: Path
    targets: pd.DataFrame
    graph: pd.DataFrame
    training: pd.DataFrame | None
    metrics: pd.DataFrame | None
    loadings: pd.DataFrame | None
    meta: dict[str, Any]
    latent_names: list[str]
    files: dict[str, Path]
    predictions: pd.DataFrame | None = None


def write_report(
    out_html: PathLike,
    *,
    dataset: str,
    interventions: PathLike,
    qc: PathLike,
    anchors: PathLike,
    model_dirs: Mapping[str, PathLike],
    truth_graph: PathLike | None = None,
    config: Mapping[str, Any] | None = None,
    baseline_dirs: Mapping[str, PathLike] | None = None,
    guides: PathLike | None = None,
    expression: PathLike | None = None,
) -> Path:
    """Write the report of ``dataset`` to ``out_html`` (one file; figures embedded; no network needed).

    Parameters
    ----------
    out_html
        Where to write the HTML file (atomically: no partial file is left on error).
    dataset
        Dataset name, shown in the page and figure titles.
    interventions, qc, anchors
        Paths of ``interventions.parquet``, ``qc.parquet`` and ``anchors.parquet``.
    model_dirs
        Model name -> its results folder (``targets``, ``graph``, ``training``, ``latents``,
        ``model.json``; ``metrics`` and ``loadings`` where present).
    truth_graph
        Edge list (``source, target, weight``; any layout :func:`crl_pipe.io.read_graph` reads) of
        the true program graph, drawn beside each recovered graph.
    config
        The configuration values used, shown verbatim (escaped) under "How this was run".
    baseline_dirs
        Baseline name (``pc``, ``ges``) -> its results folder (``graph``, ``model.json``, ``metrics``
        where present); its graph and metrics are shown beside the models'.
    guides
        ``guides.parquet``: with called guides, the report shows guides per cell, cells per guide
        and the UMI distributions with each guide's threshold.
    expression
        ``preprocessed.h5ad`` (log-normalised): the expression of each single target that is a
        measured gene, in its perturbed cells vs the controls (:func:`crl_pipe.tl.knockdown`).
    """
    html = render_report(
        dataset=dataset,
        interventions=interventions,
        qc=qc,
        anchors=anchors,
        model_dirs=model_dirs,
        truth_graph=truth_graph,
        config=config,
        baseline_dirs=baseline_dirs,
        guides=guides,
        expression=expression,
    )
    with atomic_path(out_html) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(out_html)


def render_report(
    *,
    dataset: str,
    interventions: PathLike,
    qc: PathLike,
    anchors: PathLike,
    model_dirs: Mapping[str, PathLike],
    truth_graph: PathLike | None = None,
    config: Mapping[str, Any] | None = None,
    baseline_dirs: Mapping[str, PathLike] | None = None,
    guides: PathLike | None = None,
    expression: PathLike | None = None,
) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    from ._camera import camera_blocks
    from ._guides import guides_section  # deferred: it builds on this module's helpers

    dataset = str(dataset)
    labels = read_table(interventions, "interventions")
    qc_table = read_table(qc, "qc")
    anchor_table = read_table(anchors, "anchors")
    models = [_load_model(str(name), Path(d)) for name, d in model_dirs.items()]
    baselines = [_load_baseline(str(name), Path(d)) for name, d in (baseline_dirs or {}).items()]
    truth = _read_truth_graph(Path(truth_graph)) if truth_graph else None
    artifacts = {"interventions": Path(interventions), "qc": Path(qc), "anchors": Path(anchors)}
    for m in models + baselines:
        artifacts.update({f"{m.name} / {kind}": path for kind, path in m.files.items()})
    if truth_graph:
        artifacts["true graph"] = Path(truth_graph)
    if guides:
        artifacts["guides"] = Path(guides)
    # robot logs (config datasets.<ds>.kind): frames, commands and causal variables, not cells and genes
    robot = (config or {}).get("dataset", {}).get("kind") == "robot"
    context = {
        "dataset": dataset,
        "version": __version__,
        "robot": robot,
        "sections": _numbered_sections(robot),
        "titles": dict(_numbered_sections(robot)),
        "glance": _at_a_glance(dataset, labels, anchor_table, models + baselines, truth is not None, robot=robot),
        "inputs": _inputs_section(dataset, labels, qc_table, robot=robot),
        "guides": guides_section(dataset, labels, len(qc_table), guides, expression),
        "targets": _targets_section(dataset, labels, models),
        "programs": _programs_section(anchor_table, read_provenance(anchors), models, robot=robot),
        "graphs": _graph_section(dataset, models + baselines, truth, _identifiability(labels, anchor_table, models)),
        "metrics": _metrics_section(models + baselines),
        "heldout": _held_out_section(models),
        "training": _training_section(dataset, models),
        "camera": camera_blocks(dataset, models, labels, _figure) if robot else [],
        "run": _run_section(config, models + baselines, artifacts),
    }
    return _environment().get_template("report.html.j2").render(**context)


# -- loading ------------------------------------------------------------------------------------


def _load_model(name: str, directory: Path) -> ModelArtifacts:
    if not directory.is_dir():
        raise InputError(f"{directory}: model folder of {name!r} does not exist")
    files = {
        kind: directory / f"{kind}.parquet"
        for kind in ("targets", "graph", "training", "latents", "metrics", "loadings", "predictions")
    }
    files = {k: p for k, p in files.items() if p.exists() or k in ("targets", "graph")}
    targets = read_table(files["targets"], "targets")
    graph = read_table(files["graph"], "graph")
    training = read_table(files["training"], "training") if "training" in files else None
    metrics = read_table(files["metrics"], "metrics") if "metrics" in files else None
    loadings = None
    if "loadings" in files:
        loadings = read_table(files["loadings"])
        require_columns(loadings, ["latent", "feature", "loading"], f"{files['loadings']}")
    meta: dict[str, Any] = {}
    meta_path = directory / "model.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{meta_path}: not valid JSON ({err})") from None
        if not isinstance(meta, dict):
            raise InputError(f"{meta_path}: expected a JSON object with keys model, params, latent_names")
    latent_names = [str(x) for x in meta.get("latent_names") or []]
    if not latent_names and "latents" in files:
        latent_names = [c for c in read_table(files["latents"], "latents").columns if c != "sample_id"]
    if not latent_names:
        latent_names = ordered_unique(targets["latent"])
    predictions = read_table(files["predictions"], "predictions") if "predictions" in files else None
    return ModelArtifacts(
        name, directory, targets, graph, training, metrics, loadings, meta, latent_names, files, predictions
    )


def _load_baseline(name: str, directory: Path) -> ModelArtifacts:
    """A classical baseline's folder: its graph of the observed variables (and metrics); no targets or latents."""
    meta_path, metrics_path = directory / "model.json", directory / "metrics.parquet"
    files = {"graph": directory / "graph.parquet", **({"metrics": metrics_path} if metrics_path.exists() else {})}
    graph = read_table(files["graph"], "graph")
    metrics = read_table(metrics_path, "metrics") if metrics_path.exists() else None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{meta_path}: not valid JSON ({err})") from None
    meta = meta if isinstance(meta, dict) else {}
    names = [str(x) for x in meta.get("latent_names") or []]
    names = names or ordered_unique(pd.concat([graph["source"], graph["target"]]).astype(str))
    targets = pd.DataFrame({"intervention": [], "latent": [], "score": []})
    return ModelArtifacts(name, directory, targets, graph, None, metrics, None, meta, names, files)


def _read_truth_graph(path: Path) -> pd.DataFrame:
    """The true program graph in any layout :func:`crl_pipe.io.read_graph` reads (Parquet, CSV/TSV, Tetrad)."""
    from ..io import read_graph

    table = read_graph(path)
    require_columns(table, ["source", "target", "weight"], f"{path} (true graph)")
    table = table.assign(source=table["source"].astype(str), target=table["target"].astype(str))
    if "stability" not in table:
        table["stability"] = 1.0
    return table


# -- sections -----------------------------------------------------------------------------------


#: Section titles of a robot log's report: its samples are frames, its perturbations commands or events.
_ROBOT_TITLES = {
    "perturbation": "intervention",
    "Programs": "Causal variables",
    "programs": "variables",
    "program": "variable",
}


def _numbered_sections(robot: bool) -> list[tuple[str, str]]:
    """``(anchor, "N. Title")`` of the sections this report shows, in the words of its data."""
    shown = [
        (key, _robot_words(title) if robot else title) for key, title in SECTIONS if not (robot and key in ROBOT_OMITS)
    ]
    return [(key, f"{i}. {title}") for i, (key, title) in enumerate(shown, start=1)]


def _robot_words(title: str) -> str:
    for screen, robot in _ROBOT_TITLES.items():
        title = title.replace(screen, robot)
    return title


def _at_a_glance(
    dataset: str,
    labels: pd.DataFrame,
    anchors: pd.DataFrame,
    models: list[ModelArtifacts],
    truth: bool,
    robot: bool = False,
) -> Table:
    perturbed = labels.loc[~labels["is_control"], "intervention"]
    rows = [
        ["dataset", dataset],
        ["frames" if robot else "cells", _count(len(labels))],
        [
            "interventions (command changes, events)" if robot else "perturbations (labels other than control)",
            _count(perturbed.nunique()),
        ],
        ["observational frames" if robot else "control cells", _count(int(labels["is_control"].sum()))],
        ["causal variables" if robot else "programs with anchor genes", _count(anchors["program"].nunique())],
        ["models", ", ".join(m.name for m in models) or "none"],
        ["ground-truth graph", "yes" if truth else "no"],
    ]
    return Table(["", ""], rows)


def _inputs_section(dataset: str, labels: pd.DataFrame, qc: pd.DataFrame, robot: bool = False) -> dict[str, Any]:
    counts = cell_counts(labels)
    unit, label = ("frames", "intervention") if robot else ("cells", "perturbation")
    targets_by_label = labels.drop_duplicates("intervention").set_index("intervention")["targets"]
    n_cells = len(labels)
    per_label = Table(
        [label, "targets", unit, "observational" if robot else "control"],
        [
            [
                r.intervention,
                _join(targets_by_label.get(r.intervention)),
                _count(r.n_cells),
                "yes" if r.is_control else "",
            ]
            for r in counts.itertuples(index=False)
        ],
        summary=f"{unit.capitalize()} per {label} ({len(counts)} labels)",
        numeric=[2],
    )
    n_targets = labels["n_targets"].astype(int)
    kinds = [
        ("observational (0 targets)" if robot else "control (0 targets)", n_targets == 0),
        ("single (1 target)", n_targets == 1),
        ("double (2 targets)", n_targets == 2),
    ]
    kinds.append(("3 or more targets", n_targets >= 3))
    per_kind = Table(
        [f"{unit} with", unit, f"% of {unit}", "labels"],
        [
            [
                name,
                _count(int(sel.sum())),
                f"{100 * sel.sum() / max(n_cells, 1):.1f}",
                _count(labels.loc[sel, "intervention"].nunique()),
            ]
            for name, sel in kinds
            if sel.any() or name.startswith(("control", "observational", "single"))
        ],
        numeric=[1, 2, 3],
    )
    perturbed = counts.loc[~counts["is_control"], "n_cells"]
    counts_caption = (
        "Frames per intervention label (the variables whose command changed on that frame, or an event's "
        "targets), most first; observational frames in orange, dashed line = median. A label seen on few "
        "frames says little on its own; the temporal model pools them by target."
        if robot
        else "Cells per perturbation, most first; control in orange, dashed line = median. "
        "Look for perturbations with far fewer cells than the rest: their estimates are the least reliable."
    )
    figures = [
        _figure(pl.cells_per_perturbation(labels, dataset=dataset), counts_caption),
        None  # counts and detected genes per frame mean nothing for robot channels
        if robot
        else _figure(
            pl.qc_distribution(qc, dataset=dataset),
            "Counts and detected genes per cell. Look for one smooth peak; a second low peak or a long left tail "
            "means empty droplets or dying cells passed filtering.",
        ),
    ]
    facts = {
        "unit": unit,
        "label": label,
        "n_cells": _count(n_cells),
        "n_perturbations": _count(int((~counts["is_control"]).sum())),
        "n_control": _count(int(labels["is_control"].sum())),
        "median_cells": _count(float(perturbed.median())) if len(perturbed) else "n/a",
        "min_cells": _count(int(perturbed.min())) if len(perturbed) else "n/a",
    }
    return {"facts": facts, "per_kind": per_kind, "per_label": per_label, "figures": figures}


def _targets_section(dataset: str, labels: pd.DataFrame, models: list[ModelArtifacts]) -> dict[str, Any]:
    blocks = []
    assigned: dict[str, pd.DataFrame] = {}
    for m in models:
        assigned[m.name] = assigned_targets(m.targets)
        n = m.targets["intervention"].nunique()
        caption = (
            "Rows are perturbations, columns latent programs; red raises and blue lowers the program, boxes mark the "
            "program the model assigns. Look for one strong box per row and few strong unboxed cells."
        )
        if n > HEATMAP_MAX_ROWS:
            caption += (
                f" Only the {HEATMAP_MAX_ROWS} of {n} perturbations with the strongest effect are drawn;"
                " the table below lists all."
            )
        fig = pl.target_heatmap(m.targets, title=f"{dataset}: {m.name}: which program each perturbation hits")
        blocks.append({"model": m.name, "figure": _figure(fig, caption)})
    counts = cell_counts(labels).set_index("intervention")["n_cells"]
    targets_by_label = labels.drop_duplicates("intervention").set_index("intervention")["targets"]
    names: list[str] = []
    for m in models:
        names += [i for i in ordered_unique(m.targets["intervention"]) if i not in set(names)]
    rows = []
    for name in names:
        row: list[Any] = [name, _join(targets_by_label.get(name)), _count(counts.get(name, 0))]
        for m in models:
            hits = assigned[m.name][assigned[m.name]["intervention"] == name]
            row.append(", ".join(f"{r.latent} ({_num(r.score)})" for r in hits.itertuples(index=False)) or "none")
        rows.append(row)
    table = Table(
        ["perturbation", "targets", "cells", *[f"{m.name}: assigned program (score)" for m in models]],
        rows,
        summary=f"Assigned program of each perturbation ({len(rows)} perturbations)",
        numeric=[2],
    )
    return {"blocks": blocks, "table": table}


def _programs_section(
    anchors: pd.DataFrame, provenance: Mapping[str, Any], models: list[ModelArtifacts], *, robot: bool = False
) -> dict[str, Any]:
    anchors = anchors.assign(program=anchors["program"].astype(str), feature=anchors["feature"].astype(str))
    rows = []
    for program, group in anchors.groupby("program", sort=False):
        group = group.sort_values("weight", ascending=False, kind="stable")
        genes = [Token(g) for g in group["feature"].head(MAX_ANCHORS_SHOWN)]
        if len(group) > MAX_ANCHORS_SHOWN:
            genes.append(Token(f"+ {len(group) - MAX_ANCHORS_SHOWN} more"))
        rows.append([program, _count(len(group)), genes])
    programs = Table(
        ["program", "anchor genes", "anchors (highest weight first)"],
        rows,
        summary=f"Programs ({len(rows)})",
        numeric=[1],
    )
    dropped_records = provenance.get("dropped_programs") or []
    dropped = Table(
        ["program", "genes in set", "genes in data", "reason"],
        [
            [str(r.get("program", "")), _count(r.get("n_in_set")), _count(r.get("n_in_data")), str(r.get("reason", ""))]
            for r in dropped_records
            if isinstance(r, Mapping)
        ],
        summary=f"Dropped programs ({len(dropped_records)})",
        numeric=[1, 2],
    )
    anchor_sets = {p: set(g["feature"]) for p, g in anchors.groupby("program", sort=False)}
    all_anchors = set(anchors["feature"])
    loadings = []
    for m in models:
        if m.loadings is None:
            continue
        table = m.loadings.assign(latent=m.loadings["latent"].astype(str), feature=m.loadings["feature"].astype(str))
        table = table.assign(abs=table["loading"].abs()).sort_values("abs", ascending=False, kind="stable")
        order = [n for n in m.latent_names if n in set(table["latent"])]
        order += [n for n in ordered_unique(table["latent"]) if n not in set(order)]
        top = table.groupby("latent", sort=False).head(TOP_GENES)
        lrows = []
        for latent in order:
            genes = list(top.loc[top["latent"] == latent, "feature"])
            lrows.append([latent, [Token(g, g in all_anchors) for g in genes], _best_program(genes, anchor_sets)])
        # robots: the "anchors" are the channels themselves, so the closest-program column says nothing
        header = ["latent", f"top {TOP_GENES} {'channels' if robot else 'genes'} by |loading|"]
        if not robot:
            header = [header[0], f"{header[1]} (anchor genes in bold)", "closest program (anchors among top genes)"]
        else:
            lrows = [row[:2] for row in lrows]
        unit = "channels" if robot else "genes"
        loadings.append(
            {
                "model": m.name,
                "unit": unit,
                "table": Table(header, lrows, summary=f"{m.name}: top {unit} per latent ({len(lrows)} latents)"),
            }
        )
    return {
        "programs": programs,
        "dropped": dropped,
        "loadings": loadings,
        "models_without_loadings": [m.name for m in models if m.loadings is None],
    }


def _best_program(genes: list[str], anchor_sets: Mapping[str, set[str]]) -> str:
    overlap = {p: len(s.intersection(genes)) for p, s in anchor_sets.items()}
    best = max(overlap, key=lambda p: overlap[p], default=None)
    if best is None or overlap[best] == 0:
        return "none"
    return f"{best} ({overlap[best]}/{len(genes)})"


def _identifiability(
    labels: pd.DataFrame, anchors: pd.DataFrame, models: list[ModelArtifacts]
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per model: which programs and edges the data can identify (:func:`crl_pipe.tl.identifiability`)."""
    from ..tl import identifiability

    return {m.name: identifiability(labels, m.targets, list(m.latent_names), anchors, m.graph) for m in models}


def _identifiability_block(programs: pd.DataFrame, edges: pd.DataFrame) -> dict[str, Any]:
    rows = [
        [
            str(r.program),
            _count(r.n_anchors),
            _join(r.single_target) or "none",
            _count(r.single_target_cells),
            _join(r.multi_target) or "none",
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


def _graph_section(
    dataset: str,
    models: list[ModelArtifacts],
    truth: pd.DataFrame | None,
    identifiable: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]] | None = None,
) -> list[dict[str, Any]]:
    caption = (
        "Arrows point from cause to effect; thick = strong, blue = raises, orange = lowers the target program, "
        "faint or dashed = kept by few refits. Trust the bold arrows."
    )
    truth_nodes = (
        _natural_sorted(ordered_unique(pd.concat([truth["source"], truth["target"]]))) if truth is not None else None
    )
    blocks = []
    for i, m in enumerate(models):
        nodes = list(m.latent_names)
        graph, true_graph, shown = m.graph, truth, truth_nodes
        observed = set(m.graph["source"]) - set(nodes)  # commands of a robot log: the drivers heatmap shows them
        if observed:
            if truth is not None:
                observed |= set(truth["source"]) - set(nodes)
                true_graph = truth[~truth["source"].isin(observed)]
                shown = [n for n in truth_nodes if n not in observed]
            graph = m.graph[~m.graph["source"].isin(observed)]
        if truth is not None:
            fig = pl.graph_comparison(graph, true_graph, dataset=dataset, model=m.name, nodes=nodes, truth_nodes=shown)
            text = (
                caption + " The true graph is on the right; its programs have their own names (the metrics match them)."
            )
        else:
            among = "variables" if observed else "programs"
            fig = pl.causal_graph(graph, title=f"{dataset}: {m.name}: causal graph among {among}", nodes=nodes)
            text = caption
        if observed:
            text += " Only edges among the causal variables are drawn; the commands' edges are in the heatmap below."
        if "undirected" in m.graph and m.graph["undirected"].any():
            text += " Arrows both ways mark edges the method left undirected (the data do not orient them)."
        programs, support = (identifiable or {}).get(m.name, (None, None))
        supported_by = (
            support.assign(source=support["source"].astype(str), target=support["target"].astype(str))
            .drop_duplicates(["source", "target"])
            .set_index(["source", "target"])["supported_by"]
            if support is not None and len(support)
            else pd.Series(dtype=str)
        )
        edges = m.graph.assign(abs=m.graph["weight"].abs()).sort_values(
            ["stability", "abs"], ascending=False, kind="stable"
        )
        table = Table(
            ["source", "target", "weight", "stability", "supported by (perturbations of the source alone)"],
            [
                [str(r.source), str(r.target), _num(r.weight), f"{r.stability:.2f}",
                 _edge_support_cell(supported_by.get((str(r.source), str(r.target))))]
                for r in edges.itertuples(index=False)
            ],
            summary=f"{m.name}: edges ({len(edges)}), most stable first",
            numeric=[2, 3],
        )  # fmt: skip
        if "lag" in edges and edges["lag"].notna().any():  # a model with a time axis: which edges are instantaneous
            lags = [
                "" if pd.isna(lag) else ("0 (instantaneous)" if lag == 0 else str(int(lag))) for lag in edges["lag"]
            ]
            table = Table(
                [*table.headers[:3], "lag (frames)", *table.headers[3:]],
                [[*row[:3], lag, *row[3:]] for row, lag in zip(table.rows, lags, strict=True)],
                summary=table.summary,
                numeric=[2, 4],
            )
            text += " In the table, lag 0 marks an instantaneous (same-frame) edge; a pair can have a lagged edge too."
        block = {"id": f"graph-{i + 1}", "model": m.name, "figure": _figure(fig, text), "table": table, "drivers": None}
        # anchors and single-target perturbations identify screen programs; a robot's variables are measured
        block["identifiability"] = (
            _identifiability_block(programs, support) if programs is not None and not observed else None
        )
        if (~m.graph["source"].isin(m.latent_names) & m.graph["target"].isin(m.latent_names)).any():
            drive = pl.observed_causes(
                m.graph, list(m.latent_names), title=f"{dataset}: {m.name}: what drives each variable"
            )
            block["drivers"] = _figure(
                drive,
                "Rows are the causal variables, columns the observed causes (commands); boxes mark each row's "
                "strongest cause. A diagonal of boxes means each command drives its own variable.",
            )
        blocks.append(block)
    return blocks


def _edge_support_cell(support: str | None) -> list[Token] | str:
    if support is None:
        return ""
    if support == "nothing":
        return [Token("nothing: rests on the model's assumptions", strong=True)]
    return support


def _metrics_section(models: list[ModelArtifacts]) -> Table | None:
    with_metrics = [m for m in models if m.metrics is not None and len(m.metrics)]
    if not with_metrics:
        return None
    names: list[str] = []
    for m in with_metrics:
        names += [n for n in ordered_unique(m.metrics["metric"]) if n not in set(names)]
    values = {m.name: m.metrics.groupby("metric", sort=False)["value"].mean() for m in with_metrics}
    # the held-out baselines have their own table (Held-out combinations); one row per model score here
    names = [n for n in names if not (n.startswith("heldout_") and n.endswith(("_control", "_additive")))]
    rows = [[name, *[_num(values[m.name].get(name)) for m in with_metrics], _metric_help(name)] for name in names]
    return Table(
        ["metric", *[m.name for m in with_metrics], "what it means"],
        rows,
        numeric=list(range(1, len(with_metrics) + 1)),
    )


#: Columns of the held-out table: metric of crl_pipe.tl.evaluate_combinations -> header.
HELD_OUT_COLUMNS = {
    "r2_all_genes": "R² all genes",
    "r2_top20_genes": "R² top-20 genes",
    "r2_delta_top20_genes": "R² top-20 changes",
    "mmd": "MMD",
}
#: How the baselines of predictions.parquet are named in the report.
HELD_OUT_BASELINES = {"control": "control mean (baseline)", "additive": "additive (baseline)"}


def _held_out_section(models: list[ModelArtifacts]) -> Table | None:
    """Held-out combinations: each predicting model beside the control-mean and additive baselines (shown once)."""
    scored = [m for m in models if m.predictions is not None and len(m.predictions)]
    if not scored:
        return None
    frames = [m.predictions.assign(predictor=m.predictions["predictor"].replace({"model": m.name})) for m in scored]
    table = pd.concat(frames, ignore_index=True).drop_duplicates(["intervention", "predictor", "metric"])
    wide = table.pivot_table(index=["intervention", "predictor"], columns="metric", values="value", sort=False)
    order = [m.name for m in scored] + list(HELD_OUT_BASELINES)
    rows = []
    for label in _natural_sorted(ordered_unique(table["intervention"])):
        for predictor in order:
            if (label, predictor) in wide.index:
                values = wide.loc[(label, predictor)]
                name = HELD_OUT_BASELINES.get(predictor, predictor)
                rows.append([label, name, *[_num(values.get(metric)) for metric in HELD_OUT_COLUMNS]])
    return Table(["combination", "predicted by", *HELD_OUT_COLUMNS.values()], rows, numeric=[2, 3, 4, 5])


def _training_section(dataset: str, models: list[ModelArtifacts]) -> dict[str, Any]:
    figures, single = [], []
    for m in models:
        if m.training is None or m.training["epoch"].nunique() <= 1:
            single.append(m.name)
            continue
        fig = pl.training_curves(m.training, title=f"{dataset}: {m.name}: training loss")
        caption = (
            "Loss per epoch for each split. Look for curves that flatten out; a validation loss that rises while "
            "the training loss falls means overfitting."
        )
        figures.append({"model": m.name, "figure": _figure(fig, caption)})
    return {"figures": figures, "single": single}


def _run_section(
    config: Mapping[str, Any] | None, models: list[ModelArtifacts], artifacts: Mapping[str, Path]
) -> dict[str, Any]:
    config_text = (
        yaml.safe_dump(_jsonable(dict(config)), sort_keys=False, allow_unicode=True, default_flow_style=False)
        if config
        else ""
    )
    versions = Table(
        ["package", "version"], [["python", platform.python_version()], *[[p, _version(p)] for p in VERSION_PACKAGES]]
    )
    model_rows = [
        [m.name, str(m.meta.get("model", "")), _count(len(m.latent_names)), _compact_json(m.meta.get("params", {}))]
        for m in models
    ]
    model_table = Table(["model", "kind", "latents", "parameters"], model_rows)
    prov_rows = []
    for name, path in artifacts.items():
        prov = _safe_provenance(path)
        inputs = []
        for role, entry in (prov.get("inputs") or {}).items():
            for e in entry if isinstance(entry, list) else [entry]:
                if isinstance(e, Mapping):
                    sha = e.get("sha256") or "folder"
                    inputs.append(
                        {"role": str(role), "path": str(e.get("path", "")), "sha": str(sha)[:12], "sha_full": str(sha)}
                    )
        prov_rows.append(
            {
                "artifact": name,
                "path": str(path),
                "step": str(prov.get("step", "")),
                "version": str(prov.get("crl_pipe_version", "")),
                "params": _compact_json(prov.get("params", {})),
                "inputs": inputs,
            }
        )
    return {"config": config_text, "versions": versions, "models": model_table, "provenance": prov_rows}


# -- helpers ------------------------------------------------------------------------------------


def _figure(fig: Figure, caption: str) -> FigureBlock:
    """Embed ``fig`` as a PNG data URI and close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)
    return FigureBlock("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), caption)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _safe_provenance(path: Path) -> dict[str, Any]:
    if path.suffix != ".parquet" or not path.exists():
        return {}
    try:
        prov = read_provenance(path)
    except (OSError, ValueError):
        return {}
    return prov if isinstance(prov, dict) else {}


def _version(package: str) -> str:
    if package == "crl-pipe":
        return __version__
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _metric_help(name: str) -> str:
    key = name.lower()
    return next((text for pattern, text in METRIC_HELP if pattern in key), "")


def _num(value: Any) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if x != x:
        return "n/a"
    return f"{x:.3g}"


def _count(value: Any) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{x:,.0f}" if x == x else "n/a"


def _join(values: Any) -> str:
    if values is None or isinstance(values, float):
        return ""
    return ", ".join(str(v) for v in values)


def _compact_json(value: Any) -> str:
    return json.dumps(_jsonable(value), sort_keys=True, separators=(", ", ": ")) if value else ""


def _natural_sorted(names: list[str]) -> list[str]:
    return sorted(names, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])
