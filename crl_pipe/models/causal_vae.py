"""``causal_vae``: an interventional causal VAE (in the spirit of the discrepancy VAE, Zhang et al. 2023).

Generative model (one cell with intervention label l, K latents, one per anchored program):
    eps ~ N(s_l, diag(sigma_l^2))       exogenous noise; controls: s = 0, sigma = 1
    z = (I - B)^-1 eps                  latent linear SEM; B a weighted DAG (B[j, i]: effect of i on j)
    x ~ N(b + W f(z) + k_l, diag(s^2))  the anchored decoder of ``sparse_vae`` (f: per-latent link);
                                        k_l: the knockdown of the label's own targeted genes
An intervention label is a set of *atoms* (its targeted genes). The intervention-target encoder
gives atom a a soft choice of latent ``pi_a = softmax(tau_a)``, a shift ``c_a`` and a log scale
``rho_a`` of that latent's noise: s_l = sum_a pi_a c_a, log sigma_l = sum_a pi_a rho_a. A label
``A+B`` adds its atoms' effects, so cells can be generated for combinations never seen in
training (:meth:`CausalVAE.predict`).

Inference is structured: the encoder gives, per latent, a Gaussian factor from that program's
anchors (``encoder="anchors"``), and the posterior is its exact product with the label's SEM prior
(a full-covariance Gaussian), so it borrows from parents and children through the graph and
from the label without the encoder reading either.

Loss per cell: the negative ELBO, plus an MMD between cells generated from each label's prior and
the observed cells of that label (random Fourier features in a principal-component space of the
genes), plus minimality penalties: L1 on the graph and the decoder, entropy of the target choices.

Order, targets and graph (what makes recovery reliable, measured on simulated screens):
- Acyclicity comes from a learned causal order: B is masked to it, so the graph is a DAG by
  construction. Perturbing a latent moves its descendants only, so the order is the one that
  contradicts the least total-effect evidence of the single perturbations (exact dynamic
  programming over subsets; :func:`_order_from_total_effects`). On simulated K = 10 screens it was
  right on every screen tried, where the sink-first peeling of ``linear`` misordered 1-2 edges.
- Warm start: the targets start from the ``linear`` model's peeling of anchor-score mean shifts,
  and by default stay there (``target_warmup=None``): letting them learn traded a perturbation's
  target for its parent plus a compensating edge.
- The graph the ELBO learns per cell is biased by the latents' measurement noise (EM crawls for
  nearly deterministic programs, where this noise rivals the exogenous one). So after training
  the order, B and the shifts are refit on intervention means of the label-free latents (the
  encoder factors), which average that noise out: every perturbation that does not target j
  gives d[j] = B[j] d (:meth:`CausalVAE._refit_graph`). These weights, in the model's own latent
  units, are the ones ``predict`` uses.

The torch module is :class:`~crl_pipe.models._modules.CausalVAEModule`; what this model shares
with ``sparse_vae`` (anchor mask, training plan, latent standardisation, loadings) is
:class:`~crl_pipe.models._vae.AnchoredVAE`; order, graph and shifts come from the shift readout
(:mod:`._shift_sem`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._errors import ModelError
from ._data import CRLData, standardisation
from ._modules import ENCODERS, NONLINEARITIES, CausalVAEModule
from ._shift_sem import alternate, equation_misfit, graph_settings, group_shifts, solve_graph
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
from .linear import anchor_scores, fit_anchor_scores
from .registry import model_capabilities

_INIT_LOGIT = 6.0  # logit of a warm-started target choice: softmax 0.98 with K = 10 latents


class CausalVAE(AnchoredVAE):
    """Interventional causal VAE: anchored decoder, latent linear SEM with a learned DAG, target encoder.

    Parameters
    ----------
    hidden
        Encoder width (as in ``sparse_vae``).
    encoder
        ``"anchors"``: latent k's Gaussian factor is read from program k's anchors alone; ``"all"``:
        from every feature. Either way the posterior is that factor times the SEM prior.
    epochs, batch_size, lr, patience, val_fraction
        Training: maximum epochs, cells per step (``"auto"``: 512; on a GPU up to 4,096),
        Adam learning rate, epochs without a lower validation loss before stopping, share of
        cells held out (per intervention).
    l1
        L1 penalty on the decoder weights, per cell (decoder minimality).
    graph_l1
        L1 penalty on the graph weights while training, per cell (graph minimality); the final
        weights are refit on intervention means, on the edges above ``edge_threshold``.
    mmd_weight
        Weight of the MMD discrepancy between generated and observed cells of each intervention.
    mmd_dims
        Principal components of the standardised data in which the MMD compares cells.
    target_entropy
        Penalty on the entropy of each atom's soft target choice (larger: one latent per atom sooner).
    target_warmup
        Epochs during which the target choices stay at their warm start; ``None`` (default): the
        whole fit. Learning them afterwards let the graph and the targets trade places on some
        screens (a perturbation moved onto its target's parent with a compensating edge).
    nonlinearity
        ``"mlp"``: a learned function per latent before the masked linear decoder; ``"none"``: linear.
    kl_warmup
        Epochs over which the KL weight rises from 0 to 1.
    device
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
    edge_threshold
        Smallest |weight| kept as an edge, in control SD of the child per control SD of the parent.
    ridge
        Ridge penalty of the final least-squares fit of the graph on intervention means.
    refit_epochs
        Refits of the graph step, as for ``sparse_vae``: ``"auto"`` (warm start, 15 % of the
        fit's epochs), an integer, or ``None`` (from scratch).
    checkpoint_dir, checkpoint_every, threads
        Run settings as for ``sparse_vae`` (not model parameters: not saved, not passed to refits).
    """

    name = "causal_vae"
    capabilities = model_capabilities(name)

    def __init__(
        self,
        hidden: int = 128,
        encoder: str = "anchors",
        epochs: int = 200,
        batch_size: int | str = "auto",
        lr: float = 3e-3,
        l1: float = 1e-3,
        graph_l1: float = 1e-2,
        mmd_weight: float = 1.0,
        mmd_dims: int = 32,
        target_entropy: float = 1e-2,
        target_warmup: int | None = None,
        nonlinearity: str = "mlp",
        kl_warmup: int = 10,
        patience: int = 20,
        val_fraction: float = 0.1,
        device: str = "auto",
        edge_threshold: float = 0.15,
        ridge: float = 1e-3,
        refit_epochs: int | str | None = "auto",
        *,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 10,
        threads: int | None = None,
    ) -> None:
        super().__init__(
            hidden=hidden, encoder=encoder, epochs=epochs, batch_size=batch_size, lr=lr, l1=l1, graph_l1=graph_l1,
            mmd_weight=mmd_weight, mmd_dims=mmd_dims, target_entropy=target_entropy, target_warmup=target_warmup,
            nonlinearity=nonlinearity, kl_warmup=kl_warmup, patience=patience, val_fraction=val_fraction,
            device=device, edge_threshold=edge_threshold, ridge=ridge, refit_epochs=refit_epochs,
            checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, threads=threads,
        )  # fmt: skip
        self._check_option("encoder", ENCODERS)
        self._check_option("nonlinearity", NONLINEARITIES)
        self.atoms: list[str] = []
        self.control_label = ""

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, data: CRLData, *, seed: int = 0, callbacks: Sequence[EpochCallback] = ()) -> CausalVAE:
        """Train on ``data``; ``callbacks(epoch, history)`` run after every epoch (e.g. to interrupt)."""
        masks, cell_label = self._setup(data)
        device = resolve_device(self.params["device"])
        with deterministic(device), cpu_threads(self.threads):
            seed_everything(seed)
            batches = CellBatches({"x": data.X, "label": cell_label}, device)
            mean, sd = standardisation(data.X)
            projection = _principal_axes(data.X, mean, sd, self.params["mmd_dims"], seed)
            module = self._module(torch.from_numpy(mean), torch.from_numpy(sd), projection, **masks)
            self.module = module
            if not self._take_init_state():  # a warm refit of the graph step starts from the fitted weights
                self._warm_start(data, seed)
            module.to(device)
            train_rows, val_rows = split_cells(data.n_cells, self.params["val_fraction"], seed, data.intervention)
            self.history = train_module(
                module, batches, self._plan(), seed=seed, train_rows=train_rows, val_rows=val_rows,
                fingerprint=self._fingerprint(data, seed), callbacks=callbacks, desc="causal_vae",
            )  # fmt: skip
            factor_means = self._encoder_means(batches)
        self._record_epochs()
        module.to("cpu")
        self._refit_graph(factor_means, data)
        cells = CellBatches({"x": data.X, "label": cell_label}, torch.device("cpu"))
        self._standardise_latents(self._posterior_means(cells), data)
        return self

    def _setup(self, data: CRLData) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """Check the data; set names; the module's 0/1 masks (anchors, label atoms, atom genes); each cell's label."""
        programs = self._anchored_programs(data)
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
        anchors = self._anchor_mask(data, programs, len(programs))
        label_index = {lab: i + 1 for i, lab in enumerate(labels)}
        cell_label = np.array([label_index.get(lab, 0) for lab in data.intervention], dtype=np.int64)
        cell_label[data.is_control] = 0
        index = {f: i for i, f in enumerate(self.features)}
        atom_genes = torch.zeros(len(self.atoms), len(self.features))
        for a, atom in enumerate(self.atoms):
            if atom in index:
                atom_genes[a, index[atom]] = 1.0
        return {"anchors": anchors, "label_atoms": label_atoms, "atom_genes": atom_genes}, cell_label

    def _module(self, mean, sd, projection, *, anchors, label_atoms, atom_genes) -> CausalVAEModule:
        p = self.params
        return CausalVAEModule(
            anchors, mean, sd, label_atoms, atom_genes, projection, hidden=p["hidden"], encoder=p["encoder"],
            nonlinearity=p["nonlinearity"], l1=p["l1"], kl_warmup=p["kl_warmup"], graph_l1=p["graph_l1"],
            mmd_weight=p["mmd_weight"], target_entropy=p["target_entropy"],
            target_warmup=p["target_warmup"],
        )  # fmt: skip

    @torch.no_grad()
    def _warm_start(self, data: CRLData, seed: int) -> None:
        """Targets, shifts and the causal order from intervention mean shifts of anchor scores.

        Scores: the ``linear`` model's factor-analysis (Bartlett) scores of each program's anchors,
        which trust reliable anchors more; plain anchor means let a strong parent's signal through
        and assigned a perturbation to its target's child (nonlinear K = 10 screen, seed 0).
        Targets: the ``linear`` model's peeling (the latent a single perturbation moves least
        leakily). Order: perturbing a latent moves its descendants only, so the order is the one
        that contradicts the least total-effect evidence (:func:`_order_from_total_effects`).
        """
        module = self.module
        scorer = {key: tensor.numpy() for key, tensor in fit_anchor_scores(data, self.latent_names, seed).items()}
        _, shifts, counts = group_shifts(anchor_scores(data.X, **scorer), data)
        single = module.label_atoms[1:].sum(1).numpy() == 1
        readout = graph_settings({})  # linear's defaults, every edge over the threshold kept
        B, targets = alternate(shifts, counts, [1 if one else 2 for one in single], **readout)
        exo = shifts @ (np.eye(B.shape[0]) - B).T
        target = np.where(single & (targets.sum(1) == 1), targets.argmax(1), -1)
        for i in np.flatnonzero(target >= 0):
            atom = int(module.label_atoms[i + 1].argmax())
            module.target_logits[atom, target[i]] = _INIT_LOGIT
            module.target_fixed[atom] = True
            module.shift[atom] = float(exo[i, target[i]])
        module.edge_mask.copy_(_order_mask(_order_from_total_effects(_total_effects(shifts, target))))

    @torch.no_grad()
    def _refit_graph(self, factor_means: np.ndarray, data: CRLData) -> None:
        """Final M-step of the order, graph and shifts on intervention means of the label-free latents.

        Per-cell regressions of latents on their parents are biased by the latents' measurement
        noise (and EM on the ELBO crawls for nearly deterministic programs), whereas intervention
        means average the noise out: every perturbation not targeting j gives d[j] = B[j] d. With
        the learned targets, the order is refit from total effects, B by least squares on those
        equations (refit on the edges above ``edge_threshold``), and each atom's shift is the
        exogenous shift (I - B) d of its single-atom labels on its target.
        """
        module = self.module
        K = len(self.latent_names)
        ctrl = factor_means[data.is_control]
        sd = np.where(ctrl.std(0) > 0, ctrl.std(0), 1.0)  # solved in control SD units, as the linear model
        _, shifts, counts = group_shifts(factor_means / sd, data)
        atoms = module.label_atoms[1:].numpy() > 0
        atom_target = module.target_probs().argmax(1).numpy()
        targets = np.zeros(shifts.shape, dtype=bool)
        for i, row in enumerate(atoms):
            targets[i, atom_target[row]] = True
        single = atoms.sum(1) == 1
        target = np.where(single, targets.argmax(1), -1)
        allowed = _order_mask(_order_from_total_effects(_total_effects(shifts, target))).numpy() > 0
        B = solve_graph(shifts, counts, targets, allowed, self.params["ridge"])
        keep = allowed & (np.abs(B) >= self.params["edge_threshold"])
        B = solve_graph(shifts, counts, targets, keep, self.params["ridge"])
        self.equation_misfit = equation_misfit(shifts, counts, targets, B)  # the report warns on it
        self.register_buffer("edge_weight", torch.from_numpy(B))  # control SD units, as reported
        self.register_buffer("latent_sd", torch.from_numpy(sd))
        module.edge_mask.copy_(torch.from_numpy(allowed).float())
        module.B.copy_(torch.from_numpy(B * sd[:, None] / sd[None, :]).float())  # back to latent units
        shifts = shifts * sd
        B = module.B.double().numpy()
        exo = shifts @ (np.eye(K) - B).T
        for a in range(len(self.atoms)):
            rows = np.flatnonzero(single & atoms[:, a])
            if rows.size:
                module.shift[a] = float(np.average(exo[rows, atom_target[a]], weights=counts[rows]))

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

    def _cell_arrays(self, data: CRLData, X: Any) -> dict[str, Any]:
        """Expression and each cell's label atoms: :meth:`get_latent_representation` gives posterior means of the
        causal latents given both, in control SD units."""
        return {"x": X, "atoms": self._atom_rows(data)}

    # -- outputs ----------------------------------------------------------------------------------
    def get_adjacency(self) -> pd.DataFrame:
        """Edge weights in control SDs of the child per control SD of the parent (source x target)."""
        sign = np.sign(self.latent_scale.numpy())
        B = self.edge_weight.numpy() * sign[:, None] * sign[None, :]
        return pd.DataFrame(B.T, index=self.latent_names, columns=self.latent_names)

    def get_targets(self) -> pd.DataFrame:
        """``score``: exogenous shift in control SDs of the latent; ``probability``: soft target choice."""
        with torch.no_grad():
            pi = self.module.target_probs().double()
            atoms = self.module.label_atoms[1:].double()
            sign = torch.sign(self.latent_scale).double()
            score = (atoms @ (pi * self.module.shift.double()[:, None])) * sign / self.latent_sd
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
    def predict(
        self, perturbation: str | Sequence[str], n_cells: int = 1000, *, seed: int = 0, noise: bool = True
    ) -> np.ndarray:
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
        out = module.generative(module.sample_latents(shift, log_scale, generator)) + module.direct(row)
        if noise:
            out = out + torch.exp(module.log_dispersion) * torch.randn(out.shape, generator=generator)
        return (out * module.feature_sd + module.feature_mean).numpy().astype(np.float32)

    # -- checkpoints ------------------------------------------------------------------------------
    def _extra_state_json(self) -> dict[str, Any]:
        return {**super()._extra_state_json(), "atoms": self.atoms, "control_label": self.control_label}

    def _load_extra_state_json(self, extra: dict[str, Any]) -> None:
        super()._load_extra_state_json(extra)
        self.atoms, self.control_label = list(extra["atoms"]), str(extra["control_label"])

    def _allocate(self, state: dict[str, torch.Tensor]) -> None:
        n = state["module.anchors"].shape[0]
        masks = {key: state[f"module.{key}"] for key in ("anchors", "label_atoms", "atom_genes")}
        self.module = self._module(torch.zeros(n), torch.ones(n), state["module.projection"], **masks)
        super()._allocate(state)


def _principal_axes(
    X: np.ndarray, mean: np.ndarray, sd: np.ndarray, dims: int, seed: int, n: int = 4096
) -> torch.Tensor:
    """Top ``dims`` principal axes (features x dims) of the standardised data, from a seeded subsample."""
    rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], size=min(n, X.shape[0]), replace=False))
    block = X[rows].toarray() if sp.issparse(X) else X[rows]
    Xs = (np.asarray(block, dtype=np.float64) - mean) / sd
    _, singular, vt = np.linalg.svd(Xs - Xs.mean(0), full_matrices=False)
    dims = min(dims, vt.shape[0])
    per_dim_sd = np.sqrt(np.mean(singular[:dims] ** 2) / max(len(rows) - 1, 1))
    return torch.from_numpy(vt[:dims].T / max(per_dim_sd, 1e-6)).float()  # projected cells: variance ~1 per axis


def _total_effects(shifts: np.ndarray, target: np.ndarray) -> np.ndarray:
    """evidence[k, j]: mean |shift of latent j| relative to the target's own under perturbations of k."""
    K = shifts.shape[1]
    evidence, seen = np.zeros((K, K)), np.zeros(K)
    for i in np.flatnonzero(target >= 0):
        k = target[i]
        evidence[k] += np.abs(shifts[i]) / max(abs(shifts[i, k]), 1e-12)
        seen[k] += 1
    evidence /= np.maximum(seen, 1)[:, None]
    np.fill_diagonal(evidence, 0.0)
    return evidence


def _order_mask(order: list[int]) -> torch.Tensor:
    """mask[j, i] = 1 where latent i precedes latent j in ``order`` (sources first)."""
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(len(order))
    return torch.from_numpy(rank[None, :] < rank[:, None]).float()


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
