"""The code style CI enforces: ruff's lint rules and formatter (configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _ruff(ruff_bin: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ruff_bin), *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_ruff_lint_is_clean(ruff_bin):
    proc = _ruff(ruff_bin, "check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean(ruff_bin):
    proc = _ruff(ruff_bin, "format", "--check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr
