"""Gene sets: GMT files and JSON mappings (flat or grouped into collections)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import InputError
from .._provenance import atomic_path

#: Description column written by :func:`write_gmt` (GMT requires one; we have nothing better to say).
_DESCRIPTION = "na"


def read_gmt(path: str | os.PathLike, *, collection: str | None = None) -> dict[str, list[str]]:
    """Read gene sets from a GMT file or a JSON mapping.

    GMT: one set per line, ``name<TAB>description<TAB>gene<TAB>gene...``; blank lines are
    skipped, empty gene fields (trailing tabs) ignored. JSON (``.json`` suffix): either a flat
    ``{name: [genes]}`` mapping or one grouped into collections, ``{collection: {name: [genes]}}``
    (as scSpectra's default gene sets).

    Parameters
    ----------
    path
        GMT or JSON file.
    collection
        For grouped JSON only: the collection to read (e.g. ``"global"``). ``None`` reads every
        collection, keeping set names as they are; they must then be unique across collections.

    Returns
    -------
    Set name -> genes (duplicates removed, first occurrence kept), in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: gene-set file does not exist")
    if path.suffix.lower() == ".json":
        sets = _read_json(path, collection)
        expected = "{name: [genes]}"
    elif collection is not None:
        raise InputError(f"{path}: collection={collection!r} applies to grouped JSON gene sets only, not GMT")
    else:
        sets = _read_gmt_text(path)
        expected = "lines name<TAB>description<TAB>gene..."
    if not sets:
        where = f" in collection {collection!r}" if collection is not None else ""
        raise InputError(f"{path}: no gene sets found{where}; expected at least one, as {expected}")
    return sets


def write_gmt(sets: Mapping[str, Sequence[str]], path: str | os.PathLike) -> Path:
    """Write gene sets as GMT, atomically (description column ``na``); returns ``path``."""
    lines = []
    for name, genes in sets.items():
        fields = [str(name), _DESCRIPTION, *map(str, genes)]
        if any(("\t" in f or "\n" in f or not f.strip()) for f in fields[:1] + fields[2:]):
            raise InputError(f"gene set {name!r}: names and genes must be non-empty and hold no tab or newline")
        # A trailing tab keeps an empty set at three fields, so it reads back as an empty set.
        lines.append("\t".join(fields) + ("\t" if not genes else "") + "\n")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")
    return Path(path)


def _read_gmt_text(path: Path) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {}
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"{path}, line {lineno}: not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1}); "
                    "expected a GMT text file"
                ) from None
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 3 or not fields[0].strip():
                raise InputError(
                    f"{path}, line {lineno}: expected name<TAB>description<TAB>gene..., "
                    f"found {len(fields)} tab-separated field(s)"
                )
            name = fields[0].strip()
            if name in sets:
                raise InputError(f"{path}, line {lineno}: gene set {name!r} appears twice; expected unique set names")
            sets[name] = _unique([g.strip() for g in fields[2:] if g.strip()])
    return sets


def _read_json(path: Path, collection: str | None) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err}); expected {{name: [genes]}}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: top level is {type(data).__name__}; expected a mapping {{name: [genes]}}")
    groups = {k: v for k, v in data.items() if isinstance(v, dict)}
    if collection is not None:
        if collection not in groups:
            raise InputError(f"{path}: collection {collection!r} not found; available collections: {sorted(groups)}")
        return _gene_lists(groups[collection], path, prefix=f"{collection}/")
    sets: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            members = _gene_lists(value, path, prefix=f"{key}/")
        else:
            members = _gene_lists({key: value}, path)
        clash = sorted(set(members) & set(sets))
        if clash:
            raise InputError(
                f"{path}: gene-set name(s) {clash[:5]} appear in more than one collection; "
                f"pick one with collection= (one of {sorted(groups)})"
            )
        sets.update(members)
    return sets


def _gene_lists(mapping: Mapping[str, Any], path: Path, prefix: str = "") -> dict[str, list[str]]:
    out = {}
    for name, genes in mapping.items():
        if not isinstance(genes, list) or not all(isinstance(g, str) for g in genes):
            raise InputError(f"{path}: gene set {prefix}{name} is not a list of gene names (str)")
        out[str(name)] = _unique([g.strip() for g in genes if g.strip()])
    return out


def _unique(genes: list[str]) -> list[str]:
    return list(dict.fromkeys(genes))
