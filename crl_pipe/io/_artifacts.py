"""The artifact contract between stages: Parquet tables with fixed columns and provenance.

Each table kind lists its required columns and their Arrow types. Writers check the contract
before anything touches the disk, so a stage cannot publish a table that the next stage would
misread; extra columns are allowed (later work adds columns, never renames them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._errors import InputError
from .._provenance import atomic_path

PROVENANCE_KEY = b"crl_pipe"

#: Required columns of each artifact kind. ``latents`` has ``sample_id`` plus one float column per latent.
SCHEMAS: dict[str, dict[str, pa.DataType]] = {
    "qc": {"sample_id": pa.string(), "total_counts": pa.float64(), "n_genes": pa.int64()},
    "guides": {"sample_id": pa.string(), "guide": pa.string(), "umis": pa.float64(), "called": pa.bool_()},
    "interventions": {
        "sample_id": pa.string(),
        "intervention": pa.string(),
        "targets": pa.list_(pa.string()),
        "n_targets": pa.int64(),
        "is_control": pa.bool_(),
    },
    "anchors": {"program": pa.string(), "feature": pa.string(), "weight": pa.float64()},
    "latents": {"sample_id": pa.string()},
    "targets": {"intervention": pa.string(), "latent": pa.string(), "score": pa.float64()},
    # lag: frames from source to target (0 instantaneous, >= 1 lagged); null where the model has no time axis
    "graph": {
        "source": pa.string(),
        "target": pa.string(),
        "weight": pa.float64(),
        "stability": pa.float64(),
        "lag": pa.int64(),
        # error control of issue 16 (crl_pipe.tl.recover_graph); null in artifacts written before it
        "reverse_stability": pa.float64(),
        "orientation": pa.float64(),
        "weight_z": pa.float64(),
        "false_edges_bound": pa.float64(),
        "confidence": pa.string(),
        "reason": pa.string(),
    },
    "loadings": {"latent": pa.string(), "feature": pa.string(), "loading": pa.float64()},
    "metrics": {"metric": pa.string(), "value": pa.float64()},
    "training": {"epoch": pa.int64(), "split": pa.string(), "loss": pa.float64()},
    "truth_targets": {"intervention": pa.string(), "program": pa.string()},
    "benchmark": {"dataset": pa.string(), "model": pa.string(), "metric": pa.string(), "value": pa.float64()},
    # held-out combinations scored by rule predict_held_out (predictor model, control or additive), and
    # held-out singles by rule steer (held_out_singles.parquet: model, no_change, mean_change, linear_embedding)
    "predictions": {
        "intervention": pa.string(),
        "predictor": pa.string(),
        "metric": pa.string(),
        "value": pa.float64(),
    },
    # steering requests answered by rule steer (crl_pipe.tl.steer): one row per request and feature, and
    # per frame after the command starts for a robot's command requests (frame: null for screens)
    "steering": {
        "request": pa.string(),
        "feature": pa.string(),
        "predicted_change": pa.float64(),
        "lower": pa.float64(),
        "upper": pa.float64(),
        "route": pa.string(),
        "path": pa.string(),
        "frame": pa.int64(),
    },
    # the concept levels (rule hierarchy): level 1 = feature -> program, 2 = program -> module, ...;
    # stability: fraction of resampled refits that keep the membership (NaN where not resampled);
    # parent_name: the parent's readable name (a module's id plus its programs' gene sets; null in older files)
    "hierarchy": {
        "level": pa.int64(),
        "parent": pa.string(),
        "child": pa.string(),
        "weight": pa.float64(),
        "stability": pa.float64(),
        "parent_name": pa.string(),
    },
    "modules": {"sample_id": pa.string()},
    "truth_module_targets": {"intervention": pa.string(), "module": pa.string()},
}

#: Contract columns added after their table kind was first written, with the value a table without
#: them gets (on write, and on reading an older artifact): old files and writers stay valid.
DEFAULTS: dict[str, dict[str, Any]] = {
    "graph": {
        "lag": None,
        "reverse_stability": None,
        "orientation": None,
        "weight_z": None,
        "false_edges_bound": None,
        "confidence": None,
        "reason": None,
    },
    "steering": {"frame": None},  # a screen's requests have no frame
    "hierarchy": {"parent_name": None},
}


def empty_table(kind: str) -> pd.DataFrame:
    """A table of the contract's ``kind`` with its columns and types and no rows (a step with nothing to write)."""
    return pa.schema(list(SCHEMAS[kind].items())).empty_table().to_pandas()


def to_table(df: pd.DataFrame, kind: str) -> pa.Table:
    """Convert ``df`` to Arrow, casting the contract's columns to their types (others kept as they are)."""
    schema = SCHEMAS[kind]
    df = _with_defaults(df, kind)
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise InputError(f"{kind} table: missing column(s) {missing}; expected at least {list(schema)}")
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    for name, typ in schema.items():
        idx = table.schema.get_field_index(name)
        if not table.schema.field(name).type.equals(typ):
            try:
                table = table.set_column(idx, pa.field(name, typ), table.column(name).cast(typ))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise InputError(f"{kind} table: column {name!r} cannot be read as {typ}: {err}") from None
    if kind in ("latents", "modules"):
        _check_latent_columns(table)
    return table


def _with_defaults(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    missing = {c: v for c, v in DEFAULTS.get(kind, {}).items() if c not in df.columns}
    return df.assign(**{c: pd.Series([v] * len(df), index=df.index, dtype=object) for c, v in missing.items()})


def _check_latent_columns(table: pa.Table) -> None:
    for field in table.schema:
        if field.name != "sample_id" and not pa.types.is_floating(field.type):
            raise InputError(f"latents table: column {field.name!r} must be float, found {field.type}")


def write_table(df: pd.DataFrame, path: str | os.PathLike, kind: str, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``df`` as the artifact ``kind`` at ``path``, atomically, with provenance in the file metadata."""
    table = to_table(df, kind)
    meta = dict(table.schema.metadata or {})
    meta.pop(b"pandas", None)  # pandas metadata embeds library versions; provenance says what matters
    meta[PROVENANCE_KEY] = json.dumps(provenance or {}, sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_table(path: str | os.PathLike, kind: str | None = None) -> pd.DataFrame:
    """Read an artifact; with ``kind``, check it against the contract and name what is wrong."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None
    if kind is not None:
        check_table(table, kind, path)
        for name, value in DEFAULTS.get(kind, {}).items():
            if name not in table.column_names:
                typ = SCHEMAS[kind][name]
                table = table.append_column(pa.field(name, typ), pa.array([value] * len(table), typ))
    return table.to_pandas()


def check_table(table: pa.Table, kind: str, path: str | os.PathLike = "<table>") -> None:
    """Raise :class:`InputError` unless ``table`` has the contract's columns with the contract's types."""
    for name, typ in SCHEMAS[kind].items():
        if name not in table.column_names and name in DEFAULTS.get(kind, {}):
            continue  # an older artifact: the reader fills the default
        if name not in table.column_names:
            raise InputError(f"{path}: missing column {name!r} expected in a {kind} table")
        found = table.schema.field(name).type
        if not found.equals(typ) and not (pa.types.is_large_list(found) and pa.types.is_list(typ)):
            raise InputError(f"{path}: column {name!r} has type {found}, expected {typ} in a {kind} table")
    if kind in ("latents", "modules"):
        _check_latent_columns(table)


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance record stored in an artifact's Parquet metadata ({} if there is none)."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


def read_model_meta(path: str | os.PathLike, *, strict: bool = True) -> dict[str, Any]:
    """A model folder's ``model.json`` (model, params, latent_names); ``{}`` when there is none.

    Unreadable JSON is an :class:`InputError`; JSON that is not an object is one when ``strict``,
    else read as ``{}`` (the report shows a model without its settings rather than none)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        if strict:
            raise InputError(f"{path}: expected a JSON object with keys model, params, latent_names")
        return {}
    return meta
