"""Read a raw perturbation screen into the canonical ``ingested.h5ad`` layout."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError
from ._h5ad import read_h5ad
from ._robot import SCREEN_ADAPTERS

_EXPECTED = "expected raw counts (non-negative integers)"
#: Names shown in error messages are capped so that a message stays on one readable line.
_MAX_SHOWN = 5


def read_screen(
    path: str | os.PathLike, *, format: str = "h5ad", counts_layer: str | None = None, **options: Any
) -> ad.AnnData:
    """Read a perturbation screen as raw counts, checked, in the canonical layout.

    Parameters
    ----------
    path
        The screen file. It is opened read-only and never modified.
    format
        Layout of ``path``; one of the keys of the reader registry: ``"h5ad"``, or
        ``"guide_counts"`` (``path`` = the expression matrix, with the guide UMI counts in
        ``options["guides"]``; see :func:`crl_pipe.io.read_guide_counts`), ``"10x"`` (a Cell
        Ranger folder with CRISPR Guide Capture, see :func:`crl_pipe.io.read_10x`); robot logs:
        ``"lerobot"``, ``"rosbag"``, ``"table"`` (frames x channels, see :func:`crl_pipe.io.read_robot`).
    counts_layer
        Layer holding the raw UMI counts. By default ``layers["counts"]`` when present, else ``X``.
    **options
        Options of the format's reader, e.g. ``guides`` and ``guide_map`` for ``"guide_counts"``.

    Returns
    -------
    AnnData with ``X`` = raw counts (CSR, float32, non-negative integers), ``obs`` index = unique
    cell IDs (str), ``var`` index = unique gene symbols (str); ``obs`` and ``var`` columns are
    kept, other slots (``uns``, ``obsm``, other layers) are not carried into the artifact.

    Raises
    ------
    InputError
        Unknown format, unreadable file, missing layer, duplicated cell IDs or genes, or counts
        that are not finite non-negative integers.
    """
    reader = _READERS.get(format)
    if reader is None:
        raise InputError(f"{path}: unknown screen format {format!r}; supported formats: {sorted(_READERS)}")
    accepted = _options_of(reader)
    unknown = sorted(set(options) - accepted)
    if unknown:
        allowed = f"expected one of {sorted(accepted)}" if accepted else "it takes none"
        raise InputError(f"{path}: option(s) {unknown} not understood by format {format!r}; {allowed}")
    adata = reader(Path(path), counts_layer=counts_layer, **options)
    if adata.n_obs == 0 or adata.n_vars == 0:
        shape = f"{adata.n_obs} cells x {adata.n_vars} genes"
        raise InputError(f"{path}: screen has {shape}; expected at least one of each")
    return adata


def _read_h5ad_screen(path: Path, *, counts_layer: str | None) -> ad.AnnData:
    with warnings.catch_warnings():
        # anndata warns on duplicated names; we raise a clearer error below instead.
        warnings.filterwarnings("ignore", message=r".* names are not unique", category=UserWarning)
        raw = read_h5ad(path)
    _check_unique(raw.obs_names.astype(str), path, "obs index (cell IDs)")
    _check_unique(raw.var_names.astype(str), path, "var index (gene symbols)")
    field, counts = _pick_counts(raw, path, counts_layer)
    counts = _to_csr(counts, where=f"{path}: {field}")
    _check_counts(counts, path=path, field=field)
    obs = raw.obs.copy()
    obs.index = obs.index.astype(str)
    var = raw.var.copy()
    var.index = var.index.astype(str)
    return ad.AnnData(X=counts.astype(np.float32), obs=obs, var=var)


def _read_guide_counts_screen(
    path: Path, *, counts_layer: str | None, guides: str | os.PathLike | None = None, guide_map: Any = None
) -> ad.AnnData:
    from ._guides import read_guide_counts  # deferred: _guides builds on the helpers of this module

    return read_guide_counts(path, guides, guide_map=guide_map, counts_layer=counts_layer)


def _read_10x_screen(
    path: Path, *, counts_layer: str | None, feature_reference: str | os.PathLike | None = None, guide_map: Any = None
) -> ad.AnnData:
    from ._tenx import read_10x  # deferred, as above

    return read_10x(path, counts_layer=counts_layer, feature_reference=feature_reference, guide_map=guide_map)


#: format name -> reader(path, counts_layer=..., **options) returning an AnnData; new layouts register here.
_READERS: dict[str, Callable[..., ad.AnnData]] = {
    "h5ad": _read_h5ad_screen,
    "guide_counts": _read_guide_counts_screen,
    "10x": _read_10x_screen,  # a Cell Ranger run with CRISPR Guide Capture (see crl_pipe.io.read_10x)
    **SCREEN_ADAPTERS,  # robot logs: lerobot, rosbag, table (frames x channels, see crl_pipe.io.read_robot)
}


def _options_of(reader: Callable[..., ad.AnnData]) -> set[str]:
    """Keyword options a reader takes besides ``counts_layer``."""
    params = inspect.signature(reader).parameters.values()
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "counts_layer"}


def _pick_counts(adata: ad.AnnData, path: Path, counts_layer: str | None) -> tuple[str, object]:
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


def _to_csr(matrix, where: str = "counts") -> sp.csr_matrix:
    # Keep the source dtype for now: validation must see the values before the float32 cast.
    dtype = np.dtype(getattr(matrix, "dtype", object))
    if dtype.kind not in "biuf":  # strings or objects: scipy.sparse would fail with its own message
        raise InputError(f"{where} has dtype {dtype}; {_EXPECTED}")
    if dtype.kind == "f" and dtype.itemsize < 4:  # float16: scipy.sparse has no such dtype
        matrix = matrix.astype(np.float32)
    if sp.issparse(matrix):
        return sp.csr_matrix(matrix)
    return sp.csr_matrix(np.asarray(matrix))


def _check_counts(counts: sp.spmatrix, *, path: str | os.PathLike, field: str) -> None:
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


def _check_unique(index: pd.Index, path: str | os.PathLike, what: str) -> None:
    dup = index[index.duplicated()].unique()
    if len(dup):
        shown = ", ".join(map(str, dup[:_MAX_SHOWN])) + (" ..." if len(dup) > _MAX_SHOWN else "")
        raise InputError(f"{path}: {what} has {len(dup)} duplicated name(s) ({shown}); expected unique names")
