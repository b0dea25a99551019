"""One function per workflow stage, file in -> file out.

The Snakemake rules (via ``workflow/scripts``) and the ``crl-pipe`` command line call these and
nothing else; each reads its input artifacts, calls the in-memory API (``io``, ``pp``, ``tl``,
``simulate``, ``report``) and writes its outputs atomically with provenance.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ._errors import InputError
from ._provenance import provenance
from .io import read_h5ad, read_table, write_h5ad, write_table

log = logging.getLogger("crl_pipe")

PathLike = str | os.PathLike


def simulate(*, out_h5ad: PathLike, out_gmt: PathLike, out_truth_dir: PathLike, params: Mapping[str, Any]) -> None:
    """Simulate a Perturb-seq screen with a known latent causal graph (see :func:`crl_pipe.simulate.simulate_screen`).

    Writes the screen h5ad, a GMT of each program's anchor genes, and the truth folder
    (``graph.parquet``, ``targets.parquet``, ``latents.parquet``).
    """
    from . import simulate as sim

    screen = sim.simulate_screen(**params)
    sim.write_simulation(screen, out_h5ad=out_h5ad, out_gmt=out_gmt, out_truth_dir=out_truth_dir, params=params)


def ingest(
    *,
    path: PathLike,
    out_h5ad: PathLike,
    out_qc: PathLike,
    out_guides: PathLike | None = None,
    format: str = "h5ad",
    options: Mapping[str, Any] | None = None,
    guide_calling: Mapping[str, Any] | None = None,
) -> None:
    """Read a raw input in any supported layout into the canonical ``ingested.h5ad`` (+ ``qc.parquet``).

    For ``format="guide_counts"`` guides are called here (:func:`crl_pipe.pp.call_guides`), the calls
    written to ``out_guides`` and the resulting labels to ``obs["perturbation"]``; other formats
    write an empty guides table, so that every dataset has the same artifacts.
    """
    from . import io, pp

    options = dict(options or {})
    adata = io.read_screen(path, format=format, **options)
    files = {"input": path, **{k: options[k] for k in ("guides", "guide_map") if options.get(k)}}
    prov = provenance("ingest", files, {"format": format, **options, "guide_calling": dict(guide_calling or {})})
    calls = pp.call_guides(adata, **dict(guide_calling or {})) if format == "guide_counts" else _no_guides()
    qc = pp.qc_metrics(adata)
    # the large file first: a failure while writing it leaves no small artifact claiming success
    write_h5ad(adata, out_h5ad, prov)
    write_table(qc, out_qc, "qc", prov)
    if out_guides is not None:
        write_table(calls, out_guides, "guides", prov)


def _no_guides() -> pd.DataFrame:
    return pd.DataFrame({"sample_id": [], "guide": [], "umis": [], "called": []}).astype({"called": bool})


def label(
    *,
    ingested: PathLike,
    out: PathLike,
    perturbation_key: str | None = None,
    control_values: Sequence[str] = (),
    min_cells: int = 1,
    kind: str = "screen",
    robot_labels: Mapping[str, Any] | None = None,
) -> None:
    """Build ``interventions.parquet``: from the perturbation column of a screen, or from the
    events and commanded actions of a robot log (``kind="robot"``, see :func:`crl_pipe.pp.robot_interventions`)."""
    from . import pp

    if kind == "robot":
        params = dict(robot_labels or {})
        try:
            table = pp.robot_interventions(read_h5ad(ingested), **params)
        except InputError as err:  # name the file, as the screen labels do
            raise InputError(f"{ingested}: {err}") from None
    else:
        params = {"perturbation_key": perturbation_key, "control_values": list(control_values), "min_cells": min_cells}
        table = pp.label_interventions(read_h5ad(ingested, backed=True), **params)
    write_table(table, out, "interventions", provenance("label", {"ingested": ingested}, {"kind": kind, **params}))


def preprocess(
    *,
    ingested: PathLike,
    interventions: PathLike,
    out: PathLike,
    gene_sets: PathLike | None = None,
    n_top_genes: int = 2000,
    target_sum: float = 1e4,
    kind: str = "screen",
    channel_kinds: Sequence[str] = ("state", "action"),
) -> None:
    """Normalise, log-transform and select genes (HVGs + perturbed genes + gene-set members);
    for robot logs, keep the channels of ``channel_kinds``."""
    from . import io, pp

    adata = read_h5ad(ingested)
    labels = read_table(interventions, "interventions")
    if kind == "robot":
        params: dict[str, Any] = {"channel_kinds": list(channel_kinds)}
        result = pp.preprocess_robot(adata, labels, kinds=channel_kinds)
    else:
        params = {"n_top_genes": n_top_genes, "target_sum": target_sum}
        keep = sorted({g for s in io.read_gmt(gene_sets).values() for g in s}) if gene_sets else []
        result = pp.preprocess(adata, labels, keep_genes=keep, **params)
    inputs = {"ingested": ingested, "interventions": interventions, "gene_sets": gene_sets}
    write_h5ad(result, out, provenance("preprocess", inputs, params))


def anchors(
    *,
    preprocessed: PathLike,
    out: PathLike,
    gene_sets: PathLike | None = None,
    min_anchors: int = 2,
    exclusive: bool = True,
    n_programs: int | None = None,
    kind: str = "screen",
) -> None:
    """Intersect gene sets with the data into ``anchors.parquet`` (or derive programs from the data);
    robot logs anchor each causal variable on its own channel."""
    from . import io, pp

    params = {"min_anchors": min_anchors, "exclusive": exclusive, "n_programs": n_programs, "kind": kind}
    adata = read_h5ad(preprocessed)
    if kind == "robot":
        table, dropped = pp.robot_anchors(adata), pd.DataFrame(columns=["program", "reason"])
    elif gene_sets:
        table, dropped = pp.build_anchors(adata, io.read_gmt(gene_sets), min_anchors=min_anchors, exclusive=exclusive)
    else:
        table, dropped = pp.data_driven_anchors(adata, n_programs=n_programs or 10, min_anchors=min_anchors)
    prov = provenance("anchors", {"preprocessed": preprocessed, "gene_sets": gene_sets}, params)
    prov["dropped_programs"] = dropped.to_dict(orient="records")
    for rec in prov["dropped_programs"]:
        log.warning("program %s dropped: %s", rec["program"], rec["reason"])
    write_table(table, out, "anchors", prov)


def train(
    *,
    preprocessed: PathLike,
    interventions: PathLike,
    anchors: PathLike,
    out_dir: PathLike,
    model: str,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    threads: int | None = None,
    require_device: bool = False,
) -> None:
    """Fit ``model``; write the checkpoint, ``latents``, ``targets``, ``loadings`` and ``training`` tables into ``out_dir``.

    A PyTorch model whose ``params["device"]`` (``cuda``) is not there trains on the CPU with a
    warning, or stops here, before reading anything, when ``require_device`` is true.

    Deep models checkpoint their training under ``out_dir/checkpoints`` (not a declared output, so
    that a killed job leaves it behind and a rerun resumes from it) and use ``threads`` CPU threads.
    """
    from . import tl
    from .config import TORCH_MODELS

    params = dict(params or {})
    if require_device and model in TORCH_MODELS:
        from .models._training import resolve_device

        resolve_device(params.get("device", "auto"), strict=True)
    data = _load_data(preprocessed, interventions, anchors)
    out_dir = Path(out_dir)
    if model == "temporal" and "actions" not in params:
        params["actions"] = _action_channels(preprocessed)
    # run settings, not model parameters: they stay out of model.json and the provenance
    run = {"checkpoint_dir": str(out_dir / "checkpoints"), "threads": threads} if model == "sparse_vae" else {}
    fitted = tl.train(data, model=model, params={**params, **run}, seed=seed)
    fitted.save(out_dir)
    prov = provenance(
        "train",
        {"preprocessed": preprocessed, "interventions": interventions, "anchors": anchors},
        {"model": model, "params": dict(params or {}), "seed": seed},
    )
    write_table(fitted.get_latent_representation(data), out_dir / "latents.parquet", "latents", prov)
    write_table(fitted.get_targets(), out_dir / "targets.parquet", "targets", prov)
    write_table(fitted.get_loadings(), out_dir / "loadings.parquet", "loadings", prov)
    write_table(fitted.history, out_dir / "training.parquet", "training", prov)


def graph(
    *,
    preprocessed: PathLike,
    interventions: PathLike,
    anchors: PathLike,
    model_dir: PathLike,
    out_parquet: PathLike,
    out_graphml: PathLike,
    n_refits: int = 20,
    seed: int = 0,
) -> None:
    """Latent causal graph of the trained model, with each edge's stability over bootstrap refits."""
    from . import tl
    from .io import write_graphml
    from .models import load_model

    params = {"n_refits": n_refits, "seed": seed}
    data = _load_data(preprocessed, interventions, anchors)
    edges = tl.recover_graph(load_model(model_dir), data, n_refits=n_refits, seed=seed)
    inputs = {
        "preprocessed": preprocessed,
        "interventions": interventions,
        "anchors": anchors,
        "model": Path(model_dir) / "model.pt",
        "model_meta": Path(model_dir) / "model.json",
    }
    prov = provenance("graph", inputs, params)
    write_table(edges, out_parquet, "graph", prov)
    write_graphml(edges, out_graphml)


def evaluate(
    *,
    graph: PathLike,
    targets: PathLike,
    latents: PathLike,
    out: PathLike,
    truth: Mapping[str, PathLike | None],
) -> None:
    """Compare the recovered model with the ground truth (target accuracy, SHD, MCC)."""
    from . import io, tl

    truth = {k: v for k, v in truth.items() if v}
    metrics = tl.evaluate(
        graph=read_table(graph, "graph"),
        targets=read_table(targets, "targets"),
        latents=read_table(latents, "latents"),
        true_graph=io.read_graph(truth["graph"]) if "graph" in truth else None,
        true_targets=read_table(truth["targets"]) if "targets" in truth else None,
        true_latents=read_table(truth["latents"]) if "latents" in truth else None,
    )
    inputs = {"graph": graph, "targets": targets, "latents": latents, **{f"truth_{k}": v for k, v in truth.items()}}
    write_table(metrics, out, "metrics", provenance("evaluate", inputs))


def report(
    *,
    dataset: str,
    out_html: PathLike,
    interventions: PathLike,
    qc: PathLike,
    anchors: PathLike,
    model_dirs: Mapping[str, PathLike],
    truth_graph: PathLike | None = None,
    config: Mapping[str, Any] | None = None,
) -> None:
    """Assemble the self-contained HTML report of one dataset across its models."""
    from .report import write_report

    write_report(
        out_html,
        dataset=dataset,
        interventions=interventions,
        qc=qc,
        anchors=anchors,
        model_dirs=model_dirs,
        truth_graph=truth_graph,
        config=config,
    )


def collect_benchmark(*, metrics: Mapping[str, PathLike], out: PathLike) -> None:
    """Stack ``metrics.parquet`` of every ``dataset/model`` key into ``benchmark.parquet``."""
    frames = []
    for key, path in metrics.items():
        dataset, model = key.split("/", 1)
        frames.append(read_table(path, "metrics").assign(dataset=dataset, model=model))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["dataset", "model", "metric", "value"])
    write_table(table[["dataset", "model", "metric", "value"]], out, "benchmark", provenance("benchmark", {"metrics": list(metrics.values())}))


def _action_channels(preprocessed: PathLike) -> list[str]:
    """Channels of kind ``action`` in a preprocessed robot log (reader naming differs by format)."""
    var = read_h5ad(preprocessed, backed=True).var
    return [str(c) for c in var.index[var["kind"] == "action"]] if "kind" in var else []


def _load_data(preprocessed: PathLike, interventions: PathLike, anchors: PathLike):
    from .models import CRLData

    return CRLData.from_artifacts(
        read_h5ad(preprocessed), read_table(interventions, "interventions"), read_table(anchors, "anchors")
    )
