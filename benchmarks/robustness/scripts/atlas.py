"""One cell of the robustness atlas: a simulated screen (or robot log) with one assumption weakened, scored.

A cell is a set of simulator (and method-side) parameters and a seed. For a screen, every model of
``models`` is fit and its graph recovered with stability selection (:func:`crl_pipe.tl.recover_graph`),
and PC and GES (``baselines``) run on the programs' anchor scores (the mean of each program's given,
standardised anchor genes; control cells, as the workflow's baselines). For a robot log, the
``temporal`` model. Each row is one method on one cell and seed, with the atlas's metrics
(:data:`METRICS`).

Method-side knobs (what the analyst gives, not what the cells do):

- ``anchors_given``: share of each program's true anchors listed in its gene set (0: no gene sets,
  anchors are found from the data by :func:`crl_pipe.pp.data_driven_anchors`, as the workflow does);
- robots: ``sensor_noise`` (SD of Gaussian noise added to every measured state channel, in radians)
  and ``unlogged_commands`` (commands of the first joints dropped from the log; their edges leave
  the truth too, since nothing measured can show them).

The false-edge metric is item 1's: each screen has one isolated program (``isolated_programs=1``:
no parent, no child) and each robot log one pure-noise channel (``noise_channels=1``); ``false_edge``
is 1 when a *confident* edge touches it.
"""

from __future__ import annotations

import os
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per job

import anndata as ad
import numpy as np
import pandas as pd

from crl_pipe import pp, tl
from crl_pipe.models import CRLData
from crl_pipe.simulate import CONTROL_LABEL, screen_to_crl_data, simulate_robot, simulate_screen

#: Columns of a result row, in order.
METRICS = [
    "target_accuracy",
    "shd",
    "edge_precision",
    "edge_recall",
    "edge_f1",
    "shd_confident",
    "f1_confident",
    "mcc",
    "false_edge",
    "n_edges_true",
    "n_edges_predicted",
    "n_confident",
    "fit_s",
]
ROW_COLUMNS = ["kind", "cell", "seed", "method", *METRICS]
#: Keys of a cell's parameters that are not simulator arguments.
METHOD_KNOBS = ("anchors_given", "sensor_noise", "unlogged_commands")


def run_cell(
    kind: str, cell: str, params: dict[str, Any], seed: int, methods: list[str], n_refits: int, model_params=None
) -> pd.DataFrame:
    """Rows of :data:`ROW_COLUMNS` of every method in ``methods`` on one cell and seed."""
    import torch  # deferred: only the jobs import torch

    torch.set_num_threads(1)
    run = screen_rows if kind == "screen" else robot_rows
    rows = run(dict(params), seed, methods, n_refits, dict(model_params or {}))
    table = pd.DataFrame(rows)
    table.insert(0, "seed", seed)
    table.insert(0, "cell", cell)
    table.insert(0, "kind", kind)
    return table.reindex(columns=ROW_COLUMNS)


# -- screens ------------------------------------------------------------------------------------------------
def screen_rows(params: dict, seed: int, methods: list[str], n_refits: int, model_params: dict) -> list[dict]:
    anchors_given = float(params.pop("anchors_given", 1.0))
    screen = simulate_screen(**params, seed=seed)
    data = screen_to_crl_data(screen, with_counts=False)
    data.anchors = given_anchors(screen.gene_sets, anchors_given, data)
    isolated = {screen.latents.columns[-1]}  # the last program (isolated_programs=1)
    rows = []
    for method in methods:
        start = time.perf_counter()
        if method in tl.BASELINES:
            graph, targets, latents = _baseline(data, method, n_refits, seed)
        else:
            model = tl.train(data, model=method, params=model_params.get(method, {}), seed=seed)
            graph = tl.recover_graph(model, data, n_refits=n_refits, seed=seed)
            targets, latents = model.get_targets(), model.get_latent_representation(data)
        wall = time.perf_counter() - start
        row = score(graph, targets, latents, screen.graph, screen.targets, screen.latents, isolated)
        if method in tl.BASELINES:  # graph methods: no targets or latents of their own
            row |= {"target_accuracy": np.nan, "mcc": np.nan}
        rows.append({"method": method, **row, "fit_s": round(wall, 2)})
    return rows


def given_anchors(gene_sets: dict[str, list[str]], share: float, data: CRLData) -> dict[str, list[str]]:
    """The first ``round(share * n)`` genes of each gene set; ``share == 0``: data-driven anchors."""
    if share > 0:
        return {p: genes[: max(int(round(share * len(genes))), 2)] for p, genes in gene_sets.items()}
    adata = ad.AnnData(X=data.X, obs=pd.DataFrame({"is_control": data.is_control}, index=data.sample_ids.astype(str)))
    adata.var_names = data.features
    table, _ = pp.data_driven_anchors(adata, n_programs=len(gene_sets))
    return {str(p): list(g["feature"].astype(str)) for p, g in table.groupby("program", sort=False)}


def anchor_scores(data: CRLData) -> CRLData:
    """The programs as observed variables: mean of each program's standardised anchors (control SDs)."""
    index = {g: j for j, g in enumerate(data.features)}
    ctrl = data.X[data.is_control]
    mu, sd = ctrl.mean(axis=0), ctrl.std(axis=0) + 1e-8
    cols = {p: (data.X[:, [index[g] for g in genes]] - mu[[index[g] for g in genes]]) / sd[[index[g] for g in genes]]
            for p, genes in data.anchors.items()}  # fmt: skip
    X = np.column_stack([c.mean(axis=1) for c in cols.values()]).astype(np.float64)
    return CRLData(
        X=X, sample_ids=data.sample_ids, features=list(cols), intervention=data.intervention,
        is_control=data.is_control, targets=data.targets, anchors={p: [p] for p in cols},
    )  # fmt: skip


def _baseline(data: CRLData, method: str, n_refits: int, seed: int):
    scores = anchor_scores(data)
    edges = tl.baseline_graph(scores, method, n_refits=n_refits, seed=seed)  # the models' confidence call too
    # targets only to map score variables to programs (by their mean shift in control SDs)
    ctrl = scores.X[scores.is_control]
    z = (scores.X - ctrl.mean(axis=0)) / ctrl.std(axis=0)
    frame = pd.DataFrame(z, columns=scores.features).assign(intervention=scores.intervention)
    shifts = frame[frame["intervention"] != CONTROL_LABEL].groupby("intervention").mean()
    targets = shifts.stack().rename_axis(["intervention", "latent"]).reset_index(name="score")
    latents = pd.DataFrame(z, columns=scores.features).assign(sample_id=scores.sample_ids)
    return edges, targets, latents


# -- robots -------------------------------------------------------------------------------------------------
def robot_rows(params: dict, seed: int, methods: list[str], n_refits: int, model_params: dict) -> list[dict]:
    sensor_noise = float(params.pop("sensor_noise", 0.0))
    unlogged = int(params.pop("unlogged_commands", 0))
    robot = simulate_robot(**params, noise_channels=1, seed=seed)
    adata, truth = robot.adata, robot.graph
    joints = [c for c in adata.var_names if not c.startswith("action.") and c.startswith("joint_")]
    if sensor_noise > 0:  # measurement noise on every state channel, from its own stream
        rng = np.random.default_rng([seed, 7])
        state = np.asarray(adata.var["kind"] == "state")
        adata = adata.copy()
        adata.X[:, state] += rng.normal(0.0, sensor_noise, (adata.n_obs, int(state.sum())))
    dropped = [f"action.{j}" for j in joints[:unlogged]]
    if dropped:
        adata = adata[:, [v for v in adata.var_names if v not in dropped]].copy()
        truth = truth[~truth["source"].isin(dropped)]
    data = CRLData.from_artifacts(adata, pp.robot_interventions(adata))
    rows = []
    for method in methods:
        start = time.perf_counter()
        model = tl.train(data, model=method, params=model_params.get(method, {}), seed=seed)
        graph = tl.recover_graph(model, data, n_refits=n_refits, seed=seed)
        wall = time.perf_counter() - start
        row = score(graph, None, None, truth, None, None, {"noise_0"})
        commands = truth[truth["source"].str.startswith("action.")]
        found = set(zip(graph["source"], graph["target"], strict=True))
        hit = [(s, t) in found for s, t in zip(commands["source"], commands["target"], strict=True)]
        row["target_accuracy"] = float(np.mean(hit)) if hit else np.nan  # commands whose joint is found
        rows.append({"method": method, **row, "fit_s": round(wall, 2)})
    return rows


# -- metrics ------------------------------------------------------------------------------------------------
def score(graph, targets, latents, true_graph, true_targets, true_latents, isolated: set[str]) -> dict:
    """The atlas metrics of one recovered graph (``confidence`` column: item 1's call) against the truth."""
    kw = dict(true_graph=true_graph, true_targets=true_targets, true_latents=true_latents)
    if targets is None:
        targets = pd.DataFrame({"intervention": [], "latent": [], "score": []})
        nodes = sorted(set(graph["source"]) | set(graph["target"]))
        latents = pd.DataFrame(columns=["sample_id", *nodes])
    m = tl.evaluate(graph=graph, targets=targets, latents=latents, **kw).set_index("metric")["value"]
    confident = graph[graph["confidence"] == "confident"]
    mc = tl.evaluate(graph=confident, targets=targets, latents=latents, **kw).set_index("metric")["value"]
    mapping = _mapping(targets, true_targets, latents)
    ends = pd.concat([confident["source"], confident["target"]]).astype(str).map(lambda n: mapping.get(n, n))
    return {
        "target_accuracy": float(m.get("target_accuracy", np.nan)),
        "shd": float(m["shd"]),
        "edge_precision": float(m["edge_precision"]),
        "edge_recall": float(m["edge_recall"]),
        "edge_f1": _f1(m["edge_precision"], m["edge_recall"]),
        "shd_confident": float(mc["shd"]),
        "f1_confident": _f1(mc["edge_precision"], mc["edge_recall"]),
        "mcc": float(m.get("mcc", np.nan)),
        "false_edge": float(bool(ends.isin(isolated).any())),
        "n_edges_true": float(m["n_edges_true"]),
        "n_edges_predicted": float(m["n_edges_predicted"]),
        "n_confident": float(len(confident)),
    }


def _mapping(targets, true_targets, latents) -> dict[str, str]:
    """Latent -> program map of :func:`crl_pipe.tl.evaluate` (through the interventions)."""
    if true_targets is None or targets.empty:
        return {}
    return tl.map_latents(tl.predicted_targets(targets), true_targets)


def _f1(precision: float, recall: float) -> float:
    p, r = float(precision), float(recall)
    if np.isnan(p) or np.isnan(r):
        return 0.0 if not np.isnan(r) else np.nan  # no edge drawn: F1 0 (precision undefined)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)
