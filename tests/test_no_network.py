"""Nothing reaches the network at run time, and nothing is unpickled.

- Every stage (simulate -> report) runs in a subprocess whose sockets refuse to connect (a
  ``sitecustomize.py`` guard, see ``_guards.py``), inside a private network namespace
  (``unshare -rn``) where the machine allows one, and succeeds; the guard logs no attempt.
- A static check of the package and the workflow scripts: no ``pickle``/``dill``/``joblib``/
  ``cloudpickle``/``shelve`` loads, no ``pandas.read_pickle``, ``numpy.load`` only with
  ``allow_pickle=False``, ``torch.load`` only with ``weights_only=True``, ``yaml.load`` only with a
  safe loader, no ``eval``/``exec``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _guards import network_guard_env, network_namespace_prefix, read_guard_log

REPO = Path(__file__).resolve().parents[1]
CHAIN = Path(__file__).parent / "_chain.py"


def test_guard_refuses_and_logs_a_connection(tmp_path):
    """The guard is not a no-op: a guarded process that tries to connect fails, and the attempt is logged."""
    env, log = network_guard_env(tmp_path)
    code = "import socket; socket.create_connection(('192.0.2.1', 80), timeout=2)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "network access is blocked in the crl-pipe tests" in proc.stderr
    installed, blocked = read_guard_log(log)
    assert installed and blocked and "192.0.2.1" in blocked[0]


def test_every_stage_runs_without_network(tmp_path):
    env, log = network_guard_env(tmp_path / "guard")
    folder = tmp_path / "run"
    folder.mkdir()
    cmd = [*network_namespace_prefix(), sys.executable, str(CHAIN), str(folder)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    installed, blocked = read_guard_log(log)
    assert installed, "the guard was not installed in the subprocess"
    assert not blocked, f"network access attempted: {blocked}"
    html = (folder / "results" / "demo" / "report.html").read_text(encoding="utf-8")
    external = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", html)
    assert not external, f"the report loads something from the network: {external[:5]}"


# ---- static: nothing is unpickled ------------------------------------------------------------------
ALWAYS_UNSAFE = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "_pickle.load",
    "_pickle.loads",
    "cPickle.load",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "shelve.open",
    "pandas.read_pickle",
    "pd.read_pickle",
    "numpy.lib.format.read_array",
    "torch.jit.load",
    "yaml.unsafe_load",
    "yaml.full_load",
    "yaml.load_all",
    "eval",
    "exec",
}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin, from ``import x as y`` and ``from x import y as z``."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(func: ast.AST, imports: dict[str, str]) -> str | None:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    head = imports.get(func.id, func.id)
    return ".".join([head, *reversed(parts)])


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def unsafe_calls(source: str) -> list[tuple[int, str]]:
    """(line, why) for each call in ``source`` that could unpickle or execute data."""
    tree = ast.parse(source)
    imports = _imports(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, imports)
        if name is None:
            continue
        name = name.replace("np.", "numpy.", 1) if name.startswith("np.") else name
        if name in ALWAYS_UNSAFE:
            found.append((node.lineno, f"{name}(...)"))
        elif name == "torch.load":
            flag = _keyword(node, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append((node.lineno, "torch.load without weights_only=True"))
        elif name == "numpy.load":
            flag = _keyword(node, "allow_pickle")
            if not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append((node.lineno, "numpy.load without allow_pickle=False"))
        elif name == "yaml.load":
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            loader_name = _dotted(loader, imports) if loader is not None else None
            if loader_name is None or loader_name.rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                found.append((node.lineno, "yaml.load without a safe Loader"))
    return found


def test_the_static_check_finds_what_it_should():
    bad = """
import pickle, torch, yaml
import numpy as np
from pandas import read_pickle
pickle.loads(b"")
torch.load("m.pt")
torch.load("m.pt", weights_only=False)
np.load("a.npy")
read_pickle("x")
yaml.load(text)
eval("1")
"""
    good = """
import torch, yaml
import numpy as np
torch.load("m.pt", map_location="cpu", weights_only=True)
np.load("a.npy", allow_pickle=False)
yaml.load(text, Loader=yaml.BaseLoader)
yaml.safe_load(text)
model.eval()
"""
    assert len(unsafe_calls(bad)) == 7, unsafe_calls(bad)
    assert unsafe_calls(good) == []


def test_nothing_is_unpickled_or_evaluated():
    files = sorted((REPO / "crl_pipe").rglob("*.py")) + sorted((REPO / "workflow" / "scripts").glob("*.py"))
    assert len(files) > 20
    problems = [
        f"{path.relative_to(REPO)}:{line}: {why}"
        for path in files
        for line, why in unsafe_calls(path.read_text(encoding="utf-8"))
    ]
    assert not problems, "\n".join(problems)
    if not any("torch.load" in p.read_text(encoding="utf-8") for p in files):
        pytest.fail("expected the checkpoint loader (torch.load) to be among the files checked")
