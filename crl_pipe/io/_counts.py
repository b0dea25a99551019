"""Raw counts as every screen reader checks them: unique names, finite non-negative integers, CSR."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError
from ._h5ad import read_h5ad

_EXPECTED = "expected raw counts (non-negative integers)"
#: Names shown in error messages are capped so that a message stays on one readable line.
_MAX_SHOWN = 5


def read_h5ad_counts(path: Path, *, counts_layer: str | None) -> ad.AnnData:
    """An h5ad screen's raw counts (``counts_layer``, else ``layers["counts"]``, else ``X``), checked."""
    with warnings.catch_warnings():
        # anndata warns on duplicated names; we raise a clearer error below instead.
        warnings.filterwarnings("ignore", message=r".* names are not unique", category=UserWarning)
        raw = read_h5ad(path)
    check_unique(raw.obs_names.astype(str), path, "obs index (cell IDs)")
    check_unique(raw.var_names.astype(str), path, "var index (gene symbols)")
    field, counts = pick_counts(raw, path, counts_layer)
    counts = to_csr(counts, where=f"{path}: {field}")
    check_counts(counts, path=path, field=field)
    obs = raw.obs.copy()
    obs.index = obs.index.astype(str)
    var = raw.var.copy()
    var.index = var.index.astype(str)
    return ad.AnnData(X=counts.astype(np.float32), obs=obs, var=var)


def pick_counts(adata: ad.AnnData, path: Path, counts_layer: str | None) -> tuple[str, object]:
    if counts_layer is not None:
        if counts_layer not in adata.layers:
            raise InputError(
                f"{path}: layers[{counts_layer!r}] not found; expected raw counts there "
                f"(available layers: {sorted(adata.layers)}, or leave counts_layer unset to use X)"
            )
        return f"layers[{counts_layer!r}]", adata.layers[counts_layer]
    if "counts" in adata.layers:
        return "layers['counts']", adata.layers["counts"]
    if adata.X is None:
        raise InputError(f"{path}: X is empty and there is no layers['counts']; expected raw counts in one of them")
    return "X", adata.X


def to_csr(matrix, where: str = "counts") -> sp.csr_matrix:
    # Keep the source dtype for now: validation must see the values before the float32 cast.
    dtype = np.dtype(getattr(matrix, "dtype", object))
    if dtype.kind not in "biuf":  # strings or objects: scipy.sparse would fail with its own message
        raise InputError(f"{where} has dtype {dtype}; {_EXPECTED}")
    if dtype.kind == "f" and dtype.itemsize < 4:  # float16: scipy.sparse has no such dtype
        matrix = matrix.astype(np.float32)
    if sp.issparse(matrix):
        return sp.csr_matrix(matrix)
    return sp.csr_matrix(np.asarray(matrix))


def check_counts(counts: sp.spmatrix, *, path: str | os.PathLike, field: str) -> None:
    """Raise :class:`InputError` unless ``counts`` holds finite non-negative integers.

    Only the stored (nonzero) entries are inspected, so this is linear in the number of nonzeros.
    """
    data = counts.data
    where = f"{path}: {field}"
    if data.dtype.kind not in "biuf":
        raise InputError(f"{where} has dtype {data.dtype}; {_EXPECTED}")
    is_float = data.dtype.kind == "f"
    if is_float and not np.isfinite(data).all():
        raise InputError(f"{where} holds {int((~np.isfinite(data)).sum())} NaN/Inf value(s); {_EXPECTED}")
    negative = data < 0
    if negative.any():
        example = data[negative][0]
        raise InputError(f"{where} holds {int(negative.sum())} negative value(s) (e.g. {example:g}); {_EXPECTED}")
    fractional = data != np.round(data) if is_float else None
    if is_float and fractional.any():
        raise InputError(
            f"{where} holds {int(fractional.sum())} non-integer value(s) (e.g. {data[fractional][0]:g}); "
            f"{_EXPECTED}, not normalised or log-transformed data"
        )


def check_unique(index: pd.Index, path: str | os.PathLike, what: str) -> None:
    dup = index[index.duplicated()].unique()
    if len(dup):
        shown = ", ".join(map(str, dup[:_MAX_SHOWN])) + (" ..." if len(dup) > _MAX_SHOWN else "")
        raise InputError(f"{path}: {what} has {len(dup)} duplicated name(s) ({shown}); expected unique names")
