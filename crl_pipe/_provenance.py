"""Provenance records and crash-safe writes shared by every stage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from . import __version__
from ._errors import InputError

_CHUNK = 1 << 20


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (inputs are opened read-only)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def package_version() -> str:
    return __version__


def source_digest(*parts: str) -> str:
    """Hex sha256 of the package version and the source of some parts of ``crl_pipe``.

    Each part is a subpackage (``"simulate"``) or a module file (``"_provenance.py"``) relative
    to the package folder. A rule passes the digest of the code behind it as a ``params:`` value,
    so that Snakemake's between-workflow cache (``cache: "omit-software"``), which hashes the
    rule's script, params and inputs but not the package the script calls, gets a new key, and
    the rule reruns, when that code changes.
    """
    root = Path(__file__).resolve().parent
    files: list[Path] = []
    for part in parts:
        path = root / part
        if path.is_dir():
            files += sorted(path.rglob("*.py"))
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"crl_pipe has no subpackage or module {part!r} (looked for {path})")
    digest = hashlib.sha256(package_version().encode())
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def provenance(step: str, inputs: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None) -> dict:
    """Provenance of an artifact: the step, the sha256 of each input file, the params, the version.

    No timestamps or host names, so that reruns with the same inputs give identical bytes.
    ``inputs`` maps a role to a path (or a list of paths); missing files are an error.
    """
    hashed: dict[str, Any] = {}
    for role, value in (inputs or {}).items():
        if value is None:
            continue
        paths = [value] if isinstance(value, str | os.PathLike) else list(value)
        entries = []
        for p in paths:
            p = Path(p)
            if p.is_dir():
                entries.append({"path": str(p), "sha256": None})
            elif p.exists():
                entries.append({"path": str(p), "sha256": sha256sum(p)})
            else:
                raise InputError(f"{p}: input file does not exist (needed as {role!r})")
        hashed[role] = entries[0] if isinstance(value, str | os.PathLike) else entries
    return {
        "step": step,
        "crl_pipe_version": package_version(),
        "inputs": hashed,
        "params": _jsonable(dict(params or {})),
    }


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so provenance holds only plain types (paths and numpy scalars become str/float)."""
    return json.loads(json.dumps(obj, default=_default, sort_keys=True))


def _default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | tuple):
        return list(obj)
    return str(obj)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A process killed mid-write leaves at most a ``.tmp`` file, never a truncated artifact; the next
    successful write of the same artifact removes such leftovers.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
        _remove_leftovers(final)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()


def _remove_leftovers(final: Path) -> None:
    """Delete ``.<name>.tmp-<pid>`` files that killed writers of ``final`` left behind."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
