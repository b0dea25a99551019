"""Edges into variables that nothing drives, at the defaults, across simulator seeds (issue 16).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/false_edges.py --case arm --model temporal --seeds 10
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/false_edges.py --case screen --model linear --seeds 10

Cases (each adds variables with no parent and no child to a simulator with a known graph):

- ``arm``: the MuJoCo arm (4 commanded joints, a pushed gate, a light) plus two pure-noise
  channels (``noise_0`` white, ``noise_1`` a random walk) and a motor temperature of the shoulder
  (``--temperature``);
- ``robot``: :func:`crl_pipe.simulate.simulate_robot` (6 joints, 3 couplings) plus the same noise
  channels;
- ``screen``: a demo-sized screen (K = 6, 300 cells per perturbation) whose last program ``P6`` has
  no parent and no child (``isolated_programs=1``).

For each seed: the model at its defaults, :func:`crl_pipe.tl.recover_graph` with ``--refits``
refits; then whether any reported edge (and any confident edge, column ``confidence``) touches an
isolated variable, how many true edges are reported / confident, and the false edges. The last
lines summarise over seeds. ``--params`` (JSON) overrides model parameters, e.g. the old defaults.
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch

from crl_pipe import pp, tl
from crl_pipe.models import CRLData
from crl_pipe.simulate import screen_to_crl_data, simulate_arm, simulate_robot, simulate_screen


def case_data(case: str, seed: int, temperature: bool) -> tuple[CRLData, pd.DataFrame, set[str], dict]:
    """Data, true graph, the isolated variables, and the model parameters the workflow would add."""
    if case == "screen":
        screen = simulate_screen(
            n_programs=6, n_control=2000, cells_per_perturbation=300, isolated_programs=1, seed=seed
        )
        return screen_to_crl_data(screen, with_counts=False), screen.graph, {"P6"}, {}
    extra = {"noise_channels": 2, "temperature_of": "shoulder_yaw" if temperature and case == "arm" else None}
    sim = simulate_arm(**extra, seed=seed) if case == "arm" else simulate_robot(**extra, seed=seed)
    data = CRLData.from_artifacts(sim.adata, pp.robot_interventions(sim.adata))
    return data, sim.graph, {"noise_0", "noise_1"}, {}


def run_seed(args: argparse.Namespace, seed: int) -> dict:
    data, truth, isolated, params = case_data(args.case, seed, args.temperature)
    params |= json.loads(args.params)
    start = time.perf_counter()
    model = tl.train(data, model=args.model, params=params, seed=seed)
    fit_s = time.perf_counter() - start
    graph = tl.recover_graph(model, data, n_refits=args.refits, seed=seed)
    graph_s = time.perf_counter() - start - fit_s
    confident = graph[graph["confidence"] == "confident"] if "confidence" in graph else graph.iloc[:0]
    true_pairs = set(zip(truth["source"], truth["target"], strict=True))

    def pairs(g: pd.DataFrame) -> set[tuple[str, str]]:
        return set(zip(g["source"].astype(str), g["target"].astype(str), strict=True))

    def touches(g: pd.DataFrame) -> bool:
        return bool((g["source"].isin(isolated) | g["target"].isin(isolated)).any())

    row = {
        "seed": seed,
        "isolated_edge": touches(graph),
        "isolated_confident": touches(confident),
        "true_edges": len(true_pairs),
        "true_reported": len(pairs(graph) & true_pairs),
        "true_confident": len(pairs(confident) & true_pairs),
        "false_reported": len(pairs(graph) - true_pairs),
        "false_confident": len(pairs(confident) - true_pairs),
        "fit_s": round(fit_s, 2),
        "graph_s": round(graph_s, 2),
    }
    if args.verbose:
        print(graph.to_string())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["arm", "robot", "screen"], default="arm")
    parser.add_argument("--model", default="temporal")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--refits", type=int, default=20)
    parser.add_argument("--params", default="{}", help="model parameters as JSON (override the defaults)")
    parser.add_argument("--temperature", action="store_true", help="arm: add the shoulder's motor temperature")
    parser.add_argument("--verbose", action="store_true", help="print each seed's graph")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rows.append(run_seed(args, seed))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    n = len(table)
    print(
        f"{args.case} / {args.model} {args.params}: isolated variable with an edge in "
        f"{int(table['isolated_edge'].sum())}/{n} seeds, with a confident edge in "
        f"{int(table['isolated_confident'].sum())}/{n}; true edges reported "
        f"{table['true_reported'].sum()}/{table['true_edges'].sum()}, confident "
        f"{table['true_confident'].sum()}/{table['true_edges'].sum()}; false edges per seed reported "
        f"{table['false_reported'].mean():.1f}, confident {table['false_confident'].mean():.1f}; "
        f"median fit {table['fit_s'].median():.1f} s, graph {table['graph_s'].median():.1f} s"
    )


if __name__ == "__main__":
    main()
