"""CRL models behind one interface (:class:`CRLModel`): fit on :class:`CRLData`; latents, targets, graph."""

from __future__ import annotations

import json
import pickle  # only for the exception type torch.load raises; nothing is unpickled
from pathlib import Path

from .._errors import ConfigError, InputError
from ._base import CRLModel
from ._data import CRLData
from .camera import CameraSEM
from .causal_vae import CausalVAE
from .linear import LinearSEM
from .sparse_vae import SparseVAE
from .temporal import TemporalSEM, bootstrap_episodes

MODELS: dict[str, type[CRLModel]] = {
    LinearSEM.name: LinearSEM,
    CausalVAE.name: CausalVAE,
    SparseVAE.name: SparseVAE,
    TemporalSEM.name: TemporalSEM,
    CameraSEM.name: CameraSEM,
}

__all__ = [
    "MODELS",
    "CameraSEM",
    "CausalVAE",
    "CRLData",
    "CRLModel",
    "LinearSEM",
    "SparseVAE",
    "TemporalSEM",
    "bootstrap_episodes",
    "get_model",
    "load_model",
]


def get_model(name: str) -> type[CRLModel]:
    """The model class registered under ``name``."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None


def load_model(directory: str | Path) -> CRLModel:
    """Load a checkpoint written by :meth:`CRLModel.save` (tensors with ``weights_only=True``)."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "model.json").read_text())
        return get_model(meta["model"]).load(directory)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as err:
        raise InputError(
            f"{directory}: not a readable crl-pipe model folder (model.json + model.pt): {type(err).__name__}: {err}"
        ) from None
