"""crl-pipe: causal representation learning on perturbation screens and robot logs.

Namespaces follow scverse: :mod:`crl_pipe.io` (read and write every layout and artifact),
:mod:`crl_pipe.pp` (labels, anchors, preprocessing), :mod:`crl_pipe.kinds` (what each stage does
with a screen of counts, a table of variables or a robot log), :mod:`crl_pipe.tl` (train, graph,
evaluate), :mod:`crl_pipe.pl` (figures), :mod:`crl_pipe.models` (torch models) and
:mod:`crl_pipe.simulate` (screens with a known causal graph).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"io", "pp", "kinds", "tl", "pl", "models", "simulate", "report", "pipeline"}

from ._errors import ClusterError, ConfigError, CrlPipeError, InputError, ModelError  # noqa: E402

__all__ = [
    "ClusterError",
    "ConfigError",
    "CrlPipeError",
    "InputError",
    "ModelError",
    "__version__",
    *sorted(_SUBMODULES),
]


def __getattr__(name: str):
    # Lazy namespaces: `import crl_pipe` stays fast; torch and scanpy load only when used.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'crl_pipe' has no attribute {name!r}")
