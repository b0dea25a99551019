"""A catalogue of bad inputs: each stops its stage with one line that names the file (or the key),
the column or key, and what was expected; nothing is left where the artifact would be.

Three ways in, as users meet them:

- the step functions of :mod:`crl_pipe.pipeline` (the bulk of the catalogue, in-process);
- the ``crl-pipe`` command line (exit status 1, one line on stderr, no traceback; usage errors
  exit 2 with one line);
- Snakemake on a tiny config in a folder of its own (the rule fails with one
  ``crl-pipe error in rule ...`` line, its log holds no traceback, no output file is left).

Decisions this file pins down:

- a perturbation with fewer than ``min_cells`` cells is dropped with a logged warning; when every
  perturbation is dropped, labelling stops with an error;
- a gene set with fewer than ``min_anchors`` genes in the data is dropped and reported (log and
  the ``dropped_programs`` provenance of ``anchors.parquet``); when none is left, an error;
- a configured control value that matches no label is an error naming the value and the labels
  that look like controls, even where the built-in tokens found other control cells (every shift
  is measured against the controls, so a wrong value must not pass silently).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from crl_pipe import ConfigError, CrlPipeError, InputError, ModelError, pipeline
from crl_pipe.config import validate_config
from crl_pipe.io import read_provenance, write_gmt
from crl_pipe.simulate import simulate_screen

REPO = Path(__file__).resolve().parents[1]
_HAS_CUDA = __import__("torch").cuda.is_available()
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONTROL = "non-targeting"
SIM = {
    "n_programs": 3,
    "n_genes": 60,
    "anchors_per_program": 5,
    "n_control": 100,
    "cells_per_perturbation": 30,
    "n_doubles": 1,
    "seed": 1,
}


# ---- a valid screen and its artifacts, built once -------------------------------------------------
@dataclass
class Good:
    """Paths of a valid screen and of every artifact the stages make from it."""

    root: Path
    adata: ad.AnnData  # the raw screen (do not modify: copy first)
    screen: Path
    gmt: Path
    ingested: Path
    qc: Path
    interventions: Path
    preprocessed: Path
    anchors: Path
    model_dir: Path
    gene_sets: dict[str, list[str]]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Good:
    root = tmp_path_factory.mktemp("good")
    sim = simulate_screen(**SIM)
    g = Good(
        root=root,
        adata=sim.adata,
        screen=root / "screen.h5ad",
        gmt=root / "programs.gmt",
        ingested=root / "ingested.h5ad",
        qc=root / "qc.parquet",
        interventions=root / "interventions.parquet",
        preprocessed=root / "preprocessed.h5ad",
        anchors=root / "anchors.parquet",
        model_dir=root / "linear",
        gene_sets=dict(sim.gene_sets),
    )
    sim.adata.write_h5ad(g.screen)
    write_gmt(sim.gene_sets, g.gmt)
    pipeline.ingest(path=g.screen, out_h5ad=g.ingested, out_qc=g.qc)
    labels = {"perturbation_key": "perturbation", "control_values": [CONTROL]}
    pipeline.label(ingested=g.ingested, out=g.interventions, options=labels)
    pipeline.preprocess(
        ingested=g.ingested,
        interventions=g.interventions,
        out=g.preprocessed,
        gene_sets=g.gmt,
        options={"n_top_genes": 30},
    )
    pipeline.anchors(preprocessed=g.preprocessed, out=g.anchors, gene_sets=g.gmt)
    pipeline.train(
        preprocessed=g.preprocessed,
        interventions=g.interventions,
        anchors=g.anchors,
        out_dir=g.model_dir,
        model="linear",
    )
    pipeline.graph(
        preprocessed=g.preprocessed,
        interventions=g.interventions,
        anchors=g.anchors,
        model_dir=g.model_dir,
        out_parquet=g.model_dir / "graph.parquet",
        out_graphml=g.model_dir / "graph.graphml",
        n_refits=2,
    )
    return g


# ---- builders of bad inputs -----------------------------------------------------------------------
def write_screen(path: Path, adata: ad.AnnData) -> Path:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* names are not unique", category=UserWarning)
        adata.write_h5ad(path)
    return path


def screen_with(good: Good, path: Path, *, X=None, obs=None, var=None, layers=None) -> Path:
    """A copy of the good screen with some parts replaced, written to ``path``."""
    a = good.adata
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* names are not unique", category=UserWarning)
        new = ad.AnnData(
            X=a.X.copy() if X is None else X,
            obs=a.obs.copy() if obs is None else obs,
            var=a.var.copy() if var is None else var,
            layers=layers or {},
        )
    return write_screen(path, new)


def dense(good: Good, dtype=np.float64) -> np.ndarray:
    return good.adata.X.toarray().astype(dtype)


def relabelled_raw(good: Good, path: Path, labels) -> Path:
    """The raw screen with its perturbation column replaced by ``labels`` (a value or a function of the old)."""
    obs = good.adata.obs.copy()
    obs["perturbation"] = labels(obs["perturbation"].astype(str)) if callable(labels) else labels
    return screen_with(good, path, obs=obs)


def relabelled(good: Good, path: Path, labels) -> Path:
    """An ingested screen (the input of rule label) whose perturbation column is ``labels``."""
    raw = relabelled_raw(good, path.with_name("raw_" + path.name), labels)
    pipeline.ingest(path=raw, out_h5ad=path, out_qc=path.with_suffix(".qc.parquet"))
    return path


def interventions_with(good: Good, path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    table = pd.read_parquet(good.interventions)
    edit(table).to_parquet(path, index=False)
    return path


# ---- the catalogue --------------------------------------------------------------------------------
@dataclass
class Case:
    """One bad input: the step it reaches, how to build it, and what the message must say.

    ``build(good, tmp)`` writes the bad input under ``tmp`` and returns the step's keyword
    arguments except the outputs; ``expect`` are substrings of the message, where ``{bad}`` is
    replaced by the bad file's path (``build`` returns it under the key ``"_bad"``).
    """

    id: str
    step: str
    build: Callable[[Good, Path], dict[str, Any]]
    expect: list[str]
    error: type[Exception] = InputError
    marks: list[Any] = field(default_factory=list)


def ingest_args(path, **kw):
    return {"path": path, "_bad": path, **kw}


def label_args(good, ingested=None, **options):
    options = {"perturbation_key": "perturbation", "control_values": [CONTROL], **options}
    return {"ingested": ingested or good.ingested, "options": options, "_bad": ingested or good.ingested}


def preprocess_args(good, **kw):
    """Files and ``_bad`` as given (else the good ones); other keywords are preprocess options."""
    base = {"ingested": good.ingested, "interventions": good.interventions, "gene_sets": good.gmt}
    files = {k: kw.pop(k) for k in (*base, "_bad") if k in kw}
    return {**base, **files, "options": {"n_top_genes": 30, **kw}}


def anchors_args(good, gene_sets, **kw):
    return {"preprocessed": good.preprocessed, "gene_sets": gene_sets, "_bad": gene_sets, **kw}


def train_args(good, **kw):
    base = {"preprocessed": good.preprocessed, "interventions": good.interventions, "anchors": good.anchors}
    return {**base, "model": "linear", **kw}


def _truncated(good: Good, tmp: Path) -> Path:
    data = good.screen.read_bytes()
    (tmp / "truncated.h5ad").write_bytes(data[: len(data) // 2])
    return tmp / "truncated.h5ad"


def _text_file(tmp: Path, name: str, text: str) -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def _bytes_file(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def _x_with(good: Good, i: int, j: int, value, dtype=np.float64) -> np.ndarray:
    X = dense(good, dtype)
    X[i, j] = value
    return X


def _dup_cells(good: Good, tmp: Path) -> Path:
    obs = good.adata.obs.copy()
    obs.index = [*obs.index[:-1], obs.index[0]]
    return screen_with(good, tmp / "dup_cells.h5ad", obs=obs)


def _dup_genes(good: Good, tmp: Path) -> Path:
    var = good.adata.var.copy()
    var.index = [*var.index[:-1], var.index[0]]
    return screen_with(good, tmp / "dup_genes.h5ad", var=var)


def _no_cells(good: Good, tmp: Path) -> Path:
    a = good.adata
    empty = ad.AnnData(X=sp.csr_matrix((0, a.n_vars), dtype=np.float32), obs=a.obs.iloc[:0].copy(), var=a.var.copy())
    return write_screen(tmp / "no_cells.h5ad", empty)


def _gene_sets_one_anchor(good: Good, tmp: Path) -> Path:
    first = pd.read_parquet(good.anchors)["feature"].iloc[0]
    return _text_file(tmp, "one_anchor.gmt", f"ONLY\tna\t{first}\tNOT_A_GENE\n")


def _model_dir_without(good: Good, tmp: Path, missing: str) -> Path:
    folder = tmp / "model"
    folder.mkdir()
    for f in good.model_dir.iterdir():
        if f.name != missing:
            (folder / f.name).write_bytes(f.read_bytes())
    return folder


def _robot_log(tmp: Path, edit: Callable[[pd.DataFrame], pd.DataFrame] = lambda f: f, name="log.csv") -> Path:
    """A robot log as a CSV table (two episodes, an elbow joint and its command), edited by ``edit``."""
    rng = np.random.default_rng(0)
    frames = []
    for e in range(2):
        a = np.cumsum(rng.normal(size=8))
        frames.append(pd.DataFrame({"episode": f"r{e}", "t": 0.05 * np.arange(8), "elbow": 0.5 * a, "action.elbow": a}))
    edit(pd.concat(frames, ignore_index=True)).to_csv(tmp / name, index=False)
    return tmp / name


def robot_args(path: Path, **options):
    return ingest_args(
        path,
        format="table",
        kind="robot",
        options={"episode_key": "episode", "time_key": "t", "actions": ["action.elbow"], **options},
    )


def _robot_ingested(tmp: Path) -> Path:
    out = tmp / "robot.h5ad"
    pipeline.ingest(
        path=_robot_log(tmp),
        out_h5ad=out,
        out_qc=tmp / "robot_qc.parquet",
        format="table",
        kind="robot",
        options={"episode_key": "episode", "time_key": "t", "actions": ["action.elbow"]},
    )
    return out


def _demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _config_with(edit: Callable[[dict], Any]) -> Callable[[Good, Path], dict[str, Any]]:
    def build(good: Good, tmp: Path) -> dict[str, Any]:
        config = _demo_config()
        edit(config)
        return {"config": config}

    return build


def _rename_dataset(new: str) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        config["datasets"] = {new: config["datasets"]["demo"]}

    return edit


# The test runs ``pipeline.<step>(**build(...), <outputs under tmp/out>)`` for these steps.
OUTPUTS: dict[str, Callable[[Path], dict[str, Path]]] = {
    "ingest": lambda out: {"out_h5ad": out / "ingested.h5ad", "out_qc": out / "qc.parquet"},
    "label": lambda out: {"out": out / "interventions.parquet"},
    "preprocess": lambda out: {"out": out / "preprocessed.h5ad"},
    "anchors": lambda out: {"out": out / "anchors.parquet"},
    "train": lambda out: {"out_dir": out / "linear"},
    "graph": lambda out: {"out_parquet": out / "graph.parquet", "out_graphml": out / "graph.graphml"},
    "evaluate": lambda out: {"out": out / "metrics.parquet"},
    "report": lambda out: {"out_html": out / "report.html"},
}

CATALOGUE: list[Case] = [
    # -- ingest: the raw screen ------------------------------------------------------------------
    Case(
        "ingest-truncated-h5ad",
        "ingest",
        lambda g, t: ingest_args(_truncated(g, t)),
        ["{bad}: not a readable h5ad file", "truncated file"],
    ),
    Case(
        "ingest-text-file-named-h5ad",
        "ingest",
        lambda g, t: ingest_args(_text_file(t, "notes.h5ad", "cell,gene\n")),
        ["{bad}: not a readable h5ad file", "file signature not found"],
    ),
    Case("ingest-parquet-given-as-h5ad", "ingest", lambda g, t: ingest_args(g.qc), ["{bad}: not a readable h5ad file"]),
    Case(
        "ingest-empty-file",
        "ingest",
        lambda g, t: ingest_args(_bytes_file(t, "empty.h5ad", b"")),
        ["{bad}: file is empty, expected an h5ad (HDF5) file"],
    ),
    Case(
        "ingest-path-does-not-exist",
        "ingest",
        lambda g, t: ingest_args(t / "no_such_screen.h5ad"),
        ["{bad}: file does not exist"],
    ),
    Case(
        "ingest-path-is-a-folder",
        "ingest",
        lambda g, t: ingest_args(t),
        ["{bad}: is a folder, expected an h5ad (HDF5) file"],
    ),
    Case(
        "ingest-unknown-format",
        "ingest",
        lambda g, t: ingest_args(g.screen, format="csv"),
        ["{bad}: unknown screen format 'csv'; supported formats:", "'h5ad'"],
    ),
    Case(
        "ingest-unknown-reader-option",
        "ingest",
        lambda g, t: ingest_args(g.screen, options={"countslayer": "raw"}),
        ["{bad}: option(s) ['countslayer'] not understood by format 'h5ad'; it takes none"],
    ),
    Case(
        "ingest-normalised-not-counts",
        "ingest",
        lambda g, t: ingest_args(screen_with(g, t / "lognorm.h5ad", X=np.log1p(dense(g)) + 0.1)),
        ["{bad}: X holds", "non-integer value(s)", "expected raw counts (non-negative integers), not normalised"],
    ),
    Case(
        "ingest-negative-counts",
        "ingest",
        lambda g, t: ingest_args(screen_with(g, t / "negative.h5ad", X=_x_with(g, 3, 4, -2, np.int32))),
        ["{bad}: X holds 1 negative value(s) (e.g. -2); expected raw counts (non-negative integers)"],
    ),
    Case(
        "ingest-nan-counts",
        "ingest",
        lambda g, t: ingest_args(screen_with(g, t / "nan.h5ad", X=_x_with(g, 0, 0, np.nan))),
        ["{bad}: X holds 1 NaN/Inf value(s); expected raw counts"],
    ),
    Case(
        "ingest-inf-counts",
        "ingest",
        lambda g, t: ingest_args(screen_with(g, t / "inf.h5ad", X=_x_with(g, 5, 1, np.inf))),
        ["{bad}: X holds 1 NaN/Inf value(s); expected raw counts"],
    ),
    Case(
        "ingest-text-counts",
        "ingest",
        lambda g, t: ingest_args(screen_with(g, t / "text.h5ad", X=dense(g).astype(str))),
        ["{bad}: X has dtype object; expected raw counts (non-negative integers)"],
    ),
    Case(
        "ingest-bad-counts-in-layer",
        "ingest",
        lambda g, t: ingest_args(screen_with(g, t / "layer.h5ad", layers={"counts": dense(g) / 3})),
        ["{bad}: layers['counts'] holds", "non-integer value(s)"],
    ),
    Case(
        "ingest-missing-counts-layer",
        "ingest",
        lambda g, t: ingest_args(g.screen, options={"counts_layer": "umis"}),
        ["{bad}: layers['umis'] not found; expected raw counts there (available layers: []"],
    ),
    Case(
        "ingest-duplicate-cell-ids",
        "ingest",
        lambda g, t: ingest_args(_dup_cells(g, t)),
        ["{bad}: obs index (cell IDs) has 1 duplicated name(s) (cell000000); expected unique names"],
    ),
    Case(
        "ingest-duplicate-genes",
        "ingest",
        lambda g, t: ingest_args(_dup_genes(g, t)),
        ["{bad}: var index (gene symbols) has 1 duplicated name(s)", "expected unique names"],
    ),
    Case(
        "ingest-no-cells",
        "ingest",
        lambda g, t: ingest_args(_no_cells(g, t)),
        ["{bad}: screen has 0 cells x 60 genes; expected at least one of each"],
    ),
    # -- label: the perturbation column ----------------------------------------------------------
    Case(
        "label-missing-perturbation-column",
        "label",
        lambda g, t: label_args(g, perturbation_key="guide"),
        [
            "{bad}: obs column 'guide' not found; expected the perturbation labels there",
            "available obs columns: ['perturbation']",
        ],
    ),
    Case(
        "label-no-control-cells",
        "label",
        lambda g, t: label_args(g, relabelled(g, t / "ing.h5ad", lambda s: s.replace(CONTROL, "REG1"))),
        ["{bad}: obs['perturbation']: no control cells; looked for ['non-targeting']", "most common labels: 'REG1'"],
    ),
    Case(
        "label-control-value-matches-nothing",
        "label",
        lambda g, t: label_args(
            g, relabelled(g, t / "ing.h5ad", lambda s: s.replace(CONTROL, "NegCtrl")), control_values=["NTC"]
        ),
        [
            "{bad}: obs['perturbation']: no control cells; looked for ['NTC'] and the built-in control tokens",
            "'NegCtrl' (100)",
        ],
    ),
    Case(
        "label-all-cells-control",
        "label",
        lambda g, t: label_args(g, relabelled(g, t / "ing.h5ad", CONTROL)),
        ["{bad}: obs['perturbation']: no perturbed (non-control) cells remain; expected at least one"],
    ),
    Case(
        "label-all-cells-one-perturbation",
        "label",
        lambda g, t: label_args(g, relabelled(g, t / "ing.h5ad", "REG1")),
        ["{bad}: obs['perturbation']: no control cells", "most common labels: 'REG1' (220)"],
    ),
    Case(
        "label-every-perturbation-below-min-cells",
        "label",
        lambda g, t: label_args(g, min_cells=31),
        ["{bad}: obs['perturbation']: no perturbed (non-control) cells with at least min_cells=31 cells remain"],
    ),
    Case(
        "label-every-label-missing",
        "label",
        lambda g, t: label_args(g, relabelled(g, t / "ing.h5ad", np.nan)),
        ["{bad}: obs['perturbation']: no control cells", "most common labels: none, all 220 are missing"],
    ),
    Case(
        "label-min-cells-zero",
        "label",
        lambda g, t: label_args(g, min_cells=0),
        ["min_cells=0: expected an integer >= 1"],
    ),
    Case(
        "label-ingested-is-parquet",
        "label",
        lambda g, t: label_args(g, g.interventions),
        ["{bad}: not a readable h5ad file"],
    ),
    # -- preprocess: the interventions table and gene sets -------------------------------------------
    Case(
        "preprocess-interventions-not-parquet",
        "preprocess",
        lambda g, t: preprocess_args(
            g, interventions=_text_file(t, "iv.parquet", "sample_id,intervention\n"), _bad=t / "iv.parquet"
        ),
        ["{bad}: not a readable Parquet file", "magic bytes not found"],
    ),
    Case(
        "preprocess-interventions-empty-file",
        "preprocess",
        lambda g, t: preprocess_args(g, interventions=_bytes_file(t, "iv.parquet", b""), _bad=t / "iv.parquet"),
        ["{bad}: not a readable Parquet file", "0 bytes"],
    ),
    Case(
        "preprocess-interventions-missing-column",
        "preprocess",
        lambda g, t: preprocess_args(
            g,
            interventions=interventions_with(g, t / "iv.parquet", lambda d: d.drop(columns="targets")),
            _bad=t / "iv.parquet",
        ),
        ["{bad}: missing column 'targets' expected in a interventions table"],
    ),
    Case(
        "preprocess-interventions-wrong-type",
        "preprocess",
        lambda g, t: preprocess_args(
            g,
            interventions=interventions_with(
                g, t / "iv.parquet", lambda d: d.assign(is_control=d["is_control"].map({True: "yes", False: "no"}))
            ),
            _bad=t / "iv.parquet",
        ),
        ["{bad}: column 'is_control' has type string, expected bool in a interventions table"],
    ),
    Case(
        "preprocess-interventions-duplicate-cells",
        "preprocess",
        lambda g, t: preprocess_args(
            g, interventions=interventions_with(g, t / "iv.parquet", lambda d: pd.concat([d, d.iloc[:1]]))
        ),
        ["interventions table: sample_id 'cell000000' appears twice; expected one row per cell"],
    ),
    Case(
        "preprocess-interventions-match-no-cell",
        "preprocess",
        lambda g, t: preprocess_args(
            g, interventions=interventions_with(g, t / "iv.parquet", lambda d: d.assign(sample_id="x" + d["sample_id"]))
        ),
        ["interventions table: no sample_id matches a cell of the screen (e.g. 'xcell000000' vs 'cell000000')"],
    ),
    Case(
        "preprocess-gmt-malformed-line",
        "preprocess",
        lambda g, t: preprocess_args(
            g, gene_sets=_text_file(t, "bad.gmt", "P1\tna\tGENE01\tGENE02\nP2 GENE03 GENE04\n"), _bad=t / "bad.gmt"
        ),
        ["{bad}, line 2: expected name<TAB>description<TAB>gene..., found 1 tab-separated field(s)"],
    ),
    Case(
        "preprocess-gmt-not-utf8",
        "preprocess",
        lambda g, t: preprocess_args(
            g, gene_sets=_bytes_file(t, "latin1.gmt", "P1\tna\tG\xe8ne1\n".encode("latin-1")), _bad=t / "latin1.gmt"
        ),
        ["{bad}, line 1: not UTF-8 text (byte 0xe8 at column 8); expected a GMT text file"],
    ),
    Case(
        "preprocess-gmt-empty",
        "preprocess",
        lambda g, t: preprocess_args(g, gene_sets=_text_file(t, "empty.gmt", "\n\n"), _bad=t / "empty.gmt"),
        ["{bad}: no gene sets found; expected at least one, as lines name<TAB>description<TAB>gene..."],
    ),
    Case(
        "preprocess-gmt-does-not-exist",
        "preprocess",
        lambda g, t: preprocess_args(g, gene_sets=t / "missing.gmt", _bad=t / "missing.gmt"),
        ["{bad}: gene-set file does not exist"],
    ),
    Case(
        "preprocess-gmt-duplicate-set",
        "preprocess",
        lambda g, t: preprocess_args(
            g, gene_sets=_text_file(t, "dup.gmt", "P1\tna\tGENE01\nP1\tna\tGENE02\n"), _bad=t / "dup.gmt"
        ),
        ["{bad}, line 2: gene set 'P1' appears twice; expected unique set names"],
    ),
    Case(
        "preprocess-target-sum-negative",
        "preprocess",
        lambda g, t: preprocess_args(g, target_sum=-1),
        ["target_sum=-1: expected a finite number > 0"],
    ),
    # -- anchors: gene sets meet the data -------------------------------------------------------------
    Case(
        "anchors-gene-sets-no-overlap",
        "anchors",
        lambda g, t: anchors_args(g, _text_file(t, "other.gmt", "A\tna\tXX1\tXX2\tXX3\nB\tna\tYY1\tYY2\n")),
        ["gene sets: no gene set has >= 2 anchor genes in the data", "the data has", "the 2 gene sets name 5 genes"],
    ),
    Case(
        "anchors-gene-sets-other-case",
        "anchors",
        lambda g, t: anchors_args(g, _text_file(t, "lower.gmt", "P1\tna\tgene01\tgene02\tgene03\n")),
        ["no gene set has >= 2 anchor genes", "3 gene-set genes match only when ignoring case"],
    ),
    Case(
        "anchors-only-program-has-one-anchor",
        "anchors",
        lambda g, t: anchors_args(g, _gene_sets_one_anchor(g, t)),
        ["gene sets: no gene set has >= 2 anchor genes in the data", "the 1 gene sets name 2 genes"],
    ),
    Case(
        "anchors-json-not-a-mapping",
        "anchors",
        lambda g, t: anchors_args(g, _text_file(t, "sets.json", "[1, 2]")),
        ["{bad}: top level is list; expected a mapping {name: [genes]}"],
    ),
    # -- train, graph, evaluate, report ---------------------------------------------------------------
    Case(
        "train-anchors-wrong-type",
        "train",
        lambda g, t: train_args(
            g,
            anchors=(t / "a.parquet"),
            _bad=t / "a.parquet",
            _setup=lambda: pd.read_parquet(g.anchors).assign(weight="1").to_parquet(t / "a.parquet"),
        ),
        ["{bad}: column 'weight' has type string, expected double in a anchors table"],
    ),
    Case(
        "train-unknown-model",
        "train",
        lambda g, t: train_args(g, model="lineer"),
        ["unknown model 'lineer'; expected one of", "'linear'"],
        error=ConfigError,
    ),
    Case(
        "train-preprocessed-does-not-exist",
        "train",
        lambda g, t: train_args(g, preprocessed=t / "pre.h5ad", _bad=t / "pre.h5ad"),
        ["{bad}: file does not exist"],
    ),
    Case(
        "train-unknown-device",
        "train",
        lambda g, t: train_args(g, model="sparse_vae", params={"device": "tpu"}),
        ["device 'tpu'", "expected 'auto', 'cpu' or 'cuda'"],
        error=ModelError,
    ),
    Case(
        "graph-model-json-missing",
        "graph",
        lambda g, t: {
            "preprocessed": g.preprocessed,
            "interventions": g.interventions,
            "anchors": g.anchors,
            "model_dir": _model_dir_without(g, t, "model.json"),
            "_bad": t / "model",
        },
        ["{bad}", "model.json"],
    ),
    Case(
        "evaluate-truth-graph-missing-columns",
        "evaluate",
        lambda g, t: {
            "graph": g.model_dir / "graph.parquet",
            "targets": g.model_dir / "targets.parquet",
            "latents": g.model_dir / "latents.parquet",
            "truth": {"graph": _text_file(t, "truth.csv", "from,to\nP1,P2\n")},
            "_bad": t / "truth.csv",
        },
        ["{bad}: missing column(s) ['source', 'target']; expected source,target[,weight]"],
    ),
    Case(
        "report-model-folder-missing",
        "report",
        lambda g, t: {
            "dataset": "x",
            "artifacts": {
                "interventions": g.interventions,
                "qc": g.qc,
                "anchors": g.anchors,
                "models": {"linear": t / "nowhere"},
            },
            "_bad": t / "nowhere",
        },
        ["{bad}: model folder of 'linear' does not exist"],
    ),
    Case(
        "train-required-gpu-not-there",
        "train",
        lambda g, t: train_args(g, model="sparse_vae", params={"device": "cuda"}, require_device=True),
        ["model device 'cuda': CUDA is not available", "expected a visible GPU (require_device is true"],
        error=ModelError,
        marks=[pytest.mark.skipif(_HAS_CUDA, reason="this machine has a GPU")],
    ),
    # -- robot logs -----------------------------------------------------------------------------------
    Case(
        "robot-timestamps-not-increasing",
        "ingest",
        lambda g, t: robot_args(_robot_log(t, lambda f: f.assign(t=f["t"].where(f.index != 3, 0.0)))),
        ["{bad}: timestamps are not increasing in episode r0 at frame 3", "expected strictly increasing time"],
    ),
    Case(
        "robot-timestamp-missing",
        "ingest",
        lambda g, t: robot_args(_robot_log(t, lambda f: f.assign(t=f["t"].where(f.index != 5)))),
        ["{bad}: 1 frame(s) without a timestamp (e.g. episode r0, frame 5)", "expected a finite time"],
    ),
    Case(
        "robot-episode-with-one-frame",
        "ingest",
        lambda g, t: robot_args(_robot_log(t, lambda f: f.iloc[7:])),
        ["{bad}: episode(s) r0 have a single frame; expected >= 2 frames per episode"],
    ),
    Case(
        "robot-time-column-missing",
        "ingest",
        lambda g, t: robot_args(_robot_log(t), time_key="time"),
        ["{bad}: column 'time' not found"],
    ),
    Case(
        "robot-action-channel-not-in-table",
        "ingest",
        lambda g, t: robot_args(_robot_log(t), actions=["action.wrist"]),
        [
            "{bad}: actions column(s) ['action.wrist'] are not signal columns; "
            "expected some of ['elbow', 'action.elbow']"
        ],
    ),
    Case(
        "robot-parquet-not-parquet",
        "ingest",
        lambda g, t: robot_args(_text_file(t, "log.parquet", "episode,t,elbow\nr0,0,1\n")),
        ["{bad}", "Parquet"],
    ),
    Case(
        "robot-label-action-channel-missing",
        "label",
        lambda g, t: {
            "ingested": _robot_ingested(t),
            "kind": "robot",
            "options": {"actions": ["action.wrist"]},
            "_bad": t / "robot.h5ad",
        },
        ["{bad}: action channel(s) ['action.wrist'] not found; expected channels of the data (var names)"],
    ),
    # -- the workflow config (the function rules/common.smk calls) ------------------------------------
    Case(
        "config-unknown-key",
        "config",
        _config_with(lambda c: c["datasets"]["demo"].update(modles=["linear"])),
        ["config: datasets.demo: unknown key 'modles' (did you mean 'models'?); allowed keys:"],
        error=ConfigError,
    ),
    Case(
        "config-wrong-type",
        "config",
        _config_with(lambda c: c["graph"].update(n_refits="many")),
        ["config: graph.n_refits: 'many' is not of type 'integer'"],
        error=ConfigError,
    ),
    Case(
        "config-dataset-name-parent-dir",
        "config",
        _config_with(_rename_dataset("../x")),
        ["config: datasets: name '../x' is not allowed: use letters, digits, '_', '-' and '.', not starting with '.'"],
        error=ConfigError,
    ),
    Case(
        "config-dataset-name-with-slash",
        "config",
        _config_with(_rename_dataset("a/b")),
        ["config: datasets: name 'a/b' is not allowed"],
        error=ConfigError,
    ),
    Case(
        "config-dataset-name-hidden",
        "config",
        _config_with(_rename_dataset(".hidden")),
        ["config: datasets: name '.hidden' is not allowed"],
        error=ConfigError,
    ),
    Case(
        "config-unknown-format",
        "config",
        _config_with(lambda c: c["datasets"]["demo"].update(format="csv")),
        ["config: datasets.demo.format: 'csv' is not a format of kind 'screen'; expected one of ['h5ad'"],
        error=ConfigError,
    ),
    Case(
        "config-empty-control-values",
        "config",
        _config_with(lambda c: c["datasets"]["demo"].update(control_values=[])),
        ["config: datasets.demo.control_values: [] should be non-empty"],
        error=ConfigError,
    ),
    Case(
        "config-min-cells-negative",
        "config",
        _config_with(lambda c: c["labels"].update(min_cells=-5)),
        ["config: labels.min_cells: -5 is less than the minimum of 1"],
        error=ConfigError,
    ),
    Case(
        "config-device-unknown",
        "config",
        _config_with(lambda c: c.update(device="gpu")),
        ["config: device: 'gpu' does not match"],
        error=ConfigError,
    ),
]


def _run_case(case: Case, good: Good, tmp: Path) -> tuple[str, Path | None, Path]:
    args = case.build(good, tmp)
    bad = args.pop("_bad", None)
    setup = args.pop("_setup", None)
    if setup is not None:
        setup()
    out = tmp / "out"
    if case.step == "config":
        with pytest.raises(case.error) as info:
            validate_config(args["config"], SCHEMA)
    else:
        args.update(OUTPUTS[case.step](out))
        with pytest.raises(case.error) as info:
            getattr(pipeline, case.step)(**args)
    return str(info.value), bad, out


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CATALOGUE])
def test_bad_input_gives_one_line_and_no_artifact(case: Case, good: Good, tmp_path: Path):
    message, bad, out = _run_case(case, good, tmp_path)
    assert "\n" not in message, message
    for part in case.expect:
        assert part.replace("{bad}", str(bad)) in message, f"{part!r} not in {message!r}"
    left = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) if out.exists() else []
    assert not left, f"artifacts left behind: {left}"


def test_catalogue_is_large_and_covers_every_stage():
    assert len(CATALOGUE) >= 25
    assert {c.step for c in CATALOGUE} >= {"ingest", "label", "preprocess", "anchors", "train", "config"}
    assert len({c.id for c in CATALOGUE}) == len(CATALOGUE)


# ---- decisions: drop with a warning, error only when nothing is left ---------------------------------
def test_rare_perturbation_is_dropped_with_a_warning(good, tmp_path, caplog):
    obs = good.adata.obs.copy()
    rare = obs.index[obs["perturbation"] == "REG3"][5:]
    obs = obs.drop(rare)
    raw = screen_with(good, tmp_path / "rare.h5ad", X=good.adata[obs.index].X.copy(), obs=obs)
    pipeline.ingest(path=raw, out_h5ad=tmp_path / "ing.h5ad", out_qc=tmp_path / "qc.parquet")
    with caplog.at_level(logging.WARNING, logger="crl_pipe"):
        pipeline.label(
            ingested=tmp_path / "ing.h5ad",
            out=tmp_path / "iv.parquet",
            options={"perturbation_key": "perturbation", "control_values": [CONTROL], "min_cells": 20},
        )
    table = pd.read_parquet(tmp_path / "iv.parquet")
    assert "REG3" not in set(table["intervention"]) and {"REG1", "REG2"} <= set(table["intervention"])
    assert "1 intervention(s) with fewer than 20 cells dropped: REG3 (5)" in caplog.text


def test_program_with_one_anchor_is_dropped_and_reported(good, tmp_path, caplog):
    sets = dict(good.gene_sets)
    members = {g for genes in sets.values() for g in genes}
    measured = ad.read_h5ad(good.preprocessed, backed="r").var_names
    sets["SINGLE"] = ["NOT_A_GENE", next(g for g in measured if g not in members)]
    write_gmt(sets, tmp_path / "sets.gmt")
    with caplog.at_level(logging.WARNING, logger="crl_pipe"):
        pipeline.anchors(
            preprocessed=good.preprocessed, out=tmp_path / "anchors.parquet", gene_sets=tmp_path / "sets.gmt"
        )
    table = pd.read_parquet(tmp_path / "anchors.parquet")
    assert "SINGLE" not in set(table["program"]) and {"P1", "P2", "P3"} <= set(table["program"])
    dropped = {d["program"]: d["reason"] for d in read_provenance(tmp_path / "anchors.parquet")["dropped_programs"]}
    assert set(dropped) == {"SINGLE"}
    assert dropped["SINGLE"] == "1 of 2 genes in the data; needs at least 2 anchors"
    assert "program SINGLE dropped:" in caplog.text


def test_unmatched_control_value_stops_the_labels_step(good, tmp_path):
    """Controls found by built-in tokens do not excuse a configured control value that matches
    nothing: one line naming the value and the labels that look like controls; nothing written."""
    out = tmp_path / "iv.parquet"
    with pytest.raises(InputError) as err:
        pipeline.label(
            ingested=good.ingested, out=out, options={"perturbation_key": "perturbation", "control_values": ["NTC"]}
        )
    assert f"{good.ingested}: obs['perturbation']: control value 'NTC' matches no label" in str(err.value)
    assert "labels that look like controls: 'non-targeting' (100 cells)" in str(err.value)
    assert "\n" not in str(err.value) and not out.exists()


def test_a_single_control_label_is_not_split_into_characters(good, tmp_path):
    pipeline.label(
        ingested=good.ingested,
        out=tmp_path / "iv.parquet",
        options={"perturbation_key": "perturbation", "control_values": CONTROL},
    )
    assert pd.read_parquet(tmp_path / "iv.parquet")["is_control"].sum() == 100


def test_requested_gpu_that_is_not_there():
    """``device: cuda`` without a GPU: a warning and the CPU by default, an error when strict."""
    import torch

    from crl_pipe.models._training import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelError, match=r"model device 'cuda:1': CUDA is not available"):
        resolve_device("cuda:1", strict=True)
    with pytest.warns(RuntimeWarning, match="training on the CPU"):
        assert resolve_device("cuda").type == "cpu"


# ---- the command line: exit 1, one line, no traceback ------------------------------------------------
CLI_CASES: dict[str, tuple[Callable[[Good, Path], list[str]], int, list[str]]] = {
    "cli-ingest-truncated-h5ad": (
        lambda g, t: [
            "ingest",
            "--path",
            str(_truncated(g, t)),
            "--out-h5ad",
            str(t / "out/i.h5ad"),
            "--out-qc",
            str(t / "out/qc.parquet"),
        ],
        1,
        ["crl-pipe ingest: error: {tmp}/truncated.h5ad: not a readable h5ad file"],
    ),
    "cli-label-missing-column": (
        lambda g, t: [
            "label",
            "--ingested",
            str(g.ingested),
            "--out",
            str(t / "out/iv.parquet"),
            "--options",
            "{perturbation_key: guide, control_values: [NT]}",
        ],
        1,
        ["crl-pipe label: error: {good}/ingested.h5ad: obs column 'guide' not found"],
    ),
    "cli-preprocess-interventions-not-parquet": (
        lambda g, t: [
            "preprocess",
            "--ingested",
            str(g.ingested),
            "--interventions",
            str(_text_file(t, "iv.parquet", "not parquet")),
            "--out",
            str(t / "out/pre.h5ad"),
        ],
        1,
        ["crl-pipe preprocess: error: {tmp}/iv.parquet: not a readable Parquet file"],
    ),
    "cli-anchors-gmt-malformed": (
        lambda g, t: [
            "anchors",
            "--preprocessed",
            str(g.preprocessed),
            "--out",
            str(t / "out/a.parquet"),
            "--gene-sets",
            str(_text_file(t, "x.gmt", "only-a-name\n")),
        ],
        1,
        ["crl-pipe anchors: error: {tmp}/x.gmt, line 1: expected name<TAB>description<TAB>gene..."],
    ),
    "cli-min-anchors-not-an-integer": (
        lambda g, t: [
            "anchors",
            "--preprocessed",
            str(g.preprocessed),
            "--out",
            str(t / "out/a.parquet"),
            "--min-anchors",
            "many",
        ],
        2,
        ["crl-pipe anchors: error: argument --min-anchors: expected an integer, got 'many'"],
    ),
    "cli-options-bad-yaml": (
        lambda g, t: [
            "label",
            "--ingested",
            str(g.ingested),
            "--out",
            str(t / "out/iv.parquet"),
            "--options",
            "{perturbation_key: perturbation, control_values: [NT}",
        ],
        2,
        ["crl-pipe label: error: argument --options: ", "is not a valid YAML value"],
    ),
}


@pytest.fixture(scope="module")
def cli_results(good, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every CLI case, started together (each pays the interpreter start-up once, in parallel)."""
    exe = Path(sys.executable).parent / "crl-pipe"
    procs = {}
    for name, (build, _, _) in CLI_CASES.items():
        tmp = tmp_path_factory.mktemp(name)
        argv = build(good, tmp)
        procs[name] = (
            subprocess.Popen([str(exe), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            tmp,
        )
    results = {}
    for name, (proc, tmp) in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err), tmp)
    return results


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_bad_input_exits_with_one_line(name, cli_results, good):
    proc, tmp = cli_results[name]
    _, status, expect = CLI_CASES[name]
    assert proc.returncode == status, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr, proc.stderr
    for part in expect:
        assert part.format(tmp=tmp, good=good.root) in lines[0], proc.stderr
    out = tmp / "out"
    assert not out.exists() or not any(out.rglob("*")), f"left behind: {list(out.rglob('*'))}"


# ---- Snakemake: the rule fails with one line, no output file is left --------------------------------
SMK_DATASETS = {
    # dataset -> (what is wrong, the target asked for, the rule that fails, outputs that must not exist)
    "corrupt": (
        "truncated h5ad",
        "results/corrupt/ingested.h5ad",
        "ingest",
        ["results/corrupt/ingested.h5ad", "results/corrupt/qc.parquet"],
    ),
    "noctrl": (
        "control value matches nothing",
        "results/noctrl/interventions.parquet",
        "label_interventions",
        ["results/noctrl/interventions.parquet"],
    ),
    "badgmt": (
        "GMT with a malformed line",
        "results/badgmt/preprocessed.h5ad",
        "preprocess",
        ["results/badgmt/preprocessed.h5ad"],
    ),
}
SMK_MESSAGES = {
    "corrupt": "data/truncated.h5ad: not a readable h5ad file",
    "noctrl": "obs['perturbation']: no control cells; looked for ['NTC']",
    "badgmt": "data/bad.gmt, line 2: expected name<TAB>description<TAB>gene...",
}


def _snakemake(folder: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "snakemake"
    if not exe.exists():
        pytest.skip("snakemake is not installed beside the test interpreter")
    cmd = [
        str(exe),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(folder),
        "--configfile",
        str(folder / "config.yaml"),
        *args,
    ]
    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=timeout)


def _smk_dataset(path: str, **kw) -> dict:
    return {"format": "h5ad", "path": path, "perturbation_key": "perturbation", "control_values": [CONTROL], **kw}


@pytest.fixture(scope="module")
def smk_run(good, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One Snakemake run (--keep-going) over three datasets, each broken at a different stage."""
    folder = tmp_path_factory.mktemp("smk") / "analysis"
    data = folder / "data"
    data.mkdir(parents=True)
    _truncated(good, data)
    relabelled_raw(good, data / "negctrl.h5ad", lambda s: s.replace(CONTROL, "NegCtrl"))
    _text_file(data, "bad.gmt", "P1\tna\tGENE01\tGENE02\nP2 GENE03 GENE04\n")
    (data / "screen.h5ad").write_bytes(good.screen.read_bytes())
    config = {
        "datasets": {
            "corrupt": _smk_dataset("data/truncated.h5ad"),
            "noctrl": _smk_dataset("data/negctrl.h5ad", control_values=["NTC"]),
            "badgmt": _smk_dataset("data/screen.h5ad", gene_sets="data/bad.gmt"),
        },
        "preprocess": {"n_top_genes": 30},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    targets = [t for _, t, _, _ in SMK_DATASETS.values()]
    proc = _snakemake(folder, "--cores", "2", "--keep-going", *targets)
    return folder, proc


@pytest.mark.workflow
@pytest.mark.parametrize("dataset", list(SMK_DATASETS), ids=[f"smk-{d}" for d in SMK_DATASETS])
def test_snakemake_rule_fails_cleanly(dataset, smk_run):
    folder, proc = smk_run
    _, _, rule, outputs = SMK_DATASETS[dataset]
    assert proc.returncode != 0
    prefix = f"crl-pipe error in rule {rule}: "
    lines = [line for line in proc.stderr.splitlines() if line.startswith(prefix) and SMK_MESSAGES[dataset] in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    log = (folder / "logs" / rule / f"{dataset}.log").read_text()
    assert lines[0] in log and "Traceback" not in log, log[-2000:]
    for output in outputs:
        assert not (folder / output).exists(), f"{output} left behind"
    assert not list(folder.glob("results/**/.*.tmp-*")), "temporary files left behind"


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(datasets={"../x": c["datasets"]["ok"]}), "config: datasets: name '../x' is not allowed"),
        (
            lambda c: c["datasets"]["ok"].update(format="loom"),
            "config: datasets.ok.format: 'loom' is not a format of kind 'screen'",
        ),
    ],
    ids=["smk-config-dataset-name-parent-dir", "smk-config-unknown-format"],
)
def test_snakemake_rejects_bad_config_before_running(edit, message, good, tmp_path):
    config = {"datasets": {"ok": _smk_dataset(str(good.screen))}}
    edit(config)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = _snakemake(tmp_path, "--cores", "1")
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path.parent / "x").exists()


def test_error_types_are_crl_pipe_errors():
    """Everything the catalogue expects is a CrlPipeError, so the CLI and Snakemake print one line."""
    assert all(issubclass(c.error, CrlPipeError) for c in CATALOGUE)


def test_a_message_with_line_breaks_is_still_printed_on_one_line(tmp_path, capfd, monkeypatch):
    import types

    from crl_pipe import cli
    from crl_pipe._snakemake import run_step

    def step():
        raise InputError("data/x.h5ad: first line\nsecond line")

    monkeypatch.setitem(cli.STEPS, "label", step)
    assert cli.main(["label"]) == 1
    assert capfd.readouterr().err == "crl-pipe label: error: data/x.h5ad: first line second line\n"
    with pytest.raises(SystemExit):
        run_step(types.SimpleNamespace(rule="label_interventions", log=[str(tmp_path / "step.log")]), step)
    assert capfd.readouterr().err == "crl-pipe error in rule label_interventions: data/x.h5ad: first line second line\n"
