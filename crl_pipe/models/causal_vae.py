"""``causal_vae``: an interventional causal VAE (in the spirit of the discrepancy VAE, Zhang et al. 2023).

Generative model (one cell with intervention label l, K latents, one per anchored program):
    eps ~ N(s_l, diag(sigma_l^2))       exogenous noise; controls: s = 0, sigma = 1
    z = (I - B)^-1 eps                  latent linear SEM, B a weighted DAG (B[j, i]: effect of i on j)
    x ~ N(b + W f(z), diag(s^2))        the anchored decoder of ``sparse_vae`` (f: per-latent link)
An intervention label is a set of *atoms* (its targeted genes). Atom a picks a latent by a soft
choice ``pi_a = softmax(tau_a)`` and shifts (``c_a``) and rescales (``rho_a``) that latent's noise:
s_l = sum_a pi_a c_a,  log sigma_l = sum_a pi_a rho_a. A combination ``A+B`` adds its atoms' effects,
so cells can be generated for combinations never seen in training (:meth:`CausalVAE.predict`).

Loss per cell: the negative ELBO with the label's SEM prior p(z | l) (a full-covariance Gaussian,
computed through eps = (I - B) z), plus an MMD discrepancy between cells generated from each label's
prior and the observed cells of that label (in a fixed principal-component space of the genes),
plus minimality penalties: L1 on the graph and on the decoder, an entropy penalty on the target
choices, and a NOTEARS acyclicity penalty ``tr(exp(B * B)) - K`` whose weight grows each epoch.
After training, edges below ``edge_threshold`` (in control SD units) are dropped and any cycle
left is broken at its weakest edge, so the graph is a DAG.

Initialisation: the target choices start from the ``linear`` model's peeling of intervention mean
shifts of anchor scores (which program each single perturbation moves least leakily), because a
soft choice started uniform lets the graph and the targets trade places early in training. The
graph starts empty and is learned (its order included) from the full interventional likelihood,
which unlike mean shifts alone uses the covariance of the latents and accounts for their noise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._errors import ModelError
from ._base import CRLModel
from ._data import CRLData
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
from .linear import LinearSEM, _group_shifts
from .sparse_vae import SparseVAE, SparseVAEModule, _column_stats

NONLINEARITIES = ("mlp", "none")
ENCODERS = ("anchors", "all")
_N_FOURIER = 192  # random Fourier features of the MMD kernel
_INIT_LOGIT = 3.0  # target logit of a warm-started target choice (softmax ~0.7 with K = 10)


# -- torch module (inference, generative, loss) ---------------------------------------------------
class Posterior(NamedTuple):
    """Gaussian posterior of a batch: mean, Cholesky factor of the precision, and the prior it came from."""

    mean: torch.Tensor  # cells x K
    chol: torch.Tensor  # cells x K x K, lower triangular: precision = chol @ chol.T
    shift: torch.Tensor  # cells x K, exogenous shift of each cell's label
    log_scale: torch.Tensor  # cells x K, log exogenous SD
    P: torch.Tensor  # K x K, I - B


class CausalVAEModule(SparseVAEModule):
    """The anchored VAE of ``sparse_vae`` with a latent SEM prior per intervention label.

    Parameters
    ----------
    anchors, feature_mean, feature_sd, hidden, encoder, nonlinearity, l1, kl_warmup
        As for :class:`~crl_pipe.models.sparse_vae.SparseVAEModule` (Gaussian likelihood).
    label_atoms
        Labels x atoms, 1 where the label contains the atom; row 0 is the control (no atom).
    projection
        Features x d: principal axes of the standardised data, where the MMD compares cells.
    graph_l1
        L1 penalty on the graph weights, per cell.
    mmd_weight
        Weight of the MMD between generated and observed cells of each label.
    target_entropy
        Weight of the mean entropy of the atoms' target choices (pushes each to one latent).
    target_warmup
        Epochs during which the target choices stay at their warm start (the graph forms first).
    """

    def __init__(
        self,
        anchors: torch.Tensor,
        feature_mean: torch.Tensor,
        feature_sd: torch.Tensor,
        label_atoms: torch.Tensor,
        projection: torch.Tensor,
        *,
        hidden: int,
        encoder: str,
        likelihood: str,
        nonlinearity: str,
        l1: float,
        kl_warmup: int,
        graph_l1: float,
        mmd_weight: float,
        target_entropy: float,
        target_warmup: int,
    ) -> None:
        super().__init__(
            anchors, feature_mean, feature_sd, hidden=hidden, encoder=encoder, likelihood=likelihood,
            nonlinearity=nonlinearity, l1=l1, kl_warmup=kl_warmup,
        )  # fmt: skip
        K, A = anchors.shape[1], label_atoms.shape[1]
        self.graph_l1 = graph_l1
        self.mmd_weight, self.target_entropy, self.target_warmup = mmd_weight, target_entropy, target_warmup
        self.register_buffer("label_atoms", label_atoms.float())
        self.register_buffer("projection", projection.float())
        # random Fourier frequencies of RBF kernels with bandwidths 0.5, 1 and 2 x sqrt(d) (d projected dims)
        d = projection.shape[1]
        scales = torch.tensor([0.5, 1.0, 2.0]).repeat_interleave(_N_FOURIER // 3) * math.sqrt(d)
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("frequencies", torch.randn(d, scales.numel(), generator=generator) / scales)
        self.register_buffer("edge_mask", torch.zeros(K, K))  # edge_mask[j, i] = 1: i precedes j in the order
        self.B = nn.Parameter(torch.zeros(K, K))
        import os
        if os.environ.get("FULLF"):
            self.factor_offdiag = nn.Parameter(torch.zeros(K, K))
        self.target_logits = nn.Parameter(torch.zeros(A, K))
        self.shift = nn.Parameter(torch.zeros(A))
        self.log_scale = nn.Parameter(torch.zeros(A))

    # -- the SEM prior ------------------------------------------------------------------------------
    def graph(self) -> torch.Tensor:
        """Graph weights B (K x K, B[j, i] = effect of latent i on latent j)."""
        return self.B * self.edge_mask

    def target_probs(self, frozen: bool = False) -> torch.Tensor:
        """Soft target choice of each atom (atoms x K); ``frozen``: without gradient to the choice."""
        logits = self.target_logits.detach() if frozen else self.target_logits
        return torch.softmax(logits, dim=-1)

    def prior(self, atoms: torch.Tensor, frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Exogenous shift and log noise SD per cell (cells x K each), from its atoms (cells x atoms, 0/1)."""
        pi = self.target_probs(frozen)
        return atoms @ (pi * self.shift[:, None]), atoms @ (pi * self.log_scale[:, None])

    def sample_latents(self, shift: torch.Tensor, log_scale: torch.Tensor, generator=None) -> torch.Tensor:
        """z = (I - B)^-1 eps with eps ~ N(shift, exp(log_scale)^2), one row per row of ``shift``."""
        noise = torch.randn(shift.shape, generator=generator, device=shift.device, dtype=shift.dtype)
        eps = shift + torch.exp(log_scale) * noise
        inverse = torch.linalg.inv(torch.eye(shift.shape[1], device=shift.device) - self.graph())
        return eps @ inverse.T

    def posterior(self, x: torch.Tensor, atoms: torch.Tensor, frozen: bool = False) -> Posterior:
        """q(z | x, label): the encoder's Gaussian factor for each latent times the label's SEM prior.

        The product of Gaussians is exact, so the posterior has the prior's full covariance and
        its label-specific mean without the encoder seeing labels or other programs' anchors.
        """
        mean, log_var = self.inference(x)
        K = mean.shape[1]
        precision = torch.exp(-log_var)
        shift, log_scale = self.prior(atoms, frozen)
        P = torch.eye(K, device=mean.device) - self.graph()
        inv_var = torch.exp(-2.0 * log_scale)
        prior_precision = torch.einsum("ki,nk,kj->nij", P, inv_var, P)  # (I - B)^T D^-2 (I - B)
        if os.environ.get("EXACT"):
            W = self.weights(); psi = torch.exp(-2 * self.log_dispersion)
            J = (W.T * psi) @ W
            J = J.expand(x.shape[0], K, K)
            chol = torch.linalg.cholesky(prior_precision + J)
            rhs = ((self.standardise(x) - self.bias) * psi) @ W + (shift * inv_var) @ P
            mu = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
            return Posterior(mu, chol, shift, log_scale, P)
        if hasattr(self, "factor_offdiag"):
            Lf = torch.eye(K, device=mean.device) + torch.tril(self.factor_offdiag, -1)
            J = torch.einsum("ik,nk,jk->nij", Lf, precision, Lf)
        else:
            J = torch.diag_embed(precision)
        chol = torch.linalg.cholesky(prior_precision + J)
        rhs = (J @ mean.unsqueeze(-1)).squeeze(-1) + (shift * inv_var) @ P
        mu = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
        return Posterior(mu, chol, shift, log_scale, P)

    @staticmethod
    def kl(q: Posterior) -> torch.Tensor:
        """KL(q(z | x, label) || p(z | label)) per cell, the prior taken through eps = (I - B) z."""
        inv_sd = torch.exp(-q.log_scale)
        quad = ((q.mean @ q.P.T - q.shift) * inv_sd).pow(2).sum(-1)
        # tr(prior precision x posterior covariance) = |D^-1 (I - B) L^-T|^2 with L L^T the posterior precision
        half = torch.linalg.solve_triangular(q.chol, q.P.T.unsqueeze(0) * inv_sd.unsqueeze(1), upper=False)
        trace = half.pow(2).sum((-2, -1))
        log_det_ratio = 2.0 * q.log_scale.sum(-1) + 2.0 * torch.log(torch.diagonal(q.chol, dim1=-2, dim2=-1)).sum(-1)
        return 0.5 * (trace + quad - q.mean.shape[1] + log_det_ratio)  # log det(I - B) = 0 on a DAG

    @staticmethod
    def sample(q: Posterior) -> torch.Tensor:
        noise = torch.randn_like(q.mean).unsqueeze(-1)
        return q.mean + torch.linalg.solve_triangular(q.chol.mT, noise, upper=True).squeeze(-1)

    # -- losses -----------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor], epoch: int) -> torch.Tensor:
        """Negative ELBO per cell; in training plus the MMD and the minimality penalties."""
        x, label = batch["x"], batch["label"]
        atoms = self.label_atoms[label]
        if not self.training:  # validation: the ELBO at the posterior mean, free of epoch-dependent terms
            q = self.posterior(x, atoms)
            return (self._nll(self.generative(q.mean), batch) + self.kl(q)).mean()
        frozen = epoch <= self.target_warmup  # the graph forms under the warm-started targets first
        q = self.posterior(x, atoms, frozen)
        beta = min(1.0, epoch / self.kl_warmup) if self.kl_warmup > 0 else 1.0
        loss = (self._nll(self.generative(self.sample(q)), batch) + beta * self.kl(q)).mean()
        if self.mmd_weight > 0:
            loss = loss + self.mmd_weight * self.mmd(x, label, q.shift, q.log_scale)
        return loss + self.penalties()

    def mmd(self, x: torch.Tensor, label: torch.Tensor, shift: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """MMD between generated and observed cells of each label in the batch, weighted by label size.

        Random Fourier features of an RBF kernel (three bandwidths) make it linear in the batch size:
        MMD^2 of label l = |mean phi(generated_l) - mean phi(observed_l)|^2.
        """
        gen = self.generative(self.sample_latents(shift, log_scale))
        gen = gen + torch.exp(self.log_dispersion) * torch.randn_like(gen)
        diff = self._features(gen) - self._features(self.standardise(x))
        n_labels = self.label_atoms.shape[0]
        sums = diff.new_zeros(n_labels, diff.shape[1]).index_add_(0, label, diff)
        counts = torch.bincount(label, minlength=n_labels).to(diff.dtype)
        return (sums.pow(2).sum(-1) / counts.clamp(min=1.0)).sum() / x.shape[0]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        proj = (x @ self.projection) @ self.frequencies
        return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1) / math.sqrt(self.frequencies.shape[1])

    def penalties(self) -> torch.Tensor:
        """Minimality: L1 on the decoder and the graph, entropy of the target choices."""
        pi = self.target_probs()
        entropy = -(pi * torch.log(pi + 1e-12)).sum(-1).mean()
        return self.l1 * self.weights().abs().sum() + self.graph_l1 * self.graph().abs().sum() + self.target_entropy * entropy


# -- user-facing model --------------------------------------------------------------------------
class CausalVAE(CRLModel):
    """Interventional causal VAE: anchored decoder, latent linear SEM with a learned DAG, target encoder.

    Parameters
    ----------
    hidden
        Encoder width (as in ``sparse_vae``).
    encoder
        ``"anchors"``: latent k is inferred from program k's anchors alone; ``"all"``: from every feature.
    epochs, batch_size, lr, patience, val_fraction
        Training: maximum epochs, cells per step, Adam learning rate, epochs without a lower
        validation loss before stopping, share of cells held out (per intervention).
    l1
        L1 penalty on the decoder weights, per cell (decoder minimality).
    graph_l1
        L1 penalty on the graph weights, per cell (graph minimality).
    mmd_weight
        Weight of the MMD discrepancy between generated and observed cells of each intervention.
    mmd_dims
        Principal components of the standardised data in which the MMD compares cells.
    target_entropy
        Penalty on the entropy of each atom's soft target choice (larger: one latent per atom sooner).
    target_warmup
        Epochs during which the target choices stay at their warm start while the graph forms.
    nonlinearity
        ``"mlp"``: a learned function per latent before the masked linear decoder; ``"none"``: linear.
    kl_warmup
        Epochs over which the KL weight rises from 0 to 1.
    device
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
    edge_threshold
        Smallest |weight| kept as an edge, in control SD of the child per control SD of the parent.
    checkpoint_dir, checkpoint_every, threads
        Run settings as for ``sparse_vae`` (not model parameters: not saved, not passed to refits).
    """

    name = "causal_vae"

    def __init__(
        self,
        hidden: int = 128,
        encoder: str = "anchors",
        likelihood: str = "gaussian",
        epochs: int = 200,
        batch_size: int = 512,
        lr: float = 3e-3,
        l1: float = 1e-3,
        graph_l1: float = 1e-2,
        mmd_weight: float = 1.0,
        mmd_dims: int = 32,
        target_entropy: float = 1e-2,
        target_warmup: int = 20,
        nonlinearity: str = "mlp",
        kl_warmup: int = 10,
        patience: int = 20,
        val_fraction: float = 0.1,
        device: str = "auto",
        edge_threshold: float = 0.15,
        *,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 10,
        threads: int | None = None,
    ) -> None:
        super().__init__(
            hidden=hidden, encoder=encoder, likelihood=likelihood, epochs=epochs, batch_size=batch_size, lr=lr, l1=l1, graph_l1=graph_l1,
            mmd_weight=mmd_weight, mmd_dims=mmd_dims, target_entropy=target_entropy,
            target_warmup=target_warmup, nonlinearity=nonlinearity, kl_warmup=kl_warmup, patience=patience, val_fraction=val_fraction,
            device=device, edge_threshold=edge_threshold,
        )  # fmt: skip
        if encoder not in ENCODERS:
            raise ModelError(f"model causal_vae: encoder {encoder!r}; expected one of {list(ENCODERS)}")
        if nonlinearity not in NONLINEARITIES:
            raise ModelError(f"model causal_vae: nonlinearity {nonlinearity!r}; expected one of {list(NONLINEARITIES)}")
        self.checkpoint_dir, self.checkpoint_every, self.threads = checkpoint_dir, checkpoint_every, threads
        self.features: list[str] = []
        self.atoms: list[str] = []
        self.control_label = ""
        self.module: CausalVAEModule | None = None

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, data: CRLData, *, seed: int = 0, callbacks: Sequence[EpochCallback] = ()) -> CausalVAE:
        """Train on ``data``; ``callbacks(epoch, history)`` run after every epoch (e.g. to interrupt)."""
        anchors, label_atoms, cell_label = self._setup(data)
        device = resolve_device(self.params["device"])
        with deterministic(device), cpu_threads(self.threads):
            seed_everything(seed)
            arrays = {"x": data.X, "label": cell_label}
            if self.params["likelihood"] == "nb":
                arrays["counts"] = data.counts
                arrays["library"] = np.asarray(data.counts.sum(axis=1), dtype=np.float32).ravel()
            batches = CellBatches(arrays, device)
            mean, sd = _column_stats(data.X)
            projection = _principal_axes(data.X, mean, sd, self.params["mmd_dims"], seed)
            module = self._module(anchors, torch.from_numpy(mean), torch.from_numpy(sd), label_atoms, projection)
            self.module = module
            self._warm_start(data, anchors)
            if os.environ.get("INITB"):
                with torch.no_grad():
                    module.B.copy_(torch.from_numpy(np.load(os.environ["INITB"])).float())
                    module.W.abs_()
            module.to(device)
            train_rows, val_rows = split_cells(data.n_cells, self.params["val_fraction"], seed, data.intervention)
            self.history = train_module(
                module, batches, self._plan(), seed=seed, train_rows=train_rows, val_rows=val_rows,
                fingerprint=self._fingerprint(data, seed), callbacks=callbacks, desc="causal_vae",
            )  # fmt: skip
            means = self._posterior_means(batches)
        module.to("cpu")
        self._standardise_latents(means, data)
        self._prune_graph()
        return self

    def _setup(self, data: CRLData) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Check the data; set names; the anchor mask, the label x atom matrix and each cell's label index."""
        programs = [p for p, genes in data.anchors.items() if len(genes) >= 2]
        if not programs:
            raise ModelError("model causal_vae: needs at least one program with >= 2 anchor features (anchors.parquet)")
        if not data.is_control.any():
            raise ModelError("model causal_vae: needs control cells to measure interventions against")
        labels = data.perturbations
        if not labels:
            raise ModelError("model causal_vae: needs perturbed cells (every cell is a control)")
        self.features, self.latent_names, self.intervention_names = list(data.features), programs, labels
        self.control_label = str(data.intervention[data.is_control][0])
        components = {lab: tuple(data.targets.get(lab) or (lab,)) for lab in labels}
        self.atoms = sorted(set().union(*components.values()))
        atom_index = {a: i for i, a in enumerate(self.atoms)}
        label_atoms = torch.zeros(len(labels) + 1, len(self.atoms))
        for i, lab in enumerate(labels):
            label_atoms[i + 1, [atom_index[a] for a in components[lab]]] = 1.0
        index = {f: i for i, f in enumerate(self.features)}
        anchors = torch.zeros(len(self.features), len(programs))
        for k, program in enumerate(programs):
            anchors[[index[g] for g in data.anchors[program]], k] = 1.0
        label_index = {lab: i + 1 for i, lab in enumerate(labels)}
        cell_label = np.array([label_index.get(lab, 0) for lab in data.intervention], dtype=np.int64)
        cell_label[data.is_control] = 0
        return anchors, label_atoms, cell_label

    def _module(self, anchors, mean, sd, label_atoms, projection) -> CausalVAEModule:
        p = self.params
        return CausalVAEModule(
            anchors, mean, sd, label_atoms, projection, hidden=p["hidden"], encoder=p["encoder"],
            likelihood=p["likelihood"],
            nonlinearity=p["nonlinearity"], l1=p["l1"], kl_warmup=p["kl_warmup"], graph_l1=p["graph_l1"],
            mmd_weight=p["mmd_weight"], target_entropy=p["target_entropy"],
            target_warmup=p["target_warmup"],
        )  # fmt: skip

    @torch.no_grad()
    def _warm_start(self, data: CRLData, anchors: torch.Tensor) -> None:
        """Targets, shifts and the causal order from intervention mean shifts of anchor scores.

        Targets: the ``linear`` model's peeling (the latent a single perturbation moves least
        leakily). Order: perturbing a latent moves its descendants only, so the order is the one
        that contradicts the least total-effect evidence (:func:`_order_from_total_effects`).
        """
        module = self.module
        K = len(self.latent_names)
        labels, shifts, counts = _group_shifts(_anchor_scores(data, anchors.numpy()), data)
        n_targets = [int(module.label_atoms[i + 1].sum()) for i in range(len(labels))]
        B, targets = LinearSEM()._alternate(shifts, counts, n_targets)
        exo = shifts @ (np.eye(K) - B).T
        evidence, seen = np.zeros((K, K)), np.zeros(K)
        for i in range(len(labels)):
            atoms = torch.nonzero(module.label_atoms[i + 1]).flatten()
            if atoms.numel() != 1 or targets[i].sum() != 1:
                continue
            k = int(np.flatnonzero(targets[i])[0])
            module.target_logits[atoms[0], k] = _INIT_LOGIT
            module.shift[atoms[0]] = float(exo[i, k])
            evidence[k] += np.abs(shifts[i]) / max(abs(shifts[i, k]), 1e-6)  # total effects relative to the target's own
            seen[k] += 1
        evidence /= np.maximum(seen, 1)[:, None]
        np.fill_diagonal(evidence, 0.0)
        rank = np.empty(K, dtype=int)
        rank[_order_from_total_effects(evidence)] = np.arange(K)
        module.edge_mask.copy_(torch.from_numpy(rank[None, :] < rank[:, None]).float())

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
        """Posterior means of the latents given each cell's expression and label (``label`` or ``atoms``)."""
        self.module.eval()
        parts = []
        for b in batches.batches(torch.arange(batches.n), batch_size):
            atoms = b["atoms"] if "atoms" in b else self.module.label_atoms[b["label"]]
            parts.append(self.module.posterior(b["x"], atoms).mean.double().cpu())
        return torch.cat(parts).numpy()

    def _atom_rows(self, data: CRLData) -> np.ndarray:
        """Cells x atoms indicator of each cell's label (controls: none); labels may be unseen combinations."""
        index = {a: i for i, a in enumerate(self.atoms)}
        rows = np.zeros((data.n_cells, len(self.atoms)), dtype=np.float32)
        for label in np.unique(data.intervention[~data.is_control]):
            cells = np.flatnonzero((data.intervention == label) & ~data.is_control)
            rows[np.ix_(cells, [index[a] for a in self.atoms_of(str(label))])] = 1.0
        return rows

    # control standardisation and sign of the latents, loadings: as in sparse_vae
    _standardise_latents = SparseVAE._standardise_latents
    _scale = SparseVAE._scale
    get_loadings = SparseVAE.get_loadings

    @torch.no_grad()
    def _prune_graph(self) -> None:
        """Keep the edges whose |weight| in control SD units is at least ``edge_threshold``."""
        B = self._standardised_graph(self.module.graph().double())
        self.register_buffer("edge_kept", B.abs() >= self.params["edge_threshold"])

    def _latent_sd(self, B: torch.Tensor) -> torch.Tensor:
        """Control SD of each latent under the SEM prior (unit exogenous noise)."""
        inverse = torch.linalg.inv(torch.eye(B.shape[0], dtype=B.dtype) - B)
        return torch.sqrt((inverse**2).sum(1))

    def _standardised_graph(self, B: torch.Tensor) -> torch.Tensor:
        """B in control SD units of the latents, signed like the output latents."""
        sd = self._latent_sd(B)
        sign = torch.sign(self.latent_scale).to(B.dtype)
        return B * (sd * sign)[None, :] / (sd * sign)[:, None]

    # -- outputs ----------------------------------------------------------------------------------
    def get_latent_representation(self, data: CRLData) -> pd.DataFrame:
        """Posterior means of the causal latents given expression and label, in control SD units."""
        index = {f: i for i, f in enumerate(data.features)}
        missing = [f for f in self.features if f not in index]
        if missing:
            raise ModelError(f"model causal_vae: features missing from the data: {missing[:5]}")
        X = data.X if self.features == data.features else data.X[:, [index[f] for f in self.features]]
        batches = CellBatches({"x": X, "atoms": self._atom_rows(data)}, torch.device("cpu"))
        frame = pd.DataFrame(self._scale(self._posterior_means(batches)), columns=self.latent_names)
        frame.insert(0, "sample_id", data.sample_ids)
        return frame

    def get_adjacency(self) -> pd.DataFrame:
        B = self._standardised_graph(self.module.graph().detach().double()) * self.edge_kept
        return pd.DataFrame(B.numpy().T, index=self.latent_names, columns=self.latent_names)

    def get_targets(self) -> pd.DataFrame:
        """``score``: exogenous shift in control SDs of the latent; ``probability``: soft target choice."""
        with torch.no_grad():
            pi = self.module.target_probs().double()
            atoms = self.module.label_atoms[1:].double()
            sd = self._latent_sd(self.module.graph().double())
            sign = torch.sign(self.latent_scale).double()
            score = (atoms @ (pi * self.module.shift.double()[:, None])) * sign / sd
            prob = (atoms[:, :, None] * pi[None]).amax(1)
        rows = [
            (lab, lat, float(score[i, k]), float(prob[i, k]), bool(prob[i, k] >= 0.5))
            for i, lab in enumerate(self.intervention_names)
            for k, lat in enumerate(self.latent_names)
        ]
        return pd.DataFrame(rows, columns=["intervention", "latent", "score", "probability", "is_target"])

    # -- prediction -------------------------------------------------------------------------------
    def atoms_of(self, perturbation: str | Sequence[str]) -> list[str]:
        """Atoms of a label (``"A+B"``, a trained label, an atom) or of a list of them."""
        parts = perturbation.split("+") if isinstance(perturbation, str) else list(perturbation)
        label_atoms = {
            lab: [self.atoms[a] for a in torch.nonzero(self.module.label_atoms[i + 1]).flatten().tolist()]
            for i, lab in enumerate(self.intervention_names)
        }
        out: list[str] = []
        for part in parts:
            if part == self.control_label:
                continue
            found = label_atoms.get(part) or ([part] if part in self.atoms else None)
            if found is None:
                raise ModelError(
                    f"model causal_vae: cannot predict {perturbation!r}: {part!r} is neither a trained "
                    f"intervention nor a targeted gene of one (known: {self.atoms[:5]}...)"
                )
            out += [a for a in found if a not in out]
        return out

    @torch.no_grad()
    def predict(self, perturbation: str | Sequence[str], n_cells: int = 1000, *, seed: int = 0, noise: bool = True) -> np.ndarray:
        """Generate cells (n_cells x features, log-normalised units) for a perturbation, seen or not.

        ``"A+B"`` combines the single-atom effects of A and B (shifts add on their target latents),
        so a combination never seen in training can be predicted from its parts. ``noise=False``
        gives the decoder means (no observation noise).
        """
        module = self.module
        row = torch.zeros(len(self.atoms))
        index = {a: i for i, a in enumerate(self.atoms)}
        for atom in self.atoms_of(perturbation):
            row[index[atom]] = 1.0
        pi = module.target_probs()
        shift = (row @ (pi * module.shift[:, None])).expand(n_cells, -1)
        log_scale = (row @ (pi * module.log_scale[:, None])).expand(n_cells, -1)
        generator = torch.Generator().manual_seed(seed)
        out = module.generative(module.sample_latents(shift, log_scale, generator))
        if noise:
            out = out + torch.exp(module.log_dispersion) * torch.randn(out.shape, generator=generator)
        return (out * module.feature_sd + module.feature_mean).numpy().astype(np.float32)

    # -- checkpoints ------------------------------------------------------------------------------
    def _extra_state_json(self) -> dict[str, Any]:
        return {"features": self.features, "atoms": self.atoms, "control_label": self.control_label}

    def _load_extra_state_json(self, extra: dict[str, Any]) -> None:
        self.features, self.atoms = list(extra["features"]), list(extra["atoms"])
        self.control_label = str(extra["control_label"])

    def _allocate(self, state: dict[str, torch.Tensor]) -> None:
        anchors = state["module.anchors"]
        n = anchors.shape[0]
        self.module = self._module(
            anchors, torch.zeros(n), torch.ones(n), state["module.label_atoms"], state["module.projection"]
        )
        super()._allocate(state)


def _principal_axes(X: np.ndarray, mean: np.ndarray, sd: np.ndarray, dims: int, seed: int, n: int = 4096) -> torch.Tensor:
    """Top ``dims`` principal axes (features x dims) of the standardised data, from a seeded subsample."""
    rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], size=min(n, X.shape[0]), replace=False))
    Xs = (np.asarray(X[rows], dtype=np.float64) - mean) / sd
    _, singular, vt = np.linalg.svd(Xs - Xs.mean(0), full_matrices=False)
    dims = min(dims, vt.shape[0])
    per_dim_sd = np.sqrt(np.mean(singular[:dims] ** 2) / max(len(rows) - 1, 1))
    return torch.from_numpy(vt[:dims].T / max(per_dim_sd, 1e-6)).float()  # projected cells: variance ~1 per axis


def _anchor_scores(data: CRLData, anchors: np.ndarray) -> np.ndarray:
    """Mean standardised anchor expression per program, in control SD units (cells x programs)."""
    used = anchors.sum(1) > 0
    X = data.X[:, used]
    ctrl = X[data.is_control]
    X = (X - ctrl.mean(0)) / np.where(ctrl.std(0) > 0, ctrl.std(0), 1.0)
    scores = X @ (anchors[used] / anchors[used].sum(0))
    ctrl = scores[data.is_control]
    return (scores - ctrl.mean(0)) / np.where(ctrl.std(0) > 0, ctrl.std(0), 1.0)


def _order_from_total_effects(evidence: np.ndarray, exact_up_to: int = 16) -> list[int]:
    """Causal order (sources first) that contradicts the least ancestor evidence.

    ``evidence[i, j]`` says how strongly i looks like an ancestor of j (|total effect|); an order
    costs the summed evidence of the pairs it puts the wrong way round. Exact by dynamic
    programming over subsets for up to ``exact_up_to`` latents, greedy (least-evidenced
    descendant first) beyond.
    """
    K = evidence.shape[0]
    if K > exact_up_to:
        order, rest = [], list(range(K))
        while rest:
            j = min(rest, key=lambda j: (evidence[rest, j].sum(), j))
            order.append(j)
            rest.remove(j)
        return order
    full = (1 << K) - 1
    cost = np.full(1 << K, np.inf)
    cost[0] = 0.0
    last = np.zeros(1 << K, dtype=int)
    members = ((np.arange(1 << K)[:, None] >> np.arange(K)) & 1).astype(bool)
    for S in range(full):  # placing j next, after the set S, contradicts the evidence that a later i is j's ancestor
        if not np.isfinite(cost[S]):
            continue
        rest = ~members[S]
        step = cost[S] + evidence[rest].sum(0) - evidence.diagonal()
        for j in np.flatnonzero(rest):
            T = S | (1 << j)
            if step[j] < cost[T]:
                cost[T], last[T] = step[j], j
    order, S = [], full
    while S:
        order.append(int(last[S]))
        S ^= 1 << int(last[S])
    return order[::-1]
