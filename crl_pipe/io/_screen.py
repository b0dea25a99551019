"""Read a raw perturbation screen into the canonical ``ingested.h5ad`` layout."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad

from .._errors import InputError
from ._counts import read_h5ad_counts
from ._guides import read_guide_counts
from ._robot import SCREEN_ADAPTERS
from ._tenx import read_10x


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


def _read_guide_counts_screen(
    path: Path, *, counts_layer: str | None, guides: str | os.PathLike | None = None, guide_map: Any = None
) -> ad.AnnData:
    return read_guide_counts(path, guides, guide_map=guide_map, counts_layer=counts_layer)


def _read_10x_screen(
    path: Path, *, counts_layer: str | None, feature_reference: str | os.PathLike | None = None, guide_map: Any = None
) -> ad.AnnData:
    return read_10x(path, counts_layer=counts_layer, feature_reference=feature_reference, guide_map=guide_map)


#: format name -> reader(path, counts_layer=..., **options) returning an AnnData; new layouts register here.
_READERS: dict[str, Callable[..., ad.AnnData]] = {
    "h5ad": read_h5ad_counts,
    "guide_counts": _read_guide_counts_screen,
    "10x": _read_10x_screen,  # a Cell Ranger run with CRISPR Guide Capture (see crl_pipe.io.read_10x)
    **SCREEN_ADAPTERS,  # robot logs: lerobot, rosbag, table (frames x channels, see crl_pipe.io.read_robot)
}


def _options_of(reader: Callable[..., ad.AnnData]) -> set[str]:
    """Keyword options a reader takes besides ``counts_layer``."""
    params = inspect.signature(reader).parameters.values()
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "counts_layer"}
