"""``crl_pipe.io.to_anndata``: one model's results back in the preprocessed AnnData, usable by scanpy."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from crl_pipe import InputError
from crl_pipe.io import to_anndata, write_table

GENES = [f"G{j}" for j in range(12)]
LATENTS = ["P1", "P2", "P3"]
LABELS = ["control"] * 30 + ["A"] * 20 + ["B"] * 20 + ["A+B"] * 10


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def make_results(root: Path, *, seed: int = 0) -> Path:
    """A results folder of one screen with a model ``m`` that held out the cells of ``A+B``."""
    rng = np.random.default_rng(seed)
    cells = [f"cell{i:03d}" for i in range(len(LABELS))]
    shift = {"control": 0.0, "A": 2.0, "B": -1.0, "A+B": 1.0}
    x = rng.normal(2.0, 0.3, (len(cells), len(GENES))) + np.array([shift[lab] for lab in LABELS])[:, None] * (
        np.arange(len(GENES)) < 3
    )
    adata = ad.AnnData(
        X=np.clip(x, 0, None).astype(np.float32),
        obs=pd.DataFrame({"perturbation": LABELS}, index=cells),
        var=pd.DataFrame(index=GENES),
    )
    adata.layers["counts"] = np.round(np.expm1(adata.X)).astype(np.float32)
    root.mkdir(parents=True)
    adata.write_h5ad(root / "preprocessed.h5ad")
    targets = [[] if lab == "control" else lab.split("+") for lab in LABELS]
    labels = pd.DataFrame(
        {
            "sample_id": cells,
            "intervention": LABELS,
            "targets": targets,
            "n_targets": [len(t) for t in targets],
            "is_control": [lab == "control" for lab in LABELS],
        }
    )
    write_table(labels, root / "interventions.parquet", "interventions")
    model = root / "m"
    model.mkdir()
    trained = [c for c, lab in zip(cells, LABELS, strict=True) if lab != "A+B"]
    z = pd.DataFrame(rng.normal(size=(len(trained), len(LATENTS))), columns=LATENTS).assign(sample_id=trained)
    write_table(z.sample(frac=1, random_state=seed)[["sample_id", *LATENTS]], model / "latents.parquet", "latents")
    loadings = pd.DataFrame(
        [(p, g, float(rng.normal())) for p in LATENTS for g in GENES[:-2]], columns=["latent", "feature", "loading"]
    )
    write_table(loadings, model / "loadings.parquet", "loadings")
    write_table(
        pd.DataFrame(
            {"intervention": ["A", "A", "B", "B"], "latent": ["P1", "P2", "P1", "P2"], "score": [2, 0, 0, -1.0]}
        ),
        model / "targets.parquet",
        "targets",
    )
    graph = pd.DataFrame(
        {
            "source": ["P1", "P2"],
            "target": ["P2", "P3"],
            "weight": [0.8, -0.4],
            "stability": [1.0, 0.5],
            "lag": pd.array([None, 1], dtype="Int64"),
            "undirected": [False, True],
        }
    )
    write_table(graph, model / "graph.parquet", "graph")
    meta = {
        "model": "sparse_vae",
        "latent_names": LATENTS,
        "params": {"n_latents": None, "epochs": 3, "hidden": [8, 4], "mixed": [1, "a"], "nested": {"lr": 0.01}},
    }
    (model / "model.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("export") / "results" / "demo")


def test_latents_loadings_and_labels_land_in_the_anndata(results):
    adata = to_anndata(results, "m")
    latents = pd.read_parquet(results / "m" / "latents.parquet").set_index("sample_id")
    emb = adata.obsm["X_m"]
    assert emb.shape == (adata.n_obs, 3)
    held = adata.obs["intervention"] == "A+B"
    assert np.isnan(emb[held.to_numpy()]).all() and not np.isnan(emb[~held.to_numpy()]).any()
    np.testing.assert_array_equal(emb[~held.to_numpy()], latents.loc[adata.obs_names[~held]].to_numpy())
    loadings = pd.read_parquet(results / "m" / "loadings.parquet")
    varm = pd.DataFrame(adata.varm["m_loadings"], index=adata.var_names, columns=LATENTS)
    assert varm.loc["G3", "P2"] == loadings.query("feature == 'G3' and latent == 'P2'")["loading"].item()
    assert varm.loc[GENES[-2:]].isna().all().all()  # features the model did not load on
    assert list(adata.obs["is_control"]) == [lab == "control" for lab in LABELS]
    assert list(adata.obs["n_targets"]) == [0] * 30 + [1] * 40 + [2] * 10
    assert adata.uns["m"]["model"] == "sparse_vae" and list(adata.uns["m"]["latent_names"]) == LATENTS
    assert "counts" in adata.layers and "counts" not in to_anndata(results, "m", counts=False).layers


def test_scanpy_works_on_the_result(results):
    adata = to_anndata(results, "m")
    fig = sc.pl.embedding(adata, basis="X_m", color="intervention", show=False, return_fig=True)
    assert len(fig.axes) >= 1
    sc.tl.rank_genes_groups(adata, groupby="intervention", reference="control", method="wilcoxon")
    top = pd.DataFrame(adata.uns["rank_genes_groups"]["names"])
    assert set(top["A"].head(3)) == {"G0", "G1", "G2"}  # the genes A shifts


def test_uns_survives_an_h5ad_round_trip(results, tmp_path):
    adata = to_anndata(results, "m")
    adata.write_h5ad(tmp_path / "m.h5ad")
    back = ad.read_h5ad(tmp_path / "m.h5ad")
    for table in ("targets", "graph"):
        pd.testing.assert_frame_equal(back.uns["m"][table], adata.uns["m"][table])
    graph = back.uns["m"]["graph"]
    assert np.isnan(graph["lag"][0]) and graph["lag"][1] == 1 and list(graph["undirected"]) == [False, True]
    params = back.uns["m"]["params"]
    assert params["n_latents"] is None and params["epochs"] == 3 and list(params["hidden"]) == [8, 4]
    assert json.loads(params["mixed"]) == [1, "a"] and params["nested"]["lr"] == 0.01
    np.testing.assert_array_equal(back.obsm["X_m"], adata.obsm["X_m"])


def test_errors_name_the_file(tmp_path):
    root = make_results(tmp_path / "demo")
    with pytest.raises(InputError, match=r"demo/nope: model folder of 'nope' does not exist"):
        to_anndata(root, "nope")
    z = pd.read_parquet(root / "m" / "latents.parquet")
    write_table(z.assign(sample_id=z["sample_id"] + "x"), root / "m" / "latents.parquet", "latents")
    with pytest.raises(InputError, match=r"latents\.parquet: 70 sample_id\(s\) not in preprocessed\.h5ad"):
        to_anndata(root, "m")
    (root / "m" / "latents.parquet").unlink()
    with pytest.raises(InputError, match=r"latents\.parquet: file does not exist; expected a model with latents"):
        to_anndata(root, "m")
