"""What the data can identify, program by program and edge by edge, said plainly.

The guarantees behind anchored interventional CRL (anchors: Moran et al. 2022; single-node
interventions: Squires et al. 2023, Zhang et al. 2023) hold only where the data meet their
conditions. This module checks those conditions on the artifacts of one fitted model:

- a program is identifiable up to scaling when at least two anchor genes load on it alone;
- its place in the graph is identifiable when at least one perturbation acts on it alone
  (a single-target intervention: one labelled target, and the model assigns it this one program);
- an edge ``S -> T`` is supported by the single-target interventions on its cause ``S`` (the shift
  they cause in ``T`` is what orients and weighs the edge); without any, it rests on nothing but
  observational covariance and the model's assumptions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Verdicts, strongest first (the report colours nothing: the words carry the meaning).
PROGRAM_VERDICTS = {
    "identified": "identifiable: anchored, with a single-target intervention",
    "anchored_only": "scale identified by anchors; its place in the graph rests on no intervention of its own",
    "intervened_only": "has a single-target intervention, but fewer than 2 anchors: which genes it means is uncertain",
    "nothing": "rests on nothing: no anchors and no single-target intervention",
}


def identifiability(
    labels: pd.DataFrame,
    targets: pd.DataFrame,
    latents: list[str],
    anchors: pd.DataFrame | None = None,
    graph: pd.DataFrame | None = None,
    *,
    min_anchors: int = 2,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-program and per-edge identifiability of one fitted model.

    Parameters
    ----------
    labels
        ``interventions.parquet``: one row per cell with ``intervention``, ``n_targets``, ``is_control``.
    targets
        The model's ``targets.parquet`` (``intervention, latent, score, is_target``).
    latents
        The model's latent (program) names, in order.
    anchors
        ``anchors.parquet`` (``program, feature``); programs absent from it have no anchors.
    graph
        The model's ``graph.parquet`` (``source, target, weight, stability``).

    Returns
    -------
    programs
        One row per latent: ``program, n_anchors, single_target, single_target_cells, multi_target,
        verdict`` (the key of :data:`PROGRAM_VERDICTS`) and ``explanation``.
    edges
        One row per graph edge: ``source, target, supported_by, cells, rests_on_nothing``.
    """
    cells = labels.loc[~labels["is_control"]].groupby("intervention", observed=True).size()
    n_labelled = labels.drop_duplicates("intervention").set_index("intervention")["n_targets"]
    hits = targets.loc[targets["is_target"], ["intervention", "latent"]].astype(str)
    per_intervention = hits.groupby("intervention")["latent"].agg(list)
    single = {
        name: latents_hit[0]
        for name, latents_hit in per_intervention.items()
        if len(latents_hit) == 1 and int(n_labelled.get(name, 1)) <= 1
    }
    n_anchors = (
        anchors.assign(program=anchors["program"].astype(str)).groupby("program").size()
        if anchors is not None and len(anchors)
        else pd.Series(dtype=int)
    )
    rows = []
    for latent in map(str, latents):
        mine = sorted(i for i, p in single.items() if p == latent)
        multi = sorted(i for i, ps in per_intervention.items() if latent in ps and i not in single)
        k = int(n_anchors.get(latent, 0))
        verdict = _program_verdict(k >= min_anchors, bool(mine))
        rows.append(
            {
                "program": latent,
                "n_anchors": k,
                "single_target": mine,
                "single_target_cells": int(sum(int(cells.get(i, 0)) for i in mine)),
                "multi_target": multi,
                "verdict": verdict,
                "explanation": PROGRAM_VERDICTS[verdict],
            }
        )
    programs = pd.DataFrame(rows, columns=_PROGRAM_COLUMNS)
    return programs, _edge_support(graph, programs, latents)


_PROGRAM_COLUMNS = [
    "program",
    "n_anchors",
    "single_target",
    "single_target_cells",
    "multi_target",
    "verdict",
    "explanation",
]
_EDGE_COLUMNS = ["source", "target", "supported_by", "cells", "rests_on_nothing"]


def _program_verdict(anchored: bool, intervened: bool) -> str:
    if anchored and intervened:
        return "identified"
    if anchored:
        return "anchored_only"
    return "intervened_only" if intervened else "nothing"


def _edge_support(graph: pd.DataFrame | None, programs: pd.DataFrame, latents: list[str]) -> pd.DataFrame:
    if graph is None or not len(graph):
        return pd.DataFrame(columns=_EDGE_COLUMNS)
    by_program = programs.set_index("program")
    rows = []
    for source, target in zip(graph["source"].astype(str), graph["target"].astype(str), strict=True):
        if source not in set(map(str, latents)):
            # an observed cause (a robot command): it is itself the intervention
            rows.append((source, target, "observed cause (a command)", np.nan, False))
            continue
        support = list(by_program.at[source, "single_target"]) if source in by_program.index else []
        cells = int(by_program.at[source, "single_target_cells"]) if support else 0
        rows.append((source, target, ", ".join(support) if support else "nothing", cells, not support))
    return pd.DataFrame(rows, columns=_EDGE_COLUMNS)
