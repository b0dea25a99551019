"""CRL models behind one interface (:class:`CRLModel`): fit on :class:`CRLData`; latents, targets, graph.

:mod:`crl_pipe.models.registry` names the models and declares what each can do; it loads with this
package and imports no torch, because the Snakemake process reads it on every invocation. The
model classes, :class:`CRLData` and :func:`load_model` load on first use (torch with them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .registry import ModelCapabilities, get_model, model_capabilities, model_device, model_names

if TYPE_CHECKING:  # the lazily loaded names, for type checkers and import-graph tools
    from ._base import CRLModel, load_model
    from ._data import CRLData
    from .camera import CameraSEM
    from .causal_vae import CausalVAE
    from .linear import LinearSEM
    from .sparse_vae import SparseVAE
    from .temporal import TemporalSEM

#: Public name -> the submodule that defines it, imported when the name is first used.
_LAZY = {
    "CRLData": "._data",
    "CRLModel": "._base",
    "load_model": "._base",
    "CameraSEM": ".camera",
    "CausalVAE": ".causal_vae",
    "LinearSEM": ".linear",
    "SparseVAE": ".sparse_vae",
    "TemporalSEM": ".temporal",
}

__all__ = [
    "CRLData",
    "CRLModel",
    "CameraSEM",
    "CausalVAE",
    "LinearSEM",
    "ModelCapabilities",
    "SparseVAE",
    "TemporalSEM",
    "get_model",
    "load_model",
    "model_capabilities",
    "model_device",
    "model_names",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
