"""Torch modules (inference, generative, loss) of the anchored VAEs, apart from the user-facing models.

:class:`AnchoredVAEModule` is ``sparse_vae``'s module: an encoder, an anchor-masked decoder and the
negative ELBO. :class:`CausalVAEModule` is ``causal_vae``'s: the same encoder and decoder with a
latent SEM prior per intervention label, a target encoder, an MMD and minimality penalties.
The user-facing classes (:mod:`._vae`, ``sparse_vae``, ``causal_vae``) build, train and read them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ._layers import AnchorEncoder, LatentLink, SharedEncoder

#: Options of the modules, as the model parameters name them.
LIKELIHOODS = ("gaussian", "nb")
NONLINEARITIES = ("mlp", "none")
ENCODERS = ("anchors", "all")
_N_FOURIER = 192  # random Fourier features of the MMD kernel


class AnchoredVAEModule(nn.Module):
    """Encoder, anchor-masked decoder and negative ELBO: the sparse VAE, and the base of :class:`CausalVAEModule`.

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


class Posterior(NamedTuple):
    """Gaussian posterior of a batch: mean, Cholesky factor of the precision, and the prior it came from."""

    mean: torch.Tensor  # cells x K
    chol: torch.Tensor  # cells x K x K, lower triangular: precision = chol @ chol.T
    shift: torch.Tensor  # cells x K, exogenous shift of each cell's label
    log_scale: torch.Tensor  # cells x K, log exogenous SD
    P: torch.Tensor  # K x K, I - B


class CausalVAEModule(AnchoredVAEModule):
    """The anchored VAE of ``sparse_vae`` with a latent SEM prior per intervention label.

    Parameters
    ----------
    anchors, feature_mean, feature_sd, hidden, encoder, nonlinearity, l1, kl_warmup
        As for :class:`AnchoredVAEModule` (Gaussian likelihood).
    label_atoms
        Labels x atoms, 1 where the label contains the atom; row 0 is the control (no atom).
    atom_genes
        Atoms x features, 1 where the feature is the atom's own gene (a knockdown lowers it directly,
        not through a program).
    projection
        Features x d: principal axes of the standardised data, where the MMD compares cells.
    graph_l1
        L1 penalty on the graph weights, per cell.
    mmd_weight
        Weight of the MMD between generated and observed cells of each label.
    target_entropy
        Weight of the mean entropy of the atoms' target choices (pushes each to one latent).
    target_warmup
        Epochs during which the target choices stay at their warm start (``None``: all of them).
    """

    def __init__(
        self,
        anchors: torch.Tensor,
        feature_mean: torch.Tensor,
        feature_sd: torch.Tensor,
        label_atoms: torch.Tensor,
        atom_genes: torch.Tensor,
        projection: torch.Tensor,
        *,
        hidden: int,
        encoder: str,
        nonlinearity: str,
        l1: float,
        kl_warmup: int,
        graph_l1: float,
        mmd_weight: float,
        target_entropy: float,
        target_warmup: int | None,
    ) -> None:
        super().__init__(
            anchors, feature_mean, feature_sd, hidden=hidden, encoder=encoder, likelihood="gaussian",
            nonlinearity=nonlinearity, l1=l1, kl_warmup=kl_warmup,
        )  # fmt: skip
        K, A = anchors.shape[1], label_atoms.shape[1]
        self.graph_l1 = graph_l1
        self.mmd_weight, self.target_entropy, self.target_warmup = mmd_weight, target_entropy, target_warmup
        self.register_buffer("label_atoms", label_atoms.float())
        self.register_buffer("atom_genes", atom_genes.float())
        self.knockdown = nn.Parameter(torch.zeros(A))  # a guide's direct effect on its own gene
        self.register_buffer("projection", projection.float())
        # random Fourier frequencies of RBF kernels with bandwidths 0.5, 1 and 2 x sqrt(d) (d projected dims)
        d = projection.shape[1]
        scales = torch.tensor([0.5, 1.0, 2.0]).repeat_interleave(_N_FOURIER // 3) * math.sqrt(d)
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("frequencies", torch.randn(d, scales.numel(), generator=generator) / scales)
        self.register_buffer("edge_mask", torch.zeros(K, K))  # edge_mask[j, i] = 1: i precedes j in the order
        self.B = nn.Parameter(torch.zeros(K, K))
        self.target_logits = nn.Parameter(torch.zeros(A, K))
        self.register_buffer("target_fixed", torch.zeros(A, dtype=torch.bool))  # warm-started choices
        self.shift = nn.Parameter(torch.zeros(A))
        self.log_scale = nn.Parameter(torch.zeros(A))

    # -- the SEM prior ------------------------------------------------------------------------------
    def graph(self) -> torch.Tensor:
        """Graph weights B (K x K, B[j, i] = effect of latent i on latent j)."""
        return self.B * self.edge_mask

    def target_probs(self, frozen: bool = False) -> torch.Tensor:
        """Soft target choice of each atom (atoms x K); ``frozen``: warm-started choices get no gradient."""
        logits = self.target_logits
        if frozen:
            logits = torch.where(self.target_fixed[:, None], logits.detach(), logits)
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
        with _float32(x.device):  # Cholesky factors need more than bf16
            K = mean.shape[1]
            precision = torch.exp(-log_var)
            shift, log_scale = self.prior(atoms.float(), frozen)
            P = torch.eye(K, device=mean.device) - self.graph()
            inv_var = torch.exp(-2.0 * log_scale)
            prior_precision = torch.einsum("ki,nk,kj->nij", P, inv_var, P)  # (I - B)^T D^-2 (I - B)
            chol = torch.linalg.cholesky(prior_precision + torch.diag_embed(precision))
            rhs = precision * mean + (shift * inv_var) @ P
            mu = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
        return Posterior(mu, chol, shift, log_scale, P)

    @staticmethod
    def kl(q: Posterior) -> torch.Tensor:
        """KL(q(z | x, label) || p(z | label)) per cell, the prior taken through eps = (I - B) z."""
        with _float32(q.mean.device):
            inv_sd = torch.exp(-q.log_scale)
            quad = ((q.mean @ q.P.T - q.shift) * inv_sd).pow(2).sum(-1)
            # tr(prior precision x posterior covariance) = |L^-1 (I - B)^T D^-1|^2, L L^T the posterior precision
            half = torch.linalg.solve_triangular(q.chol, q.P.T.unsqueeze(0) * inv_sd.unsqueeze(1), upper=False)
            trace = half.pow(2).sum((-2, -1))
            log_diag = torch.log(torch.diagonal(q.chol, dim1=-2, dim2=-1))
            log_det_ratio = 2.0 * q.log_scale.sum(-1) + 2.0 * log_diag.sum(-1)
            return 0.5 * (trace + quad - q.mean.shape[1] + log_det_ratio)  # log det(I - B) = 0 on a DAG

    @staticmethod
    def sample(q: Posterior) -> torch.Tensor:
        """One draw per cell: mean + L^-T noise has the posterior covariance (L L^T)^-1."""
        noise = torch.randn_like(q.mean).unsqueeze(-1)
        with _float32(q.mean.device):
            return q.mean + torch.linalg.solve_triangular(q.chol.mT, noise, upper=True).squeeze(-1)

    def direct(self, atoms: torch.Tensor) -> torch.Tensor:
        """Direct effect of each cell's atoms on their own genes (cells x features, standardised units)."""
        return (atoms * self.knockdown) @ self.atom_genes

    # -- losses -----------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor], epoch: int) -> torch.Tensor:
        """Negative ELBO per cell; in training plus the MMD and the minimality penalties."""
        x, label = batch["x"], batch["label"]
        atoms = self.label_atoms[label]
        if not self.training:  # validation: the ELBO at the posterior mean, free of epoch-dependent terms
            q = self.posterior(x, atoms)
            return (self._nll(self.generative(q.mean) + self.direct(atoms), batch) + self.kl(q)).mean()
        frozen = self.target_warmup is None or epoch <= self.target_warmup  # targets first stay at their warm start
        q = self.posterior(x, atoms, frozen)
        beta = min(1.0, epoch / self.kl_warmup) if self.kl_warmup > 0 else 1.0
        out = self.generative(self.sample(q)) + self.direct(atoms)
        loss = (self._nll(out, batch) + beta * self.kl(q)).mean()
        if self.mmd_weight > 0:
            loss = loss + self.mmd_weight * self.mmd(x, label, q.shift, q.log_scale)
        return loss + self.penalties(frozen)

    def mmd(self, x: torch.Tensor, label: torch.Tensor, shift: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """MMD between generated and observed cells of each label in the batch, weighted by label size.

        Random Fourier features of an RBF kernel (three bandwidths) make it linear in the batch size:
        MMD^2 of label l = |mean phi(generated_l) - mean phi(observed_l)|^2.
        """
        gen = self.generative(self.sample_latents(shift, log_scale)) + self.direct(self.label_atoms[label])
        gen = gen + torch.exp(self.log_dispersion) * torch.randn_like(gen)
        diff = self._features(gen) - self._features(self.standardise(x))
        n_labels = self.label_atoms.shape[0]
        sums = diff.new_zeros(n_labels, diff.shape[1]).index_add_(0, label, diff)
        counts = torch.bincount(label, minlength=n_labels).to(diff.dtype)
        return (sums.pow(2).sum(-1) / counts.clamp(min=1.0)).sum() / x.shape[0]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        with _float32(x.device):  # cos/sin of bf16 arguments would be noise
            proj = (x.float() @ self.projection) @ self.frequencies
            return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1) / math.sqrt(self.frequencies.shape[1])

    def penalties(self, frozen: bool = False) -> torch.Tensor:
        """Minimality: L1 on the decoder and the graph, entropy of the target choices."""
        pi = self.target_probs(frozen)
        entropy = -(pi * torch.log(pi + 1e-12)).sum(-1).mean()
        sparsity = self.l1 * self.weights().abs().sum() + self.graph_l1 * self.graph().abs().sum()
        return sparsity + self.target_entropy * entropy


def _float32(device: torch.device) -> torch.autocast:
    """Autocast off (float32) for the posterior's small linear algebra, also inside a bf16 region."""
    return torch.autocast(device_type=device.type, enabled=False)
