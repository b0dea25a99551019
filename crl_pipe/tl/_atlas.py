"""Place a run's data on the robustness atlas: estimate its assumptions and look up what the atlas expects.

The robustness atlas (``benchmarks/robustness/``, docs/robustness.md) simulates screens that start
clean and weaken one assumption at a time; its summary ships with the package
(``crl_pipe/data/atlas.csv``: median metrics over seeds per kind, knob, level and method).
:func:`place_on_atlas` estimates, from a run's artifacts, where the data sit on the knobs that the
artifacts can show:

- ``knockdown``: 1 - the median remaining expression of each measured target gene in its
  single-target cells vs the controls (:func:`crl_pipe.tl.knockdown`);
- ``cells_per_perturbation``: median cells per single-target perturbation;
- ``anchors_given``: median anchors per program over the atlas's anchors per program (capped at 1;
  data-driven anchors, when no gene sets were given, are the atlas's 0 %);
- ``wrong_anchor_fraction``: 1 - the anchors' purity, the share of anchor genes that correlate more
  with the score of their own program (the mean of its other standardised anchors) than with any
  other program's score;
- ``unintervened_programs``: programs that no single-target perturbation hits most strongly (from a
  model's targets), scaled to the atlas's number of programs.

For each, the nearest level of the atlas and its expectations (target accuracy, SHD, edge F1,
false-edge rate) per method, and plain notes where the data sit outside the atlas's range.

Robot logs are placed on the atlas's robot rows (episodes, sensor noise, channels without a command;
:mod:`crl_pipe.tl._atlas_robot`). Which rows a dataset kind is placed on is the kind's choice
(``Vocabulary.atlas``, the ``kind`` argument of :func:`place_on_atlas`): :data:`ATLAS_KINDS` maps it to
its estimates and words, so no caller branches on the kind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._constants import CONTROL_TARGET
from .._errors import InputError
from ._atlas_robot import ATLAS_FRAMES, robot_estimates
from ._evaluate import predicted_targets
from ._knockdown import _columns, knockdown

PathLike = str | os.PathLike

#: The atlas summary shipped with the package (written by benchmarks/robustness/scripts/aggregate.py).
ATLAS_FILE = Path(__file__).resolve().parents[1] / "data" / "atlas.csv"
ATLAS_COLUMNS = [
    "kind", "axis", "level", "method", "n_seeds", "target_accuracy", "shd", "edge_precision", "edge_recall",
    "edge_f1", "f1_confident", "mcc", "false_edge_rate", "n_edges_true", "n_programs", "anchors_per_program",
]  # fmt: skip
#: What each estimated knob is, in the report's words.
KNOBS = {
    "knockdown": "knockdown strength (share of the target gene's expression removed)",
    "cells_per_perturbation": "cells per perturbation",
    "anchors_given": "anchor coverage (anchors per program, as a share of the atlas's)",
    "wrong_anchor_fraction": "anchors that look wrong (1 - purity)",
    "unintervened_programs": "programs without a single-target perturbation (scaled to the atlas's programs)",
    "n_episodes": f"episodes (counted in the atlas's episodes of {ATLAS_FRAMES} frames)",
    "sensor_noise": "sensor noise (SD, in the atlas's radians for its joints' motion)",
    "unlogged_commands": "state channels without a logged command (at most this many unlogged commands)",
}
#: An estimate within this share of the atlas's first or last level counts as inside: the estimates
#: carry errors of about this size (sensor noise 0.106 for a true 0.1 on the simulator).
_SLACK = 0.1
#: Knobs whose levels are compared on a log scale (counts spanning decades).
_LOG_KNOBS = frozenset({"cells_per_perturbation", "n_episodes"})
ESTIMATE_COLUMNS = ["knob", "what", "estimate", "detail", "level", "atlas_min", "atlas_max", "inside"]
EXPECTATION_COLUMNS = ["knob", "level", "method", "target_accuracy", "shd", "edge_f1", "false_edge_rate", "n_seeds"]
#: Anchor genes read for the purity estimate: a seeded sample of at most this many cells.
_MAX_PURITY_CELLS = 5000


@dataclass(frozen=True)
class AtlasPlace:
    """Where a run's data sit on the atlas.

    Attributes
    ----------
    estimates
        One row per knob (:data:`ESTIMATE_COLUMNS`): the estimate, how it was made (``detail``), the
        nearest atlas level, the atlas's range and whether the estimate lies within it. A knob the
        artifacts cannot show has a NaN estimate and its reason in ``detail``.
    expectations
        What the atlas expects at each nearest level, per method (:data:`EXPECTATION_COLUMNS`).
    notes
        Plain sentences: where the data sit outside the atlas, and what it does not cover.
    kind
        The atlas rows the data were placed on (a key of :data:`ATLAS_KINDS`).
    """

    estimates: pd.DataFrame
    expectations: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    kind: str = "screen"

    @property
    def words(self) -> AtlasWords:
        """How the report speaks of these atlas rows (:data:`ATLAS_KINDS`)."""
        return ATLAS_KINDS[self.kind].words


@dataclass(frozen=True)
class AtlasWords:
    """The report's words for one kind of atlas rows.

    Attributes
    ----------
    data
        What the atlas simulated (``"screens"``, ``"robot logs"``).
    targets
        What its target accuracy measures, after "recovered".
    isolated
        Its false-edge probe, after "a confident edge into".
    unmeasured
        A sentence on the knobs of the atlas that a run's files cannot show.
    """

    data: str
    targets: str
    isolated: str
    unmeasured: str


@dataclass(frozen=True)
class AtlasKind:
    """One kind of atlas rows: how a run's files are placed on its knobs, and its words.

    ``estimate(adata, interventions, anchors, targets=, data_driven_anchors=, seed=, rows=)`` returns
    knob -> (estimate, how it was made) and notes on what the atlas does not cover; ``rows`` are the
    atlas rows of this kind.
    """

    estimate: Callable[..., tuple[dict[str, tuple[float, str]], list[str]]]
    words: AtlasWords


def read_atlas(path: PathLike | None = None) -> pd.DataFrame:
    """The atlas summary (default: the one shipped with the package, :data:`ATLAS_FILE`)."""
    path = Path(path) if path is not None else ATLAS_FILE
    if not path.is_file():
        raise InputError(
            f"{path}: atlas summary not found; expected the CSV of benchmarks/robustness/scripts/aggregate.py"
        )
    table = pd.read_csv(path)
    missing = [c for c in ATLAS_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: atlas summary lacks column(s) {missing}")
    return table


def place_on_atlas(
    adata: ad.AnnData | None,
    interventions: pd.DataFrame,
    anchors: pd.DataFrame,
    *,
    kind: str = "screen",
    targets: pd.DataFrame | None = None,
    data_driven_anchors: bool = False,
    methods: list[str] | None = None,
    atlas: pd.DataFrame | None = None,
    seed: int = 0,
) -> AtlasPlace:
    """Estimate the data's assumptions from a run's artifacts and look up the atlas there.

    Parameters
    ----------
    adata
        The preprocessed data (``preprocessed.h5ad``, backed or in memory): a screen's log-normalised
        expression, a robot's frames x channels; or ``None``: then knockdown and anchor purity (robots:
        sensor noise) are not estimated.
    interventions
        The ``interventions`` table (``sample_id``, ``intervention``, ``targets``, ``is_control``).
    anchors
        The ``anchors`` table (``program``, ``feature``).
    kind
        The atlas rows the data are placed on (a key of :data:`ATLAS_KINDS`; ``Vocabulary.atlas`` of the
        dataset's kind): ``screen`` or ``robot``.
    targets
        A model's ``targets`` table (``intervention``, ``latent``, ``score``), for the programs that no
        single-target perturbation hits; ``None``: not estimated.
    data_driven_anchors
        The anchors were found from the data (no gene sets): the atlas's ``anchors_given`` = 0.
    methods
        Methods whose expectations are looked up (those the atlas has); default: ``linear`` where these
        rows have it, else their first method (robots: ``temporal``).
    atlas
        The atlas summary (default :func:`read_atlas`); its rows of ``kind`` are used.
    seed
        Seed of the cell sample of the purity estimate.
    """
    if kind not in ATLAS_KINDS:
        raise InputError(f"atlas rows {kind!r} unknown; expected one of {sorted(ATLAS_KINDS)}")
    atlas = read_atlas() if atlas is None else atlas
    rows_of = atlas[atlas["kind"] == kind]
    if rows_of.empty:
        raise InputError(f"atlas summary: no {kind} rows")
    estimates, extra_notes = ATLAS_KINDS[kind].estimate(
        adata, interventions, anchors, targets=targets, data_driven_anchors=data_driven_anchors, seed=seed, rows=rows_of
    )
    rows, notes = [], []
    for knob, (value, detail) in estimates.items():
        levels = np.sort(rows_of.loc[rows_of["axis"] == knob, "level"].unique())
        lo, hi = (float(levels[0]), float(levels[-1])) if levels.size else (np.nan, np.nan)
        level = _nearest(levels, value, log=knob in _LOG_KNOBS)
        inside = bool(
            levels.size and np.isfinite(value) and lo * (1 - _SLACK) - 1e-9 <= value <= hi * (1 + _SLACK) + 1e-9
        )
        rows.append([knob, KNOBS[knob], value, detail, level, lo, hi, inside])
        if np.isfinite(value) and not inside:
            notes.append(
                f"Outside the atlas: {KNOBS[knob]} is estimated at {_fmt(value)}, beyond the atlas's range "
                f"{_fmt(lo)} to {_fmt(hi)}; its numbers at {_fmt(level)} are an extrapolation, not a measurement."
            )
    table = pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)
    known = sorted(set(rows_of["method"]))
    default = ["linear"] if "linear" in known else known[:1]
    wanted = [m for m in (methods or default) if m in known] or default
    expectations = _expectations(rows_of, table, wanted)
    return AtlasPlace(estimates=table, expectations=expectations, notes=notes + extra_notes, kind=kind)


def _screen_estimates(
    adata: ad.AnnData | None,
    interventions: pd.DataFrame,
    anchors: pd.DataFrame,
    *,
    targets: pd.DataFrame | None,
    data_driven_anchors: bool,
    seed: int,
    rows: pd.DataFrame,
) -> tuple[dict[str, tuple[float, str]], list[str]]:
    """The screen knobs (see the module docstring) and notes on programs and controls."""
    n_programs = float(rows["n_programs"].iloc[0])
    per_program = float(rows["anchors_per_program"].iloc[0])
    estimates = {
        "knockdown": _knockdown(adata, interventions),
        "cells_per_perturbation": _cells(interventions),
        "anchors_given": _coverage(anchors, per_program, data_driven_anchors),
        "wrong_anchor_fraction": _purity(adata, interventions, anchors, seed),
        "unintervened_programs": _unintervened(targets, interventions, anchors, n_programs),
    }
    return estimates, _coverage_notes(interventions, anchors, n_programs)


def _robot_estimates(
    adata: ad.AnnData | None, interventions: pd.DataFrame, anchors: pd.DataFrame, **_: object
) -> tuple[dict[str, tuple[float, str]], list[str]]:
    """The robot knobs (:func:`crl_pipe.tl._atlas_robot.robot_estimates`); no model output needed."""
    return robot_estimates(adata, interventions, anchors)


# -- the estimates: (value, how it was made) -----------------------------------------------------------------
def _knockdown(adata: ad.AnnData | None, interventions: pd.DataFrame) -> tuple[float, str]:
    if adata is None:
        return np.nan, "no expression matrix given"
    result = knockdown(adata, interventions)
    result = result[np.isfinite(result["remaining"])]
    if result.empty:
        return np.nan, "no single-target perturbation targets a measured gene"
    value = float(np.clip(1.0 - result["remaining"].median(), 0.0, 1.0))
    return value, f"median over {len(result)} measured target genes"


def _single_counts(interventions: pd.DataFrame) -> pd.Series:
    single = interventions[~interventions["is_control"].astype(bool) & (interventions["targets"].map(len) == 1)]
    return single.groupby("intervention", observed=True).size()


def _cells(interventions: pd.DataFrame) -> tuple[float, str]:
    counts = _single_counts(interventions)
    if counts.empty:
        return np.nan, "no single-target perturbation"
    return float(counts.median()), f"median over {len(counts)} single-target perturbations (min {int(counts.min())})"


def _coverage(anchors: pd.DataFrame, per_program: float, data_driven: bool) -> tuple[float, str]:
    if len(anchors) and (anchors["program"].astype(str) == anchors["feature"].astype(str)).all():
        return np.nan, "each variable is measured directly (it anchors itself)"
    if data_driven:
        return 0.0, "anchors found from the data (no gene sets given)"
    sizes = anchors.groupby("program", observed=True).size()
    if sizes.empty:
        return np.nan, "no anchors"
    value = float(min(sizes.median() / per_program, 1.0))
    return value, f"median {sizes.median():g} anchors per program; the atlas lists {per_program:g}"


def _purity(
    adata: ad.AnnData | None, interventions: pd.DataFrame, anchors: pd.DataFrame, seed: int
) -> tuple[float, str]:
    if adata is None:
        return np.nan, "no expression matrix given"
    var = pd.Index(np.asarray(adata.var_names, dtype=str))
    sets = {
        str(p): [g for g in g_.astype(str) if g in var]
        for p, g_ in anchors.groupby("program", observed=True, sort=False)["feature"]
    }
    sets = {p: g for p, g in sets.items() if len(g) >= 2}
    if len(sets) < 2:
        return np.nan, "fewer than two programs with two measured anchors"
    genes = sorted({g for g in sum(sets.values(), [])})
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(adata.n_obs, size=min(adata.n_obs, _MAX_PURITY_CELLS), replace=False))
    X = _columns(adata, np.asarray(var.get_indexer(genes)))[rows].toarray()
    X = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    col = {g: j for j, g in enumerate(genes)}
    sums = {p: X[:, [col[g] for g in gs]].sum(axis=1) for p, gs in sets.items()}
    pure = []
    for p, gs in sets.items():
        for g in gs:
            x = X[:, col[g]]
            own = _corr(x, sums[p] - x)  # the program's score without the gene itself
            other = max(_corr(x, sums[q]) for q in sets if q != p)
            pure.append(own > other)
    value = float(1.0 - np.mean(pure))
    return value, f"{int(np.sum(pure))} of {len(pure)} anchor genes follow their own program most ({len(rows)} cells)"


def _unintervened(
    targets: pd.DataFrame | None, interventions: pd.DataFrame, anchors: pd.DataFrame, n_programs: float
) -> tuple[float, str]:
    if targets is None or targets.empty:
        return np.nan, "no model targets"
    singles = set(_single_counts(interventions).index.astype(str))
    best = predicted_targets(targets)
    best = best[best.index.astype(str).isin(singles)]
    programs = sorted({str(p) for p in targets["latent"]})
    missed = [p for p in programs if p not in set(best.astype(str))]
    value = float(np.round(len(missed) / len(programs) * n_programs)) if programs else np.nan
    shown = ", ".join(missed[:5]) + (" ..." if len(missed) > 5 else "")
    return value, f"{len(missed)} of {len(programs)} programs" + (f" ({shown})" if missed else "")


# -- the lookup ------------------------------------------------------------------------------------------------
def _nearest(levels: np.ndarray, value: float, *, log: bool) -> float:
    if not levels.size or not np.isfinite(value):
        return np.nan
    f = (lambda v: np.log(np.maximum(v, 1e-9))) if log else (lambda v: v)
    return float(levels[np.argmin(np.abs(f(levels.astype(float)) - f(value)))])


def _expectations(atlas_rows: pd.DataFrame, estimates: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    rows = []
    for r in estimates.itertuples(index=False):
        if not np.isfinite(r.level):
            continue
        here = (atlas_rows["axis"] == r.knob) & np.isclose(atlas_rows["level"], r.level)
        at = atlas_rows[here & atlas_rows["method"].isin(methods)]
        for a in at.itertuples(index=False):
            rows.append([r.knob, r.level, a.method, a.target_accuracy, a.shd, a.edge_f1, a.false_edge_rate, a.n_seeds])
    return pd.DataFrame(rows, columns=EXPECTATION_COLUMNS)


def _coverage_notes(interventions: pd.DataFrame, anchors: pd.DataFrame, n_programs: float) -> list[str]:
    notes = []
    n_data = anchors["program"].nunique()
    if n_data > 2 * n_programs or n_data < n_programs / 2:
        notes.append(
            f"The atlas was simulated with {n_programs:g} programs; these data have {n_data}. SHD grows with the "
            "number of edges: read the F1 and the false-edge rate, not the SHD, across that gap."
        )
    controls = int(interventions["is_control"].astype(bool).sum())
    if controls == 0:
        notes.append(f"No control cells ({CONTROL_TARGET!r} or the configured label): the atlas assumes controls.")
    return notes


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = a.std(), b.std()
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb)) if sa > 0 and sb > 0 else 0.0


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"


#: Atlas rows (its ``kind`` column) -> how a run's files are placed on them; a dataset kind names its
#: rows in ``Vocabulary.atlas``.
ATLAS_KINDS: dict[str, AtlasKind] = {
    "screen": AtlasKind(
        _screen_estimates,
        AtlasWords(
            data="screens",
            targets="the targets",
            isolated="a program with no parent and no child",
            unmeasured=(
                "Not estimated from a run's files: mislabelled cells, off-target hits, graph density and count "
                "overdispersion (the atlas measures them; see docs/robustness.md)."
            ),
        ),
    ),
    "robot": AtlasKind(
        _robot_estimates,
        AtlasWords(
            data="robot logs",
            targets="each logged command's edge to its joint",
            isolated="a pure-noise channel (no parent, no child)",
            unmeasured=(
                "Not estimated from a run's files: which uncommanded channels are joints whose command went "
                "unlogged (they look like sensors that are never commanded). The atlas dropped the commands of "
                "whole joints from the log and scored the rest of the graph; a joint without its command gets no "
                "command edge in any case. The atlas's robots are joints in radians tracking random set-points with an "
                "actuator delay, coupled by velocity with one frame of lag: a robot with other dynamics (contacts, "
                "longer lags) may fare otherwise."
            ),
        ),
    ),
}
