"""Training machinery shared by every deep model: device, seeds, minibatches, early stopping, checkpoints.

A model hands :func:`train_module` a torch module with a ``loss(batch, epoch)`` method and the
per-cell arrays it trains on; everything else (device placement, shuffling, validation split,
bf16 autocast on CUDA, progress bar, history rows, resumable checkpoints) lives here once.

Resume is exact: minibatch order comes from a generator seeded with ``seed + epoch``, and a
checkpoint holds the module, the optimizer, the global torch/numpy RNG states and the
early-stopping state, so a fit restarted from a checkpoint retraces the uninterrupted fit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from .._errors import ModelError
from .._provenance import atomic_path

log = logging.getLogger("crl_pipe")

CHECKPOINT_FILE = "checkpoint.pt"
_SPLITS = ("train", "validation")
_HOST_DENSE_LIMIT = 1 << 30  # bytes: a sparse matrix larger than this dense is sliced per batch on the host
_CUDA_MEMORY_SHARE = 0.5  # share of free GPU memory the resident data may take
#: Cells per step of ``batch_size="auto"``: 512, and on a GPU up to 4,096 while an epoch keeps at
#: least four steps. A GPU step is bound by kernel launches, so 4,096 cells cost about what 512 do:
#: on an H200, causal_vae ran 263,000 cells/s per epoch at 4,096 against 33,000 at 512 and fitted
#: 3.2 times sooner with the same recovery; with two steps an epoch (5,000 cells) recovery slipped
#: (docs/benchmarks.md, "On a GPU"). On the CPU a step's cost grows with its cells.
AUTO_BATCH_SIZE, AUTO_BATCH_SIZE_GPU, MIN_STEPS_PER_EPOCH = 512, 4096, 4


# -- device and seeds ---------------------------------------------------------------------------
def resolve_device(device: str | torch.device = "auto", *, strict: bool = False) -> torch.device:
    """The torch device to train on.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when torch sees a GPU, which honours ``CUDA_VISIBLE_DEVICES``, else CPU),
        ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
    strict
        Raise :class:`~crl_pipe.ModelError` instead of warning and falling back to the CPU when
        CUDA is requested but not available.
    """
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if torch.cuda.is_available():
            return torch.device(name)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        message = f"model device {name!r}: CUDA is not available (CUDA_VISIBLE_DEVICES={visible!r})"
        if strict:
            raise ModelError(
                f"{message}; expected a visible GPU (require_device is true: set it false to train on the CPU)"
            )
        warnings.warn(f"{message}; training on the CPU", RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    raise ModelError(f"model device {name!r}: expected 'auto', 'cpu' or 'cuda'")


def resolve_batch_size(batch_size: int | str, device: torch.device, n_cells: int = 0) -> int:
    """Cells per step: ``batch_size``, or for ``"auto"`` :data:`AUTO_BATCH_SIZE` (more on a GPU
    when ``n_cells`` training cells still give :data:`MIN_STEPS_PER_EPOCH` steps an epoch)."""
    if batch_size == "auto":
        if device.type != "cuda":
            return AUTO_BATCH_SIZE
        return max(AUTO_BATCH_SIZE, min(AUTO_BATCH_SIZE_GPU, n_cells // MIN_STEPS_PER_EPOCH))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ModelError(f"batch_size {batch_size!r}: expected 'auto' or a positive integer")
    return batch_size


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every GPU) and numpy's global generator."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic torch algorithms on the CPU for the duration of a fit (the global flag is restored)."""
    if device.type != "cpu":
        yield  # CUDA determinism would need CUBLAS_WORKSPACE_CONFIG; GPU fits are reproducible, not bitwise
        return
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Limit torch's intra-op CPU threads for a fit (``None``: leave as is); restored afterwards.

    Small minibatch steps gain little from many threads and slow down badly when the threads
    compete with other jobs on the same cores, so a workflow passes the cores it was given.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op on the CPU (where bf16 matmuls are slow and not needed)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# -- data --------------------------------------------------------------------------------------
Matrix = np.ndarray | sp.spmatrix | sp.sparray


class CellBatches:
    """Per-cell arrays served as minibatches of tensors on ``device``.

    A dense array is put on the device once when it fits (on the CPU this is a zero-copy view);
    a sparse CSR matrix is densified on the device chunk by chunk when its dense form fits, and is
    otherwise sliced row-wise per batch, so a large matrix is never densified whole on the host.

    Parameters
    ----------
    arrays
        Name -> cells x d array (dense or CSR) or length-n vector; all with the same number of rows.
    device
        Where batches are served.
    """

    def __init__(self, arrays: Mapping[str, Matrix], device: torch.device) -> None:
        self.device = device
        sizes = {name: a.shape[0] for name, a in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ModelError(f"training arrays disagree on the number of cells: {sizes}")
        self.n = next(iter(sizes.values()))
        budget = _device_budget(device)
        self._resident: dict[str, torch.Tensor] = {}
        self._host: dict[str, Matrix] = {}
        for name, array in arrays.items():
            nbytes = int(np.prod(array.shape)) * 4
            if nbytes <= budget:
                self._resident[name] = _to_device(array, device)
                budget -= nbytes
            else:
                self._host[name] = sp.csr_matrix(array) if sp.issparse(array) else array

    def batches(self, rows: torch.Tensor, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of the cells ``rows`` (a CPU index tensor), in that order."""
        for start in range(0, rows.numel(), batch_size):
            yield self.take(rows[start : start + batch_size])

    def take(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The arrays restricted to the cells ``idx`` (a CPU index tensor), on the device."""
        batch = {name: t.index_select(0, idx.to(t.device)) for name, t in self._resident.items()}
        host_idx = idx.numpy()
        for name, array in self._host.items():
            block = array[host_idx]
            block = block.toarray() if sp.issparse(block) else np.asarray(block)
            dtype = np.int64 if np.issubdtype(block.dtype, np.integer) else np.float32
            batch[name] = torch.from_numpy(block.astype(dtype, copy=False)).to(self.device, non_blocking=True)
        return batch


def _device_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * _CUDA_MEMORY_SHARE)
    return _HOST_DENSE_LIMIT


def _to_device(array: Matrix, device: torch.device, chunk: int = 65536) -> torch.Tensor:
    if not sp.issparse(array):
        dtype = np.int64 if np.issubdtype(np.asarray(array).dtype, np.integer) else np.float32
        return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype)).to(device)
    csr = sp.csr_matrix(array)
    parts = [
        torch.from_numpy(csr[i : i + chunk].toarray().astype(np.float32)).to(device)
        for i in range(0, csr.shape[0], chunk)
    ]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def split_cells(
    n: int, val_fraction: float, seed: int, strata: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation cell indices, drawn by ``seed``; stratified by ``strata`` labels when given.

    Each stratum gives ``round(val_fraction * size)`` cells to validation, so every intervention
    is seen in training and scored in validation.
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    val = [rng.permutation(g)[: int(round(val_fraction * g.size))] for g in groups]
    is_val = np.zeros(n, dtype=bool)
    is_val[np.concatenate(val)] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# -- training loop ------------------------------------------------------------------------------
class TrainableModule(Protocol):
    """What :func:`train_module` needs from a model's torch module."""

    def loss(self, batch: dict[str, torch.Tensor], epoch: int) -> torch.Tensor:
        """Mean loss per cell of ``batch`` at ``epoch`` (1-based; lets a module anneal its terms)."""
        ...


@dataclass
class TrainingPlan:
    """How to train: optimisation, early stopping and checkpoints.

    Attributes
    ----------
    epochs
        Maximum passes over the training cells.
    batch_size
        Cells per optimisation step, or ``"auto"`` (:func:`resolve_batch_size`).
    lr
        Adam learning rate.
    patience
        Epochs without a lower validation loss before training stops (0: never stop early).
    val_fraction
        Share of cells (per intervention) held out to measure the validation loss.
    checkpoint_dir
        Folder for the resumable checkpoint (``checkpoint.pt``); ``None``: no checkpoints.
    checkpoint_every
        Epochs between checkpoints (the last epoch is always saved).
    """

    epochs: int = 200
    batch_size: int | str = "auto"
    lr: float = 3e-3
    patience: int = 20
    val_fraction: float = 0.1
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 10


@dataclass
class _State:
    epoch: int = 0
    best: float = float("inf")
    bad_epochs: int = 0
    stopped: bool = False


EpochCallback = Callable[[int, pd.DataFrame], None]


def train_module(
    module: torch.nn.Module,
    data: CellBatches,
    plan: TrainingPlan,
    *,
    seed: int,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    fingerprint: str = "",
    callbacks: Sequence[EpochCallback] = (),
    desc: str = "training",
) -> pd.DataFrame:
    """Fit ``module`` (already on ``data.device``) with Adam; return the history ``epoch, split, loss``.

    Early stopping watches the validation loss (the training loss when no cell is held out).
    With ``plan.checkpoint_dir``, a checkpoint whose ``fingerprint`` matches (same model, params,
    seed and data) is resumed; any other checkpoint there is replaced. ``callbacks`` run after
    each epoch (and its checkpoint) with the epoch and the history so far; one that raises stops
    the fit as a kill would, which is how tests interrupt a run.
    """
    device = data.device
    batch_size = resolve_batch_size(plan.batch_size, device, len(train_rows))
    # fused: one kernel per step for all parameters on CUDA, where steps are bound by kernel launches
    optimizer = torch.optim.Adam(module.parameters(), lr=plan.lr, fused=device.type == "cuda")
    ckpt = None if plan.checkpoint_dir is None else Path(plan.checkpoint_dir) / CHECKPOINT_FILE
    state, rows = _State(), []
    if ckpt is not None and ckpt.exists():
        state, rows = _resume(ckpt, module, optimizer, fingerprint, device)
    train_idx, val_idx = torch.from_numpy(np.asarray(train_rows)), torch.from_numpy(np.asarray(val_rows))
    bar = tqdm(total=plan.epochs, initial=state.epoch, desc=desc, unit="epoch", disable=not sys.stderr.isatty())
    with bar:
        while not state.stopped and state.epoch < plan.epochs:
            epoch = state.epoch + 1
            train_loss = _train_epoch(module, optimizer, data, train_idx, batch_size, seed + epoch, epoch)
            val_loss = _evaluate(module, data, val_idx, batch_size, epoch) if val_idx.numel() else train_loss
            rows += [(epoch, "train", train_loss)] + ([(epoch, "validation", val_loss)] if val_idx.numel() else [])
            _early_stopping(state, val_loss, plan.patience)
            state.epoch = epoch
            state.stopped = state.stopped or epoch == plan.epochs
            if ckpt is not None and (epoch % plan.checkpoint_every == 0 or state.stopped):
                _save(ckpt, module, optimizer, state, rows, fingerprint)
            bar.update()
            bar.set_postfix(loss=f"{train_loss:.4g}", val=f"{val_loss:.4g}")
            for callback in callbacks:
                callback(epoch, _history(rows))
    return _history(rows)


def _train_epoch(
    module, optimizer, data: CellBatches, rows: torch.Tensor, batch_size: int, seed: int, epoch: int
) -> float:
    module.train()
    order = rows[torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(seed))]
    total = torch.zeros((), dtype=torch.float64, device=data.device)  # summed on the device: no sync per step
    for batch in data.batches(order, batch_size):
        optimizer.zero_grad(set_to_none=True)
        with autocast(data.device):
            loss = module.loss(batch, epoch)
        loss.backward()
        optimizer.step()
        total += loss.detach().double() * _n(batch)
    return float(total) / max(rows.numel(), 1)


@torch.no_grad()
def _evaluate(module, data: CellBatches, rows: torch.Tensor, batch_size: int, epoch: int) -> float:
    module.eval()
    total = torch.zeros((), dtype=torch.float64, device=data.device)
    for batch in data.batches(rows, batch_size):
        with autocast(data.device):
            total += module.loss(batch, epoch).double() * _n(batch)
    return float(total) / max(rows.numel(), 1)


def _n(batch: dict[str, torch.Tensor]) -> int:
    return next(iter(batch.values())).shape[0]


def _early_stopping(state: _State, loss: float, patience: int) -> None:
    if loss < state.best:
        state.best, state.bad_epochs = loss, 0
    else:
        state.bad_epochs += 1
    state.stopped = patience > 0 and state.bad_epochs >= patience


def _history(rows: list[tuple[int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["epoch", "split", "loss"]).astype(
        {"epoch": "int64", "split": str, "loss": float}
    )


# -- checkpoints --------------------------------------------------------------------------------
def fingerprint(**parts: Any) -> str:
    """A short hash of what a fit depends on (model, params, seed, data identity): guards resumes."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _save(path: Path, module, optimizer, state: _State, rows, fingerprint: str) -> None:
    """Write the resumable checkpoint atomically; only tensors, ints, floats and strings (weights_only)."""
    payload = {
        "fingerprint": fingerprint,
        "module": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": state.epoch,
        "best": torch.tensor(state.best, dtype=torch.float64),
        "bad_epochs": state.bad_epochs,
        "stopped": int(state.stopped),
        "rng": _rng_state(),
        "history": {
            "epoch": torch.tensor([r[0] for r in rows], dtype=torch.int64),
            "split": torch.tensor([_SPLITS.index(r[1]) for r in rows], dtype=torch.int8),
            "loss": torch.tensor([r[2] for r in rows], dtype=torch.float64),
        },
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _resume(path: Path, module, optimizer, fingerprint: str, device: torch.device):
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("fingerprint") != fingerprint:
        log.warning("%s: written by another fit (model, params, seed or data differ); starting afresh", path)
        return _State(), []
    module.load_state_dict(payload["module"])
    optimizer.load_state_dict(payload["optimizer"])
    _set_rng_state(payload["rng"])
    h = payload["history"]
    rows = [(int(e), _SPLITS[int(s)], float(v)) for e, s, v in zip(h["epoch"], h["split"], h["loss"], strict=True)]
    state = _State(int(payload["epoch"]), float(payload["best"]), int(payload["bad_epochs"]), bool(payload["stopped"]))
    log.info("%s: resuming after epoch %d", path, state.epoch)
    return state, rows


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_cached": torch.tensor(cached, dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_cpu"].cpu())
    keys = state["numpy_keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], state["numpy_has_gauss"], float(state["numpy_cached"])))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["torch_cuda"]])
