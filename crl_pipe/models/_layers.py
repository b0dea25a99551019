"""Reusable torch layers of the anchored VAEs (``sparse_vae``, ``causal_vae``): encoders and the latent link."""

from __future__ import annotations

import torch
from torch import nn


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
