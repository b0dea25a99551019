"""Compare the artifacts of two workflow folders: same outputs before and after a change?

    .venv/bin/python benchmarks/compare_artifacts.py <dir_a> <dir_b>

Walks ``results/`` and ``resources/`` of both folders and prints one line per artifact:

- ``identical``: the same bytes;
- ``equal content``: Parquet tables equal (``pyarrow.Table.equals``, schema metadata left out),
  h5ad files with equal ``X``, layers, ``obs``, ``var``, ``obsm``, ``varm`` and ``uns``, JSON with
  the same values, checkpoints with the same tensors; what differs besides (the provenance in the
  schema metadata or in ``uns["crl_pipe"]``: input hashes, code digests, ...) is named;
- ``DIFFERENT``: what differs (missing on one side, columns, rows, matrices, first differing line).

Exit status 1 when some artifact is DIFFERENT, else 0.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOTS = ("results", "resources")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir_a", type=Path, help="a workflow folder (holding results/ and resources/)")
    parser.add_argument("dir_b", type=Path, help="the folder to compare it with")
    args = parser.parse_args(argv)
    different = 0
    for rel in sorted(set(_artifacts(args.dir_a)) | set(_artifacts(args.dir_b))):
        status, detail = compare(args.dir_a / rel, args.dir_b / rel)
        different += status == "DIFFERENT"
        print(f"{rel}: {status}" + (f" ({detail})" if detail else ""), flush=True)
    print(f"{different} artifact(s) DIFFERENT", file=sys.stderr)
    return 1 if different else 0


def _artifacts(folder: Path) -> Iterator[str]:
    """Files under the artifact roots of ``folder``, relative to it (no hidden or temporary files)."""
    for root in ROOTS:
        for path in sorted((folder / root).rglob("*")):
            rel = path.relative_to(folder)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                yield rel.as_posix()


def compare(a: Path, b: Path) -> tuple[str, str]:
    """``(status, detail)`` of the artifact at ``a`` against the one at ``b``."""
    if not a.is_file() or not b.is_file():
        return "DIFFERENT", f"only in {a.parent if a.is_file() else b.parent}"
    if _sha256(a) == _sha256(b):
        return "identical", ""
    compare_content = {".parquet": _parquet, ".h5ad": _h5ad, ".json": _json, ".pt": _checkpoint}.get(a.suffix, _text)
    try:
        problems, notes = compare_content(a, b)
    except Exception as err:  # noqa: BLE001 - an unreadable file is a difference, not a crash of the comparison
        return "DIFFERENT", f"cannot compare: {type(err).__name__}: {err}"
    if problems:
        return "DIFFERENT", "; ".join(problems)
    return "equal content", "; ".join(notes) if notes else "other bytes"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- Parquet --------------------------------------------------------------------------------------
def _parquet(a: Path, b: Path) -> tuple[list[str], list[str]]:
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    problems, notes = [], []
    if not ta.schema.equals(tb.schema, check_metadata=False):
        problems.append(f"schema {ta.schema.names} {ta.schema.types} vs {tb.schema.names} {tb.schema.types}")
    elif ta.num_rows != tb.num_rows:
        problems.append(f"{ta.num_rows} vs {tb.num_rows} rows")
    elif not ta.equals(tb):
        cols = [name for name in ta.column_names if not ta.column(name).equals(tb.column(name))]
        problems.append(f"values differ in column(s) {cols}")
    meta_a, meta_b = ta.schema.metadata or {}, tb.schema.metadata or {}
    if meta_a != meta_b:
        notes.append("schema metadata differs: " + _metadata_diff(meta_a, meta_b))
    return problems, notes


def _metadata_diff(meta_a: dict, meta_b: dict) -> str:
    """Which keys of the schema metadata differ; inside JSON values (the provenance), which entries."""
    parts = []
    for key in sorted(set(meta_a) | set(meta_b)):
        va, vb = meta_a.get(key), meta_b.get(key)
        if va == vb:
            continue
        try:
            paths = _diff_paths(json.loads(va), json.loads(vb))
            parts.append(f"{key.decode(errors='replace')}: {', '.join(paths[:6])}{' ...' if len(paths) > 6 else ''}")
        except (TypeError, ValueError):
            parts.append(key.decode(errors="replace"))
    return "; ".join(parts)


# ---- h5ad ---------------------------------------------------------------------------------------
def _h5ad(a: Path, b: Path) -> tuple[list[str], list[str]]:
    import anndata as ad

    xa, xb = ad.read_h5ad(a), ad.read_h5ad(b)
    problems: list[str] = []
    if xa.shape != xb.shape:
        return [f"shape {xa.shape} vs {xb.shape}"], []
    _same_matrix("X", xa.X, xb.X, problems)
    for slot in ("layers", "obsm", "varm", "obsp", "varp"):
        ma, mb = getattr(xa, slot), getattr(xb, slot)
        if set(ma) != set(mb):
            problems.append(f"{slot} keys {sorted(ma)} vs {sorted(mb)}")
        for key in sorted(set(ma) & set(mb)):
            _same_matrix(f"{slot}[{key!r}]", ma[key], mb[key], problems)
    for slot in ("obs", "var"):
        fa, fb = getattr(xa, slot), getattr(xb, slot)
        if not (fa.index.equals(fb.index) and fa.columns.equals(fb.columns) and fa.dtypes.equals(fb.dtypes)):
            problems.append(f"{slot}: index, columns or dtypes differ")
        elif not fa.equals(fb):
            problems.append(f"{slot}: values differ in {[c for c in fa if not fa[c].equals(fb[c])]}")
    content_a = {k: v for k, v in xa.uns.items() if k != "crl_pipe"}
    content_b = {k: v for k, v in xb.uns.items() if k != "crl_pipe"}
    problems += [f"uns{path}" for path in _diff_paths(content_a, content_b)]
    notes = []
    prov = _diff_paths(xa.uns.get("crl_pipe"), xb.uns.get("crl_pipe"))
    if prov:
        notes.append(f"provenance uns['crl_pipe'] differs: {', '.join(prov[:6])}{' ...' if len(prov) > 6 else ''}")
    return problems, notes


def _same_matrix(name: str, ma: Any, mb: Any, problems: list[str]) -> None:
    import numpy as np
    import scipy.sparse as sp

    if sp.issparse(ma) != sp.issparse(mb) or getattr(ma, "dtype", None) != getattr(mb, "dtype", None):
        problems.append(f"{name}: {type(ma).__name__} {getattr(ma, 'dtype', '')} vs {type(mb).__name__} {mb.dtype}")
    elif sp.issparse(ma):
        if ma.shape != mb.shape or (ma != mb).nnz:
            problems.append(f"{name}: values differ")
    elif hasattr(ma, "to_numpy"):  # a data frame in obsm
        if not ma.equals(mb):
            problems.append(f"{name}: values differ")
    elif not np.array_equal(np.asarray(ma), np.asarray(mb), equal_nan=np.asarray(ma).dtype.kind == "f"):
        problems.append(f"{name}: values differ")


def _diff_paths(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths (``["inputs"]["x"]``) at which two nested values differ."""
    import numpy as np

    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{path}[{key!r}] (only in {'b' if key not in a else 'a'})")
            else:
                out += _diff_paths(a[key], b[key], f"{path}[{key!r}]")
        return out
    if hasattr(a, "equals") and type(a) is type(b):  # pandas objects
        return [] if a.equals(b) else [path or "(value)"]
    try:
        same = np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    except Exception:  # noqa: BLE001 - values numpy cannot hold: compare them as they are
        same = a == b
    return [] if same else [path or "(value)"]


# ---- other files ----------------------------------------------------------------------------------
def _json(a: Path, b: Path) -> tuple[list[str], list[str]]:
    paths = _diff_paths(json.loads(a.read_text()), json.loads(b.read_text()))
    return ([f"values differ at {', '.join(paths[:6])}"] if paths else []), ["same JSON values"]


def _checkpoint(a: Path, b: Path) -> tuple[list[str], list[str]]:
    import torch

    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)  # tensors only: nothing unpickled
    flat_a, flat_b = dict(_tensors(sa)), dict(_tensors(sb))
    if set(flat_a) != set(flat_b):
        return [f"entries {sorted(set(flat_a) ^ set(flat_b))[:6]} on one side only"], []
    differ = [k for k in flat_a if not _same_tensor(flat_a[k], flat_b[k])]
    return ([f"tensors differ: {differ[:6]}"] if differ else []), ["same tensors"]


def _tensors(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{path}.{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{path}[{i}]")
    else:
        yield path, obj


def _same_tensor(x: Any, y: Any) -> bool:
    import torch

    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        return x.dtype == y.dtype and x.shape == y.shape and bool(torch.equal(x, y))
    return x == y


def _text(a: Path, b: Path) -> tuple[list[str], list[str]]:
    try:
        la, lb = a.read_text().splitlines(), b.read_text().splitlines()
    except UnicodeDecodeError:
        return [f"binary, {a.stat().st_size} vs {b.stat().st_size} bytes"], []
    changed = [line for line in difflib.unified_diff(la, lb, lineterm="", n=0) if line[:1] in "+-"][2:]
    if not changed:
        return [], ["same lines (line endings differ)"]
    shown = " | ".join(line[:160] for line in changed[:4])
    return [f"{sum(1 for line in changed if line.startswith('-'))} line(s) differ, first: {shown}"], []


if __name__ == "__main__":
    sys.exit(main())
