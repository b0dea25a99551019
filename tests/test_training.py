from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml

from crl_pipe import ConfigError, ModelError
from crl_pipe.config import validate_config
from crl_pipe.models import CausalVAE, SparseVAE, _training
from crl_pipe.models._training import CellBatches, resolve_batch_size, resolve_device, split_cells


def test_auto_device_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_falls_back_to_cpu_with_a_warning_unless_strict(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        assert resolve_device("cuda") == torch.device("cpu")
    with pytest.raises(ModelError, match="CUDA is not available"):
        resolve_device("cuda", strict=True)
    with pytest.raises(ModelError, match="expected 'auto', 'cpu' or 'cuda'"):
        resolve_device("tpu")


def test_auto_batch_size_is_larger_on_a_gpu_and_bad_sizes_fail_when_the_model_is_built():
    # a GPU step is bound by kernel launches (docs/benchmarks.md, "On a GPU"); the CPU keeps 512
    assert resolve_batch_size("auto", torch.device("cpu"), 100_000) == 512
    assert resolve_batch_size("auto", torch.device("cuda"), 100_000) == 4096
    assert resolve_batch_size("auto", torch.device("cuda"), 4_500) == 1125  # four steps an epoch
    assert resolve_batch_size("auto", torch.device("cuda"), 900) == 512
    assert resolve_batch_size(256, torch.device("cuda")) == 256
    for bad in (0, -5, "big", 2.5, True):
        with pytest.raises(ModelError, match=f"batch_size {bad!r}: expected 'auto' or a positive integer"):
            resolve_batch_size(bad, torch.device("cpu"))
    for model in (SparseVAE, CausalVAE):
        assert model().params["batch_size"] == "auto"
        with pytest.raises(ModelError, match="batch_size 0"):
            model(batch_size=0)


@pytest.mark.parametrize("value, ok", [("auto", True), (1024, True), (0, False), ("large", False)])
def test_config_schema_takes_auto_or_a_positive_batch_size(repo_root, value, ok):
    config = yaml.safe_load((repo_root / "config/config.yaml").read_text())
    config.setdefault("models", {}).setdefault("causal_vae", {})["batch_size"] = value
    schema = repo_root / "workflow/schemas/config.schema.yaml"
    if ok:
        assert validate_config(config, schema)["models"]["causal_vae"]["batch_size"] == value
    else:
        with pytest.raises(ConfigError, match="models.causal_vae.batch_size"):
            validate_config(config, schema)


def test_split_is_seeded_and_stratified():
    labels = np.repeat(["a", "b", "c"], [100, 20, 10])
    train, val = split_cells(labels.size, 0.1, seed=0, strata=labels)
    assert np.intersect1d(train, val).size == 0 and train.size + val.size == labels.size
    assert {lab: int((labels[val] == lab).sum()) for lab in "abc"} == {"a": 10, "b": 2, "c": 1}
    assert np.array_equal(val, split_cells(labels.size, 0.1, seed=0, strata=labels)[1])
    assert not np.array_equal(val, split_cells(labels.size, 0.1, seed=1, strata=labels)[1])


@pytest.mark.parametrize("budget", [1 << 30, 0])
def test_batches_match_the_rows_whether_resident_or_sliced(monkeypatch, budget):
    monkeypatch.setattr(_training, "_HOST_DENSE_LIMIT", budget)
    rng = np.random.default_rng(0)
    dense = rng.random((50, 7)).astype(np.float32)
    counts = sp.random(50, 9, density=0.2, format="csr", random_state=0, dtype=np.float32)
    batches = CellBatches({"x": dense, "counts": counts, "library": dense.sum(1)}, torch.device("cpu"))
    # budget 0: nothing resident; the sparse matrix stays sparse on the host and is sliced per batch
    assert (batches._host.keys() == {"x", "counts", "library"}) == (budget == 0)
    rows = torch.tensor([4, 0, 49, 17])
    got = list(batches.batches(rows, batch_size=3))
    assert [b["x"].shape[0] for b in got] == [3, 1]
    x = torch.cat([b["x"] for b in got])
    c = torch.cat([b["counts"] for b in got])
    assert torch.equal(x, torch.from_numpy(dense[rows.numpy()]))
    assert torch.equal(c, torch.from_numpy(counts[rows.numpy()].toarray()))
    assert torch.equal(torch.cat([b["library"] for b in got]), torch.from_numpy(dense.sum(1)[rows.numpy()]))
