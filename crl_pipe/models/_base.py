"""The one small interface every CRL model implements (scvi-tools' split: this class is user-facing)."""

from __future__ import annotations

import json
import pickle  # only for the exception type torch.load raises; nothing is unpickled
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from .._errors import InputError
from .._provenance import atomic_path
from ._data import CRLData
from .registry import ModelCapabilities, get_model


class CRLModel(torch.nn.Module, ABC):
    """Fit on :class:`CRLData`; give latents, intervention targets and the latent causal graph.

    Subclasses keep every learned quantity in torch parameters or buffers, so that a checkpoint is a
    plain ``state_dict`` (loaded with ``weights_only=True``) plus a JSON file of names and params.
    """

    #: The name the model is registered under (:mod:`crl_pipe.models.registry`), as in the config.
    name: ClassVar[str]
    #: What the model can do (counts input, PyTorch device, prediction, lagged edges): every subclass
    #: sets ``capabilities = model_capabilities(name)``, its registry entry, which is what the
    #: workflow reads too; code that runs a model asks this instead of probing for methods.
    capabilities: ClassVar[ModelCapabilities]

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = params
        self.latent_names: list[str] = []
        self.intervention_names: list[str] = []
        self.history = pd.DataFrame({"epoch": [], "split": [], "loss": []})
        #: Share of the untargeted mean shifts the graph equations leave unexplained, for models that
        #: read their graph from mean shifts (:func:`._shift_sem.equation_misfit`); the report warns on
        #: it. Kept in ``model.json``'s ``extra``; None for other models and for models saved before it.
        self.equation_misfit: float | None = None

    @abstractmethod
    def fit(self, data: CRLData, *, seed: int = 0) -> CRLModel:
        """Learn the model from ``data``; deterministic on the CPU for a fixed ``seed``."""

    def refit(self, data: CRLData, *, seed: int = 0) -> CRLModel:
        """A new model of the same kind and parameters fit on ``data`` (a resample, for the graph's
        stability selection); from scratch here, warm from this model's weights where a subclass says so."""
        return type(self)(**self.params).fit(data, seed=seed)

    @abstractmethod
    def get_latent_representation(self, data: CRLData) -> pd.DataFrame:
        """Latents per cell: ``sample_id`` plus one float column per latent (named by :attr:`latent_names`)."""

    @abstractmethod
    def get_targets(self) -> pd.DataFrame:
        """Long table ``intervention, latent, score, is_target``: how strongly each intervention acts on each latent."""

    @abstractmethod
    def get_adjacency(self) -> pd.DataFrame:
        """Weighted adjacency among latents, rows = source, columns = target; 0 = no edge."""

    @abstractmethod
    def get_loadings(self) -> pd.DataFrame:
        """Long table ``latent, feature, loading``: how each feature depends on each latent."""

    def get_edges(self) -> pd.DataFrame:
        """Edge list ``source, target, weight, lag`` of the non-zero entries of :meth:`get_adjacency`;
        ``lag`` (frames, nullable) is null here and filled by models whose ``capabilities.time_series``."""
        adjacency = self.get_adjacency()
        src, dst = np.nonzero(adjacency.to_numpy())
        return pd.DataFrame(
            {
                "source": adjacency.index[src].astype(str),
                "target": adjacency.columns[dst].astype(str),
                "weight": adjacency.to_numpy()[src, dst].astype(float),
                "lag": pd.array([pd.NA] * len(src), dtype="Int64"),
            }
        )

    # -- checkpoints: tensors via state_dict, everything else as JSON; nothing pickled --------------
    def _extra_state_json(self) -> dict[str, Any]:
        return {}

    def _load_extra_state_json(self, extra: dict[str, Any]) -> None:
        pass

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": self.name,
            "params": self.params,
            "latent_names": self.latent_names,
            "intervention_names": self.intervention_names,
            "extra": self._extra_state_json(),
        }
        if self.equation_misfit is not None:
            meta["extra"]["equation_misfit"] = self.equation_misfit
        with atomic_path(directory / "model.pt") as tmp:
            torch.save(self.state_dict(), tmp)
        with atomic_path(directory / "model.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> CRLModel:
        directory = Path(directory)
        meta = json.loads((directory / "model.json").read_text())
        model = cls(**meta["params"])
        model.latent_names = meta["latent_names"]
        model.intervention_names = meta["intervention_names"]
        model._load_extra_state_json(meta["extra"])
        model.equation_misfit = meta["extra"].get("equation_misfit")
        state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
        model._allocate(state)
        model.load_state_dict(state)
        return model

    def _allocate(self, state: dict[str, torch.Tensor]) -> None:
        """Create parameters/buffers of the right shapes before ``load_state_dict`` (shape-free by default)."""
        for key, tensor in state.items():
            if "." not in key and not hasattr(self, key):
                self.register_buffer(key, torch.empty_like(tensor))


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
