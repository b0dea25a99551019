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

from ._errors import ConfigError, InputError
from ._provenance import provenance
from .io import read_h5ad, read_table, write_h5ad, write_table

log = logging.getLogger("crl_pipe")

PathLike = str | os.PathLike


def simulate(
    *,
    out_h5ad: PathLike,
    out_gmt: PathLike,
    out_truth_dir: PathLike,
    params: Mapping[str, Any],
    chunk_cells: int | None = None,
) -> None:
    """Simulate a Perturb-seq screen with a known latent causal graph (see :func:`crl_pipe.simulate.simulate_screen`).

    Writes the screen h5ad, a GMT of each program's anchor genes, and the truth folder
    (``graph.parquet``, ``targets.parquet``, ``latents.parquet``). ``chunk_cells``: draw and write
    the counts in blocks of that many cells (:func:`crl_pipe.simulate.simulate_screen_chunks`), for
    screens too large to hold as a dense matrix.
    """
    from . import simulate as sim

    params = {k: v for k, v in params.items() if k != "kind"}
    if chunk_cells:
        screen, blocks = sim.simulate_screen_chunks(chunk_cells=chunk_cells, **params)
        params = {**params, "chunk_cells": chunk_cells}  # the blocks draw other counts: part of the provenance
    else:
        screen, blocks = sim.simulate_screen(**params), None
    sim.write_simulation(
        screen, out_h5ad=out_h5ad, out_gmt=out_gmt, out_truth_dir=out_truth_dir, params=params, blocks=blocks
    )


def simulate_robot(*, out_dir: PathLike, out_truth_dir: PathLike, params: Mapping[str, Any]) -> None:
    """Simulate robot logs with a known causal graph (``simulator``: ``arm``, :func:`crl_pipe.simulate.simulate_arm`;
    ``linear``, :func:`crl_pipe.simulate.simulate_robot`).

    Writes a LeRobot v2.1 dataset (v3.0 with videos for ``observation: camera``) into ``out_dir`` and
    the truth folder (``graph.parquet``, ``targets.parquet``, ``latents.parquet``).
    """
    from . import simulate as sim

    kwargs = {k: v for k, v in params.items() if k not in ("kind", "simulator")}
    simulator = params.get("simulator", "arm")
    linear_only = [k for k in ("n_joints", "n_instantaneous") if k in kwargs]
    if simulator == "arm" and linear_only:
        raise ConfigError(
            f"simulate_robot: {linear_only[0]}={kwargs[linear_only[0]]} with simulator 'arm' (4 joints); "
            f"expected {linear_only[0]} only with simulator: linear"
        )
    arm_only = [k for k in ("observation", "sensor_noise", "light_delay", "image_size", "scene") if k in kwargs]
    if simulator == "linear" and arm_only:
        raise ConfigError(
            f"simulate_robot: {arm_only[0]} with simulator 'linear'; expected it only with simulator: arm"
        )
    robot = (sim.simulate_arm if simulator == "arm" else sim.simulate_robot)(**kwargs)
    sim.write_robot_simulation(robot, out_dir=out_dir, out_truth_dir=out_truth_dir, params=params)


def ingest(
    *,
    path: PathLike,
    out_h5ad: PathLike,
    out_qc: PathLike,
    out_guides: PathLike | None = None,
    format: str = "h5ad",
    options: Mapping[str, Any] | None = None,
    guide_calling: Mapping[str, Any] | None = None,
    kind: str = "screen",
) -> None:
    """Read a raw input in any supported layout into the canonical ``ingested.h5ad`` (+ ``qc.parquet``).

    For ``format="guide_counts"`` and ``"10x"`` guides are called here (:func:`crl_pipe.pp.call_guides`;
    for a Cell Ranger run that has its own calls, those by default: :func:`crl_pipe.pp.import_guide_calls`),
    the calls written to ``out_guides`` and the resulting labels to ``obs["perturbation"]``; other
    formats write an empty guides table, so that every dataset has the same artifacts. A screen given as
    ``format="table"`` is a table of observed variables with intervention indicator columns
    (:func:`crl_pipe.io.read_variable_table`; ``options``: ``interventions``, ``variables``).
    """
    from . import io, pp

    options = dict(options or {})
    if format == "h5ad" and set(options) <= {"counts_layer"} and io.is_large_screen(path, options.get("counts_layer")):
        prov = provenance(
            "ingest", {"input": path}, {"format": format, **options, "guide_calling": dict(guide_calling or {})}
        )
        _ingest_in_blocks(path, out_h5ad, out_qc, out_guides, prov, options.get("counts_layer"))
        return
    if _is_table(kind, format):
        adata = io.read_variable_table(path, **options)
    else:
        adata = io.read_screen(path, format=format, **options)
    files = {"input": path, **{k: options[k] for k in ("guides", "guide_map", "feature_reference") if options.get(k)}}
    prov = provenance("ingest", files, {"format": format, **options, "guide_calling": dict(guide_calling or {})})
    calls = _call_guides(adata, dict(guide_calling or {}), format, path) if format in GUIDE_FORMATS else _no_guides()
    qc = pp.qc_metrics(adata)
    # the large file first: a failure while writing it leaves no small artifact claiming success
    write_h5ad(adata, out_h5ad, prov)
    write_table(qc, out_qc, "qc", prov)
    if out_guides is not None:
        write_table(calls, out_guides, "guides", prov)


#: Input formats that carry guide UMI counts: their guides are called in ingest.
GUIDE_FORMATS = ("guide_counts", "10x")


def _call_guides(adata, calling: dict[str, Any], format: str, path: PathLike) -> pd.DataFrame:
    """Cell Ranger's own calls for a 10x run that has them (unless ``method`` says otherwise), else ours."""
    from . import pp
    from .io._tenx import CALLS_FILE, CALLS_KEY

    method = calling.pop("method", None)
    has_calls = CALLS_KEY in adata.obs
    if method == "cellranger" or (method is None and format == "10x" and has_calls):
        if not has_calls:
            raise InputError(
                f"{path}: guide_calling.method is 'cellranger' but there is no crispr_analysis/{CALLS_FILE}; "
                "expected a Cell Ranger run with guide calls, or method 'mixture' or 'threshold'"
            )
        return pp.import_guide_calls(adata)
    return pp.call_guides(adata, method=method or "mixture", **calling)


def _ingest_in_blocks(path, out_h5ad, out_qc, out_guides, prov, counts_layer: str | None) -> None:
    """Ingest an h5ad screen larger than memory block by block of cells (same artifacts as in memory)."""
    from . import io, pp

    qc = []
    with io.ScreenChunks(path, counts_layer=counts_layer) as screen:
        with io.write_h5ad_chunks(out_h5ad, screen.obs, screen.var, prov, max_nnz=screen.nnz(screen.key)) as out:
            for block in screen:
                out.append(block.X)
                qc.append(pp.qc_metrics(block))
    write_table(pd.concat(qc, ignore_index=True), out_qc, "qc", prov)
    if out_guides is not None:
        write_table(_no_guides(), out_guides, "guides", prov)


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
    target_map: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Build ``interventions.parquet``: from the perturbation column of a screen, or from the
    events and commanded actions of a robot log (``kind="robot"``, see :func:`crl_pipe.pp.robot_interventions`).

    ``target_map`` (label token -> variables, e.g. reagent -> protein) replaces each intervention's
    targets by the variables it is known to act on (:func:`crl_pipe.pp.map_targets`)."""
    from . import pp

    if kind == "robot":
        params = dict(robot_labels or {})
        try:
            table = pp.robot_interventions(read_h5ad(ingested), **params)
        except InputError as err:  # name the file, as the screen labels do
            raise InputError(f"{ingested}: {err}") from None
    else:
        adata = read_h5ad(ingested, backed=True)
        if perturbation_key in (None, "auto"):  # detected here, so that the provenance names the column
            perturbation_key = pp.detect_convention(adata.obs, list(control_values), where=f"{ingested}: ").key
        controls = [control_values] if isinstance(control_values, str) else list(control_values)  # one label
        params = {"perturbation_key": perturbation_key, "control_values": controls, "min_cells": min_cells}
        table = pp.label_interventions(adata, **params)
        if target_map is not None:
            params["target_map"] = {str(k): [str(t) for t in v] for k, v in target_map.items()}
            table = pp.map_targets(table, params["target_map"])
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
    format: str = "h5ad",
    transform: str = "none",
    cofactor: float = 5.0,
) -> None:
    """Normalise, log-transform and select genes (HVGs + perturbed genes + gene-set members);
    for robot logs, keep the channels of ``channel_kinds``; for a table of observed variables
    (``format="table"``), ``transform`` them and standardise by the controls (:func:`crl_pipe.pp.preprocess_table`)."""
    from . import io, pp

    if kind == "screen" and not _is_table(kind, format) and io.is_large(ingested):
        # larger than memory: two passes over blocks of cells (crl_pipe.pp.preprocess_chunked)
        params = {"n_top_genes": n_top_genes, "target_sum": target_sum}
        keep = sorted({g for s in io.read_gmt(gene_sets).values() for g in s}) if gene_sets else []
        prov = provenance(
            "preprocess", {"ingested": ingested, "interventions": interventions, "gene_sets": gene_sets}, params
        )
        pp.preprocess_chunked(
            ingested, read_table(interventions, "interventions"), out, prov, keep_genes=keep, **params
        )
        return
    adata = read_h5ad(ingested)
    labels = read_table(interventions, "interventions")
    if _is_table(kind, format):
        params = {"transform": transform, "cofactor": cofactor}
        result = pp.preprocess_table(adata, labels, **params)
    elif kind == "robot":
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
    format: str = "h5ad",
) -> None:
    """Intersect gene sets with the data into ``anchors.parquet`` (or derive programs from the data);
    robot logs anchor each causal variable on its own channel, and so do the variables of a table
    (``format="table"``) without gene sets."""
    from . import io, pp

    params = {"min_anchors": min_anchors, "exclusive": exclusive, "n_programs": n_programs, "kind": kind}
    # a large screen stays on disk: gene sets need the gene names, data-driven programs a sample of cells
    adata = io.read_h5ad_parts(preprocessed, backed=True) if io.is_large(preprocessed) else read_h5ad(preprocessed)
    if kind == "robot":
        table, dropped = pp.robot_anchors(adata), pd.DataFrame(columns=["program", "reason"])
    elif _is_table(kind, format) and not gene_sets:
        table, dropped = pp.identity_anchors(adata), pd.DataFrame(columns=["program", "reason"])
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
    held_out: Sequence[str] = (),
) -> None:
    """Fit ``model``; write the checkpoint, ``latents``, ``targets``, ``loadings`` and ``training`` tables
    into ``out_dir``.

    The cells of the ``held_out`` combinations (e.g. ``["A+B"]``) are left out of the fit and of
    ``latents`` (:func:`crl_pipe.tl.hold_out`), to be predicted from their parts by :func:`predict`.

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
    data = _load_data(preprocessed, interventions, anchors, counts=_uses_counts(model), held_out=held_out)
    out_dir = Path(out_dir)
    if model in ("temporal", "camera") and "actions" not in params:
        params["actions"] = _action_channels(preprocessed)
    # run settings, not model parameters: they stay out of model.json and the provenance
    deep = model in ("sparse_vae", "causal_vae", "camera")
    run = {"checkpoint_dir": str(out_dir / "checkpoints"), "threads": threads} if deep else {}
    fitted = tl.train(data, model=model, params={**params, **run}, seed=seed)
    fitted.save(out_dir)
    prov = provenance(
        "train",
        {"preprocessed": preprocessed, "interventions": interventions, "anchors": anchors},
        {"model": model, "params": dict(params or {}), "seed": seed, **_held_out_param(held_out)},
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
    held_out: Sequence[str] = (),
) -> None:
    """Latent causal graph of the trained model, with each edge's stability over bootstrap refits
    (on the cells it was trained on: without the ``held_out`` combinations)."""
    from . import tl
    from .io import write_graphml
    from .models import load_model

    params = {"n_refits": n_refits, "seed": seed, **_held_out_param(held_out)}
    fitted = load_model(model_dir)
    counts = getattr(fitted, "uses_counts", True)
    data = _load_data(preprocessed, interventions, anchors, counts=counts, held_out=held_out)
    edges = tl.recover_graph(fitted, data, n_refits=n_refits, seed=seed)
    inputs = _model_inputs(preprocessed, interventions, anchors, model_dir)
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
    predictions: PathLike | None = None,
) -> None:
    """Compare the recovered model with the ground truth (target accuracy, SHD, MCC); with the
    ``predictions.parquet`` of :func:`predict`, add its held-out scores averaged over the labels
    (``heldout_r2_top20``, ``heldout_mmd``, ... and the baselines' ``heldout_r2_top20_additive`` ...)."""
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
    if predictions:
        metrics = pd.concat([metrics, tl.held_out_metrics(read_table(predictions, "predictions"))], ignore_index=True)
        inputs["predictions"] = predictions
    write_table(metrics, out, "metrics", provenance("evaluate", inputs))


def _model_inputs(preprocessed: PathLike, interventions: PathLike, anchors: PathLike, model_dir: PathLike) -> dict:
    """Provenance inputs of a step that reads a trained model and the data it was trained on."""
    return {
        "preprocessed": preprocessed,
        "interventions": interventions,
        "anchors": anchors,
        "model": Path(model_dir) / "model.pt",
        "model_meta": Path(model_dir) / "model.json",
    }


def predict(
    *,
    preprocessed: PathLike,
    interventions: PathLike,
    anchors: PathLike,
    model_dir: PathLike,
    out: PathLike,
    held_out: Sequence[str],
    n_cells: int = 1000,
    top_n: int = 20,
    seed: int = 0,
) -> None:
    """Score a trained model's predicted cells of the ``held_out`` combinations against the observed
    ones, beside the control-mean and additive baselines, into ``predictions.parquet``
    (:func:`crl_pipe.tl.evaluate_combinations`: ``intervention, predictor, metric, value``)."""
    from . import tl
    from .models import load_model

    fitted = load_model(model_dir)
    if not hasattr(fitted, "predict"):
        raise ConfigError(f"{model_dir}: model {fitted.name} cannot predict held-out cells; expected causal_vae")
    data = _load_data(preprocessed, interventions, anchors, counts=False)
    labels = tl.resolve_held_out(data, held_out, source=str(interventions))
    scores = tl.evaluate_combinations(fitted, data, labels, n_cells=n_cells, top_n=top_n, seed=seed)
    inputs = _model_inputs(preprocessed, interventions, anchors, model_dir)
    params = {"held_out": labels, "n_cells": n_cells, "top_n": top_n, "seed": seed}
    write_table(scores, out, "predictions", provenance("predict", inputs, params))


def baseline(
    *,
    preprocessed: PathLike,
    interventions: PathLike,
    out_parquet: PathLike,
    out_graphml: PathLike,
    out_meta: PathLike,
    method: str,
    params: Mapping[str, Any] | None = None,
    n_refits: int = 20,
    seed: int = 0,
    held_out: Sequence[str] = (),
) -> None:
    """Fit a classical causal-discovery baseline (``pc``, ``ges``; :func:`crl_pipe.tl.baseline_graph`) on the
    preprocessed variables (without the ``held_out`` combinations, as the models); writes
    ``graph.parquet``/``graph.graphml`` as ``graph`` does, and ``model.json``."""
    import json

    from . import tl
    from ._provenance import atomic_path
    from .io import write_graphml
    from .models import CRLData

    params = dict(params or {})
    data = CRLData.from_artifacts(read_h5ad(preprocessed), read_table(interventions, "interventions"))
    data = _held_out_dropped(data, held_out, interventions)
    edges = tl.baseline_graph(data, method, params, n_refits=n_refits, seed=seed)
    inputs = {"preprocessed": preprocessed, "interventions": interventions}
    settings = {"method": method, "params": params, "n_refits": n_refits, "seed": seed, **_held_out_param(held_out)}
    prov = provenance("baseline", inputs, settings)
    write_table(edges, out_parquet, "graph", prov)
    write_graphml(edges, out_graphml)
    meta = {"model": method, "kind": "baseline", "params": params, "latent_names": list(data.features)}
    with atomic_path(out_meta) as tmp:
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))


def evaluate_baseline(*, graph: PathLike, truth_graph: PathLike, out: PathLike) -> None:
    """SHD, edge precision and recall of a baseline's graph of observed variables against the true graph."""
    from . import io, tl

    edges, truth = read_table(graph, "graph"), io.read_graph(truth_graph)
    nodes = set(truth["source"]) | set(truth["target"])
    metrics = tl.graph_metrics(edges, truth, {n: n for n in nodes})
    table = pd.DataFrame(list(metrics.items()), columns=["metric", "value"]).astype({"value": float})
    write_table(table, out, "metrics", provenance("evaluate", {"graph": graph, "truth_graph": truth_graph}))


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
    baseline_dirs: Mapping[str, PathLike] | None = None,
    guides: PathLike | None = None,
    expression: PathLike | None = None,
) -> None:
    """Assemble the self-contained HTML report of one dataset across its models (and baselines);
    with ``guides`` (``guides.parquet``) and ``expression`` (``preprocessed.h5ad``) of a cell
    screen, also its guide calls and the knockdown of each targeted gene."""
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
        baseline_dirs=baseline_dirs,
        guides=guides,
        expression=expression,
    )


def collect_benchmark(*, metrics: Mapping[str, PathLike], out: PathLike) -> None:
    """Stack ``metrics.parquet`` of every ``dataset/model`` key into ``benchmark.parquet``."""
    frames = []
    for key, path in metrics.items():
        dataset, model = key.split("/", 1)
        frames.append(read_table(path, "metrics").assign(dataset=dataset, model=model))
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["dataset", "model", "metric", "value"])
    )
    write_table(
        table[["dataset", "model", "metric", "value"]],
        out,
        "benchmark",
        provenance("benchmark", {"metrics": list(metrics.values())}),
    )


def _is_table(kind: str, format: str) -> bool:
    """A screen given as a table of observed variables with intervention indicator columns."""
    return kind == "screen" and format == "table"


def _action_channels(preprocessed: PathLike) -> list[str]:
    """Channels of kind ``action`` in a preprocessed robot log (reader naming differs by format)."""
    var = read_h5ad(preprocessed, backed=True).var
    return [str(c) for c in var.index[var["kind"] == "action"]] if "kind" in var else []


def _load_data(
    preprocessed: PathLike,
    interventions: PathLike,
    anchors: PathLike,
    counts: bool = True,
    held_out: Sequence[str] = (),
):
    """CRLData of the stage artifacts; a large screen is read without its raw counts unless ``counts``;
    without the cells of the ``held_out`` combinations (what every model trains on)."""
    from . import io
    from .models import CRLData

    if io.is_large(preprocessed):
        adata = io.read_h5ad_parts(preprocessed, layers=["counts"] if counts else [])
    else:
        adata = read_h5ad(preprocessed)
    data = CRLData.from_artifacts(adata, read_table(interventions, "interventions"), read_table(anchors, "anchors"))
    return _held_out_dropped(data, held_out, interventions)


def _held_out_dropped(data, held_out: Sequence[str], interventions: PathLike):
    """The one place where held-out combinations leave the training data (train, graph, baseline)."""
    from . import tl

    return tl.hold_out(data, held_out, source=str(interventions)) if held_out else data


def _held_out_param(held_out: Sequence[str]) -> dict[str, list[str]]:
    """``{"held_out": [...]}`` for the provenance when labels are held out, else nothing (unchanged provenance)."""
    return {"held_out": [str(x) for x in held_out]} if held_out else {}


def _uses_counts(model: str) -> bool:
    """Whether ``model`` reads raw counts (the ``linear`` model does not: its large screens load half the data)."""
    from .models import MODELS

    return getattr(MODELS.get(model), "uses_counts", True)
