from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from _screens import assert_round_trip, assert_same_state, screen_and_data
from test_models import _metrics

from crl_pipe import ModelError
from crl_pipe.models import SparseVAE, get_model
from crl_pipe.models._training import CHECKPOINT_FILE

SMALL = dict(n_programs=4, n_control=1500, cells_per_perturbation=200, n_genes=120)
FAST = dict(epochs=40, hidden=64)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny minibatch steps: extra threads only add contention with other jobs on the test machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Interrupted(Exception):
    """Stands in for a kill of the training process."""


def _interrupt_after(n: int):
    def callback(epoch: int, history: pd.DataFrame) -> None:
        if epoch == n:
            raise Interrupted

    return callback


@pytest.fixture(scope="module")
def nonlinear_fit():
    screen, data = screen_and_data(**SMALL, mixing="nonlinear", seed=0)
    return screen, data, SparseVAE(**FAST).fit(data, seed=0)


def test_registered():
    assert get_model("sparse_vae") is SparseVAE


def test_recovers_targets_and_latents_on_nonlinear_mixing(nonlinear_fit):
    # measured on seeds 0-4 (40 epochs): accuracy 1.0, MCC 0.847-0.884, SHD 1-2
    # (linear model on the same screens: MCC 0.841-0.881, SHD 1-2)
    screen, data, model = nonlinear_fit
    m = _metrics(model, screen, data)
    assert m["target_accuracy"] == 1.0
    assert m["mcc"] >= 0.84
    assert m["shd"] <= 2
    assert model.latent_names == list(screen.gene_sets)


@pytest.mark.parametrize("seed", [1, 2])
def test_recovers_targets_on_other_screens(seed):
    screen, data = screen_and_data(**SMALL, mixing="nonlinear", seed=seed)
    m = _metrics(SparseVAE(**FAST).fit(data, seed=0), screen, data)
    assert m["target_accuracy"] == 1.0 and m["mcc"] >= 0.84


def test_encoder_on_all_features_gives_closer_latents():
    # measured on seeds 0-4: MCC 0.890-0.918 (anchor encoder 0.847-0.884), at the price of leaky shifts
    screen, data = screen_and_data(**SMALL, mixing="nonlinear", seed=0)
    m = _metrics(SparseVAE(**FAST, encoder="all").fit(data, seed=0), screen, data)
    assert m["target_accuracy"] == 1.0 and m["mcc"] >= 0.88


def test_anchor_encoder_reads_only_each_programs_anchors(nonlinear_fit):
    _, data, model = nonlinear_fit
    x = torch.from_numpy(data.X[:64].copy())
    anchored = model.module.anchors.sum(1) > 0
    noisy = x.clone()
    noisy[:, ~anchored] += 5.0 * torch.randn(64, int((~anchored).sum()))
    noisy[:, model.module.anchors[:, 0] > 0] += 1.0  # move the first program's anchors only
    with torch.no_grad():
        before, after = model.module.inference(x)[0], model.module.inference(noisy)[0]
    assert not torch.allclose(before[:, 0], after[:, 0])
    torch.testing.assert_close(before[:, 1:], after[:, 1:])


def test_targets_table_has_the_linear_semantics(nonlinear_fit):
    screen, _, model = nonlinear_fit
    t = model.get_targets()
    assert list(t.columns) == ["intervention", "latent", "score", "z_score", "is_target"]
    hits = t[t["is_target"]].groupby("intervention")["latent"].apply(set)
    assert hits.to_dict() == screen.targets.groupby("intervention")["program"].apply(set).to_dict()
    adjacency = model.get_adjacency()
    assert list(adjacency.index) == list(adjacency.columns) == model.latent_names


def test_latents_are_used_not_collapsed(nonlinear_fit):
    _, data, model = nonlinear_fit
    with torch.no_grad():
        mean, log_var = model.module.inference(torch.from_numpy(data.X))
    kl = 0.5 * (mean**2 + log_var.exp() - log_var - 1).mean(0)
    assert (kl > 0.5).all(), kl  # nats per latent: a collapsed latent has KL ~ 0
    assert (mean.var(0) > 0.3).all() and (log_var.exp().mean(0) < 0.5).all()


def test_loadings_respect_the_anchor_mask(nonlinear_fit):
    _, data, model = nonlinear_fit
    L = model.get_loadings().pivot(index="feature", columns="latent", values="loading")
    for program, genes in data.anchors.items():
        others = [p for p in model.latent_names if p != program]
        assert (L.loc[genes, others] == 0).all().all()
        assert (L.loc[genes, program] > 0).all()  # signed so that anchors rise with their program


def test_fit_is_deterministic_on_cpu():
    _, data = screen_and_data(**SMALL, seed=3)
    a = SparseVAE(epochs=5, device="cpu").fit(data, seed=7)
    b = SparseVAE(epochs=5, device="cpu").fit(data, seed=7)
    assert_same_state(a, b)
    pd.testing.assert_frame_equal(a.history, b.history)
    assert not torch.are_deterministic_algorithms_enabled()  # the global flag is restored


def test_resume_after_a_kill_gives_the_uninterrupted_parameters(tmp_path):
    _, data = screen_and_data(**SMALL, seed=3)
    params = dict(epochs=12, hidden=32, device="cpu")
    full = SparseVAE(**params).fit(data, seed=1)
    with pytest.raises(Interrupted):
        SparseVAE(**params, checkpoint_dir=tmp_path, checkpoint_every=5).fit(
            data, seed=1, callbacks=[_interrupt_after(7)]
        )
    ckpt = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)  # plain tensors and numbers only
    assert ckpt["epoch"] == 5 and len(ckpt["history"]["epoch"]) == 10
    resumed = SparseVAE(**params, checkpoint_dir=tmp_path, checkpoint_every=5).fit(data, seed=1)
    assert_same_state(full, resumed)
    pd.testing.assert_frame_equal(full.history, resumed.history)


def test_checkpoint_of_another_fit_is_not_resumed(tmp_path):
    _, data = screen_and_data(**SMALL, seed=3)
    params = dict(epochs=3, hidden=32, device="cpu", checkpoint_dir=tmp_path)
    SparseVAE(**params).fit(data, seed=1)
    other = SparseVAE(**params).fit(data, seed=2)  # different seed: starts afresh
    assert_same_state(other, SparseVAE(epochs=3, hidden=32, device="cpu").fit(data, seed=2))


def test_early_stopping_ends_before_the_last_epoch():
    _, data = screen_and_data(**SMALL, seed=3)
    model = SparseVAE(epochs=200, hidden=32, patience=2, lr=3e-2).fit(data, seed=0)
    assert model.history["epoch"].max() < 200
    assert set(model.history["split"]) == {"train", "validation"}


def test_save_and_load_round_trip(nonlinear_fit, tmp_path):
    _, data, model = nonlinear_fit
    assert 0 <= model.equation_misfit < 1  # measured at the fit, kept through save and load
    assert_round_trip(model, data, tmp_path)


def test_negative_binomial_likelihood_on_counts():
    screen, data = screen_and_data(**SMALL, seed=0)
    data = data.subset(np.arange(data.n_cells))
    data.counts = sp.csr_matrix(screen.adata.X)
    m = _metrics(SparseVAE(**FAST, likelihood="nb").fit(data, seed=0), screen, data)
    assert m["target_accuracy"] == 1.0 and m["mcc"] >= 0.9


def test_cuda_request_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, data = screen_and_data(**SMALL, seed=3)
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        SparseVAE(epochs=1, hidden=16, device="cuda").fit(data)


def test_bad_input_is_a_clear_error():
    _, data = screen_and_data(**SMALL, seed=3)
    with pytest.raises(ModelError, match="likelihood 'nb' needs raw counts"):
        SparseVAE(likelihood="nb").fit(data)
    with pytest.raises(ModelError, match="likelihood 'poisson'"):
        SparseVAE(likelihood="poisson")
    with pytest.raises(ModelError, match="control"):
        SparseVAE(epochs=1).fit(data.subset(~data.is_control))
    with pytest.raises(ModelError, match="n_latents=2"):
        SparseVAE(n_latents=2).fit(data)


def test_pipeline_train_checkpoints_sparse_vae_outside_the_model_record(tmp_path, monkeypatch):
    """Through the workflow's step function: checkpoints land in out_dir/checkpoints, and run
    settings (checkpoint folder, threads) stay out of model.json and the provenance."""
    import json

    from _chain import RES, run_chain

    from crl_pipe import pipeline
    from crl_pipe.io import read_provenance, read_table

    run_chain(tmp_path, ["simulate", "ingest", "label", "preprocess", "anchors"])
    monkeypatch.chdir(tmp_path)
    out = tmp_path / RES / "sparse_vae"
    pipeline.train(
        preprocessed=f"{RES}/preprocessed.h5ad",
        interventions=f"{RES}/interventions.parquet",
        anchors=f"{RES}/anchors.parquet",
        out_dir=out,
        model="sparse_vae",
        params={"epochs": 12, "patience": 50},
        seed=0,
        threads=1,
    )
    assert (out / "checkpoints" / "checkpoint.pt").exists()
    meta = json.loads((out / "model.json").read_text())
    assert "checkpoint_dir" not in meta["params"] and "threads" not in meta["params"]
    assert read_provenance(out / "targets.parquet")["params"]["params"] == {"epochs": 12, "patience": 50}
    assert read_table(out / "training.parquet", "training")["epoch"].max() >= 1
