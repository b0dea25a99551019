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
exactly as the ``linear`` model reads its scores (:mod:`._readout`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from .._errors import ModelError
from ._base import CRLModel
from ._data import CRLData, column_stats, dense_columns
from ._readout import READOUT_DEFAULTS, ShiftReadout
from ._training import (
    CellBatches,
    EpochCallback,
    TrainingPlan,
    cpu_threads,
    deterministic,
    fingerprint,
    resolve_device,
    seed_everything,
    split_cells,
    train_module,
)

LIKELIHOODS = ("gaussian", "nb")
NONLINEARITIES = ("mlp", "none")
ENCODERS = ("anchors", "all")


# -- torch modules (inference, generative, loss) --------------------------------------------------
class LatentLink(nn.Module):
    """Per-latent monotone-at-start nonlinearity ``h_k = z_k + sum_j a_kj tanh(w_kj z_k + c_kj)``.

    One scalar function per latent (shared by every feature) keeps the decoder additive across
    latents, so a latent cannot absorb another; the skip connection starts it at the identity.
    """

    def __init__(self, n_latents: int, width: int = 16) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_latents, width))
        self.c = nn.Parameter(torch.randn(n_latents, width))
        self.a = nn.Parameter(0.01 * torch.randn(n_latents, width))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + (self.a * torch.tanh(z.unsqueeze(-1) * self.w + self.c)).sum(-1)


class MaskedLinear(nn.Linear):
    """Linear layer whose weight is multiplied by a fixed 0/1 mask (out x in): absent connections stay absent."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float())
        with torch.no_grad():
            fan_in = self.mask.sum(1, keepdim=True).clamp(min=1.0)
            self.weight.mul_(self.mask * torch.sqrt(self.weight.shape[1] / fan_in))  # keep the init scale per unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class AnchorEncoder(nn.Module):
    """One small MLP per latent, reading only that latent's input features (its anchors).

    Latent k's posterior then depends on program k's anchors alone, so perturbing another program
    cannot leak into it: the mean shifts the graph readout uses stay per program, as in ``linear``.
    """

    def __init__(self, inputs: torch.Tensor, width: int) -> None:
        super().__init__()
        n_features, K = inputs.shape
        self.K, self.width = K, width
        block = torch.kron(torch.eye(K), torch.ones(width, width))  # block-diagonal hidden -> hidden
        self.layer1 = MaskedLinear(inputs.T.repeat_interleave(width, dim=0))
        self.layer2 = MaskedLinear(block)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)  # per block: no mixing across latents
        heads = torch.kron(torch.eye(K), torch.ones(1, width))
        self.z_mean, self.z_log_var = MaskedLinear(heads), MaskedLinear(heads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self._norm(self.layer1(x), self.norm1))
        h = torch.relu(self._norm(self.layer2(h), self.norm2))
        return self.z_mean(h), self.z_log_var(h)

    def _norm(self, h: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        return norm(h.view(*h.shape[:-1], self.K, self.width)).view(h.shape)


class SharedEncoder(nn.Module):
    """An MLP from every feature to every latent's posterior (the usual VAE encoder)."""

    def __init__(self, n_features: int, n_latents: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(n_features, hidden), nn.LayerNorm(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(),
        )  # fmt: skip
        self.z_mean = nn.Linear(hidden, n_latents)
        self.z_log_var = nn.Linear(hidden, n_latents)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.z_mean(h), self.z_log_var(h)


class SparseVAEModule(nn.Module):
    """Encoder, anchor-masked decoder and negative ELBO of the sparse VAE.

    Parameters
    ----------
    anchors
        Features x latents, 1 where the feature is an anchor of the latent's program. An anchor
        loads on its own latent(s) only; every other feature may load on any latent.
    feature_mean, feature_sd
        Centre and scale of the log-normalised features (encoder input; Gaussian target).
    hidden
        Encoder width: of each hidden layer (``"all"``), or shared out among the latents, at least
        16 units each (``"anchors"``).
    encoder
        ``"anchors"`` (:class:`AnchorEncoder`) or ``"all"`` (:class:`SharedEncoder`).
    likelihood
        ``"gaussian"`` on standardised log X, or ``"nb"`` on raw counts with the library size.
    nonlinearity
        ``"mlp"`` (a :class:`LatentLink` per latent) or ``"none"`` (linear decoder).
    l1
        Weight of ``sum |W|`` added to the per-cell loss.
    kl_warmup
        Epochs over which the KL weight rises linearly from 0 to 1 during training (0: no warm-up).
    """

    def __init__(
        self,
        anchors: torch.Tensor,
        feature_mean: torch.Tensor,
        feature_sd: torch.Tensor,
        *,
        hidden: int,
        encoder: str,
        likelihood: str,
        nonlinearity: str,
        l1: float,
        kl_warmup: int,
    ) -> None:
        super().__init__()
        n_features, n_latents = anchors.shape
        self.likelihood, self.l1, self.kl_warmup = likelihood, l1, kl_warmup
        self.register_buffer("anchors", anchors.float())
        is_anchor = self.anchors.sum(1, keepdim=True) > 0
        self.register_buffer("allowed", torch.where(is_anchor, self.anchors, 1.0))
        self.register_buffer("feature_mean", feature_mean.float())
        self.register_buffer("feature_sd", feature_sd.float())
        if encoder == "anchors":
            inputs = self.anchors.clone()
            inputs[:, inputs.sum(0) == 0] = 1.0  # unanchored (free) latents read every feature
            self.encoder = AnchorEncoder(inputs, max(16, hidden // n_latents))
        else:
            self.encoder = SharedEncoder(n_features, n_latents, hidden)
        self.link = LatentLink(n_latents) if nonlinearity == "mlp" else nn.Identity()
        self.W = nn.Parameter(0.1 * torch.randn(n_features, n_latents) * self.allowed)
        self.bias = nn.Parameter(torch.zeros(n_features))
        self.log_dispersion = nn.Parameter(torch.zeros(n_features))  # log SD (gaussian) or log theta (nb)

    def weights(self) -> torch.Tensor:
        """Masked decoder weights (features x latents)."""
        return self.W * self.allowed

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.feature_mean) / self.feature_sd

    def inference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log variance of z given log-normalised expression ``x``."""
        mean, log_var = self.encoder(self.standardise(x))
        return mean.float(), log_var.float().clamp(-12.0, 8.0)

    def generative(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output per feature: standardised mean (gaussian) or log rate before softmax (nb)."""
        return (self.bias + self.link(z) @ self.weights().T).float()

    def loss(self, batch: dict[str, torch.Tensor], epoch: int) -> torch.Tensor:
        """Negative ELBO per cell plus the L1 penalty; z is sampled in training, at the mean in eval."""
        mean, log_var = self.inference(batch["x"])
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var) if self.training else mean
        out = self.generative(z)
        recon = self._nll(out, batch)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - log_var - 1.0).sum(-1)
        beta = min(1.0, epoch / self.kl_warmup) if self.training and self.kl_warmup > 0 else 1.0
        return (recon + beta * kl).mean() + self.l1 * self.weights().abs().sum()

    def _nll(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.likelihood == "gaussian":
            target = self.standardise(batch["x"])
            log_sd = self.log_dispersion
            return (0.5 * ((target - out) * torch.exp(-log_sd)).pow(2) + log_sd + 0.5 * math.log(2 * math.pi)).sum(-1)
        mu = batch["library"].unsqueeze(-1) * torch.softmax(out, dim=-1)
        return -_nb_log_prob(batch["counts"], mu, torch.exp(self.log_dispersion)).sum(-1)


def _nb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Negative-binomial log probability with mean ``mu`` and inverse dispersion ``theta``."""
    log_theta_mu = torch.log(theta + mu + eps)
    return (
        theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
    )


# -- user-facing model --------------------------------------------------------------------------
class SparseVAE(ShiftReadout, CRLModel):
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
        Training: maximum epochs, cells per step, Adam learning rate, epochs without a lower
        validation loss before stopping, share of cells held out (per intervention).
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
    edge_threshold, ridge, max_iter, min_target_z
        The mean-shift readout of targets and graph, as in the ``linear`` model.
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

    def __init__(
        self,
        n_latents: int | None = None,
        hidden: int = 128,
        encoder: str = "anchors",
        epochs: int = 200,
        batch_size: int = 512,
        lr: float = 3e-3,
        l1: float = 1e-3,
        likelihood: str = "gaussian",
        nonlinearity: str = "mlp",
        kl_warmup: int = 10,
        patience: int = 20,
        val_fraction: float = 0.1,
        device: str = "auto",
        edge_threshold: float = READOUT_DEFAULTS["edge_threshold"],
        ridge: float = READOUT_DEFAULTS["ridge"],
        max_iter: int = READOUT_DEFAULTS["max_iter"],
        min_target_z: float = READOUT_DEFAULTS["min_target_z"],
        *,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 10,
        threads: int | None = None,
    ) -> None:
        super().__init__(
            n_latents=n_latents, hidden=hidden, encoder=encoder, epochs=epochs, batch_size=batch_size, lr=lr, l1=l1,
            likelihood=likelihood, nonlinearity=nonlinearity, kl_warmup=kl_warmup, patience=patience,
            val_fraction=val_fraction, device=device, edge_threshold=edge_threshold, ridge=ridge,
            max_iter=max_iter, min_target_z=min_target_z,
        )  # fmt: skip
        if likelihood not in LIKELIHOODS:
            raise ModelError(f"model sparse_vae: likelihood {likelihood!r}; expected one of {list(LIKELIHOODS)}")
        if encoder not in ENCODERS:
            raise ModelError(f"model sparse_vae: encoder {encoder!r}; expected one of {list(ENCODERS)}")
        if nonlinearity not in NONLINEARITIES:
            raise ModelError(f"model sparse_vae: nonlinearity {nonlinearity!r}; expected one of {list(NONLINEARITIES)}")
        self.checkpoint_dir, self.checkpoint_every, self.threads = checkpoint_dir, checkpoint_every, threads
        self.features: list[str] = []
        self.module: SparseVAEModule | None = None

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, data: CRLData, *, seed: int = 0, callbacks: Sequence[EpochCallback] = ()) -> SparseVAE:
        """Train on ``data``; ``callbacks(epoch, history)`` run after every epoch (e.g. to interrupt)."""
        anchors = self._setup(data)
        device = resolve_device(self.params["device"])
        with deterministic(device), cpu_threads(self.threads):
            seed_everything(seed)
            batches = CellBatches(self._arrays(data), device)
            self.module = self._module(anchors, *map(torch.from_numpy, _column_stats(data.X))).to(device)
            train_rows, val_rows = split_cells(data.n_cells, self.params["val_fraction"], seed, data.intervention)
            self.history = train_module(
                self.module, batches, self._plan(), seed=seed, train_rows=train_rows, val_rows=val_rows,
                fingerprint=self._fingerprint(data, seed), callbacks=callbacks, desc="sparse_vae",
            )  # fmt: skip
            means = self._posterior_means(batches)
        self.module.to("cpu")
        self._standardise_latents(means, data)
        self._fit_shift_graph(self._scale(means), data)
        return self

    def _setup(self, data: CRLData) -> torch.Tensor:
        """Check the data; set latent names and features; the anchor mask (features x latents)."""
        programs = [p for p, genes in data.anchors.items() if len(genes) >= 2]
        if not programs:
            raise ModelError("model sparse_vae: needs at least one program with >= 2 anchor features (anchors.parquet)")
        if not data.is_control.any():
            raise ModelError("model sparse_vae: needs control cells to measure intervention shifts against")
        if self.params["likelihood"] == "nb" and data.counts is None:
            raise ModelError(
                "model sparse_vae: likelihood 'nb' needs raw counts (layers['counts'] of the preprocessed data)"
            )
        n_latents = self.params["n_latents"] or len(programs)
        if n_latents < len(programs):
            raise ModelError(f"model sparse_vae: n_latents={n_latents} is below the {len(programs)} anchored programs")
        self.features = list(data.features)
        self.latent_names = programs + [f"free{i + 1}" for i in range(n_latents - len(programs))]
        index = {f: i for i, f in enumerate(self.features)}
        anchors = torch.zeros(len(self.features), n_latents)
        for k, program in enumerate(programs):
            anchors[[index[g] for g in data.anchors[program]], k] = 1.0
        return anchors

    def _module(self, anchors: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> SparseVAEModule:
        p = self.params
        return SparseVAEModule(
            anchors, mean, sd, hidden=p["hidden"], encoder=p["encoder"], likelihood=p["likelihood"],
            nonlinearity=p["nonlinearity"], l1=p["l1"], kl_warmup=p["kl_warmup"],
        )  # fmt: skip

    def _arrays(self, data: CRLData) -> dict[str, Any]:
        arrays: dict[str, Any] = {"x": data.X}
        if self.params["likelihood"] == "nb":
            arrays["counts"] = data.counts
            arrays["library"] = np.asarray(data.counts.sum(axis=1), dtype=np.float32).ravel()
        return arrays

    def _plan(self) -> TrainingPlan:
        p = self.params
        return TrainingPlan(
            epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], patience=p["patience"],
            val_fraction=p["val_fraction"], checkpoint_dir=self.checkpoint_dir, checkpoint_every=self.checkpoint_every,
        )  # fmt: skip

    def _fingerprint(self, data: CRLData, seed: int) -> str:
        cells = fingerprint(ids=data.sample_ids.tolist(), labels=data.intervention.tolist())
        return fingerprint(model=self.name, params=self.params, seed=seed, features=self.features, cells=cells)

    @torch.no_grad()
    def _posterior_means(self, batches: CellBatches, batch_size: int = 8192) -> np.ndarray:
        self.module.eval()
        rows = torch.arange(batches.n)
        parts = [self.module.inference(b["x"])[0].double().cpu() for b in batches.batches(rows, batch_size)]
        return torch.cat(parts).numpy()

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
        return (means - self.latent_mean.numpy()) * self.latent_scale.numpy()

    # -- outputs ----------------------------------------------------------------------------------
    def get_latent_representation(self, data: CRLData) -> pd.DataFrame:
        X = _align(data, self.features)
        batches = CellBatches({"x": X}, torch.device("cpu"))
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

    # -- checkpoints ------------------------------------------------------------------------------
    def _extra_state_json(self) -> dict[str, Any]:
        return {"features": self.features}

    def _load_extra_state_json(self, extra: dict[str, Any]) -> None:
        self.features = list(extra["features"])

    def _allocate(self, state: dict[str, torch.Tensor]) -> None:
        anchors = state["module.anchors"]
        self.module = self._module(anchors, torch.zeros(anchors.shape[0]), torch.ones(anchors.shape[0]))
        super()._allocate(state)


def _column_stats(X: np.ndarray | sp.spmatrix, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and SD (SD 1 where constant), accumulated over row chunks in float64."""
    if sp.issparse(X):
        mean, sd = column_stats(X)
        return mean.astype(np.float32), np.where(sd > 1e-6, sd, 1.0).astype(np.float32)
    total = np.zeros(X.shape[1])
    squares = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], chunk):
        block = np.asarray(X[start : start + chunk], dtype=np.float64)
        total += block.sum(axis=0)
        squares += (block**2).sum(axis=0)
    mean = total / X.shape[0]
    sd = np.sqrt(np.maximum(squares / X.shape[0] - mean**2, 0.0))
    return mean.astype(np.float32), np.where(sd > 1e-6, sd, 1.0).astype(np.float32)


def _align(data: CRLData, features: list[str]) -> np.ndarray:
    index = {f: i for i, f in enumerate(data.features)}
    missing = [f for f in features if f not in index]
    if missing:
        raise ModelError(f"model sparse_vae: features missing from the data: {missing[:5]}")
    if features == data.features:
        return data.X
    return data.X[:, [index[f] for f in features]]
