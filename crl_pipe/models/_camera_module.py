"""The torch side of ``camera``: a convolutional autoencoder of camera frames with a command prior.

``FrameAutoencoder`` maps frames (``size x size`` RGB, several cameras stacked as channels) to
latents and back. :func:`fit_frames` trains it on minibatches of frames with the objective of the
sensor route of ``temporal`` (:mod:`crl_pipe.models._temporal_encoder`), moved to pixels:

* the prior of each named latent j: ``z_t[j] ~ N(linear in the history of the commands labelled as
  intervening on j, s_j^2)``; with the linear map and variance profiled out on the batch, its
  negative log-likelihood is ``0.5 log(1 - R²_j)``, the share of latent j's (batch-standardised)
  variance that its own commands leave unexplained;
* the reconstruction: ``0.5 log mse`` of the decoded frames (a Gaussian likelihood with one learned
  variance), joining after a warm-up in which the prior alone shapes the encoder; the named latents
  reach the decoder detached, so the reconstruction trains the decoder and the unnamed latents only.

Batches are drawn from the frames with a full command history; the history bases are orthonormalised
per batch (a QR of at most ``history + 1`` columns per latent, cheap beside the convolutions).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

#: Spatial size (pixels) the encoder pools down to and the decoder starts from.
_BASE = 4
#: Fraction of the steps, after the prior's warm-up, in which the decoder draws from the named latents
#: alone (the unnamed ones then learn what those leave unexplained, not a copy of them).
DECODER_WARM_UP = 0.2
#: Variance (in [-0.5, 0.5] pixel units) added to each pixel's before it weighs the reconstruction: a
#: pixel that never changes but for video-codec noise (~2/255) does not get a large weight.
PIXEL_VARIANCE_FLOOR = (8 / 255) ** 2


class FrameAutoencoder(nn.Module):
    """Frames (n x size x size x channels uint8) <-> latents, with the buffers that standardise the latents.

    Parameters
    ----------
    size
        Edge of the square frames (pixels).
    channels
        Image channels (3 per camera).
    n_latents
        Latents.
    width
        Feature maps of the first convolution; deeper ones have up to twice as many.
    """

    def __init__(self, size: int, channels: int, n_latents: int, width: int = 32) -> None:
        super().__init__()
        self.size, self.channels = size, channels
        n_down = max(1, round(math.log2(max(size, 2 * _BASE) / _BASE)))
        widths = [min(width * 2 ** (i // 2), 2 * width) for i in range(n_down)]
        layers: list[nn.Module] = []
        c = channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 4, stride=2, padding=1), nn.SiLU()]
            c = w
        self.enc = nn.Sequential(
            *layers,
            nn.AdaptiveAvgPool2d(_BASE),
            nn.Flatten(),
            nn.Linear(c * _BASE * _BASE, 128),
            nn.SiLU(),
            nn.Linear(128, n_latents),
        )
        up: list[nn.Module] = []
        for w in reversed(widths[:-1]):
            up += [nn.ConvTranspose2d(c, w, 4, stride=2, padding=1), nn.SiLU()]
            c = w
        up += [nn.ConvTranspose2d(c, channels, 4, stride=2, padding=1)]
        self.dec_in = nn.Sequential(nn.Linear(n_latents, 128), nn.SiLU(), nn.Linear(128, widths[-1] * _BASE * _BASE))
        self.dec = nn.Sequential(*up)
        self.top = widths[-1]
        # the mean frame: the decoder draws the departures from it (the static scene comes for free)
        self.register_buffer("mean_frame", torch.zeros(channels, size, size))
        # each pixel is a sensor: its squared error counts in units of its variance over the frames, so
        # a rarely changing part of the scene (a lamp, a gate) weighs as much as the busy arm
        self.register_buffer("pixel_weight", torch.ones(channels, size, size))
        self.register_buffer("z_mean", torch.zeros(n_latents, dtype=torch.float64))
        self.register_buffer("z_sd", torch.ones(n_latents, dtype=torch.float64))
        self.register_buffer("z_sign", torch.ones(n_latents, dtype=torch.float64))

    @staticmethod
    def pixels(frames: torch.Tensor) -> torch.Tensor:
        """uint8 n x H x W x C -> float n x C x H x W in [-0.5, 0.5]."""
        return frames.permute(0, 3, 1, 2).float() / 255.0 - 0.5

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Raw latents (before standardisation) of uint8 frames."""
        return self.enc(self.pixels(frames))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Frames (n x C x H x W, in [-0.5, 0.5]) of batch-standardised latents."""
        h = self.dec_in(z).view(-1, self.top, _BASE, _BASE)
        x = self.dec(h)
        if x.shape[-1] != self.size:
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x + self.mean_frame

    @torch.no_grad()
    def transform(self, frames: np.ndarray, device: torch.device | str = "cpu", batch: int = 512) -> np.ndarray:
        """Standardised, sign-fixed latents of uint8 frames (rows x latents, float64)."""
        self.eval()
        parts = []
        for s in range(0, len(frames), batch):
            block = torch.from_numpy(np.ascontiguousarray(frames[s : s + batch])).to(device)
            parts.append(self.encode(block).double().cpu())
        z = torch.cat(parts) if parts else torch.zeros(0, len(self.z_mean), dtype=torch.float64)
        return ((z - self.z_mean) / self.z_sd * self.z_sign).numpy()

    @torch.no_grad()
    def render(self, z: np.ndarray) -> np.ndarray:
        """uint8 frames (n x H x W x C) the decoder draws for standardised, sign-fixed latents ``z``."""
        self.eval()
        device = next(self.parameters()).device
        x = self.decode((torch.as_tensor(z, dtype=torch.float64) * self.z_sign).float().to(device)).cpu()
        return ((x + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def history_features(a: np.ndarray, rows: np.ndarray, history: int) -> np.ndarray:
    """Rows x (1 + (history + 1) * actions): a constant and the actions at lags 0..history, standardised."""
    U = np.hstack([a[rows - lag] for lag in range(history + 1)]) if a.shape[1] else np.zeros((len(rows), 0))
    sd = U.std(axis=0)
    U = (U - U.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return np.hstack([np.ones((len(rows), 1)), U[:, sd > 0]])


def prior_nll(z: torch.Tensor, bases: list[torch.Tensor | None]) -> torch.Tensor:
    """Sum over named latents j of 0.5 log(1 - R²_j): z[:, j] (batch-standardised) on its command history
    ``bases[j]`` (``None``: a latent that events drive, see :func:`change_nll`)."""
    terms = []
    for j, H in enumerate(bases):
        if H is None:
            continue
        q, r = torch.linalg.qr(H)
        keep = torch.abs(torch.diagonal(r)) > 1e-6 * torch.abs(r).max()
        q = q[:, keep]
        zj = z[:, j] - z[:, j].mean()
        r2 = ((q.T @ zj) ** 2).sum() / ((zj**2).sum() + 1e-8)
        terms.append(0.5 * torch.log(1.0 - r2 + 1e-4))
    return torch.stack(terms).sum() if terms else z.new_zeros(())


def change_nll(z: torch.Tensor, z_prev: torch.Tensor, quiet: dict[int, torch.Tensor]) -> torch.Tensor:
    """Sum over event-driven latents j of 0.5 log(mean step² on the frames no event of j touched): a
    variable an event switches or shifts moves when its events come and holds still otherwise."""
    terms = []
    for j, q in quiet.items():
        if q.any():
            step = (z[:, j] - z_prev[:, j])[q]
            terms.append(0.5 * torch.log((step**2).mean() + 1e-4))
    return torch.stack(terms).sum() if terms else z.new_zeros(())


def step_loss(
    module: FrameAutoencoder,
    frames: torch.Tensor,
    bases: list[torch.Tensor | None],
    phase: int,
    prev: torch.Tensor | None = None,
    quiet: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Loss of one batch in ``phase`` 0 (the named latents' prior alone), 1 (+ the reconstruction from
    the named latents only) or 2 (+ the reconstruction from all latents, the unnamed ones kept
    linearly uncorrelated with the named ones). ``prev``: the frames just before the batch's, for the
    latents that events drive (``quiet``: latent -> whether no event of it touched each row)."""
    raw = module.encode(frames)
    mean, sd = raw.mean(0), raw.std(0) + 1e-6
    z = (raw - mean) / sd  # unit variance: the prior cannot shrink the latents
    loss = prior_nll(z, bases)
    if quiet:
        loss = loss + change_nll(z, (module.encode(prev) - mean) / sd, quiet)
    if phase == 0:
        return loss
    n = len(bases)  # the named latents answer to the prior alone: the decoder sees them detached
    free = z[:, n:] if phase == 2 else torch.zeros_like(z[:, n:])
    x_hat = module.decode(torch.cat([z[:, :n].detach(), free], 1))
    mse = (module.pixel_weight * (x_hat - module.pixels(frames)) ** 2).mean()
    loss = loss + 0.5 * torch.log(mse + 1e-6)
    if phase == 2 and n and raw.shape[1] > n:
        # what the unnamed latents hold beyond the named ones: no linear copy of a named latent
        corr = z[:, n:].T @ z[:, :n].detach() / len(z)
        loss = loss + (corr**2).sum()
    return loss


def fit_frames(
    module: FrameAutoencoder,
    frames: np.ndarray,
    bases: list[np.ndarray | None],
    rows: np.ndarray,
    *,
    quiet: dict[int, np.ndarray] | None = None,
    steps: int,
    batch_size: int,
    lr: float,
    warm_up: float,
    seed: int,
    device: torch.device,
    log_every: int = 10,
) -> np.ndarray:
    """Train ``module`` (on ``device``) for ``steps`` minibatches of the frames ``rows`` (drawn without
    replacement, pass after pass; ``bases[j]``: rows x features, the command history of named latent j,
    or None for a latent that events drive, whose ``quiet[j]`` says which rows no event of it touched;
    rows - 1 must be the previous frame of the same episode). Returns the mean loss of each block of
    ``log_every`` steps."""
    store = torch.from_numpy(np.ascontiguousarray(frames))  # uint8 on the host; batches go to the device
    with torch.no_grad():
        chunks = range(0, len(store), 1024)
        mean = sum(module.pixels(store[s : s + 1024]).sum(0) for s in chunks) / len(store)
        var = sum(((module.pixels(store[s : s + 1024]) - mean) ** 2).sum(0) for s in chunks) / len(store)
        module.mean_frame.copy_(mean)
        weight = 1.0 / (var + PIXEL_VARIANCE_FLOOR)
        module.pixel_weight.copy_(weight / weight.mean())
    Q = [None if b is None else torch.as_tensor(b, dtype=torch.float32) for b in bases]
    still = {j: torch.as_tensor(q, dtype=torch.bool) for j, q in (quiet or {}).items()}
    index = torch.from_numpy(rows)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(rows))
    per_pass = len(rows) // batch_size  # full batches only: the prior's R² needs enough rows
    losses = np.zeros(-(-steps // log_every))
    module.train()
    for step in range(steps):
        if step % per_pass == 0:
            order = torch.randperm(len(rows), generator=generator)
        pick = order[(step % per_pass) * batch_size : (step % per_pass + 1) * batch_size]
        batch = store[index[pick]].to(device, non_blocking=True)
        prev = store[index[pick] - 1].to(device, non_blocking=True) if still else None
        # the prior alone; then the decoder learns to draw from the named latents; then all latents
        phase = 0 if step < warm_up * steps else 1 if step < (warm_up + DECODER_WARM_UP) * steps else 2
        bases_b = [None if q is None else q[pick].to(device) for q in Q]
        quiet_b = {j: q[pick].to(device) for j, q in still.items()}
        loss = step_loss(module, batch, bases_b, phase, prev, quiet_b)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[step // log_every] += float(loss.detach()) / min(log_every, steps - (step // log_every) * log_every)
    return losses
