"""One model's results back in the preprocessed AnnData, for scanpy, pertpy and the rest of scverse."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from .._errors import InputError
from ._artifacts import read_model_meta, read_table
from ._chunked import read_h5ad_parts

#: Columns of ``interventions.parquet`` copied to ``obs`` where the preprocessed AnnData lacks them.
OBS_COLUMNS = ("intervention", "is_control", "n_targets")


def to_anndata(results_dir: str | os.PathLike, model: str, *, counts: bool = True) -> ad.AnnData:
    """The preprocessed AnnData of a dataset with one model's results added.

    Parameters
    ----------
    results_dir
        The dataset's results folder (``results/<dataset>``): ``preprocessed.h5ad``,
        ``interventions.parquet`` and the model's folder ``<model>/`` (``latents.parquet``,
        ``targets.parquet``, ``model.json``; ``graph.parquet`` once the graph step ran,
        ``loadings.parquet`` where the model has a decoder).
    model
        The model's name in the config (its folder under ``results_dir``), e.g. ``sparse_vae``.
    counts
        Keep ``layers["counts"]`` (the raw counts, as large as ``X``); ``False`` reads only the
        log-normalised ``X``.

    Returns
    -------
    The AnnData of ``preprocessed.h5ad`` (``X`` log-normalised for screens) with

    - ``obsm[f"X_{model}"]``: the latents (cells x latents, columns in ``uns[model]["latent_names"]``
      order), rows matched on ``sample_id``; cells the model did not embed (the held-out
      combinations of ``train.held_out``) hold NaN;
    - ``varm[f"{model}_loadings"]``: the decoder loadings (features x latents); NaN for features the
      model did not see; absent when the model writes no ``loadings.parquet``;
    - ``uns[model]``: ``model`` (its kind), ``latent_names``, ``params``, ``targets``
      (``targets.parquet``: which latent each intervention acts on) and ``graph``
      (``graph.parquet``: edges among latents; absent before the graph step), tables as
      DataFrames of plain columns (lists joined with ``+``);
    - ``obs["intervention"]``, ``obs["is_control"]``, ``obs["n_targets"]`` from
      ``interventions.parquet`` where the preprocessed file lacks them.
    """
    results_dir = Path(results_dir)
    folder = results_dir / str(model)
    if not folder.is_dir():
        raise InputError(f"{folder}: model folder of {model!r} does not exist; expected results/<dataset>/<model>")
    if not (folder / "latents.parquet").exists():
        raise InputError(
            f"{folder / 'latents.parquet'}: file does not exist; expected a model with latents (not pc/ges)"
        )
    adata = read_h5ad_parts(results_dir / "preprocessed.h5ad", layers=["counts"] if counts else [])
    adata.obs_names = adata.obs_names.astype(str)
    adata.var_names = adata.var_names.astype(str)
    meta = read_model_meta(folder / "model.json")
    latents = read_table(folder / "latents.parquet", "latents")
    names = [str(n) for n in meta.get("latent_names") or [c for c in latents.columns if c != "sample_id"]]
    adata.obsm[f"X_{model}"] = _latent_matrix(latents, names, adata.obs_names, folder / "latents.parquet")
    if (folder / "loadings.parquet").exists():
        loadings = read_table(folder / "loadings.parquet", "loadings")
        adata.varm[f"{model}_loadings"] = _loading_matrix(loadings, names, adata.var_names, folder / "loadings.parquet")
    _add_labels(adata, read_table(results_dir / "interventions.parquet", "interventions"))
    adata.uns[str(model)] = {
        "model": str(meta.get("model", model)),
        "latent_names": np.array(names, dtype=object),
        "params": _uns_value(meta.get("params") or {}),
        "targets": _plain(read_table(folder / "targets.parquet", "targets")),
    }
    if (folder / "graph.parquet").exists():  # written by the graph step, after training
        adata.uns[str(model)]["graph"] = _plain(read_table(folder / "graph.parquet", "graph"))
    return adata


def _latent_matrix(latents: pd.DataFrame, names: list[str], obs_names: pd.Index, path: Path) -> np.ndarray:
    """Cells x latents in ``obs_names`` order; NaN for cells without latents."""
    missing = [n for n in names if n not in latents.columns]
    if missing:
        raise InputError(f"{path}: missing latent column(s) {missing[:5]}; expected the latent_names of model.json")
    table = latents.assign(sample_id=latents["sample_id"].astype(str)).set_index("sample_id")
    unknown = table.index.difference(obs_names)
    if len(unknown):
        raise InputError(
            f"{path}: {len(unknown)} sample_id(s) not in preprocessed.h5ad, e.g. {unknown[0]!r}; "
            "expected the cells of the same dataset"
        )
    return table[names].reindex(obs_names).to_numpy(dtype=np.float64)


def _loading_matrix(loadings: pd.DataFrame, names: list[str], var_names: pd.Index, path: Path) -> np.ndarray:
    """Features x latents in ``var_names`` order; NaN for features the model did not load on."""
    wide = loadings.assign(latent=loadings["latent"].astype(str), feature=loadings["feature"].astype(str)).pivot_table(
        index="feature", columns="latent", values="loading", aggfunc="first"
    )
    unknown = wide.index.difference(var_names)
    if len(unknown):
        raise InputError(
            f"{path}: {len(unknown)} feature(s) not in preprocessed.h5ad, e.g. {unknown[0]!r}; "
            "expected the features of the same dataset"
        )
    return wide.reindex(index=var_names, columns=names).to_numpy(dtype=np.float64)


def _add_labels(adata: ad.AnnData, labels: pd.DataFrame) -> None:
    """Copy the label columns the AnnData lacks, matched on ``sample_id``."""
    by_cell = labels.assign(sample_id=labels["sample_id"].astype(str)).set_index("sample_id")
    for column in OBS_COLUMNS:
        if column in adata.obs:
            continue
        values = by_cell[column].reindex(adata.obs_names)
        adata.obs[column] = pd.Categorical(values.astype(object)) if column == "intervention" else values.to_numpy()


def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with columns anndata writes to ``uns``: numbers and booleans as numpy, the rest as text."""
    columns = {}
    for name, values in table.reset_index(drop=True).items():
        if is_bool_dtype(values) and not values.isna().any():
            columns[str(name)] = values.to_numpy(dtype=bool)
        elif is_numeric_dtype(values) and not is_bool_dtype(values):
            columns[str(name)] = values.to_numpy(dtype=np.float64 if values.isna().any() else None, na_value=np.nan)
        else:  # text, categories, lists (joined with "+"), nullable booleans
            columns[str(name)] = np.array([_text(v) for v in values], dtype=object)
    return pd.DataFrame(columns)


def _text(value: Any) -> str:
    if isinstance(value, list | tuple | np.ndarray):
        return "+".join(str(v) for v in value)
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _uns_value(value: Any) -> Any:
    """A model parameter as anndata writes it: mappings kept, homogeneous lists as arrays, the rest as JSON text."""
    if isinstance(value, Mapping):
        return {str(k): _uns_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, str) for v in value):
            return np.array(value, dtype=object)
        if value and all(isinstance(v, bool | int | float) and not isinstance(v, bool) for v in value):
            return np.array(value)
        return json.dumps(value)
    return value if value is None or isinstance(value, str | bool | int | float) else str(value)
