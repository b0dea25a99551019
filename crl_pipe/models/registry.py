"""The model registry: every model's name, where its class lives, and what it can do.

This is the one place that lists the models. The Snakemake process reads it on every invocation
(which models ask for a GPU, which predict held-out cells), so it imports neither torch nor the
scientific stack: a model class is imported only when :func:`get_model` asks for it. Each class
takes its :attr:`~crl_pipe.models.CRLModel.capabilities` from its entry here, so the workflow and
the code that runs a fitted model read the same declaration.

Adding a model: one module in ``crl_pipe/models`` with a :class:`~crl_pipe.models.CRLModel`
subclass (``name = "<name>"``, ``capabilities = model_capabilities(name)``), one entry below,
and its parameters under ``models.<name>`` of the config schema.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .._errors import ConfigError

__all__ = ["ModelCapabilities", "get_model", "model_capabilities", "model_device", "model_names"]


@dataclass(frozen=True)
class ModelCapabilities:
    """What a model can do, declared once per model (one entry per model below).

    Attributes
    ----------
    reads_counts
        The model may read raw counts (``layers["counts"]``, e.g. ``sparse_vae``'s ``"nb"``
        likelihood), so the workflow loads them; otherwise it fits the log-normalised ``X`` alone
        and a large screen is read without its counts.
    uses_torch
        Trains with PyTorch through the shared training loop: takes a ``device`` parameter (so the
        workflow may give it a GPU) and the run settings ``checkpoint_dir``, ``checkpoint_every``
        and ``threads``.
    predicts
        Generates cells for a perturbation, including combinations never seen in training
        (:meth:`predict`), so held-out combinations can be scored against it.
    steers
        Its latents are programs in control SDs that follow a linear SEM (:meth:`get_adjacency`) with
        targets read as exogenous shifts (:meth:`get_targets`), so :func:`crl_pipe.tl.steer` can set,
        shift or knock them down and propagate the change (the workflow's rule steer).
    time_series
        Fits robot logs in time order: its edges carry a lag in frames (:meth:`get_edges` fills the
        graph's ``lag`` column) and it takes the log's action channels as ``params["actions"]``.
    sees_frames
        Learns its latents from camera frames (``CRLData.frames``, the ``obsm["frames.<camera>"]`` of
        a robot log read with cameras) and keeps a decoder and the frames where each latent is lowest
        and highest, so the report shows what each latent sees.
    rolls_out
        Its fitted transition can be rolled forward open-loop from an episode's observed starting states
        under any command sequence (:meth:`rollout`, :attr:`rollout_start`), so the workflow's rule steer
        answers ``command`` requests (what commanding a channel does to every state, frame by frame) and
        scores the rollouts of held-out episodes against persistence and a vector autoregression.
        (``camera`` inherits the method, on its learned latents, but does not declare it yet: its
        rollouts are not validated.)
    """

    reads_counts: bool
    uses_torch: bool
    predicts: bool
    time_series: bool
    steers: bool = False
    sees_frames: bool = False
    rolls_out: bool = False


@dataclass(frozen=True)
class _Entry:
    location: str  # "module:Class", imported on first use
    capabilities: ModelCapabilities


#: Model name -> class location and capabilities. The only list of models in the package.
_REGISTRY: Mapping[str, _Entry] = {
    "linear": _Entry(
        "crl_pipe.models.linear:LinearSEM",
        ModelCapabilities(reads_counts=False, uses_torch=False, predicts=False, time_series=False, steers=True),
    ),
    "sparse_vae": _Entry(
        "crl_pipe.models.sparse_vae:SparseVAE",
        ModelCapabilities(reads_counts=True, uses_torch=True, predicts=False, time_series=False, steers=True),
    ),
    "causal_vae": _Entry(
        "crl_pipe.models.causal_vae:CausalVAE",
        ModelCapabilities(reads_counts=False, uses_torch=True, predicts=True, time_series=False, steers=True),
    ),
    "temporal": _Entry(
        "crl_pipe.models.temporal:TemporalSEM",
        ModelCapabilities(reads_counts=False, uses_torch=False, predicts=False, time_series=True, rolls_out=True),
    ),
    "camera": _Entry(
        "crl_pipe.models.camera:CameraSEM",
        ModelCapabilities(reads_counts=False, uses_torch=True, predicts=False, time_series=True, sees_frames=True),
    ),
}

_CAPABILITIES = tuple(f.name for f in fields(ModelCapabilities))


def model_names(capability: str | None = None) -> list[str]:
    """Names of the registered models, in registry order; with ``capability`` (a field of
    :class:`ModelCapabilities`, e.g. ``"predicts"``), only the models that have it."""
    if capability is not None and capability not in _CAPABILITIES:
        raise ConfigError(f"unknown model capability {capability!r}; expected one of {list(_CAPABILITIES)}")
    return [name for name, entry in _REGISTRY.items() if capability is None or getattr(entry.capabilities, capability)]


def model_capabilities(name: str) -> ModelCapabilities:
    """What the model registered under ``name`` can do (without importing it)."""
    return _entry(name).capabilities


def get_model(name: str) -> type:
    """The :class:`~crl_pipe.models.CRLModel` subclass registered under ``name`` (imported now, with torch;
    not annotated as such, since ``_base`` imports this module)."""
    module, _, attribute = _entry(name).location.partition(":")
    return getattr(importlib.import_module(module), attribute)


def model_device(config: Mapping[str, Any], name: str) -> str | None:
    """The device ``name`` trains on under a workflow ``config`` (``models.<name>.device`` first,
    then the top-level ``device``); ``None`` for a model that does not use PyTorch."""
    if not model_capabilities(name).uses_torch:
        return None
    return str(config.get("models", {}).get(name, {}).get("device") or config.get("device", "auto"))


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; expected one of {sorted(_REGISTRY)}") from None
