from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _screens import screen_and_data

from crl_pipe import ModelError, tl
from crl_pipe.models import LinearSEM, get_model, load_model

DEMO = dict(n_programs=6, n_control=3000, cells_per_perturbation=400)


def _metrics(model, screen, data):
    edges = model.get_adjacency().stack()
    graph = edges[edges != 0].rename_axis(["source", "target"]).reset_index(name="weight")
    m = tl.evaluate(
        graph=graph,
        targets=model.get_targets(),
        latents=model.get_latent_representation(data),
        true_graph=screen.graph,
        true_targets=screen.targets,
        true_latents=screen.latents,
    )
    return m.set_index("metric")["value"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_recovers_targets_and_graph_on_demo_size_screen(seed):
    screen, data = screen_and_data(**DEMO, seed=seed)
    m = _metrics(LinearSEM().fit(data, seed=0), screen, data)
    assert m["target_accuracy"] == 1.0
    assert m["shd"] <= 1
    assert m["mcc"] > 0.9


def test_linear_with_a_strong_edge_keeps_programs_apart():
    # |weight| >= 1.2 makes parent and child latents strongly correlated; they must not merge
    screen, data = screen_and_data(**DEMO, seed=4, min_edge_weight=1.2, max_edge_weight=1.6)
    model = LinearSEM().fit(data, seed=0)
    m = _metrics(model, screen, data)
    assert m["target_accuracy"] == 1.0 and m["shd"] <= 1
    assert model.get_targets().query("is_target")["latent"].nunique() == 6


def test_targets_table_marks_the_hit_program():
    screen, data = screen_and_data(**DEMO, seed=0)
    t = LinearSEM().fit(data).get_targets()
    assert list(t.columns[:3]) == ["intervention", "latent", "score"]
    hits = t[t["is_target"]].groupby("intervention")["latent"].apply(set)
    truth = screen.targets.groupby("intervention")["program"].apply(set)
    assert hits.to_dict() == truth.to_dict()  # doubles hit both their programs


def test_checkpoint_round_trip_without_pickle(tmp_path):
    _, data = screen_and_data(**DEMO, seed=0)
    model = LinearSEM(edge_threshold=0.2).fit(data, seed=0)
    model.save(tmp_path)
    torch.load(tmp_path / "model.pt", weights_only=True)  # plain tensors only
    loaded = load_model(tmp_path)
    assert isinstance(loaded, LinearSEM) and loaded.params["edge_threshold"] == 0.2
    pd.testing.assert_frame_equal(loaded.get_targets(), model.get_targets())
    pd.testing.assert_frame_equal(loaded.get_adjacency(), model.get_adjacency())
    pd.testing.assert_frame_equal(loaded.get_latent_representation(data), model.get_latent_representation(data))


def test_fit_is_deterministic():
    _, data = screen_and_data(**DEMO, seed=2)
    a, b = LinearSEM().fit(data, seed=7), LinearSEM().fit(data, seed=7)
    assert np.array_equal(a.B.numpy(), b.B.numpy())
    pd.testing.assert_frame_equal(a.get_latent_representation(data), b.get_latent_representation(data))


def test_needs_anchors_and_controls():
    _, data = screen_and_data(**DEMO, seed=0)
    no_anchors = data.subset(np.arange(data.n_cells))
    no_anchors.anchors = {"P1": ["GENE001"]}
    with pytest.raises(ModelError, match=">= 2 anchor"):
        LinearSEM().fit(no_anchors)
    with pytest.raises(ModelError, match="control"):
        LinearSEM().fit(data.subset(~data.is_control))


def test_unknown_model_name():
    with pytest.raises(Exception, match="unknown model 'lineer'"):
        get_model("lineer")


def test_registry_loads_without_torch_or_scanpy():
    """The Snakemake process imports the registry and the config on every invocation: no heavy imports."""
    import subprocess
    import sys

    code = (
        "import sys, crl_pipe.config, crl_pipe.models.registry, crl_pipe.models; "
        "print(sorted(m for m in ('torch', 'scanpy', 'anndata', 'pandas', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_registered_model_takes_its_capabilities_from_its_entry():
    from crl_pipe.models import CRLModel, model_capabilities, model_names

    assert model_names() == ["linear", "sparse_vae", "causal_vae", "temporal", "camera"]
    for name in model_names():
        cls = get_model(name)
        assert issubclass(cls, CRLModel) and cls.name == name
        assert cls.capabilities is model_capabilities(name)


def test_capabilities_say_what_each_class_does():
    """Each declared capability matches the class: its parameters and the methods it overrides."""
    import inspect

    from crl_pipe.models import CRLModel, model_capabilities, model_names

    for name in model_names():
        cls, caps = get_model(name), model_capabilities(name)
        params = inspect.signature(cls).parameters
        assert caps.uses_torch == ({"device", "checkpoint_dir", "threads"} <= set(params)), name
        assert caps.predicts == callable(getattr(cls, "predict", None)), name
        assert caps.time_series == ("actions" in params and cls.get_edges is not CRLModel.get_edges), name
        assert caps.sees_frames == ("cameras" in params and callable(getattr(cls, "exemplar_frames", None))), name
    assert model_names("predicts") == ["causal_vae"]
    assert model_names("uses_torch") == ["sparse_vae", "causal_vae", "camera"]
    assert model_names("sees_frames") == ["camera"]
    assert model_names("reads_counts") == ["sparse_vae"]  # its "nb" likelihood; the others fit log X only
    assert model_names("steers") == ["linear", "sparse_vae", "causal_vae"]  # a latent linear SEM to propagate
    with pytest.raises(Exception, match="unknown model capability 'flies'"):
        model_names("flies")


def test_model_device_follows_the_config_for_torch_models_only():
    from crl_pipe.models import model_device

    config = {"device": "cuda", "models": {"sparse_vae": {"device": "cpu"}}}
    assert [model_device(config, m) for m in ("linear", "sparse_vae", "causal_vae", "temporal")] == [
        None,
        "cpu",
        "cuda",
        None,
    ]
    assert model_device({}, "causal_vae") == "auto"


def test_config_schema_names_exactly_the_registered_models():
    """The schema validates model names and parameters; it must offer every registered model, and a
    ``device`` key exactly to the PyTorch ones."""
    from pathlib import Path

    from crl_pipe.config import load_schema
    from crl_pipe.models import model_capabilities, model_names

    schema, _ = load_schema(Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml")
    per_model = schema["properties"]["models"]["properties"]
    listed = schema["$defs"]["dataset"]["properties"]["models"]["items"]["enum"]
    assert list(per_model) == listed == model_names()
    for name in model_names():
        assert ("device" in per_model[name]["properties"]) == model_capabilities(name).uses_torch, name


def test_models_namespace_loads_its_names_on_first_use():
    import crl_pipe.models as models

    for name in models.__all__:
        assert getattr(models, name) is not None, name
    assert set(models.__all__) <= set(dir(models))
    with pytest.raises(AttributeError, match="has no attribute 'MODELS'"):
        models.MODELS  # noqa: B018 -- the registry replaced the class table
