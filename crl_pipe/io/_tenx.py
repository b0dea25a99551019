"""Cell Ranger output folders with CRISPR Guide Capture (``format: 10x``)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import CONTROL_TARGET
from .._errors import InputError
from ._counts import check_counts, check_unique
from ._guides import GUIDE_COUNTS_KEY, GUIDE_NAMES_KEY, GUIDE_TARGETS_KEY, _map_guides

log = logging.getLogger("crl_pipe")

#: obs column holding Cell Ranger's calls (guide feature IDs joined by ``|``, as in its CSV).
CALLS_KEY = "feature_call"
#: uns key of Cell Ranger's per-guide UMI thresholds (aligned with ``uns["guide_names"]``; NaN: not given).
THRESHOLDS_KEY = "cellranger_thresholds"

CALLS_FILE = "protospacer_calls_per_cell.csv"
THRESHOLDS_FILE = "protospacer_umi_thresholds.csv"
REFERENCE_FILE = "feature_reference.csv"
_GUIDE = "CRISPR Guide Capture"
_GENE = "Gene Expression"
#: Matrix names of ``cellranger count`` (outs/) and ``cellranger multi`` (per_sample_outs/<s>/count/).
_MATRICES = ("filtered_feature_bc_matrix", "sample_filtered_feature_bc_matrix")
_MTX_FILES = ("matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz")
_LEGACY_FILES = ("matrix.mtx", "genes.tsv", "barcodes.tsv")
_CONTROL_TARGETS = frozenset(
    {"non-targeting", "nontargeting", "non_targeting", "nt", "ntc", "control", "safe-targeting"}
)
_MAX_SHOWN = 5


class _Layout(NamedTuple):
    matrix: Path  # a .h5 file or an MTX folder
    analysis: Path | None  # crispr_analysis/ beside it, if any


def read_10x(
    path: str | os.PathLike,
    *,
    counts_layer: str | None = None,
    feature_reference: str | os.PathLike | None = None,
    guide_map: str | os.PathLike | Mapping[str, str] | None = None,
) -> ad.AnnData:
    """Read a Cell Ranger run with CRISPR Guide Capture: expression, guide UMI counts and Cell Ranger's guide calls.

    Parameters
    ----------
    path
        Cell Ranger's ``outs/`` folder (or ``per_sample_outs/<sample>/count/`` of ``cellranger
        multi``) holding ``filtered_feature_bc_matrix.h5`` or ``filtered_feature_bc_matrix/``
        (``matrix.mtx.gz``, ``features.tsv.gz``, ``barcodes.tsv.gz``) and, optionally,
        ``crispr_analysis/``; or the ``.h5`` file or MTX folder itself (``crispr_analysis/`` is
        then looked for beside it). Read with :func:`scanpy.read_10x_h5` /
        :func:`scanpy.read_10x_mtx` (``gex_only=False``); the h5 is preferred when both exist.
    counts_layer
        Not used: Cell Ranger matrices hold raw UMI counts. Given, it is an error.
    feature_reference
        Cell Ranger's feature reference CSV (``id,name,read,pattern,sequence,feature_type`` and
        ``target_gene_id``/``target_gene_name``), mapping each guide ID to its target gene;
        ``Non-Targeting`` targets are controls. Default: ``crispr_analysis/feature_reference.csv``,
        else the ``target_gene_name`` features of the h5, else the naming rule of
        :func:`crl_pipe.pp.guide_target`.
    guide_map
        A ``guide,target`` table or mapping (see :func:`crl_pipe.io.read_guide_map`); overrides
        the feature reference.

    Returns
    -------
    AnnData with ``X`` = gene expression counts (CSR float32; var index = gene symbols, made
    unique with ``-1``, ``-2`` ...; ``var["gene_ids"]``), ``obsm["guide_counts"]`` = guide UMI
    counts, ``uns["guide_names"]`` = guide feature IDs and, where a target is known,
    ``uns["guide_targets"]``. With ``crispr_analysis/protospacer_calls_per_cell.csv``:
    ``obs["feature_call"]`` (Cell Ranger's called guides joined by ``|``; NaN: none) and
    ``uns["cellranger_thresholds"]`` (its per-guide UMI thresholds from
    ``protospacer_umi_thresholds.csv``, NaN where not given), ready for
    :func:`crl_pipe.pp.import_guide_calls`.

    Raises
    ------
    InputError
        No matrix found, an unreadable file, no guide capture or gene expression features,
        counts that are not non-negative integers, repeated barcodes, calls naming unknown guides.
    """
    path = Path(path)
    if counts_layer is not None:
        raise InputError(
            f"{path}: counts_layer={counts_layer!r} applies only to h5ad files; a Cell Ranger matrix holds raw counts"
        )
    layout = _locate(path)
    full = _read_matrix(layout.matrix)
    adata = _split_features(full, layout.matrix)
    reference = _reference_path(feature_reference, layout)
    if guide_map is not None:
        mapped = _map_guides(adata.uns[GUIDE_NAMES_KEY], guide_map, guides=layout.matrix)
        adata.uns[GUIDE_TARGETS_KEY] = np.asarray([_target(t) for t in mapped], dtype=str)
    elif reference is not None:
        adata.uns[GUIDE_TARGETS_KEY] = _targets_from_reference(adata.uns[GUIDE_NAMES_KEY], reference)
    elif "target_gene_name" in full.var:
        guides = full.var.loc[full.var["feature_types"] == _GUIDE, "target_gene_name"].astype(str)
        adata.uns[GUIDE_TARGETS_KEY] = np.asarray([_target(t) for t in guides], dtype=str)
    if layout.analysis is not None and (layout.analysis / CALLS_FILE).is_file():
        _attach_calls(adata, layout.analysis)
    return adata


# ------------------------------------------------------------------ finding and reading the matrix


def _locate(path: Path) -> _Layout:
    if path.is_file() and path.suffix == ".h5":
        return _Layout(path, _analysis(path.parent))
    if path.is_dir() and _is_mtx(path):
        return _Layout(path, _analysis(path.parent))
    if path.is_dir():
        for root in (path, path / "outs"):
            for name in _MATRICES:
                for candidate in (root / f"{name}.h5", root / name):
                    if candidate.is_file() or (candidate.is_dir() and _is_mtx(candidate)):
                        return _Layout(candidate, _analysis(root))
        found = sorted(p.name for p in path.iterdir())
        shown = ", ".join(found[:10]) + (" ..." if len(found) > 10 else "") or "nothing"
        raise InputError(
            f"{path}: no Cell Ranger matrix; expected filtered_feature_bc_matrix.h5 or filtered_feature_bc_matrix/ "
            f"({', '.join(_MTX_FILES)}) in it, or the path of one of them (found: {shown})"
        )
    if not path.exists():
        raise InputError(f"{path}: does not exist; expected a Cell Ranger outs/ folder, its .h5 matrix or MTX folder")
    raise InputError(f"{path}: not a Cell Ranger output; expected an outs/ folder, a .h5 matrix or an MTX folder")


def _is_mtx(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _MTX_FILES) or all((folder / f).is_file() for f in _LEGACY_FILES)


def _analysis(root: Path) -> Path | None:
    folder = root / "crispr_analysis"
    return folder if folder.is_dir() else None


def _read_matrix(matrix: Path) -> ad.AnnData:
    """All features (gene expression, guide capture, others), var index = feature IDs."""
    import scanpy as sc  # deferred: scanpy takes seconds to import; only this reader needs it

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*names are not unique", category=UserWarning)
            if matrix.suffix == ".h5":
                adata = sc.read_10x_h5(matrix, gex_only=False)
            else:
                adata = sc.read_10x_mtx(matrix, var_names="gene_ids", gex_only=False, make_unique=False)
    except Exception as err:  # noqa: BLE001 - scanpy and h5py raise bare Exception, OSError, KeyError, ValueError
        cause = err.__cause__ or err
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise InputError(f"{matrix}: not a readable Cell Ranger matrix ({text})") from None
    if matrix.suffix == ".h5":  # var index = names: keep IDs as the index, as read_10x_mtx(var_names="gene_ids")
        adata.var["gene_symbols"] = adata.var_names.astype(str)
        adata.var_names = adata.var["gene_ids"].astype(str).to_numpy()
    if "feature_types" not in adata.var:  # Cell Ranger 2 (genes.tsv): gene expression only
        adata.var["feature_types"] = _GENE
    return adata


def _split_features(full: ad.AnnData, matrix: Path) -> ad.AnnData:
    """Gene expression into ``X``, guide capture into ``obsm``; other feature types left out (logged)."""
    kinds = full.var["feature_types"].astype(str)
    is_gene, is_guide = (kinds == _GENE).to_numpy(), (kinds == _GUIDE).to_numpy()
    found = sorted(kinds.unique())
    if not is_guide.any():
        raise InputError(
            f"{matrix}: no {_GUIDE!r} features (feature types: {found}); "
            "expected the guide capture library in the matrix"
        )
    if not is_gene.any():
        raise InputError(f"{matrix}: no {_GENE!r} features (feature types: {found}); expected gene expression")
    if (~is_gene & ~is_guide).any():
        log.info(
            "%s: %d feature(s) neither %r nor %r left out", matrix, int((~is_gene & ~is_guide).sum()), _GENE, _GUIDE
        )
    cells = pd.Index(full.obs_names.astype(str))
    check_unique(cells, matrix, "cell barcodes")
    counts = sp.csr_matrix(full.X)
    check_counts(counts, path=matrix, field="counts")
    guide_ids = pd.Index(full.var_names[is_guide].astype(str))
    check_unique(guide_ids, matrix, f"{_GUIDE} feature IDs")
    symbols = full.var["gene_symbols"][is_gene].astype(str)
    adata = ad.AnnData(
        X=counts[:, is_gene].astype(np.float32),
        obs=pd.DataFrame(index=cells),
        var=pd.DataFrame(
            {"gene_ids": full.var_names[is_gene].astype(str)}, index=ad.utils.make_index_unique(pd.Index(symbols))
        ),
    )
    adata.obsm[GUIDE_COUNTS_KEY] = sp.csr_matrix(counts[:, is_guide], dtype=np.float32)
    adata.uns[GUIDE_NAMES_KEY] = np.asarray(guide_ids, dtype=str)
    return adata


# ------------------------------------------------------------------ guide -> target


def _reference_path(given: str | os.PathLike | None, layout: _Layout) -> Path | None:
    if given is not None:
        if not Path(given).is_file():
            raise InputError(f"{given}: feature reference file does not exist")
        return Path(given)
    default = layout.analysis / REFERENCE_FILE if layout.analysis is not None else None
    return default if default is not None and default.is_file() else None


def _targets_from_reference(guides: np.ndarray, path: Path) -> np.ndarray:
    """Target gene of each guide from Cell Ranger's feature reference (by ``id``; ``Non-Targeting`` -> control)."""
    table = _read_csv(path, "feature reference")
    target = next((c for c in ("target_gene_name", "target_gene_id") if c in table.columns), None)
    if "id" not in table.columns or target is None:
        raise InputError(
            f"{path}: columns {list(table.columns)}; expected 'id' and 'target_gene_name' or 'target_gene_id' "
            "(Cell Ranger feature reference)"
        )
    if "feature_type" in table.columns:
        table = table[table["feature_type"].str.strip() == _GUIDE]
    mapping = dict(zip(table["id"].str.strip(), table[target].str.strip(), strict=True))
    missing = [g for g in guides if g not in mapping]
    if missing:
        shown = ", ".join(missing[:_MAX_SHOWN]) + (" ..." if len(missing) > _MAX_SHOWN else "")
        raise InputError(
            f"{path}: {len(missing)} guide(s) of the matrix have no row ({shown}); expected one row per guide id"
        )
    return np.asarray([_target(mapping[g]) for g in guides], dtype=str)


def _target(name: str) -> str:
    """Cell Ranger writes ``Non-Targeting`` as the target of control guides; crl-pipe says ``non-targeting``."""
    name = str(name).strip()
    return CONTROL_TARGET if name.casefold() in _CONTROL_TARGETS or name == "" else name


# ------------------------------------------------------------------ Cell Ranger's calls


def _attach_calls(adata: ad.AnnData, analysis: Path) -> None:
    """``obs["feature_call"]`` from protospacer_calls_per_cell.csv; per-guide thresholds into ``uns``."""
    path = analysis / CALLS_FILE
    table = _read_csv(path, "guide calls")
    missing = [c for c in ("cell_barcode", "feature_call") if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing}; expected cell_barcode,num_features,feature_call,num_umis "
            f"(found {list(table.columns)})"
        )
    barcodes = table["cell_barcode"].str.strip()
    if barcodes.duplicated().any():
        raise InputError(
            f"{path}: cell barcode {barcodes[barcodes.duplicated()].iloc[0]!r} appears twice; expected one row per cell"
        )
    guides = list(adata.uns[GUIDE_NAMES_KEY])
    calls = table["feature_call"].str.strip()
    named = {g for call in calls for g in call.split("|") if g}
    unknown = sorted(named - set(guides))
    if unknown:
        shown = ", ".join(unknown[:_MAX_SHOWN]) + (" ..." if len(unknown) > _MAX_SHOWN else "")
        raise InputError(
            f"{path}: feature_call names {len(unknown)} guide(s) not among the {_GUIDE!r} feature IDs of the matrix "
            f"({shown}); expected IDs from its features"
        )
    rows = pd.Index(barcodes).get_indexer(adata.obs_names)
    stray = len(barcodes) - int((rows >= 0).sum())
    if stray:
        log.warning("%s: %d called barcode(s) are not cells of the matrix; ignored", path, stray)
    values = np.where(rows >= 0, calls.to_numpy()[np.maximum(rows, 0)], None)
    adata.obs[CALLS_KEY] = pd.Categorical([v if v else np.nan for v in values])
    adata.uns[THRESHOLDS_KEY] = _thresholds(analysis / THRESHOLDS_FILE, guides)
    log.info("%s: Cell Ranger called guides in %d of %d cells", path, int((rows >= 0).sum()), adata.n_obs)


def _thresholds(path: Path, guides: list[str]) -> np.ndarray:
    out = np.full(len(guides), np.nan)
    if not path.is_file():
        return out
    table = _read_csv(path, "UMI thresholds")
    if len(table.columns) < 2:
        raise InputError(f"{path}: {len(table.columns)} column(s); expected Protospacer,UMI threshold")
    value = pd.to_numeric(table.iloc[:, 1], errors="coerce")
    thresholds = dict(zip(table.iloc[:, 0].str.strip(), value, strict=True))
    for j, guide in enumerate(guides):
        if guide in thresholds:
            out[j] = thresholds[guide]
    return out


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: not a readable {what} CSV ({text})") from None
    table.columns = table.columns.str.strip()
    return table
