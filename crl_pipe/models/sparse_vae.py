"""``sparse_vae``: a VAE whose decoder is masked by anchor features (Moran et al. 2022, sparse VAE).

Generative model (one cell, K latents, one per anchored program):
    z ~ N(0, I_K);   h_k = f_k(z_k)   (identity, or z_k + a small per-latent MLP: nonlinear mixing)
    x_g ~ N(b_g + sum_k W_gk h_k, s_g^2)                  (likelihood "gaussian": standardised log X)
    c_g ~ NB(library * softmax(b + W h)_g, theta_g)       (likelihood "nb": raw counts)
with W_gk = 0 whenever g is an anchor of a program other than k (an anchor loads on its program
alone, which pins each latent to its program: identifiable up to scale with >= 2 anchors per
factor) and an L1 penalty on W (sparse loadings for every other feature).

Inference: by default latent k's encoder reads program k's anchors only (``encoder="anchors"``).
Posterior means computed from every feature (``encoder="all"``) correlate better with the true
programs, but they borrow from the other programs through the shared features, so perturbing
one program moves the others' latents too; measured on simulated screens this leakage doubles
the SHD of the graph read from mean shifts. After training the latents are the posterior means in
control standard deviations, and targets and graph are read from their intervention mean shifts
exactly as the ``linear`` model reads its scores (:mod:`._shift_sem`).

The torch module is :class:`~crl_pipe.models._modules.AnchoredVAEModule`; what this model shares
with ``causal_vae`` (anchor mask, training plan, latent standardisation, loadings) is
:class:`~crl_pipe.models._vae.AnchoredVAE`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import ModelError
from ._data import CRLData, standardisation
from ._modules import ENCODERS, LIKELIHOODS, NONLINEARITIES, AnchoredVAEModule
from ._shift_sem import SHIFT_SEM_DEFAULTS, ShiftSEMOutputs, fit_shift_sem, graph_settings
from ._training import (
    CellBatches,
    EpochCallback,
    cpu_threads,
    deterministic,
    resolve_device,
    seed_everything,
    split_cells,
    train_module,
)
from ._vae import AnchoredVAE
from .registry import model_capabilities


class SparseVAE(ShiftSEMOutputs, AnchoredVAE):
    """Sparse VAE with an anchor-masked decoder; targets and graph from latent mean shifts.

    Parameters
    ----------
    n_latents
        Latents; defaults to the number of programs with >= 2 anchors (one latent each, named
        after it). Extra latents are unanchored and named ``free1, free2, ...``.
    hidden
        Encoder width (see ``encoder``).
    encoder
        ``"anchors"``: latent k is inferred from program k's anchors alone, so mean shifts do not
        leak between programs (the graph is as accurate as ``linear``'s); ``"all"``: from every
        feature (latents closer to the true programs, graph less accurate).
    epochs, batch_size, lr, patience, val_fraction
        Training: maximum epochs, cells per step (``"auto"``: 512; on a GPU up to 4,096),
        Adam learning rate, epochs without a lower validation loss before stopping, share of
        cells held out (per intervention).
    l1
        L1 penalty on the decoder weights, per cell (larger: sparser loadings).
    likelihood
        ``"gaussian"`` on the standardised log-normalised data, or ``"nb"`` on raw counts
        (``layers["counts"]`` of the preprocessed data) with each cell's library size.
    nonlinearity
        ``"mlp"``: a learned monotone-at-start function per latent before the masked linear map
        (captures saturating programs); ``"none"``: a linear decoder.
    kl_warmup
        Epochs over which the KL weight rises from 0 to 1.
    device
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"`` (falls back to the CPU
        with a warning when there is no GPU).
    edge_threshold, edge_z, ridge, max_iter, min_target_z
        The mean-shift readout of targets and graph, as in the ``linear`` model.
    refit_epochs
        Refits of the graph step: ``"auto"`` warm-starts them from this fit's weights for 15 % of
        its epochs, an integer for that many epochs, ``None`` retrains each from scratch
        (:meth:`~crl_pipe.models._vae.AnchoredVAE.refit`).
    checkpoint_dir
        Folder for a resumable training checkpoint; a rerun with the same folder, data, params and
        seed resumes from it. Not a model parameter (not saved, not passed to refits).
    checkpoint_every
        Epochs between checkpoints.
    threads
        CPU threads torch may use while fitting (``None``: torch's default); pass the cores a job
        was given. Like ``checkpoint_dir``, a run setting rather than a model parameter. CPU fits
        are bitwise reproducible for a fixed seed and thread count.
    """

    name = "sparse_vae"
    capabilities = model_capabilities(name)

    def __init__(
        self,
        n_latents: int | None = None,
        hidden: int = 128,
        encoder: str = "anchors",
        epochs: int = 200,
        batch_size: int | str = "auto",
        lr: float = 3e-3,
        l1: float = 1e-3,
        likelihood: str = "gaussian",
        nonlinearity: str = "mlp",
        kl_warmup: int = 10,
        patience: int = 20,
        val_fraction: float = 0.1,
        device: str = "auto",
        edge_threshold: float = SHIFT_SEM_DEFAULTS["edge_threshold"],
        edge_z: float = SHIFT_SEM_DEFAULTS["edge_z"],
        ridge: float = SHIFT_SEM_DEFAULTS["ridge"],
        max_iter: int = SHIFT_SEM_DEFAULTS["max_iter"],
        min_target_z: float = SHIFT_SEM_DEFAULTS["min_target_z"],
        refit_epochs: int | str | None = "auto",
        *,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 10,
        threads: int | None = None,
    ) -> None:
        super().__init__(
            n_latents=n_latents, hidden=hidden, encoder=encoder, epochs=epochs, batch_size=batch_size, lr=lr, l1=l1,
            likelihood=likelihood, nonlinearity=nonlinearity, kl_warmup=kl_warmup, patience=patience,
            val_fraction=val_fraction, device=device, edge_threshold=edge_threshold, edge_z=edge_z, ridge=ridge,
            max_iter=max_iter, min_target_z=min_target_z, refit_epochs=refit_epochs,
            checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, threads=threads,
        )  # fmt: skip
        self._check_option("likelihood", LIKELIHOODS)
        self._check_option("encoder", ENCODERS)
        self._check_option("nonlinearity", NONLINEARITIES)

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, data: CRLData, *, seed: int = 0, callbacks: Sequence[EpochCallback] = ()) -> SparseVAE:
        """Train on ``data``; ``callbacks(epoch, history)`` run after every epoch (e.g. to interrupt)."""
        anchors = self._setup(data)
        device = resolve_device(self.params["device"])
        with deterministic(device), cpu_threads(self.threads):
            seed_everything(seed)
            batches = CellBatches(self._arrays(data), device)
            self.module = self._module(anchors, *map(torch.from_numpy, standardisation(data.X))).to(device)
            self._take_init_state()  # a warm refit of the graph step starts from the fitted weights
            train_rows, val_rows = split_cells(data.n_cells, self.params["val_fraction"], seed, data.intervention)
            self.history = train_module(
                self.module, batches, self._plan(), seed=seed, train_rows=train_rows, val_rows=val_rows,
                fingerprint=self._fingerprint(data, seed), callbacks=callbacks, desc="sparse_vae",
            )  # fmt: skip
            means = self._encoder_means(batches)
        self._record_epochs()
        self.module.to("cpu")
        self._standardise_latents(means, data)
        p = self.params
        shift_sem = fit_shift_sem(self._scale(means), data, **graph_settings(p))
        self.intervention_names = shift_sem.labels
        self.equation_misfit = shift_sem.misfit
        for key, tensor in shift_sem.buffers().items():
            self.register_buffer(key, tensor)
        return self

    def _setup(self, data: CRLData) -> torch.Tensor:
        """Check the data; set latent names and features; the anchor mask (features x latents)."""
        programs = self._anchored_programs(data)
        if self.params["likelihood"] == "nb" and data.counts is None:
            raise ModelError(
                "model sparse_vae: likelihood 'nb' needs raw counts (layers['counts'] of the preprocessed data)"
            )
        n_latents = self.params["n_latents"] or len(programs)
        if n_latents < len(programs):
            raise ModelError(f"model sparse_vae: n_latents={n_latents} is below the {len(programs)} anchored programs")
        self.features = list(data.features)
        self.latent_names = programs + [f"free{i + 1}" for i in range(n_latents - len(programs))]
        return self._anchor_mask(data, programs, n_latents)

    def _module(self, anchors: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> AnchoredVAEModule:
        p = self.params
        return AnchoredVAEModule(
            anchors, mean, sd, hidden=p["hidden"], encoder=p["encoder"], likelihood=p["likelihood"],
            nonlinearity=p["nonlinearity"], l1=p["l1"], kl_warmup=p["kl_warmup"],
        )  # fmt: skip

    def _arrays(self, data: CRLData) -> dict[str, Any]:
        arrays: dict[str, Any] = {"x": data.X}
        if self.params["likelihood"] == "nb":
            arrays["counts"] = data.counts
            arrays["library"] = np.asarray(data.counts.sum(axis=1), dtype=np.float32).ravel()
        return arrays

    # -- outputs ----------------------------------------------------------------------------------
    # -- checkpoints ------------------------------------------------------------------------------
    def _allocate(self, state: dict[str, torch.Tensor]) -> None:
        anchors = state["module.anchors"]
        self.module = self._module(anchors, torch.zeros(anchors.shape[0]), torch.ones(anchors.shape[0]))
        super()._allocate(state)
