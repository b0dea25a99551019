"""The user-facing base of the anchored VAEs, ``sparse_vae`` and ``causal_vae``.

Both train a torch module built on :class:`~crl_pipe.models._modules.AnchoredVAEModule` (one
latent per program with >= 2 anchors, an anchor-masked decoder) with the shared training loop
(:mod:`._training`), and both report their latents the same way: posterior means in control
standard deviations, signed so that each program's anchors rise with its latent, with the masked
decoder weights as loadings. What they share lives here once: the run settings, the data checks
and anchor mask, the training plan and checkpoint fingerprint, the encoder's means, the latent
standardisation, loadings and the feature list of the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._errors import ModelError
from ._base import CRLModel
from ._data import CRLData, align_features, dense_columns
from ._modules import AnchoredVAEModule
from ._training import CellBatches, TrainingPlan, fingerprint, resolve_batch_size

#: Warm-started refits train for this share of the epochs the fit trained: on half the cells, 20
#: refits then cost about 20 * 0.15 / 2 = 1.5 fits (docs/benchmarks.md, "Warm-started refits").
REFIT_SHARE = 0.15
#: ... and for at least this many epochs.
MIN_REFIT_EPOCHS = 3
#: A warm refit starts from this mix of the fitted weights and the refit's own fresh initialisation
#: ("shrink and perturb", Ash & Adams 2020; 1.0 = the fitted weights as they are). From the fitted
#: weights alone the refits inherit what the full data taught the fit and are more alike than
#: fresh trainings (single stabilities up to 0.15 higher: optimistic); half of a fresh start
#: brings them back to the from-scratch stabilities within the chance difference of two
#: from-scratch runs, at about the same cost (docs/benchmarks.md, "Warm-started refits").
REFIT_SHRINK = 0.5


class AnchoredVAE(CRLModel):
    """Base class of ``sparse_vae`` and ``causal_vae`` (not registered itself).

    Subclasses set :attr:`module` (an :class:`AnchoredVAEModule`) in ``fit`` and ``_allocate`` and
    implement ``fit``, ``get_targets`` and ``get_adjacency``.

    Parameters
    ----------
    checkpoint_dir
        Folder for a resumable training checkpoint; a rerun with the same folder, data, params and
        seed resumes from it. A run setting, not a model parameter (not saved, not passed to refits).
    checkpoint_every
        Epochs between checkpoints.
    threads
        CPU threads torch may use while fitting (``None``: torch's default). A run setting too.
    refit_epochs
        (In ``params``.) How the graph step's refits on half-samples train (:meth:`refit`):
        ``"auto"`` warm-starts each from this model's weights for :data:`REFIT_SHARE` of the
        epochs the fit trained (at least :data:`MIN_REFIT_EPOCHS`), an integer for that many
        epochs, ``None`` retrains from scratch as the fit did.
    **params
        The model parameters (saved in ``model.json``, passed to refits); they must include the
        training plan's ``epochs``, ``batch_size``, ``lr``, ``patience`` and ``val_fraction``.
    """

    def __init__(
        self, *, checkpoint_dir: str | Path | None, checkpoint_every: int, threads: int | None, **params: Any
    ) -> None:
        super().__init__(**params)
        resolve_batch_size(params["batch_size"], torch.device("cpu"))  # a bad value fails here, not mid-run
        self.checkpoint_dir, self.checkpoint_every, self.threads = checkpoint_dir, checkpoint_every, threads
        self.features: list[str] = []
        self.module: AnchoredVAEModule | None = None
        self._init_state: dict[str, torch.Tensor] | None = None  # weights a warm refit starts from

    # -- refits of the graph step -------------------------------------------------------------------
    def refit(self, data: CRLData, *, seed: int = 0) -> AnchoredVAE:
        """A refit on ``data`` (a half-sample) that starts from this model's weights (shrunk towards a
        fresh initialisation by :data:`REFIT_SHRINK`) and trains
        :meth:`_refit_epochs` epochs with the KL term at full weight (it was annealed once already);
        the graph and targets are then read out from the refit's own latents, as in any fit, so
        the stability still measures how the half-samples' intervention shifts vary. A half that
        lacks one of the fit's perturbations cannot take its weights and trains from scratch."""
        epochs = self._refit_epochs()
        if epochs is None or self.module is None:
            return super().refit(data, seed=seed)
        new = type(self)(**{**self.params, "epochs": epochs, "kl_warmup": 0}, threads=self.threads)
        new._init_state = {key: value.detach().clone() for key, value in self.module.state_dict().items()}
        return new.fit(data, seed=seed)

    def _refit_epochs(self) -> int | None:
        """Epochs of a warm refit (``params["refit_epochs"]``; None: refit from scratch)."""
        setting = self.params.get("refit_epochs", "auto")
        if setting is None or setting != "auto":
            return None if setting is None else int(setting)
        trained = int(self.trained_epochs) if "trained_epochs" in self._buffers else int(self.params["epochs"])
        return max(MIN_REFIT_EPOCHS, int(np.ceil(REFIT_SHARE * trained)))

    def _take_init_state(self) -> bool:
        """Load the weights of a warm refit into :attr:`module` (False: none, or shapes differ)."""
        init, self._init_state = self._init_state, None
        if init is None:
            return False
        own = self.module.state_dict()
        if own.keys() != init.keys() or any(own[key].shape != init[key].shape for key in own):
            return False
        fresh = dict(self.module.named_parameters())
        with torch.no_grad():  # parameters shrink towards the refit's own initialisation; buffers are copied
            mixed = {
                key: REFIT_SHRINK * value + (1 - REFIT_SHRINK) * fresh[key] if key in fresh else value
                for key, value in init.items()
            }
        self.module.load_state_dict(mixed)
        return True

    def _record_epochs(self) -> None:
        """Keep how many epochs the fit trained (a buffer, so a loaded model's refits know it too)."""
        trained = int(self.history["epoch"].max()) if len(self.history) else 0
        self.register_buffer("trained_epochs", torch.tensor(trained))

    def _check_option(self, key: str, allowed: Sequence[str]) -> None:
        """Raise a one-line :class:`~crl_pipe.ModelError` when ``params[key]`` is not in ``allowed``."""
        if self.params[key] not in allowed:
            raise ModelError(f"model {self.name}: {key} {self.params[key]!r}; expected one of {list(allowed)}")

    # -- setting up a fit ---------------------------------------------------------------------------
    def _anchored_programs(self, data: CRLData) -> list[str]:
        """The programs with >= 2 anchors (one latent each); checks that there are some, and controls."""
        programs = [p for p, genes in data.anchors.items() if len(genes) >= 2]
        if not programs:
            raise ModelError(
                f"model {self.name}: needs at least one program with >= 2 anchor features (anchors.parquet)"
            )
        if not data.is_control.any():
            raise ModelError(f"model {self.name}: needs control cells to measure interventions against")
        return programs

    def _anchor_mask(self, data: CRLData, programs: list[str], n_latents: int) -> torch.Tensor:
        """Features (:attr:`features`) x latents, 1 where the feature anchors the latent's program."""
        index = {f: i for i, f in enumerate(self.features)}
        anchors = torch.zeros(len(self.features), n_latents)
        for k, program in enumerate(programs):
            anchors[[index[g] for g in data.anchors[program]], k] = 1.0
        return anchors

    def _plan(self) -> TrainingPlan:
        p = self.params
        return TrainingPlan(
            epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], patience=p["patience"],
            val_fraction=p["val_fraction"], checkpoint_dir=self.checkpoint_dir, checkpoint_every=self.checkpoint_every,
        )  # fmt: skip

    def _fingerprint(self, data: CRLData, seed: int) -> str:
        """What a resumable checkpoint must match: model, params, seed, features and cells."""
        cells = fingerprint(ids=data.sample_ids.tolist(), labels=data.intervention.tolist())
        return fingerprint(model=self.name, params=self.params, seed=seed, features=self.features, cells=cells)

    # -- latents ------------------------------------------------------------------------------------
    @torch.no_grad()
    def _encoder_means(self, batches: CellBatches, batch_size: int = 8192) -> np.ndarray:
        """The encoder's per-latent means (label-free measurements of the latents, in latent units)."""
        self.module.eval()
        rows = torch.arange(batches.n)
        parts = [self.module.inference(b["x"])[0].double().cpu() for b in batches.batches(rows, batch_size)]
        return torch.cat(parts).numpy()

    def _posterior_means(self, batches: CellBatches) -> np.ndarray:
        """The latents :meth:`get_latent_representation` reports, in latent units (here: the encoder's means)."""
        return self._encoder_means(batches)

    def _cell_arrays(self, data: CRLData, X: Any) -> dict[str, Any]:
        """The per-cell arrays :meth:`_posterior_means` reads, given the aligned expression ``X``."""
        return {"x": X}

    def _standardise_latents(self, means: np.ndarray, data: CRLData) -> None:
        """Latents in control SD units, signed so that each program's anchors rise with its latent."""
        ctrl = means[data.is_control]
        sd = ctrl.std(axis=0)
        sign = np.ones(means.shape[1])
        index = {f: i for i, f in enumerate(self.features)}
        for k, program in enumerate(self.latent_names):
            if program in data.anchors:
                anchor_mean = dense_columns(data.X, [index[g] for g in data.anchors[program]]).mean(axis=1)
                sign[k] = -1.0 if np.corrcoef(means[:, k], anchor_mean)[0, 1] < 0 else 1.0
        self.register_buffer("latent_mean", torch.tensor(ctrl.mean(axis=0)))
        self.register_buffer("latent_scale", torch.tensor(sign / np.where(sd > 0, sd, 1.0)))

    def _scale(self, means: np.ndarray) -> np.ndarray:
        """Latent-unit means -> control SD units (as :meth:`_standardise_latents` set them)."""
        return (means - self.latent_mean.numpy()) * self.latent_scale.numpy()

    # -- outputs ------------------------------------------------------------------------------------
    def get_latent_representation(self, data: CRLData) -> pd.DataFrame:
        X = align_features(data, self.features, self.name)
        batches = CellBatches(self._cell_arrays(data, X), torch.device("cpu"))
        frame = pd.DataFrame(self._scale(self._posterior_means(batches)), columns=self.latent_names)
        frame.insert(0, "sample_id", data.sample_ids)
        return frame

    def get_loadings(self) -> pd.DataFrame:
        """Decoder weights in feature units (SD of log X, or log rate for "nb") per control SD of each latent."""
        W = self.module.weights().detach().double().numpy() / self.latent_scale.numpy()
        frame = pd.DataFrame(W, index=self.features, columns=self.latent_names)
        return (
            frame.rename_axis("feature")
            .reset_index()
            .melt("feature", var_name="latent", value_name="loading")[["latent", "feature", "loading"]]
        )

    # -- checkpoints --------------------------------------------------------------------------------
    def _extra_state_json(self) -> dict[str, Any]:
        return {"features": self.features}

    def _load_extra_state_json(self, extra: dict[str, Any]) -> None:
        self.features = list(extra["features"])
