"""Directed graphs as edge lists: Parquet, CSV/TSV and Tetrad text in; GraphML out."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import networkx as nx
import pandas as pd

from .._errors import InputError
from .._provenance import atomic_path
from ._artifacts import read_table

_EDGE_COLUMNS = ["source", "target", "weight"]
#: A Tetrad edge line, e.g. ``1. erk --> akt``; trailing attributes (``[...]``) are ignored.
_TETRAD_EDGE = re.compile(r"^\s*\d+\.\s+(\S+)\s+(\S+)\s+(\S+)")


def read_graph(path: str | os.PathLike) -> pd.DataFrame:
    """Read a directed graph as an edge list.

    Layouts, by content and suffix: Tetrad text (a ``Graph Edges:`` section of lines such as
    ``1. erk --> akt``, as the Sachs 2005 ground truth), Parquet (``.parquet``/``.pq``), CSV
    (``.csv``) and tab-separated (``.tsv``, ``.tab``, ``.txt``) tables with columns ``source``,
    ``target`` and optionally ``weight``.

    Returns
    -------
    DataFrame with ``source``, ``target`` (str), ``weight`` (float; 1.0 where the file has
    none), followed by any other columns of a table file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: graph file does not exist")
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return _normalise(read_table(path), path)
    if _is_tetrad(path):
        return _read_tetrad(path)
    seps = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
    if suffix not in seps:
        raise InputError(f"{path}: unknown graph layout {suffix!r}; expected .parquet, .csv, .tsv or Tetrad text")
    try:
        table = pd.read_csv(path, sep=seps[suffix])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable table ({err}); expected columns source,target[,weight]") from None
    return _normalise(table, path)


#: Text columns of the graph artifact that :func:`write_graphml` keeps as edge attributes.
TEXT_ATTRIBUTES = ("confidence", "reason")


def write_graphml(edges: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write an edge list as a GraphML DiGraph, atomically; returns ``path``.

    Every numeric column besides ``source``/``target`` (``weight``, ``stability``, ...) becomes
    an edge attribute, and so do the confidence call's text columns (:data:`TEXT_ATTRIBUTES`).
    """
    missing = [c for c in ("source", "target") if c not in edges.columns]
    if missing:
        raise InputError(f"edge table: missing column(s) {missing}; expected source, target and numeric attributes")
    attrs = [c for c in edges.columns if c not in ("source", "target") and pd.api.types.is_numeric_dtype(edges[c])]
    text = [c for c in TEXT_ATTRIBUTES if c in edges.columns]
    graph = nx.DiGraph()
    graph.add_nodes_from(pd.unique(edges[["source", "target"]].astype(str).to_numpy().ravel()))
    for row in edges.itertuples(index=False):
        row = row._asdict()
        # GraphML needs plain Python scalars, not numpy ones.
        # GraphML has no null: a missing value (a model without lags) leaves the attribute out.
        data = {
            c: (bool(row[c]) if pd.api.types.is_bool_dtype(edges[c]) else float(row[c]))
            for c in attrs
            if pd.notna(row[c])
        } | {c: str(row[c]) for c in text if pd.notna(row[c])}
        graph.add_edge(str(row["source"]), str(row["target"]), **data)
    with atomic_path(path) as tmp:
        nx.write_graphml(graph, tmp)
    return Path(path)


def _normalise(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("source", "target") if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing}; expected source,target[,weight], found {list(table.columns)}"
        )
    table = table.copy()
    table["source"] = table["source"].astype(str)
    table["target"] = table["target"].astype(str)
    if "weight" not in table.columns:
        table["weight"] = 1.0
    try:
        table["weight"] = pd.to_numeric(table["weight"]).astype(float)
    except (ValueError, TypeError):
        raise InputError(f"{path}: column 'weight' must be numeric") from None
    others = [c for c in table.columns if c not in _EDGE_COLUMNS]
    return table[_EDGE_COLUMNS + others].reset_index(drop=True)


def _is_tetrad(path: Path) -> bool:
    # Tetrad files open with "Graph Nodes:" / "Graph Edges:" headers; a few lines suffice to tell.
    with open(path, encoding="utf-8", errors="replace") as fh:
        return any(line.strip() in {"Graph Nodes:", "Graph Edges:"} for line in itertools.islice(fh, 8))


def _read_tetrad(path: Path) -> pd.DataFrame:
    nodes: set[str] | None = None
    edges = []
    section = None
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            if text.endswith(":"):
                # Section header; sections other than nodes and edges (Graph Attributes, ...) are skipped.
                section = text
            elif section == "Graph Nodes:":
                nodes = {n.strip() for n in re.split(r"[;,]", text) if n.strip()}
            elif section == "Graph Edges:":
                edges.append(_tetrad_edge(text, path, lineno, nodes))
    return pd.DataFrame(edges, columns=["source", "target"]).assign(weight=1.0)


def _tetrad_edge(text: str, path: Path, lineno: int, nodes: set[str] | None) -> tuple[str, str]:
    match = _TETRAD_EDGE.match(text)
    if not match:
        raise InputError(f"{path}, line {lineno}: expected an edge such as '1. erk --> akt', found {text!r}")
    left, mark, right = match.groups()
    if mark == "-->":
        edge = (left, right)
    elif mark == "<--":
        edge = (right, left)
    else:
        raise InputError(f"{path}, line {lineno}: edge mark {mark!r} is not directed; expected '-->' or '<--'")
    unknown = [n for n in edge if nodes is not None and n not in nodes]
    if unknown:
        raise InputError(f"{path}, line {lineno}: node(s) {unknown} not listed under 'Graph Nodes:'")
    return edge
