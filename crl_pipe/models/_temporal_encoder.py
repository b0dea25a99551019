"""Learned latents for ``temporal`` from sensor channels that mix the causal variables (iVAE / CITRIS-style).

An autoencoder ``z_t = enc(x_t)``, ``x_t ~ dec(z_t)`` (small MLPs on standardised sensors) is
trained with a conditional prior on each named latent, in which the observed commands are the
auxiliary variable of iVAE (Khemakhem et al., 2020) and the intervention labels say which latent
each command acts on (CITRIS, Lippe et al., 2022)::

    z_t[j] ~ N( c_j + sum_{l=0..H} w_{jl} . a_{t-l}[drivers(j)],  s_j^2 )        (latents standardised)

Action channel k drives latent j when it changes on frames labelled as intervening on j
(:func:`action_mask`); ``w``, ``c`` and ``s_j`` are profiled out in closed form, so the prior's
negative log-likelihood is ``0.5 log(1 - R²_j)``, with ``R²_j`` the share of latent j's variance that
the last ``H`` frames of its own commands explain. The sensors' Gaussian likelihood with learned
variances gives ``0.5 sum_s log mse_s``. Training (full-batch Adam, deterministic on CPU) first
maximises the prior alone (a nonlinear CCA of the sensors with each latent's command history: the
encoder's j-th output becomes the best guess of joint j from the commands, which a servo tracks)
and then adds the reconstruction, which trains the decoder and the unnamed latents only: the named
latents reach the decoder detached, so the reconstruction does not pull them off their prior (on the
arm it did: the wrist's R² fell from 0.97 to 0.92 on one seed).

What is identified. A named latent that mixed in another variable would keep a share of variance
that its own commands cannot explain (the other variable moves with other commands), so the
maximum of the prior singles out each commanded variable up to an affine map of itself (the linear
prior pins the scale and offset; the sign is fixed to rise with its commands); its name comes from
the labels. Assumptions: every named latent is moved by its own, labelled commands; the sensors are
an injective, smooth function of the variables; other causes of a named variable (the arm's small
inertial couplings) are not in the prior, so the encoder may trade a little of them away, which
shows as weak spurious edges between joints (weights ~0.1 on the arm, hence a higher
``edge_threshold`` with ``sensors``). Variables nobody intervenes on (the arm's gate and light) get
the extra latents ``z1``, ``z2`` ... with no prior: they hold some of what the sensors carry beyond
the named latents (gate, light, drifting ambient light, the joints' nonlinearity), mixed and not
identified (on the arm their R² with the gate or light is mostly < 0.3); evaluation cannot map them
to true variables, so their edges count against the graph.
"""

from __future__ import annotations

import numpy as np
import torch

from .._errors import ModelError
from ._data import frame_steps
from ._training import cpu_threads


class TemporalEncoder(torch.nn.Module):
    """Sensors -> latents (and back), with the buffers that standardise both."""

    def __init__(self, n_sensors: int, n_latents: int, hidden: int) -> None:
        super().__init__()
        self.enc = torch.nn.Sequential(
            torch.nn.Linear(n_sensors, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, n_latents)
        )
        self.dec = torch.nn.Sequential(
            torch.nn.Linear(n_latents, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, n_sensors)
        )
        for name, size in (("x_mean", n_sensors), ("x_sd", n_sensors), ("z_mean", n_latents), ("z_sd", n_latents)):
            self.register_buffer(name, torch.zeros(size, dtype=torch.float64))
        self.register_buffer("z_sign", torch.ones(n_latents, dtype=torch.float64))
        self.register_buffer("loadings", torch.zeros(n_latents, n_sensors, dtype=torch.float64))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc((x - self.x_mean.float()) / self.x_sd.float())

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Latents of sensor rows (standardised over the training frames, sign-fixed)."""
        with torch.no_grad():
            z = self.raw(torch.as_tensor(x, dtype=torch.float32)).double()
        return ((z - self.z_mean) / self.z_sd * self.z_sign).numpy()


def latent_names(data, n_latents: int | None) -> tuple[list[str], int]:
    """Named latents (every variable the intervention labels target, sorted) plus free ``z1``.. up to ``n_latents``."""
    named = sorted({t for lab in data.perturbations for t in data.targets.get(lab, ())})
    n = len(named) if n_latents is None else int(n_latents)
    if n < max(len(named), 1):
        raise ModelError(
            f"model temporal: n_latents={n} but the intervention labels target {len(named)} variables "
            f"({named[:5]}); expected n_latents >= {max(len(named), 1)}"
        )
    return named + [f"z{i + 1}" for i in range(n - len(named))], len(named)


def action_mask(da: np.ndarray, shift: np.ndarray, n_named: int, ratio: float = 3.0) -> np.ndarray:
    """actions x latents: action k may drive latent j when its mean |step| on frames labelled j is
    ``ratio`` times that on other frames (a set-point command of joint j changes on j's labels)."""
    mask = np.zeros((da.shape[1], shift.shape[1]), dtype=bool)
    for j in range(n_named):
        on = shift[:, j] > 0
        if on.any() and (~on).any():
            mask[:, j] = np.abs(da[on]).mean(axis=0) > ratio * np.abs(da[~on]).mean(axis=0)
    return mask


def fit_encoder(
    x: np.ndarray,
    a: np.ndarray,
    shift: np.ndarray,
    segments: list[tuple[int, int]],
    n_named: int,
    *,
    history: int,
    hidden: int,
    epochs: int,
    lr: float,
    prior_weight: float,
    seed: int,
) -> tuple[TemporalEncoder, np.ndarray]:
    """Train the encoder (full batch, Adam, deterministic on CPU); returns it and the training losses."""
    m = shift.shape[1]
    rows = _windows(segments, history + 1)
    if len(rows) < 10 * m:
        raise ModelError(
            f"model temporal: {len(rows)} complete windows for an encoder of {m} latents; expected longer episodes"
        )
    mask = action_mask(frame_steps(a, segments), shift, n_named)
    bases = [_history_basis(a[:, mask[:, j]], rows, history) for j in range(n_named)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = TemporalEncoder(x.shape[1], m, hidden)
    enc.x_mean.copy_(torch.as_tensor(x.mean(axis=0)))
    enc.x_sd.copy_(torch.as_tensor(np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)))
    xs = ((torch.as_tensor(x) - enc.x_mean) / enc.x_sd).float()
    idx = torch.as_tensor(rows)
    Q = [torch.as_tensor(q, dtype=torch.float32) for q in bases]
    opt = torch.optim.Adam(enc.parameters(), lr=lr)
    losses = np.empty(epochs)
    with cpu_threads(1):  # a few thousand frames: one thread is fastest, and never fights other jobs
        for epoch in range(epochs):  # the first WARM_UP fraction: the prior alone (a nonlinear CCA)
            recon_weight = 0.0 if epoch < WARM_UP * epochs else 1.0
            losses[epoch] = _step(enc, opt, xs, idx, Q, prior_weight, recon_weight)
    with torch.no_grad():
        raw = enc.enc(xs).double()
        enc.z_mean.copy_(raw.mean(0))
        enc.z_sd.copy_(raw.std(0) + 1e-6)
    return enc, losses


def _history_basis(a: np.ndarray, rows: np.ndarray, history: int) -> np.ndarray:
    """Orthonormal basis of [1, a(t), a(t-1) .. a(t-history)] over the frames ``rows``."""
    U = np.hstack([np.ones((len(rows), 1))] + [a[rows - lag] for lag in range(history + 1)])
    q, r = np.linalg.qr(U)
    return q[:, np.abs(np.diag(r)) > 1e-8 * np.abs(r).max()]


def _step(enc, opt, xs, idx, Q, prior_weight, recon_weight) -> float:
    """One full-batch step: Gaussian negative log-likelihoods of the sensors and of the named latents."""
    opt.zero_grad()
    raw = enc.enc(xs)
    z = (raw - raw.mean(0)) / (raw.std(0) + 1e-6)  # unit variance: the prior cannot shrink the latents
    n = len(Q)  # the named latents answer to the prior alone: the reconstruction moves the decoder and z1..
    recon = ((enc.dec(torch.cat([z[:, :n].detach(), z[:, n:]], 1)) - xs) ** 2).mean(0)
    zi = z[idx] - z[idx].mean(0)
    # profile likelihood of latent j ~ N(linear in its commands' history, learned variance):
    # log of the fraction of its variance that the history leaves unexplained
    prior = [torch.log(1.0 - ((q.T @ zi[:, j]) ** 2).sum() / (zi[:, j] ** 2).sum() + 1e-4) for j, q in enumerate(Q)]
    loss = recon_weight * 0.5 * torch.log(recon + 1e-4).sum() + prior_weight * 0.5 * torch.stack(prior).sum()
    loss.backward()
    opt.step()
    return float(loss.detach())


def orient(enc: TemporalEncoder, z: np.ndarray, a: np.ndarray, mask: np.ndarray) -> None:
    """Fix each named latent's sign so that it rises with the commands that drive it."""
    for j in range(mask.shape[1]):
        drivers = np.flatnonzero(mask[:, j])
        if drivers.size:
            c = np.corrcoef(z[:, j], a[:, drivers].sum(axis=1))[0, 1]
            enc.z_sign[j] = -1.0 if c < 0 else 1.0


def decoder_loadings(enc: TemporalEncoder, x: np.ndarray) -> np.ndarray:
    """latents x sensors: mean |d x_hat / d z| over the frames, in sensor units per latent SD."""
    with torch.no_grad():
        z = torch.as_tensor(enc.transform(x), dtype=torch.float32)
    jac = torch.func.vmap(torch.func.jacrev(lambda v: enc.dec(v * enc.z_sign.float())))(z)  # frames x d x m
    return (jac.abs().mean(0).double() * enc.x_sd[:, None]).T.detach().numpy()


def _windows(segments: list[tuple[int, int]], width: int) -> np.ndarray:
    """Rows i with frames i - width + 1 .. i inside one segment."""
    return np.concatenate([np.arange(s + width, e) for s, e in segments if e - s > width] or [np.zeros(0, int)])


#: Training settings of the encoder (full-batch Adam): learning rate; weight of the prior against the
#: reconstruction; frames of command history in the prior (a servo settles in ~0.2-0.4 s); fraction of
#: the steps that fit the prior alone before the reconstruction joins.
LR, PRIOR_WEIGHT, HISTORY, WARM_UP = 1e-2, 1.0, 12, 0.3


def learn_latents(data, sensors: str | list[str], action_names: list[str], segments, params: dict, seed: int):
    """Fit the encoder on ``data``'s sensor channels; returns (encoder, sensor names, latent names, latents)."""
    features = list(data.features)
    names = [f for f in features if f.startswith(sensors)] if isinstance(sensors, str) else list(sensors)
    missing = [f for f in names if f not in features]
    if not names or missing:
        raise ModelError(
            f"model temporal: sensors={sensors!r} matches no feature of the data (missing {missing[:5]}); "
            f"expected a prefix or names among {features[:5]} ..."
        )
    if params.get("latents") is not None:
        raise ModelError("model temporal: give either latents (measured state channels) or sensors (learned latents)")
    index = {f: i for i, f in enumerate(features)}
    x = np.asarray(data.X[:, [index[n] for n in names]], dtype=np.float64)
    a = np.asarray(data.X[:, [index[n] for n in action_names]], dtype=np.float64).reshape(data.n_cells, -1)
    latents, n_named = latent_names(data, params.get("n_latents"))
    shift = _labels(data, latents)
    enc, losses = fit_encoder(
        x,
        a,
        shift,
        segments,
        n_named,
        history=HISTORY,
        hidden=int(params.get("encoder_hidden", 64)),
        epochs=int(params.get("encoder_epochs", 1000)),
        lr=LR,
        prior_weight=PRIOR_WEIGHT,
        seed=seed,
    )
    z = enc.transform(x)
    orient(enc, z, a, action_mask(frame_steps(a, segments), shift, n_named))
    enc.loadings.copy_(torch.as_tensor(decoder_loadings(enc, x)))
    enc.losses = losses
    return enc, names, latents, enc.transform(x)


def _labels(data, latents: list[str]) -> np.ndarray:
    """Frames x latents 0/1: the frame's intervention label targets the latent."""
    col = {name: k for k, name in enumerate(latents)}
    out = np.zeros((data.n_cells, len(latents)))
    for i, lab in enumerate(data.intervention):
        if not data.is_control[i]:
            out[i, [col[t] for t in data.targets.get(lab, ()) if t in col]] = 1.0
    return out
