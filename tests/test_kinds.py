"""Dataset kinds (crl_pipe.kinds): the kind of a dataset config, the registry, the config side that
rules/common.smk asks, a light import for the Snakemake process, and a new kind registered from
another package running through the whole workflow."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from _tiny_workflow import REPO, failure, job_counts, run_snakemake, write_config

from crl_pipe import ConfigError
from crl_pipe.config import validate_config
from crl_pipe.io import read_provenance, read_table
from crl_pipe.kinds import (
    ENTRY_POINT_GROUP,
    ROBOT,
    SCREEN,
    DatasetKind,
    RobotKind,
    ScreenKind,
    TableKind,
    _registry,
    get_kind,
    kind_names,
    kind_of,
    register_kind,
)

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _datasets(name: str) -> dict:
    config = yaml.safe_load((REPO / "config" / name).read_text())
    return validate_config(config, SCHEMA)["datasets"]


# ---- the kind of a dataset config ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("config.yaml", {"demo": "screen"}),
        ("sachs.yaml", {"sachs": "table"}),
        ("robot_sim.yaml", {"arm": "robot"}),
        ("g1.yaml", {"g1": "robot"}),
        ("schraivogel.yaml", {"schraivogel": "screen"}),
    ],
)
def test_each_reference_config_maps_to_its_kind(config, expected):
    assert {name: kind_of(ds).name for name, ds in _datasets(config).items()} == expected


@pytest.mark.parametrize(
    ("dataset", "cls"),
    [
        ({"format": "h5ad"}, ScreenKind),
        ({"format": "10x"}, ScreenKind),
        ({"kind": "screen", "format": "guide_counts"}, ScreenKind),
        ({"format": "table"}, TableKind),
        ({"kind": "robot", "format": "table"}, RobotKind),  # the same format name, another kind
        ({"kind": "robot", "format": "rosbag"}, RobotKind),
    ],
)
def test_kind_and_format_choose_the_kind(dataset, cls):
    assert type(kind_of(dataset)) is cls
    assert type(get_kind(cls.name)) is cls


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        (
            {"kind": "robots", "format": "lerobot"},
            "config: datasets.d.kind: unknown kind 'robots' (did you mean 'robot'?); "
            "expected one of ['robot', 'screen']",
        ),
        (
            {"kind": "robot", "format": "h5ad"},
            "config: datasets.d.format: 'h5ad' is not a format of kind 'robot'; "
            "expected one of ['lerobot', 'rosbag', 'table']",
        ),
        (
            {"format": "loom"},
            "config: datasets.d.format: 'loom' is not a format of kind 'screen'; "
            "expected one of ['h5ad', 'guide_counts', '10x', 'table']",
        ),
    ],
)
def test_unknown_kind_or_format_is_one_line_naming_the_key(dataset, message):
    with pytest.raises(ConfigError) as info:
        kind_of(dataset, where="datasets.d")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    # validate_config, which rules/common.smk and the tests call, checks the same
    config = {"datasets": {"d": {"path": "x", **dataset}}}
    with pytest.raises(ConfigError, match=r"^config: datasets\.d\.(kind|format): "):
        validate_config(config, SCHEMA)


def test_unknown_kind_name():
    with pytest.raises(ConfigError, match=r"unknown dataset kind 'tabel' \(did you mean 'table'\?\); expected one of"):
        get_kind("tabel")
    assert set(kind_names()) >= {"screen", "table", "robot"}


# ---- the config side: what each stage of a dataset gets ---------------------------------------------
def test_config_side_of_a_screen_of_counts():
    ds = _datasets("schraivogel.yaml")["schraivogel"]
    config = validate_config(yaml.safe_load((REPO / "config" / "schraivogel.yaml").read_text()), SCHEMA)
    kind = kind_of(ds)
    options = kind.ingest_options(ds)
    assert set(options) <= {"counts_layer", "guides", "guide_map", "feature_reference"}
    assert kind.ingest_files(options) == {k: ds[k] for k in ("guides", "guide_map", "feature_reference") if k in ds}
    assert kind.label_options(ds, config)["min_cells"] == config["labels"]["min_cells"]
    assert kind.preprocess_options(ds, config) == {k: config["preprocess"][k] for k in ("n_top_genes", "target_sum")}
    assert kind.report_files("results/s") == {
        "guides": "results/s/guides.parquet",
        "expression": "results/s/preprocessed.h5ad",
    }
    assert kind.guide_calling({"format": "h5ad", "guide_calling": {"min_umis": 3}}) == {}
    assert kind.guide_calling({"format": "10x", "guide_calling": {"min_umis": 3}}) == {"min_umis": 3}
    assert kind.vocabulary is SCREEN and kind.has_report_section("guides")


def test_config_side_of_a_table_of_variables():
    config = validate_config(yaml.safe_load((REPO / "config" / "sachs.yaml").read_text()), SCHEMA)
    ds = config["datasets"]["sachs"]
    kind = kind_of(ds)
    assert kind.ingest_options(ds) == {"interventions": ds["interventions"]["columns"], "variables": ds["variables"]}
    assert kind.label_options(ds, config) == {"min_cells": 20, "target_map": ds["interventions"]["targets"]}
    assert kind.preprocess_options(ds, config) == {"transform": "none", "cofactor": 5}
    assert kind.guide_calling(ds) == {} and kind.report_files("results/sachs") == {}
    assert kind.config_kind == "screen" and kind.vocabulary is SCREEN


def test_config_side_of_a_robot_log():
    config = validate_config(yaml.safe_load((REPO / "config" / "g1.yaml").read_text()), SCHEMA)
    ds = config["datasets"]["g1"]
    kind = kind_of(ds)
    assert kind.ingest_options(ds) == ds["reader"]
    assert kind.label_options(ds, config) == ds["robot_labels"]
    assert kind.preprocess_options(ds, config) == {"channel_kinds": ds["channel_kinds"]}
    assert kind.vocabulary is ROBOT and not kind.has_report_section("guides")
    assert "lag" in kind.truth["graph"]


def test_cameras_are_reader_options_only_where_a_dataset_names_them():
    """A log without cameras is read with exactly its reader options (its ingest and cache unchanged);
    ``cameras`` adds the cameras and the frame size (default 64 pixels)."""
    config = validate_config(yaml.safe_load((REPO / "config" / "robot_camera.yaml").read_text()), SCHEMA)
    ds = config["datasets"]["arm_camera"]
    kind = kind_of(ds)
    assert kind.ingest_options(ds) == {"cameras": ["front"], "frame_size": ds["frame_size"]}
    unsized = {k: v for k, v in ds.items() if k != "frame_size"}
    assert kind.ingest_options(unsized) == {"cameras": ["front"], "frame_size": 64}
    assert kind.ingest_options({**ds, "frame_size": 32, "reader": {"tolerance_s": 0.01}}) == {
        "tolerance_s": 0.01,
        "cameras": ["front"],
        "frame_size": 32,
    }
    plain = {k: v for k, v in ds.items() if k not in ("cameras", "frame_size")}
    assert kind.ingest_options(plain) == {}


def test_a_stage_rejects_options_its_kind_does_not_take(tmp_path):
    from crl_pipe import pipeline

    with pytest.raises(ConfigError, match=r"kind 'table': label option\(s\) \['perturbation_key'\] not understood"):
        pipeline.label(ingested=tmp_path / "x.h5ad", out=tmp_path / "iv.parquet", kind="table",
                       options={"perturbation_key": "gene"})  # fmt: skip
    assert not (tmp_path / "iv.parquet").exists()


# ---- the registry ---------------------------------------------------------------------------------
@pytest.fixture
def registry():
    """The registry as it is, restored after the test."""
    saved = dict(_registry._KINDS)
    yield _registry._KINDS
    _registry._KINDS.clear()
    _registry._KINDS.update(saved)


def _toy_kind(name: str = "toy", config_kind: str = "toy", formats: tuple[str, ...] = ("csv",)) -> type[DatasetKind]:
    class Toy(TableKind):
        pass

    Toy.name, Toy.config_kind, Toy.formats = name, config_kind, formats
    return Toy


def test_register_a_kind(registry):
    toy = register_kind(_toy_kind())
    assert type(kind_of({"kind": "toy", "format": "csv"})) is toy and type(get_kind("toy")) is toy
    assert register_kind(toy) is toy  # registering again is harmless
    with pytest.raises(ConfigError, match=r"dataset kind 'toy' of Toy is registered already"):
        register_kind(_toy_kind())
    with pytest.raises(ConfigError, match=r"format\(s\) \['h5ad'\] of kind 'screen' are read by kind 'screen'"):
        register_kind(_toy_kind("toy2", "screen", ("h5ad", "zarr")))
    with pytest.raises(ConfigError, match=r"expected a subclass of crl_pipe.kinds.DatasetKind with every method"):
        register_kind(DatasetKind)


def test_importing_the_kinds_loads_no_scientific_stack():
    """rules/common.smk imports crl_pipe.config and crl_pipe.kinds in the Snakemake process on every run."""
    code = (
        "import sys, crl_pipe.config, crl_pipe.kinds, crl_pipe._sources\n"
        "crl_pipe.kinds.kind_of({'format': 'h5ad'}).label_options({'format': 'h5ad'}, {'labels': {'min_cells': 1}})\n"
        "print(sorted(m for m in ('anndata', 'scanpy', 'torch', 'h5py', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- a kind from another package, through the workflow ------------------------------------------------
#: A kind another package would ship: a CSV of measured variables whose column ``do`` names the variable
#: each row intervenes on (``none``: an observational row). Registered by an entry point of the group
#: crl_pipe.kinds, as ``pip install`` of that package would leave it (a ``.dist-info`` beside the module).
TOY_KIND = """
from crl_pipe.kinds import SCREEN, DatasetKind


class DoColumnKind(DatasetKind):
    name = "do_column"
    config_kind = "variables"
    formats = ("csv",)
    vocabulary = SCREEN
    truth = {"graph": "edges among the variables"}

    def label_options(self, dataset, config):
        return {"min_cells": config["labels"]["min_cells"]}

    def read(self, path, *, format):
        import anndata as ad
        import pandas as pd

        frame = pd.read_csv(path)
        obs = pd.DataFrame({"do": frame.pop("do").astype(str).to_numpy()}, index=[f"row{i}" for i in range(len(frame))])
        return ad.AnnData(X=frame.to_numpy("float32"), obs=obs, var=pd.DataFrame(index=list(frame.columns)))

    def label(self, ingested, *, min_cells=1):
        from crl_pipe.io import read_h5ad
        from crl_pipe.pp import label_interventions

        params = {"perturbation_key": "do", "control_values": ["none"], "min_cells": min_cells}
        return label_interventions(read_h5ad(ingested), **params), params

    def preprocess(self, adata, labels, *, gene_sets=None):
        from crl_pipe.pp import preprocess_table

        return preprocess_table(adata, labels)

    def anchors(self, adata, gene_sets, *, min_anchors, exclusive, n_programs):
        from crl_pipe.pp import identity_anchors

        return identity_anchors(adata), None
"""

#: The true graph of the simulated variables: a -> b -> c, a -> c.
EDGES = [("a", "b", 0.8), ("b", "c", 0.7), ("a", "c", -0.6)]


def _do_table(seed: int = 0, n_control: int = 600, n_per: int = 150, shift: float = 2.0) -> pd.DataFrame:
    """Samples of the linear SEM of EDGES: observational rows, then rows whose noise of one variable is shifted."""
    rng = np.random.default_rng(seed)
    frames = []
    for do in ["none", "a", "b", "c"]:
        n = n_control if do == "none" else n_per
        values: dict[str, np.ndarray] = {}
        for v in "abc":  # a causal order
            values[v] = rng.normal(size=n) + (shift if v == do else 0.0)
            values[v] += sum(w * values[s] for s, t, w in EDGES if t == v)
        frames.append(pd.DataFrame(values).assign(do=do))
    return pd.concat(frames, ignore_index=True)


def _plugin(folder):
    """The toy kind's module and the distribution metadata of its entry point, in ``folder``."""
    folder.mkdir()
    (folder / "toy_kinds.py").write_text(TOY_KIND)
    info = folder / "toy_kinds-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-kinds\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ndo_column = toy_kinds:DoColumnKind\n")
    return folder


@pytest.mark.workflow
def test_a_kind_registered_by_another_package_runs_through_the_workflow(tmp_path):
    plugin = _plugin(tmp_path / "plugin")
    folder = tmp_path / "run"
    folder.mkdir()
    _do_table().to_csv(folder / "vars.csv", index=False)
    pd.DataFrame([e[:2] for e in EDGES], columns=["source", "target"]).to_csv(folder / "truth.csv", index=False)
    config = {
        "datasets": {
            "vars": {
                "kind": "variables",
                "format": "csv",
                "path": "vars.csv",
                "truth": {"graph": "truth.csv"},
                "models": ["linear"],
            }
        },
        "graph": {"n_refits": 2},
    }
    write_config(folder, config)
    env = {"PYTHONPATH": str(plugin)}  # the Snakemake process and its jobs find the kind by its entry point

    # without the package, the kind is unknown: one line naming the key, before anything runs
    proc = run_snakemake(folder, "--cores", "1", "-n")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "config: datasets.vars.kind: unknown kind 'variables'" in output, output[-2000:]

    proc = run_snakemake(folder, "--cores", "2", env=env)
    assert proc.returncode == 0, failure(proc, folder)
    counts = job_counts(proc.stdout + proc.stderr)
    for rule in ("ingest", "label_interventions", "preprocess", "build_anchors", "train_model", "write_report"):
        assert counts[rule] == 1, counts
    res = folder / "results" / "vars"
    labels = read_table(res / "interventions.parquet", "interventions")
    assert labels.groupby("intervention").size().to_dict() == {"a": 150, "b": 150, "c": 150, "control": 600}
    assert read_provenance(res / "interventions.parquet")["params"] == {
        "kind": "variables",
        "perturbation_key": "do",
        "control_values": ["none"],
        "min_cells": 20,
    }
    anchors = read_table(res / "anchors.parquet", "anchors")
    assert list(anchors["program"]) == list(anchors["feature"]) == ["a", "b", "c"]
    targets = read_table(res / "linear" / "targets.parquet", "targets")
    top = targets.loc[targets.groupby("intervention")["score"].idxmax()].set_index("intervention")["latent"]
    assert top.to_dict() == {"a": "a", "b": "b", "c": "c"}  # each intervention found on its variable
    bench = read_table(folder / "results" / "benchmark.parquet", "benchmark")
    assert bench.set_index("metric")["value"]["shd"] == 0
    html = (res / "report.html").read_text()
    assert "vars" in html and "programs with anchor genes" in html  # the kind's vocabulary (SCREEN)


def test_validate_config_accepts_a_registered_kind(registry):
    config = {"datasets": {"v": {"kind": "toy", "format": "csv", "path": "x.csv"}}}
    with pytest.raises(ConfigError, match=r"^config: datasets\.v\.kind: unknown kind 'toy'"):
        validate_config(copy.deepcopy(config), SCHEMA)
    register_kind(_toy_kind())
    assert validate_config(config, SCHEMA)["datasets"]["v"]["kind"] == "toy"


def test_kinds_doc_matches_the_registry():
    """config/README.md names every built-in kind and its formats."""
    text = (REPO / "config" / "README.md").read_text()
    for kind in (ScreenKind, TableKind, RobotKind):
        assert f"`{kind.name}`" in text
        for fmt in kind.formats:
            assert f"`{fmt}`" in text
