"""Harder screens (issue 13): where between the counts and the graph the answer is lost.

    .venv/bin/python benchmarks/harder_screens.py --seeds 0 1 2 --markdown
    .venv/bin/python benchmarks/harder_screens.py --programs 10 20 --density 0.45 0.2 --cells 100 300 1000 \\
        --mixing linear nonlinear --seeds 0 1 2 --models linear sparse_vae causal_vae --markdown

Each screen is simulated with :func:`crl_pipe.simulate.simulate_screen` (the issue's reference by
default: K = 10 programs, 20 edges of weight 0.6-1.2 in latent units, latents in the SEM's own
units, two single-program perturbations per program shifting it by 2.5 of its control SDs, 300
cells per perturbation, 3,000 controls, 800 genes, 12 right anchors per program, NB counts), and
scored row by row, each row a *source of latents* and a *source of targets*:

- ``oracle: true latents + targets``: the true latents (in control SDs) and the true targets and
  causal order go straight into the graph equations (the mean-shift least squares of ``linear``).
- ``oracle: true latents``: the true latents through the whole read-out (sink-first peeling of
  targets and order, graph equations, target reassignment).
- ``oracle: log mean``: the anchor read-out of ``linear`` (one-factor Bartlett scores of each
  program's standardised anchors) on the noise-free log expression ``b + A h(z)``, before the
  library's composition couples the genes.
- ``oracle: log proportion``: the same on ``log softmax(b + A h(z))``: the composition of the
  library (a cell-wide offset shared by every gene), no count noise.
- ``oracle: true size factor``: the same on ``log1p`` of counts divided by each cell's true size
  factor (library size times the composition offset): count noise, no offset.
- ``linear`` / ``sparse_vae`` / ``causal_vae``: the models at their defaults on the log-normalised
  counts (the workflow's input); prototypes of ``benchmarks/_prototypes.py`` are further rows.
- ``empty graph``: SHD of drawing no edge (the number of true edges).

Every latent row is scored twice: with its own targets and order (``targets: own``) and with the
true ones (``targets: true``), which isolates what the latents cost the graph equations from what
the targets cost. Columns: target accuracy, SHD, edges drawn, latent MCC (true latents, all cells),
and the relative error of the mean-shift matrix (perturbations x programs, control SDs) that the
graph equations read. Rows go to ``--out`` (CSV, appended); ``--markdown`` prints per-seed values
and the median over seeds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a shared 2-core machine: one thread per process

import networkx as nx
import numpy as np
import pandas as pd
import torch

from crl_pipe import tl
from crl_pipe.models import CRLData, LinearSEM
from crl_pipe.simulate import screen_to_crl_data, simulate_screen
from crl_pipe.simulate._screen import _design

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _prototypes as proto  # noqa: E402

#: The issue's reference screen.
REFERENCE = dict(
    n_programs=10, n_edges=20, min_edge_weight=0.6, max_edge_weight=1.2, guides_per_program=2, n_doubles=0,
    shift=2.5, shift_unit="latent", cells_per_perturbation=300, n_control=3000, n_genes=800, anchors_per_program=12,
    standardise_latents=False, mixing="linear",
)  # fmt: skip
#: The demo's screen (config/config.yaml): sparse, standardised latents, 400 cells per perturbation.
DEMO = dict(
    n_programs=6, n_genes=200, anchors_per_program=8, n_control=3000, cells_per_perturbation=400,
    guides_per_program=1, n_doubles=3, mixing="linear",
)  # fmt: skip
_SIM_ONLY = ("mean_library_size", "dispersion")


@dataclass
class Truth:
    """What the simulator knows: true latents in control SDs, targets, order, and the noise-free expression."""

    data: CRLData
    z: np.ndarray  # cells x programs, control SDs
    programs: list[str]
    targets: pd.DataFrame
    graph: pd.DataFrame
    latents: pd.DataFrame
    log_mean: np.ndarray  # cells x features (data.features order): b + A h(z), no library composition
    offset: np.ndarray  # cells: logsumexp of log_mean over all genes (the composition of the library)
    library: np.ndarray  # cells: library size drawn by the simulator


def simulate(params: dict, seed: int) -> Truth:
    """Simulate a screen and recover the simulator's internals for the oracles."""
    screen = simulate_screen(**params, seed=seed)
    data = screen_to_crl_data(screen)
    design = _design(**_design_params(params), seed=seed)
    log_mu = design.log_mean(slice(None))
    offset = np.logaddexp.reduce(log_mu, axis=1)
    # the simulator's next draw is the library size (then the counts): replay it
    mean_library = params.get("mean_library_size", 5000.0)
    library = design.rng.lognormal(np.log(mean_library), 0.3, size=log_mu.shape[0])
    index = {g: i for i, g in enumerate(design.genes)}
    columns = [index[f] for f in data.features]
    z = screen.latents.drop(columns="sample_id").to_numpy()
    ctrl = data.is_control
    z = (z - z[ctrl].mean(axis=0)) / z[ctrl].std(axis=0)
    return Truth(
        data=data, z=z, programs=list(screen.gene_sets), targets=screen.targets, graph=screen.graph,
        latents=screen.latents, log_mean=log_mu[:, columns], offset=offset, library=library,
    )  # fmt: skip


def _design_params(params: dict) -> dict:
    full = {
        k: v.default
        for k, v in __import__("inspect").signature(simulate_screen).parameters.items()
        if k not in (*_SIM_ONLY, "seed")
    }
    return full | {k: v for k, v in params.items() if k not in _SIM_ONLY}


# -- the rows ----------------------------------------------------------------------------------------
def true_structure(truth: Truth, labels: list[str]) -> tuple[np.ndarray, list[int]]:
    """Target mask (labels x programs) and a causal order (sources first) of the truth."""
    index = {p: k for k, p in enumerate(truth.programs)}
    mask = np.zeros((len(labels), len(truth.programs)), dtype=bool)
    for lab, prog in truth.targets.itertuples(index=False):
        if lab in labels:
            mask[labels.index(lab), index[prog]] = True
    g = nx.DiGraph(list(zip(truth.graph["source"], truth.graph["target"], strict=True)))
    g.add_nodes_from(truth.programs)
    order = [index[p] for p in nx.lexicographical_topological_sort(g)]
    return mask, order


def score_row(
    name: str, scores: np.ndarray, truth: Truth, *, readout=None, true_targets: bool = False, latents=None, shifts=None
) -> dict:
    """Metrics of latents ``scores`` (cells x programs, in ``truth.programs`` order) read out into a graph;
    ``shifts``: the mean shifts the graph equations read, when the model reads them otherwise (counts)."""
    data = truth.data
    labels, score_shifts, counts = proto.group_shifts(scores, data)
    shifts = score_shifts if shifts is None else shifts
    _, true_shifts, _ = proto.group_shifts(truth.z, data)
    if true_targets:
        mask, order = true_structure(truth, labels)
        B = proto.graph_equations(shifts, counts, mask, order)
    else:
        B, mask = (readout or proto.current_readout)(shifts, counts, data, labels)
    exo = shifts @ (np.eye(len(truth.programs)) - B).T
    targets = pd.DataFrame(
        [(lab, p, float(exo[i, k])) for i, lab in enumerate(labels) for k, p in enumerate(truth.programs)],
        columns=["intervention", "latent", "score"],
    )
    graph = pd.DataFrame(
        [(truth.programs[i], truth.programs[j], B[j, i]) for j, i in zip(*np.nonzero(B), strict=True)],
        columns=["source", "target", "weight"],
    )
    if latents is None:
        latents = pd.DataFrame(scores, columns=truth.programs).assign(sample_id=data.sample_ids)
    m = tl.evaluate(
        graph=graph, targets=targets, latents=latents, true_graph=truth.graph, true_targets=truth.targets,
        true_latents=truth.latents,
    ).set_index("metric")["value"]  # fmt: skip
    # sign-align each latent with its program before comparing shifts (VAE latents carry no sign)
    sign = np.sign(np.sum(shifts * true_shifts, axis=0))
    err = np.linalg.norm(shifts * np.where(sign == 0, 1, sign) - true_shifts) / np.linalg.norm(true_shifts)
    return {
        "latents": name,
        "targets": "true" if true_targets else "own",
        "target_accuracy": float(m["target_accuracy"]),
        "shd": int(m["shd"]),
        "n_edges": int(m["n_edges_predicted"]),
        "mcc": round(float(m["mcc"]), 4),
        "shift_error": round(float(err), 4),
    }


def oracle_rows(truth: Truth) -> list[dict]:
    data = truth.data
    rows = [score_row("oracle: true latents", truth.z, truth, true_targets=True)]
    rows[-1]["latents"] = "oracle: true latents + targets"
    rows.append(score_row("oracle: true latents", truth.z, truth))
    # expected counts are library * exp(log_mean - offset): divide by that size, scale like CP10k
    size = truth.library * np.exp(-truth.offset) / (1e4 * np.median(np.exp(-truth.offset)))
    sources = {
        "oracle: log mean": truth.log_mean,
        "oracle: log proportion": truth.log_mean - truth.offset[:, None],
        "oracle: true size factor": np.log1p(data.counts.toarray() / size[:, None]),
    }
    for name, X in sources.items():
        scores = linear_scores(data, X)
        rows += [score_row(name, scores, truth), score_row(name, scores, truth, true_targets=True)]
    return rows


def linear_scores(data: CRLData, X: np.ndarray) -> np.ndarray:
    """The ``linear`` model's anchor read-out (control SDs) on the expression matrix ``X``."""
    swapped = CRLData(
        X=np.asarray(X, dtype=np.float32), sample_ids=data.sample_ids, features=data.features,
        intervention=data.intervention, is_control=data.is_control, targets=data.targets, anchors=data.anchors,
    )  # fmt: skip
    model = LinearSEM().fit(swapped)
    return model.get_latent_representation(swapped).drop(columns="sample_id").to_numpy()


def model_rows(truth: Truth, spec: str, seed: int, threads: int) -> list[dict]:
    """A registered model at its defaults (``name``) or with parameters (``name:key=value,key=value``)."""
    import yaml

    data = truth.data
    model, _, extra = spec.partition(":")
    params = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in extra.split(",") if kv)}
    if model != "linear":
        params["threads"] = threads
    start = time.perf_counter()
    fitted = tl.train(data, model=model, params=params, seed=seed)
    wall = time.perf_counter() - start
    lat = fitted.get_latent_representation(data)
    scores = lat[truth.programs].to_numpy()
    # the shifts the model's graph equations read (``linear`` reads them from counts by default)
    shifts = (
        fitted.mean_shifts().loc[data.perturbations, truth.programs].to_numpy()
        if hasattr(fitted, "mean_shifts")
        else None
    )
    own = _model_metrics(spec, fitted, lat, truth, shifts)
    return [own | {"fit_s": round(wall, 1)}, score_row(spec, scores, truth, true_targets=True, shifts=shifts)]


def _model_metrics(name: str, fitted, latents: pd.DataFrame, truth: Truth, shifts=None) -> dict:
    """A model's own targets and graph (what the workflow reports), scored like the other rows."""
    adjacency = fitted.get_adjacency().stack()
    graph = adjacency[adjacency != 0].rename_axis(["source", "target"]).reset_index(name="weight")
    m = tl.evaluate(
        graph=graph, targets=fitted.get_targets(), latents=latents, true_graph=truth.graph,
        true_targets=truth.targets, true_latents=truth.latents,
    ).set_index("metric")["value"]  # fmt: skip
    scores = latents[truth.programs].to_numpy()
    if shifts is None:
        _, shifts, _ = proto.group_shifts(scores, truth.data)
    _, true_shifts, _ = proto.group_shifts(truth.z, truth.data)
    err = np.linalg.norm(shifts - true_shifts) / np.linalg.norm(true_shifts)
    return {
        "latents": name, "targets": "own", "target_accuracy": float(m["target_accuracy"]), "shd": int(m["shd"]),
        "n_edges": int(m["n_edges_predicted"]), "mcc": round(float(m["mcc"]), 4), "shift_error": round(float(err), 4),
        "misfit": getattr(fitted, "equation_misfit", None),  # what the report warns on (MISFIT_WARNING)
    }  # fmt: skip


def empty_row(truth: Truth) -> dict:
    return {"latents": "empty graph", "targets": "-", "shd": len(truth.graph), "n_edges": 0}


# -- driver ---------------------------------------------------------------------------------------------
def screens(args: argparse.Namespace):
    """(label, simulate_screen params) for every combination of the sweep flags."""
    if args.screen == "demo":
        yield "demo", dict(DEMO)
        return
    for K in args.programs:
        for density in args.density:
            for cells in args.cells:
                for mixing in args.mixing:
                    n_edges = args.edges if args.edges is not None else int(round(density * K * (K - 1) / 2))
                    params = REFERENCE | dict(
                        n_programs=K, n_edges=n_edges, cells_per_perturbation=cells, mixing=mixing, shift=args.shift,
                        wrong_anchor_fraction=args.wrong_anchors, dispersion=args.dispersion,
                        standardise_latents=args.standardise, n_genes=max(args.genes, K * 40),
                    )  # fmt: skip
                    label = f"K={K} edges={n_edges} cells={cells} {mixing}"
                    yield label, params


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for label, params in screens(args):
        for seed in args.seeds:
            start = time.perf_counter()
            truth = simulate(params, seed)
            found = [empty_row(truth)]
            if args.oracles:
                found += oracle_rows(truth)
            for model in args.models:
                found += model_rows(truth, model, seed, args.threads)
            for name in args.prototypes:
                found += proto.PROTOTYPES[name](truth, seed)
            for row in found:
                rows.append({"screen": label, "seed": seed, **row})
            print(f"{label} seed {seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            table = pd.DataFrame(rows)
            if args.out:
                _append(table[(table["seed"] == seed) & (table["screen"] == label)], Path(args.out))
    table = pd.DataFrame(rows)
    print(markdown(table) if args.markdown else table.to_string())
    return table


def markdown(table: pd.DataFrame) -> str:
    """Per screen: one row per (latents, targets), per-seed values ``acc / SHD`` and the medians."""
    out = []
    for screen, block in table.groupby("screen", sort=False):
        seeds = sorted(block["seed"].unique())
        out.append(f"\n**{screen}** (seeds {', '.join(map(str, seeds))})\n")
        head = ["latents", "targets", *[f"seed {s}: acc / SHD" for s in seeds]]
        head += ["median acc", "median SHD", "median edges", "median MCC", "median shift err."]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + " --- |" * len(head))
        for (lat, tgt), rows in block.groupby(["latents", "targets"], sort=False):
            per = rows.set_index("seed")
            cells = [
                f"{_fmt(per.at[s, 'target_accuracy'])} / {_fmt(per.at[s, 'shd'])}" if s in per.index else "-"
                for s in seeds
            ]
            med = rows[["target_accuracy", "shd", "n_edges", "mcc", "shift_error"]].median()
            out.append("| " + " | ".join([lat, tgt, *cells, *[_fmt(med[c]) for c in med.index]]) + " |")
    return "\n".join(out)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"


def _append(table: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, mode="a", header=not out.exists(), index=False)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--screen", choices=["reference", "demo"], default="reference", help="preset; flags sweep reference")
    p.add_argument("--programs", type=int, nargs="+", default=[10], help="K")
    p.add_argument("--density", type=float, nargs="+", default=[0.45], help="share of the K (K-1)/2 pairs with an edge")
    p.add_argument("--edges", type=int, default=None, help="exact number of edges (overrides --density)")
    p.add_argument("--cells", type=int, nargs="+", default=[300], help="cells per perturbation")
    p.add_argument("--mixing", nargs="+", default=["linear"], choices=["linear", "nonlinear"])
    p.add_argument("--shift", type=float, default=2.5, help="shift of a perturbed program, in its control SDs")
    p.add_argument("--wrong-anchors", type=float, default=0.0, help="share of each program's anchors that are wrong")
    p.add_argument("--dispersion", type=float, default=10.0, help="NB dispersion")
    p.add_argument("--genes", type=int, default=800, help="genes (at least 40 per program)")
    p.add_argument(
        "--standardise", action="store_true", help="standardise the simulated latents (the issue's screen does not)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--models", nargs="*", default=["linear"], help="registered models: name (defaults) or name:key=value,..."
    )
    p.add_argument(
        "--prototypes", nargs="*", default=[], help=f"rows of benchmarks/_prototypes.py: {list(proto.PROTOTYPES)}"
    )
    p.add_argument("--no-oracles", dest="oracles", action="store_false")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default="benchmarks/out/harder_screens.csv", help="CSV the rows are appended to ('' none)")
    p.add_argument("--markdown", action="store_true")
    return p


if __name__ == "__main__":
    main()
