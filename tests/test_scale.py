"""The memory-bounded paths of large screens, forced on small inputs: they must write what the
in-memory paths write (timings and memory at scale: ``benchmarks/scale.py``)."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _chain import STAGES, run_chain

from crl_pipe import InputError, io, pipeline, tl
from crl_pipe.io import _chunked
from crl_pipe.models import _data
from crl_pipe.simulate import screen_to_crl_data, simulate_screen

STREAMED_STAGES = ["simulate", "ingest", "label", "preprocess", "anchors", "train"]


@pytest.fixture()
def streamed(monkeypatch):
    """Every matrix counts as large: stages stream in blocks of ~200 cells, models get a CSR ``X``."""
    monkeypatch.setattr(_chunked, "STREAM_BYTES", 0)
    monkeypatch.setattr(_chunked, "CHUNK_BYTES", 200 * 60 * 8)
    monkeypatch.setattr(_data, "DENSE_LIMIT", 0)
    monkeypatch.setattr(_data, "ROW_CHUNK", 97)


@pytest.fixture(scope="module")
def in_memory(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in_memory")
    run_chain(folder, STREAMED_STAGES)
    _data_driven_anchors(folder)
    return folder


def _data_driven_anchors(folder) -> None:
    pipeline.anchors(
        preprocessed=folder / STAGES["preprocess"]["out"], out=folder / "data_driven.parquet", n_programs=3
    )


def _same_h5ad(a_path, b_path) -> None:
    a, b = ad.read_h5ad(a_path), ad.read_h5ad(b_path)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var, check_exact=False, rtol=1e-9)  # HVG moments: summation order
    assert _h5ad_hashes_left_out(a.uns) == _h5ad_hashes_left_out(b.uns)
    for name in ["X", *a.layers]:
        x, y = (a.X, b.X) if name == "X" else (a.layers[name], b.layers[name])
        assert sp.issparse(y) and y.dtype == np.float32 and (x != y).nnz == 0, name
    assert set(a.layers) == set(b.layers)


def _h5ad_hashes_left_out(uns: dict) -> dict:
    """uns without the input hashes: the two writers lay out the same content in other bytes, so the
    sha256 of an h5ad differs, and with it that of every later artifact whose provenance names it."""
    prov = uns.get("crl_pipe", {})
    inputs = {k: v["path"] for k, v in prov.get("inputs", {}).items()}
    return {**uns, "crl_pipe": {**prov, "inputs": inputs}}


def test_streamed_stages_write_the_in_memory_artifacts(in_memory, tmp_path, streamed):
    run_chain(tmp_path, STREAMED_STAGES)
    ingest, pre = STAGES["ingest"], STAGES["preprocess"]
    assert io.is_large_screen(tmp_path / ingest["path"]) and io.is_large(tmp_path / pre["out"])
    _same_h5ad(in_memory / ingest["out_h5ad"], tmp_path / ingest["out_h5ad"])
    _same_h5ad(in_memory / pre["out"], tmp_path / pre["out"])
    for table in (ingest["out_qc"], STAGES["label"]["out"], STAGES["anchors"]["out"]):
        pd.testing.assert_frame_equal(pd.read_parquet(in_memory / table), pd.read_parquet(tmp_path / table))
    # programs from the data: factor analysis reads its sample of cells from the file (backed)
    _data_driven_anchors(tmp_path)
    found = [pd.read_parquet(folder / "data_driven.parquet") for folder in (in_memory, tmp_path)]
    pd.testing.assert_frame_equal(*found)
    # the linear model on a CSR X, worked through in blocks of 97 cells: the same fit
    model = STAGES["train"]["out_dir"]
    targets = [pd.read_parquet(f / model / "targets.parquet") for f in (in_memory, tmp_path)]
    assert targets[0]["is_target"].equals(targets[1]["is_target"])
    np.testing.assert_allclose(targets[0]["score"], targets[1]["score"], atol=1e-6)
    latents = [pd.read_parquet(f / model / "latents.parquet").drop(columns="sample_id") for f in (in_memory, tmp_path)]
    np.testing.assert_allclose(latents[0], latents[1], atol=1e-5)
    loadings = [pd.read_parquet(f / model / "loadings.parquet")["loading"] for f in (in_memory, tmp_path)]
    np.testing.assert_allclose(loadings[0], loadings[1], rtol=1e-5, atol=1e-6)


def test_chunked_simulator_writes_a_valid_screen(tmp_path):
    params = {**STAGES["simulate"]["params"], "n_genes": 150}
    out = {k: tmp_path / v for k, v in (("out_h5ad", "screen.h5ad"), ("out_gmt", "p.gmt"), ("out_truth_dir", "truth"))}
    pipeline.simulate(**out, params=params, chunk_cells=128)
    screen, whole = ad.read_h5ad(out["out_h5ad"]), simulate_screen(**params)
    X = screen.X
    assert sp.isspmatrix_csr(X) and X.dtype == np.float32 and screen.shape == whole.adata.shape
    assert (X.data > 0).all() and np.array_equal(X.data, np.round(X.data))
    # the same cells, labels, genes and truth as the in-memory draw; counts from other streams, same law
    pd.testing.assert_frame_equal(screen.obs, whole.adata.obs)
    assert sorted(screen.var_names) == sorted(whole.adata.var_names)
    pd.testing.assert_frame_equal(pd.read_parquet(out["out_truth_dir"] / "latents.parquet"), whole.latents)
    mean_a = np.asarray(X.mean(axis=0)).ravel()
    mean_b = pd.Series(np.asarray(whole.adata.X.mean(axis=0)).ravel(), index=whole.adata.var_names)[screen.var_names]
    assert np.corrcoef(np.log1p(mean_a), np.log1p(mean_b))[0, 1] > 0.99
    assert abs(X.sum() / whole.adata.X.sum() - 1) < 0.05


def test_streamed_ingest_names_the_rows_of_bad_counts(tmp_path, streamed):
    screen = simulate_screen(n_genes=60, anchors_per_program=4, n_control=100, cells_per_perturbation=20, seed=0)
    X = screen.adata.X.tolil()
    X[150, 3] = -2
    screen.adata.X = sp.csr_matrix(X)
    io.write_h5ad(screen.adata, tmp_path / "bad.h5ad")
    with pytest.raises(InputError, match=r"bad\.h5ad: X \(rows \d+-\d+\) holds 1 negative value\(s\)") as err:
        pipeline.ingest(path=tmp_path / "bad.h5ad", out_h5ad=tmp_path / "i.h5ad", out_qc=tmp_path / "qc.parquet")
    start, stop = map(int, re.search(r"rows (\d+)-(\d+)", str(err.value)).groups())
    assert start <= 150 < stop < screen.adata.n_obs  # the block that holds the bad cell, not the whole screen
    assert not (tmp_path / "i.h5ad").exists() and not list(tmp_path.glob(".i.h5ad*"))


def test_chunk_writer_leaves_no_file_when_rows_are_missing(tmp_path):
    obs, var = pd.DataFrame(index=["a", "b", "c"]), pd.DataFrame(index=["g1", "g2"])
    with pytest.raises(ValueError, match=r"rows written \{'X': 2\}, expected 3"):
        with io.write_h5ad_chunks(tmp_path / "x.h5ad", obs, var) as out:
            out.append(sp.csr_matrix(np.ones((2, 2), dtype=np.float32)))
    assert not list(tmp_path.iterdir())


def test_writer_switches_to_64_bit_row_pointers_for_large_matrices(tmp_path):
    obs, var = pd.DataFrame(index=[f"c{i}" for i in range(4)]), pd.DataFrame(index=["g1", "g2", "g3"])
    blocks = [sp.random(2, 3, density=0.5, format="csr", dtype=np.float32, random_state=s) for s in (0, 1)]
    with io.write_h5ad_chunks(tmp_path / "x.h5ad", obs, var, max_nnz=2**31) as out:
        for block in blocks:
            out.append(block, counts=block)
    back = ad.read_h5ad(tmp_path / "x.h5ad")
    assert back.X.indptr.dtype == np.int64 and (back.X != sp.vstack(blocks)).nnz == 0
    with io.H5adRows(tmp_path / "x.h5ad") as f:
        assert (f.rows(1, 4, "layers/counts") != sp.vstack(blocks)[1:4]).nnz == 0


def test_models_fit_a_sparse_x_as_a_dense_one():
    screen = simulate_screen(n_genes=80, anchors_per_program=5, n_control=400, cells_per_perturbation=100, seed=2)
    dense = screen_to_crl_data(screen, with_counts=False)
    sparse = screen_to_crl_data(screen, with_counts=False)
    sparse.X = sp.csr_matrix(dense.X)
    for model, params, atol in (("linear", {}, 1e-6), ("sparse_vae", {"epochs": 3, "device": "cpu"}, 1e-3)):
        fits = [tl.train(d, model=model, params=params, seed=0) for d in (dense, sparse)]
        targets = [f.get_targets() for f in fits]
        assert targets[0]["is_target"].equals(targets[1]["is_target"]), model
        z = [
            f.get_latent_representation(d).drop(columns="sample_id").to_numpy()
            for f, d in zip(fits, (dense, sparse), strict=False)
        ]
        np.testing.assert_allclose(z[0], z[1], atol=atol, err_msg=model)


def test_the_scale_benchmark_calls_every_stage_with_arguments_the_cli_accepts(tmp_path):
    """benchmarks/scale.py drives the command line stage by stage; its arguments went stale once (label's and
    preprocess's options moved into ``--options``) with nothing to say so until a long run failed."""
    import argparse
    import importlib.util
    from pathlib import Path

    from crl_pipe.cli import build_parser

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"
    spec = importlib.util.spec_from_file_location("scale_benchmark", path)
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    stages = scale.stages(1000, tmp_path, argparse.Namespace(vae_epochs=1, seed=0))
    parser = build_parser()
    assert [name for name, _ in stages][:3] == ["simulate", "ingest", "label"]
    for name, argv in stages:
        try:
            parser.parse_args(argv)
        except SystemExit as exit_:
            pytest.fail(f"stage {name!r}: crl-pipe rejects {argv} ({exit_})")
