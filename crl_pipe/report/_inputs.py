"""Everything one report shows, read once from the stage artifacts: :class:`ReportInputs`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .._errors import ConfigError, InputError
from ..io import read_graph, read_model_meta, read_provenance, read_table
from ..kinds import SCREEN, Vocabulary, get_kind, kind_names, kind_of
from ..pl._common import ordered_unique, require_columns

PathLike = str | os.PathLike

#: The artifacts a report reads (keys of the ``paths`` of :meth:`ReportInputs.from_paths`): the first
#: three are required; ``models`` and ``baselines`` map a name to its results folder.
ARTIFACTS: dict[str, str] = {
    "interventions": "interventions.parquet",
    "qc": "qc.parquet",
    "anchors": "anchors.parquet",
    "models": "model name -> its results folder",
    "baselines": "baseline name (pc, ges) -> its results folder",
    "truth_graph": "the true graph (any layout crl_pipe.io.read_graph reads)",
    "guides": "guides.parquet (the guide calls of a screen of counts)",
    "expression": "preprocessed.h5ad (the knockdown of each targeted gene; the place on the robustness atlas)",
}
REQUIRED = ("interventions", "qc", "anchors")

#: Files of a model folder the report reads (targets and graph must exist).
MODEL_FILES = ("targets", "graph", "training", "latents", "metrics", "loadings", "predictions", "steering")
#: The held-out singles scored by rule steer (a table of the ``predictions`` kind).
SINGLES_FILE = "held_out_singles.parquet"


@dataclass(frozen=True, eq=False)
class ModelArtifacts:
    """Everything the report reads from one model (or baseline) folder."""

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
    steering: pd.DataFrame | None = None
    singles: pd.DataFrame | None = None


@dataclass(frozen=True, eq=False)
class ReportInputs:
    """What the report of one dataset shows; every section is a function of this one object.

    Build it with :meth:`from_paths`. Tables are read and checked once, here; the expression
    matrix, possibly large, is kept as a path and read (backed) by the section that needs it.

    Attributes
    ----------
    dataset
        Dataset name, shown in the page and figure titles.
    labels
        ``interventions.parquet``: one row per sample.
    qc
        ``qc.parquet``.
    anchors
        ``anchors.parquet``: program, feature, weight.
    anchor_provenance
        The provenance of ``anchors.parquet`` (its ``dropped_programs`` are listed).
    models
        The trained models, in the order given.
    baselines
        Classical baselines (graph of the observed variables and metrics; no targets or latents).
    truth
        The true graph (``source, target, weight, stability``), or ``None``.
    guides
        ``guides.parquet`` (guide calls of a screen of counts), or ``None``.
    expression
        Path of ``preprocessed.h5ad`` for the knockdown check and the place on the atlas, or ``None``.
    config
        The configuration values used, shown verbatim (escaped) under "How this was run".
    vocabulary
        The words of the dataset's kind (cells and genes, frames and channels).
    files
        Artifact name -> path, in the order listed under "Provenance of each artifact".
    """

    dataset: str
    labels: pd.DataFrame
    qc: pd.DataFrame
    anchors: pd.DataFrame
    anchor_provenance: Mapping[str, Any]
    models: tuple[ModelArtifacts, ...]
    baselines: tuple[ModelArtifacts, ...] = ()
    truth: pd.DataFrame | None = None
    guides: pd.DataFrame | None = None
    expression: Path | None = None
    config: Mapping[str, Any] | None = None
    vocabulary: Vocabulary = SCREEN
    files: Mapping[str, Path] = field(default_factory=dict)

    @property
    def fitted(self) -> tuple[ModelArtifacts, ...]:
        """The models, then the baselines: everything with a graph (and maybe metrics)."""
        return self.models + self.baselines

    @classmethod
    def from_paths(
        cls,
        dataset: str,
        paths: Mapping[str, Any],
        *,
        config: Mapping[str, Any] | None = None,
        vocabulary: Vocabulary | None = None,
    ) -> ReportInputs:
        """Read the artifacts of one dataset's report.

        Parameters
        ----------
        dataset
            Dataset name, shown in the page and figure titles.
        paths
            Artifact -> path (keys of :data:`ARTIFACTS`): ``interventions``, ``qc`` and ``anchors``
            are required; ``models`` and ``baselines`` map a name to its results folder (``targets``,
            ``graph``, ``training``, ``latents``, ``model.json``; ``metrics``, ``loadings`` and
            ``predictions`` where present); ``truth_graph``, ``guides`` and ``expression`` are
            optional (missing or ``None``: the report says what it cannot show).
        config
            The configuration values used (``dataset.kind`` picks the words, unless ``vocabulary``).
        vocabulary
            The words of the dataset's kind; default: from ``config`` (:func:`vocabulary_of`).
        """
        unknown = sorted(set(paths) - set(ARTIFACTS))
        if unknown:
            raise InputError(f"report artifacts: unknown key(s) {unknown}; expected some of {list(ARTIFACTS)}")
        missing = [key for key in REQUIRED if not paths.get(key)]
        if missing:
            raise InputError(f"report artifacts: missing {missing}; expected paths of {list(REQUIRED)}")
        interventions, qc, anchors = (Path(paths[key]) for key in REQUIRED)
        labels = read_table(interventions, "interventions")
        qc_table = read_table(qc, "qc")
        anchor_table = read_table(anchors, "anchors")
        models = tuple(load_model(str(name), Path(d)) for name, d in (paths.get("models") or {}).items())
        baselines = tuple(load_baseline(str(name), Path(d)) for name, d in (paths.get("baselines") or {}).items())
        truth_path = Path(paths["truth_graph"]) if paths.get("truth_graph") else None
        guides_path = Path(paths["guides"]) if paths.get("guides") else None
        files = {"interventions": interventions, "qc": qc, "anchors": anchors}
        for m in models + baselines:
            files.update({f"{m.name} / {kind}": path for kind, path in m.files.items()})
        if truth_path:
            files["true graph"] = truth_path
        if guides_path:
            files["guides"] = guides_path
        return cls(
            dataset=str(dataset),
            labels=labels,
            qc=qc_table,
            anchors=anchor_table,
            anchor_provenance=read_provenance(anchors),
            models=models,
            baselines=baselines,
            truth=read_truth_graph(truth_path) if truth_path else None,
            guides=read_table(guides_path, "guides") if guides_path else None,
            expression=Path(paths["expression"]) if paths.get("expression") else None,
            config=config,
            vocabulary=vocabulary or vocabulary_of(config),
            files=files,
        )


def vocabulary_of(config: Mapping[str, Any] | None) -> Vocabulary:
    """The words of the dataset's kind (:func:`crl_pipe.kinds.kind_of` of the report's ``config["dataset"]``)."""
    dataset = (config or {}).get("dataset", {})
    try:
        return kind_of(dataset).vocabulary
    except ConfigError:  # a hand-written config without its format: the words of a kind of that name
        kinds = [get_kind(name) for name in kind_names()]
        return next((k.vocabulary for k in kinds if k.config_kind == dataset.get("kind", "screen")), SCREEN)


def load_model(name: str, directory: Path) -> ModelArtifacts:
    """The artifacts of one model folder (``targets`` and ``graph`` required)."""
    if not directory.is_dir():
        raise InputError(f"{directory}: model folder of {name!r} does not exist")
    files = {kind: directory / f"{kind}.parquet" for kind in MODEL_FILES}
    files = {k: p for k, p in files.items() if p.exists() or k in ("targets", "graph")}
    targets = read_table(files["targets"], "targets")
    graph = read_table(files["graph"], "graph")
    training = read_table(files["training"], "training") if "training" in files else None
    metrics = read_table(files["metrics"], "metrics") if "metrics" in files else None
    loadings = None
    if "loadings" in files:
        loadings = read_table(files["loadings"])
        require_columns(loadings, ["latent", "feature", "loading"], f"{files['loadings']}")
    meta = read_model_meta(directory / "model.json", strict=True)
    latent_names = [str(x) for x in meta.get("latent_names") or []]
    if not latent_names and "latents" in files:
        latent_names = [c for c in read_table(files["latents"], "latents").columns if c != "sample_id"]
    if not latent_names:
        latent_names = ordered_unique(targets["latent"])
    predictions = read_table(files["predictions"], "predictions") if "predictions" in files else None
    steering = read_table(files["steering"], "steering") if "steering" in files else None
    singles_path = directory / SINGLES_FILE
    singles = read_table(singles_path, "predictions") if singles_path.exists() else None
    return ModelArtifacts(
        name, directory, targets, graph, training, metrics, loadings, meta, latent_names, files, predictions,
        steering, singles,
    )  # fmt: skip


def load_baseline(name: str, directory: Path) -> ModelArtifacts:
    """A classical baseline's folder: its graph of the observed variables (and metrics); no targets or latents."""
    metrics_path = directory / "metrics.parquet"
    files = {"graph": directory / "graph.parquet", **({"metrics": metrics_path} if metrics_path.exists() else {})}
    graph = read_table(files["graph"], "graph")
    metrics = read_table(metrics_path, "metrics") if metrics_path.exists() else None
    meta = read_model_meta(directory / "model.json", strict=False)
    names = [str(x) for x in meta.get("latent_names") or []]
    names = names or ordered_unique(pd.concat([graph["source"], graph["target"]]).astype(str))
    targets = pd.DataFrame({"intervention": [], "latent": [], "score": []})
    return ModelArtifacts(name, directory, targets, graph, None, metrics, None, meta, names, files)


def read_truth_graph(path: Path) -> pd.DataFrame:
    """The true program graph in any layout :func:`crl_pipe.io.read_graph` reads (Parquet, CSV/TSV, Tetrad)."""
    table = read_graph(path)
    require_columns(table, ["source", "target", "weight"], f"{path} (true graph)")
    table = table.assign(source=table["source"].astype(str), target=table["target"].astype(str))
    if "stability" not in table:
        table["stability"] = 1.0
    return table
