"""Section "How this was run": the configuration, the models' parameters, software versions, provenance."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from ... import __version__
from ..._provenance import _jsonable
from ...io import read_provenance
from .._blocks import Table
from .._format import compact_json, count
from .._inputs import ReportInputs

#: Packages whose versions the report records (looked up without importing them).
VERSION_PACKAGES = [
    "crl-pipe",
    "torch",
    "scanpy",
    "anndata",
    "snakemake",
    "numpy",
    "pandas",
    "pyarrow",
    "matplotlib",
    "seaborn",
    "networkx",
]


def run_section(inputs: ReportInputs) -> dict[str, Any]:
    """The configuration as YAML, a table of the models, the package versions and each artifact's provenance."""
    config = inputs.config
    config_text = (
        yaml.safe_dump(_jsonable(dict(config)), sort_keys=False, allow_unicode=True, default_flow_style=False)
        if config
        else ""
    )
    versions = Table(
        ["package", "version"], [["python", platform.python_version()], *[[p, _version(p)] for p in VERSION_PACKAGES]]
    )
    model_rows = [
        [m.name, str(m.meta.get("model", "")), count(len(m.latent_names)), compact_json(m.meta.get("params", {}))]
        for m in inputs.fitted
    ]
    model_table = Table(["model", "kind", "latents", "parameters"], model_rows)
    provenance = [_provenance_row(name, path) for name, path in inputs.files.items()]
    return {"config": config_text, "versions": versions, "models": model_table, "provenance": provenance}


def _provenance_row(name: str, path: Path) -> dict[str, Any]:
    """The step that wrote ``path``, its parameters and its inputs with their sha256."""
    prov = _safe_provenance(path)
    inputs = []
    for role, entry in (prov.get("inputs") or {}).items():
        for e in entry if isinstance(entry, list) else [entry]:
            if isinstance(e, Mapping):
                sha = e.get("sha256") or "folder"
                inputs.append(
                    {"role": str(role), "path": str(e.get("path", "")), "sha": str(sha)[:12], "sha_full": str(sha)}
                )
    return {
        "artifact": name,
        "path": str(path),
        "step": str(prov.get("step", "")),
        "version": str(prov.get("crl_pipe_version", "")),
        "params": compact_json(prov.get("params", {})),
        "inputs": inputs,
    }


def _safe_provenance(path: Path) -> dict[str, Any]:
    """The provenance of a Parquet artifact; empty for other files and unreadable ones."""
    if path.suffix != ".parquet" or not path.exists():
        return {}
    try:
        prov = read_provenance(path)
    except (OSError, ValueError):
        return {}
    return prov if isinstance(prov, dict) else {}


def _version(package: str) -> str:
    if package == "crl-pipe":
        return __version__
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
