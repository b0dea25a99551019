"""Screens whose guide UMI counts sit beside the expression matrix (``format: guide_counts``)."""

from __future__ import annotations

import csv
import gzip
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import scipy.io
import scipy.sparse as sp

from .._errors import InputError
from ._counts import check_counts, check_unique, read_h5ad_counts

log = logging.getLogger("crl_pipe")

#: Where :func:`read_guide_counts` puts the guide counts, their names and (given a map) their targets.
GUIDE_COUNTS_KEY = "guide_counts"
GUIDE_NAMES_KEY = "guide_names"
GUIDE_TARGETS_KEY = "guide_targets"

_GUIDE_FEATURE = "CRISPR Guide Capture"
_GENE_FEATURE = "Gene Expression"
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
_BLOCK_BYTES = 16 << 20  # CSV text parsed per block; one block is dense in memory at a time
_MAX_SHOWN = 5


class _Counts(NamedTuple):
    """A cells x features count matrix with its labels (CSR, source dtype until checked)."""

    cells: pd.Index
    features: pd.Index
    matrix: sp.csr_matrix


def read_guide_counts(
    expression: str | os.PathLike,
    guides: str | os.PathLike | None,
    *,
    guide_map: str | os.PathLike | Mapping[str, str] | None = None,
    counts_layer: str | None = None,
) -> ad.AnnData:
    """Read an expression matrix and the guide UMI counts of the same cells into one AnnData.

    Parameters
    ----------
    expression
        Expression UMI counts, one of: a CSV/TSV (``.csv``, ``.tsv``, ``.txt``, optionally ``.gz``)
        with cells in rows, the cell barcode in the first column and one column per gene; a 10x
        MTX folder (``matrix.mtx``, ``features.tsv`` or ``genes.tsv``, ``barcodes.tsv``, each
        optionally gzipped); or an ``.h5ad`` file.
    guides
        Guide UMI counts of the same cells: an ``.h5ad`` (cells x guides, counts in
        ``layers["counts"]`` or ``X``) or a CSV/TSV laid out like the expression table. ``None``
        when ``expression`` is a Cell Ranger MTX folder that holds ``CRISPR Guide Capture``
        features.
    guide_map
        Target of each guide: a CSV/TSV with columns ``guide`` and ``target`` (see
        :func:`read_guide_map`) or a mapping. Every guide must be mapped. ``None`` leaves the
        targets to the naming rule of :func:`crl_pipe.pp.guide_target`.
    counts_layer
        Layer of an h5ad ``expression`` that holds the raw counts (default ``layers["counts"]``,
        else ``X``).

    Returns
    -------
    AnnData of the cells present in both files, in the order of ``expression``: ``X`` = expression
    counts (CSR float32), ``obsm["guide_counts"]`` = guide UMI counts (CSR float32),
    ``uns["guide_names"]`` = the guide of each column of ``obsm["guide_counts"]``, and with
    ``guide_map`` ``uns["guide_targets"]`` = the target of each guide. Cells in only one file are
    dropped and counted in the log. The files are opened read-only.

    Raises
    ------
    InputError
        A file is missing or unreadable, counts are not non-negative integers, names repeat, the
        two files share no cell barcode, or a guide has no entry in ``guide_map``.
    """
    expression = Path(expression)
    adata, embedded = _read_expression(expression, counts_layer=counts_layer)
    if guides is not None:
        guide_counts, source = _read_guides(Path(guides)), Path(guides)
    elif embedded is not None:
        guide_counts, source = embedded, expression
    else:
        raise InputError(
            f"{expression}: no guide counts given and no {_GUIDE_FEATURE!r} features in it; "
            "expected guides=<h5ad or CSV of guide UMI counts per cell>"
        )
    adata = _attach_guides(adata, guide_counts, expression=expression, guides=source)
    if guide_map is not None:
        adata.uns[GUIDE_TARGETS_KEY] = _map_guides(adata.uns[GUIDE_NAMES_KEY], guide_map, guides=source)
    return adata


def read_guide_map(path: str | os.PathLike) -> dict[str, str]:
    """Read a guide -> target table: CSV (or TSV for ``.tsv``/``.txt``) with columns ``guide`` and ``target``.

    Other columns are ignored. Control guides take ``non-targeting`` (or any control token of
    :data:`crl_pipe.pp.CONTROL_TOKENS`) as their target. A guide may appear twice only with the
    same target.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: guide map file does not exist")
    try:
        table = pd.read_csv(path, sep=_delimiter(path), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable guide map table ({_first_line(err)})") from None
    table.columns = table.columns.str.strip()
    missing = [c for c in ("guide", "target") if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing}; expected 'guide' and 'target' (found {list(table.columns)})"
        )
    guide, target = table["guide"].str.strip(), table["target"].str.strip()
    empty = ((guide == "") | (target == "")).to_numpy()
    if empty.any():
        line = int(np.flatnonzero(empty)[0]) + 2  # 1-based, after the header line
        raise InputError(f"{path}: line {line} has an empty guide or target; expected both on every line")
    pairs = pd.DataFrame({"guide": guide, "target": target}).drop_duplicates()
    clash = pairs["guide"][pairs["guide"].duplicated()]
    if len(clash):
        raise InputError(f"{path}: guide {clash.iloc[0]!r} has several targets; expected one target per guide")
    return dict(zip(pairs["guide"], pairs["target"], strict=True))


# ------------------------------------------------------------------ expression


def _read_expression(path: Path, *, counts_layer: str | None) -> tuple[ad.AnnData, _Counts | None]:
    """The expression AnnData, plus the guide counts a Cell Ranger MTX folder may hold beside it."""
    if counts_layer is not None and not _is_h5ad(path):
        raise InputError(f"{path}: counts_layer={counts_layer!r} applies only to h5ad expression files")
    if path.is_dir():
        return _read_mtx(path)
    if _is_h5ad(path):
        return read_h5ad_counts(path, counts_layer=counts_layer), None
    if _is_table(path):
        counts = _read_count_table(path, what="gene")
        return _to_anndata(counts, path), None
    if not path.exists():
        raise InputError(f"{path}: expression file does not exist")
    raise InputError(
        f"{path}: unsupported expression layout; expected a CSV/TSV table "
        f"({', '.join(_TABLE_SUFFIXES)}, optionally .gz), an MTX folder or an .h5ad file"
    )


def _read_guides(path: Path) -> _Counts:
    if _is_h5ad(path):
        adata = read_h5ad_counts(path, counts_layer=None)
        return _Counts(adata.obs_names, adata.var_names, adata.X)
    if _is_table(path):
        counts = _read_count_table(path, what="guide")
        check_counts(counts.matrix, path=path, field="guide counts")
        return counts._replace(matrix=counts.matrix.astype(np.float32))
    if not path.exists():
        raise InputError(f"{path}: guide counts file does not exist")
    raise InputError(
        f"{path}: unsupported guide counts layout; expected an .h5ad file or a CSV/TSV table (cells x guides)"
    )


def _to_anndata(counts: _Counts, path: Path) -> ad.AnnData:
    check_counts(counts.matrix, path=path, field="counts")
    return ad.AnnData(
        X=counts.matrix.astype(np.float32),
        obs=pd.DataFrame(index=counts.cells),
        var=pd.DataFrame(index=counts.features),
    )


# ------------------------------------------------------------------ CSV/TSV tables


def _read_count_table(path: Path, *, what: str) -> _Counts:
    """Cells x features counts from a delimited table: barcode first, then one column per ``what``.

    Parsed by pyarrow block by block; each block goes to CSR at once, so memory holds the sparse
    matrix plus one dense block, never the whole table.
    """
    names = _header(path)
    if len(names) < 2:
        raise InputError(f"{path}: header has {len(names)} column(s); expected a barcode column, then one per {what}")
    features = pd.Index([n.strip() for n in names[1:]], dtype=str)
    if (features == "").any():
        raise InputError(f"{path}: header has an empty {what} name in column {int((features == '').argmax()) + 2}")
    check_unique(features, path, f"header ({what} names)")
    columns = ["barcode", *(f"c{i}" for i in range(len(features)))]  # own names: the header's may repeat or be empty
    types = {"barcode": pa.string(), **{c: pa.float64() for c in columns[1:]}}
    cells: list[str] = []
    blocks: list[sp.csr_matrix] = []
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=columns, skip_rows=1, block_size=_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=_delimiter(path)),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
        for batch in reader:
            cells.extend(batch.column(0).to_pylist())
            blocks.append(_block_to_csr(batch, path, what))
    except pa.ArrowInvalid as err:
        raise InputError(
            f"{path}: {_first_line(err)}; expected a {what} UMI count in every column after the barcode"
        ) from None
    matrix = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, len(features)))
    cell_index = pd.Index(cells, dtype=str)
    if (cell_index.str.strip() == "").any():
        raise InputError(f"{path}: row {int((cell_index.str.strip() == '').argmax()) + 2} has an empty cell barcode")
    check_unique(cell_index, path, "first column (cell barcodes)")
    return _Counts(cell_index, features, matrix)


def _block_to_csr(batch: pa.RecordBatch, path: Path, what: str) -> sp.csr_matrix:
    columns = batch.columns[1:]
    missing = sum(c.null_count for c in columns)
    if missing:
        raise InputError(
            f"{path}: {missing} empty or NA value(s) among the {what} counts; expected a count in every cell"
        )
    return sp.csr_matrix(np.column_stack([c.to_numpy() for c in columns]))


def _header(path: Path) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            return next(csv.reader(fh, delimiter=_delimiter(path)), [])
    except FileNotFoundError:
        raise InputError(f"{path}: file does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path}: not a readable text table ({_first_line(err)})") from None


# ------------------------------------------------------------------ 10x MTX folders


def _read_mtx(folder: Path) -> tuple[ad.AnnData, _Counts | None]:
    """A 10x ``filtered_feature_bc_matrix`` folder; guide capture features come back separately."""
    matrix_file = _find(folder, "matrix.mtx")
    features_file = _find(folder, "features.tsv", "genes.tsv")
    barcodes_file = _find(folder, "barcodes.tsv")
    try:
        matrix = sp.csr_matrix(scipy.io.mmread(matrix_file)).T.tocsr()  # 10x stores features x cells
    except (ValueError, OSError) as err:
        raise InputError(f"{matrix_file}: not a readable Matrix Market file ({_first_line(err)})") from None
    features = _read_tsv(features_file)
    cells = pd.Index(_read_tsv(barcodes_file)[0], dtype=str)
    if matrix.shape != (len(cells), len(features)):
        raise InputError(
            f"{matrix_file}: matrix is {matrix.shape[1]} features x {matrix.shape[0]} cells; expected "
            f"{len(features)} features ({features_file.name}) x {len(cells)} cells ({barcodes_file.name})"
        )
    check_unique(cells, barcodes_file, "cell barcodes")
    kinds = features[2] if features.shape[1] > 2 else pd.Series(_GENE_FEATURE, index=features.index)
    is_gene, is_guide = (kinds == _GENE_FEATURE).to_numpy(), (kinds == _GUIDE_FEATURE).to_numpy()
    if (~is_gene & ~is_guide).any():
        log.info(
            "%s: %d feature(s) neither %r nor %r left out",
            features_file,
            int((~is_gene & ~is_guide).sum()),
            _GENE_FEATURE,
            _GUIDE_FEATURE,
        )
    symbols = features[1] if features.shape[1] > 1 else features[0]
    genes = _Counts(cells, _unique_symbols(symbols[is_gene], features_file), matrix[:, is_gene])
    adata = _to_anndata(genes, matrix_file)
    adata.var["gene_ids"] = features[0][is_gene].to_numpy()
    guides = None
    if is_guide.any():
        guide_names = pd.Index(features[0][is_guide], dtype=str)
        check_unique(guide_names, features_file, f"{_GUIDE_FEATURE} feature IDs")
        guides = _Counts(cells, guide_names, matrix[:, is_guide])
        check_counts(guides.matrix, path=matrix_file, field="guide counts")
        guides = guides._replace(matrix=guides.matrix.astype(np.float32))
    return adata, guides


def _find(folder: Path, *names: str) -> Path:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    wanted = " or ".join(f"{n}[.gz]" for n in names)
    raise InputError(
        f"{folder}: no {wanted}; expected a 10x MTX folder (matrix.mtx, features.tsv or genes.tsv, barcodes.tsv)"
    )


def _read_tsv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise InputError(f"{path}: not a readable tab-separated file ({_first_line(err)})") from None


def _unique_symbols(symbols: pd.Series, path: Path) -> pd.Index:
    """Gene symbols, repeated ones suffixed ``-1``, ``-2`` ... in order (as Cell Ranger users expect)."""
    symbols = symbols.reset_index(drop=True)
    nth = symbols.groupby(symbols).cumcount()
    if (nth > 0).any():
        log.info("%s: %d repeated gene symbol(s) made unique with a -N suffix", path, int((nth > 0).sum()))
    unique = symbols.where(nth == 0, symbols + "-" + nth.astype(str))
    index = pd.Index(unique, dtype=str)
    check_unique(index, path, "gene symbols")
    return index


# ------------------------------------------------------------------ alignment and mapping


def _attach_guides(adata: ad.AnnData, counts: _Counts, *, expression: Path, guides: Path) -> ad.AnnData:
    """Keep the cells present in both files (expression order); guide counts go to ``obsm``."""
    rows = counts.cells.get_indexer(adata.obs_names)
    found = rows >= 0
    if not found.any():
        raise InputError(
            f"{guides}: no cell barcode in common with {expression} (e.g. {_first(counts.cells)} vs "
            f"{_first(adata.obs_names)}); expected the same barcodes in both files"
        )
    if not found.all():
        log.warning(
            "%d of %d cells of %s have no guide counts in %s; dropped", (~found).sum(), len(found), expression, guides
        )
        adata = adata[found].copy()
    if found.sum() < len(counts.cells):
        log.warning(
            "%d of %d cells of %s are not in %s; dropped",
            len(counts.cells) - found.sum(),
            len(counts.cells),
            guides,
            expression,
        )
    adata.obsm[GUIDE_COUNTS_KEY] = sp.csr_matrix(counts.matrix[rows[found]], dtype=np.float32)
    adata.uns[GUIDE_NAMES_KEY] = np.asarray(counts.features, dtype=str)
    return adata


def _map_guides(names: np.ndarray, guide_map: str | os.PathLike | Mapping[str, str], *, guides: Path) -> np.ndarray:
    if isinstance(guide_map, Mapping):
        mapping, source = {str(k): str(v) for k, v in guide_map.items()}, "guide_map"
    else:
        mapping, source = read_guide_map(guide_map), str(guide_map)
    missing = [str(n) for n in names if str(n) not in mapping]
    if missing:
        shown = ", ".join(missing[:_MAX_SHOWN]) + (" ..." if len(missing) > _MAX_SHOWN else "")
        raise InputError(
            f"{source}: {len(missing)} guide(s) of {guides} have no target ({shown}); "
            "expected a guide,target row for each"
        )
    return np.asarray([mapping[str(n)] for n in names], dtype=str)


# ------------------------------------------------------------------ small helpers


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return Path(name[: -len(".gz")] if name.endswith(".gz") else name).suffix


def _is_h5ad(path: Path) -> bool:
    return path.name.lower().endswith(".h5ad")


def _is_table(path: Path) -> bool:
    return _suffix(path) in _TABLE_SUFFIXES


def _delimiter(path: Path) -> str:
    return "," if _suffix(path) == ".csv" else "\t"


def _first(index: pd.Index) -> str:
    return repr(str(index[0])) if len(index) else "no cells"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
