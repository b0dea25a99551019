"""Row-chunked reading and writing of h5ad files, for screens larger than memory.

A stage whose matrix would not comfortably fit in memory reads it in blocks of cells (anndata's
on-disk sparse datasets) and writes its output by appending blocks to resizable HDF5 datasets,
so that it holds one block of the matrix at a time. Small files take the in-memory path of each
stage; both paths write the same artifact.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem, sparse_dataset, write_elem

from .._errors import InputError
from .._provenance import atomic_path
from ._counts import check_counts, check_unique, to_csr
from ._h5ad import check_h5ad_path, read_h5ad

#: A matrix that takes more memory than this (CSR: values + column indices) is streamed in row chunks.
STREAM_BYTES = 512 << 20
#: Memory one row chunk of a streamed matrix takes (before any processing).
CHUNK_BYTES = 128 << 20
#: HDF5 storage of appended matrices: gzip as :func:`write_h5ad`, in chunks of 2**18 entries (1 MiB of float32).
_DATASET = {"compression": "gzip", "chunks": (1 << 18,)}
_INT32_MAX = np.iinfo(np.int32).max


class H5adRows:
    """An h5ad file opened read-only: ``obs``, ``var`` and ``uns`` in memory, matrices read by rows.

    ``key`` names a matrix: ``"X"`` or ``"layers/<name>"``, stored as CSR or dense. Use as a
    context manager (the file is closed on exit).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_h5ad_path(path)
        try:
            self._file = h5py.File(self.path, "r")
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".* names are not unique", category=UserWarning)
                self.obs: pd.DataFrame = read_elem(self._file["obs"])
                self.var: pd.DataFrame = read_elem(self._file["var"])
            self.uns: dict[str, Any] = read_elem(self._file["uns"]) if "uns" in self._file else {}
        except Exception as err:  # h5py/anndata raise many types for corrupt files
            detail = " ".join(str(err).split())
            raise InputError(f"{self.path}: not a readable h5ad file ({type(err).__name__}: {detail})") from None

    def __enter__(self) -> H5adRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def n_obs(self) -> int:
        return len(self.obs)

    def nnz(self, key: str = "X") -> int:
        """Stored entries: non-zeros of a sparse matrix, every entry of a dense one."""
        elem = self._file[key]
        return int(np.prod(elem.shape)) if isinstance(elem, h5py.Dataset) else int(elem["data"].shape[0])

    def nbytes(self, key: str = "X") -> int:
        """Memory the whole matrix takes when read (CSR: values and column indices)."""
        return _nbytes(self._file[key])

    def rows(self, start: int, stop: int, key: str = "X") -> sp.csr_matrix:
        """Rows ``start:stop`` as CSR, in the stored dtype."""
        elem = self._file[key]
        if isinstance(elem, h5py.Dataset):
            return sp.csr_matrix(elem[start:stop])
        return sp.csr_matrix(sparse_dataset(elem)[start:stop])

    def chunk_bounds(self, key: str = "X", chunk_rows: int | None = None) -> list[tuple[int, int]]:
        """``(start, stop)`` of row chunks of about :data:`CHUNK_BYTES` each (or ``chunk_rows`` rows)."""
        if chunk_rows is None:
            per_row = self.nbytes(key) / max(self.n_obs, 1)
            chunk_rows = max(1, int(CHUNK_BYTES // max(per_row, 1.0)))
        return [(s, min(s + chunk_rows, self.n_obs)) for s in range(0, self.n_obs, chunk_rows)]

    def chunks(self, key: str = "X", chunk_rows: int | None = None) -> Iterator[tuple[int, int, sp.csr_matrix]]:
        """``(start, stop, rows)`` for consecutive row chunks of the matrix ``key``."""
        for start, stop in self.chunk_bounds(key, chunk_rows):
            yield start, stop, self.rows(start, stop, key)


def _encoding(elem: h5py.Group | h5py.Dataset) -> str:
    return str(elem.attrs.get("encoding-type", "array" if isinstance(elem, h5py.Dataset) else "unknown"))


def _nbytes(elem: h5py.Group | h5py.Dataset) -> int:
    if isinstance(elem, h5py.Dataset):
        return int(np.prod(elem.shape)) * elem.dtype.itemsize
    return int(elem["data"].shape[0]) * (elem["data"].dtype.itemsize + elem["indices"].dtype.itemsize)


def _streamable(file: h5py.File, key: str) -> bool:
    """Stored by rows (CSR or dense) and larger than :data:`STREAM_BYTES` in memory."""
    return key in file and _encoding(file[key]) in ("csr_matrix", "array") and _nbytes(file[key]) > STREAM_BYTES


def is_large(path: str | os.PathLike, key: str = "X") -> bool:
    """Whether the matrix ``key`` of an h5ad takes more than :data:`STREAM_BYTES` in memory and is
    stored so that it can be read by rows (CSR or dense); such files are streamed by the stages."""
    try:
        with h5py.File(check_h5ad_path(path), "r") as f:
            return _streamable(f, key)
    except Exception:  # noqa: BLE001 - the in-memory path reports what is wrong with the file
        return False


class Storage:
    """How a stage holds an h5ad artifact: whole in memory, or from disk in blocks of rows.

    The one choice between the in-memory and the larger-than-memory path of every stage
    (:func:`storage_for`, :func:`storage_for_screen`); a stage asks its :class:`Storage` to
    :meth:`read` the file, and takes its streaming algorithm where :attr:`chunked` is true.
    """

    #: Whether the file is larger than memory: read in blocks of rows, or without its large parts.
    chunked: bool = False

    def read(self, path: str | os.PathLike, *, layers: Sequence[str] = (), backed: bool = False) -> ad.AnnData:
        """The h5ad at ``path`` as this storage holds it.

        In memory, the whole file. Larger than memory, only the named ``layers`` and, unless
        ``backed``, ``X`` (``backed``: ``X`` stays on disk, :func:`read_h5ad_parts`).
        """
        return read_h5ad(path)


class _Chunked(Storage):
    chunked = True

    def read(self, path: str | os.PathLike, *, layers: Sequence[str] = (), backed: bool = False) -> ad.AnnData:
        return read_h5ad_parts(path, layers=layers, backed=backed)


#: The two storages: a file that fits in memory, and one that is streamed.
IN_MEMORY, CHUNKED = Storage(), _Chunked()


def storage_for(path: str | os.PathLike, key: str = "X") -> Storage:
    """:data:`CHUNKED` when the matrix ``key`` of the h5ad at ``path`` is larger than memory
    (:func:`is_large`), else :data:`IN_MEMORY`."""
    return CHUNKED if is_large(path, key) else IN_MEMORY


class ScreenChunks(H5adRows):
    """A raw h5ad screen read in blocks of cells, each checked as :func:`read_screen` checks a whole screen.

    Iterating yields AnnData blocks in the canonical layout (``X`` = raw counts, CSR float32;
    ``obs``/``var`` indexed by str names); errors name the rows of the block they were found in.
    """

    def __init__(
        self, path: str | os.PathLike, *, counts_layer: str | None = None, chunk_rows: int | None = None
    ) -> None:
        super().__init__(path)

        try:
            check_unique(self.obs.index.astype(str), self.path, "obs index (cell IDs)")
            check_unique(self.var.index.astype(str), self.path, "var index (gene symbols)")
            self.key, self.field = _counts_key(self._file, self.path, counts_layer)
        except InputError:
            self.close()
            raise
        self.obs.index = self.obs.index.astype(str)
        self.var.index = self.var.index.astype(str)
        self.chunk_rows = chunk_rows
        if self.n_obs == 0 or len(self.var) == 0:
            self.close()
            raise InputError(
                f"{self.path}: screen has {self.n_obs} cells x {len(self.var)} genes; expected at least one of each"
            )

    def __iter__(self) -> Iterator[ad.AnnData]:

        for start, stop, block in self.chunks(self.key, self.chunk_rows):
            counts = to_csr(block, where=f"{self.path}: {self.field}")
            check_counts(counts, path=self.path, field=f"{self.field} (rows {start}-{stop})")
            yield ad.AnnData(X=counts.astype(np.float32), obs=self.obs.iloc[start:stop], var=self.var)


def _counts_key(file: h5py.File, path: os.PathLike, counts_layer: str | None) -> tuple[str, str]:
    """Where the raw counts are (HDF5 key, name in messages): as :func:`read_screen` picks them."""
    layers = sorted(file["layers"]) if "layers" in file else []
    if counts_layer is not None:
        if counts_layer not in layers:
            raise InputError(
                f"{path}: layers[{counts_layer!r}] not found; expected raw counts there "
                f"(available layers: {layers}, or leave counts_layer unset to use X)"
            )
        return f"layers/{counts_layer}", f"layers[{counts_layer!r}]"
    if "counts" in layers:
        return "layers/counts", "layers['counts']"
    if "X" not in file:
        raise InputError(f"{path}: X is empty and there is no layers['counts']; expected raw counts in one of them")
    return "X", "X"


def is_large_screen(path: str | os.PathLike, counts_layer: str | None = None) -> bool:
    """Whether an h5ad screen's raw counts take more than :data:`STREAM_BYTES` in memory and can be
    read by rows (CSR or dense): such a screen is ingested block by block (:class:`ScreenChunks`)."""
    try:
        with h5py.File(check_h5ad_path(path), "r") as f:
            return _streamable(f, _counts_key(f, path, counts_layer)[0])
    except Exception:  # noqa: BLE001 - the in-memory path reports what is wrong with the file
        return False


def storage_for_screen(path: str | os.PathLike, counts_layer: str | None = None) -> Storage:
    """:func:`storage_for` a raw h5ad screen, judged by its raw counts (:func:`is_large_screen`)."""
    return CHUNKED if is_large_screen(path, counts_layer) else IN_MEMORY


class _Appender:
    """Appends blocks of rows to ``X`` and to layers of an open h5ad (see :func:`write_h5ad_chunks`)."""

    def __init__(self, file: h5py.File, n_obs: int, n_vars: int, index64: bool) -> None:
        self._file, self._shape, self._index64 = file, (n_obs, n_vars), index64
        self.rows: dict[str, int] = {}

    def append(self, X: sp.spmatrix, **layers: sp.spmatrix) -> None:
        """Add the next cells' rows of ``X`` and of each named layer (CSR, as many columns as ``var``)."""
        for key, block in [("X", X), *((f"layers/{name}", m) for name, m in layers.items())]:
            block = sp.csr_matrix(block)
            if block.shape[1] != self._shape[1]:
                raise ValueError(f"{key}: block has {block.shape[1]} columns, expected {self._shape[1]}")
            if key in self._file:
                sparse_dataset(self._file[key]).append(block)
            else:
                parent, name = key.rsplit("/", 1) if "/" in key else ("/", key)
                write_elem(self._file[parent], name, block, dataset_kwargs=_DATASET)
                if self._index64:
                    _widen_indptr(self._file[key])
            self.rows[key] = self.rows.get(key, 0) + block.shape[0]

    def _check_complete(self) -> None:
        short = {key: n for key, n in self.rows.items() if n != self._shape[0]}
        if short or "X" not in self.rows:
            raise ValueError(f"h5ad writer: rows written {self.rows or {'X': 0}}, expected {self._shape[0]} in each")


@contextlib.contextmanager
def write_h5ad_chunks(
    path: str | os.PathLike,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    provenance: Mapping[str, Any] | None = None,
    *,
    uns: Mapping[str, Any] | None = None,
    max_nnz: int = 0,
) -> Iterator[_Appender]:
    """Write an h5ad whose ``X`` (and layers) arrive in blocks of rows: ``with ... as out: out.append(X, counts=...)``.

    ``obs``, ``var`` and ``uns`` (with ``provenance`` in ``uns["crl_pipe"]``, as :func:`write_h5ad`)
    are written first; the file appears at ``path`` only when the block finishes with every row of
    ``obs`` written. ``max_nnz`` bounds the stored entries of one matrix: above 2**31 the row
    pointers are 64-bit.
    """
    uns = dict(uns or {})
    if provenance is not None:
        uns["crl_pipe"] = dict(provenance)
    with atomic_path(path) as tmp:
        ad.AnnData(obs=obs, var=var, uns=uns).write_h5ad(tmp, compression="gzip")
        with h5py.File(tmp, "a") as f:
            out = _Appender(f, len(obs), len(var), index64=max_nnz >= _INT32_MAX)
            yield out
            out._check_complete()


def _widen_indptr(group: h5py.Group) -> None:
    """Rewrite a sparse matrix's row pointers as int64, so that appends may pass 2**31 entries."""
    indptr = group["indptr"][...].astype(np.int64)
    del group["indptr"]
    group.create_dataset("indptr", data=indptr, maxshape=(None,), **_DATASET)


def read_h5ad_parts(path: str | os.PathLike, *, layers: Sequence[str] = (), backed: bool = False) -> ad.AnnData:
    """An h5ad with only the named ``layers`` (those present); ``backed``: ``X`` stays on disk.

    ``anndata.read_h5ad`` loads every layer, also in backed mode; a stage that needs the
    log data alone thus holds half the memory (``layers["counts"]`` is as large as ``X``).
    """
    path = check_h5ad_path(path)
    try:
        with h5py.File(path, "r") as f:
            parts = {k: read_elem(f[k]) for k in ("obs", "var", "uns", "obsm", "varm") if k in f}
            stored = f["layers"] if "layers" in f else {}
            parts["layers"] = {k: read_elem(stored[k]) for k in layers if k in stored}
            if not backed:
                parts["X"] = read_elem(f["X"]) if "X" in f else None
        if backed:
            return ad.AnnData(filename=path, filemode="r", **parts)
        return ad.AnnData(**parts)
    except Exception as err:  # h5py/anndata raise many types for corrupt files
        detail = " ".join(str(err).split())
        raise InputError(f"{path}: not a readable h5ad file ({type(err).__name__}: {detail})") from None
