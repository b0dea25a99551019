"""Crash-safe AnnData writing and provenance in ``uns["crl_pipe"]``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anndata as ad

from .._errors import InputError
from .._provenance import atomic_path


def write_h5ad(adata: ad.AnnData, path: str | os.PathLike, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``adata`` atomically; ``provenance`` lands in ``uns["crl_pipe"]``."""
    if provenance is not None:
        adata.uns["crl_pipe"] = provenance
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")
    return Path(path)


def read_h5ad(path: str | os.PathLike, backed: bool = False) -> ad.AnnData:
    """Read an h5ad file, turning low-level HDF5 errors into a one-line :class:`InputError`."""
    path = check_h5ad_path(path)
    try:
        return ad.read_h5ad(path, backed="r" if backed else None)
    except Exception as err:  # h5py/anndata raise many types for corrupt files
        detail = " ".join(str(err).split())  # h5py messages span lines; the error is one line
        raise InputError(f"{path}: not a readable h5ad file ({type(err).__name__}: {detail})") from None


def check_h5ad_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path; :class:`InputError` unless it is a non-empty file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected an h5ad (HDF5) file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty, expected an h5ad (HDF5) file")
    return path
