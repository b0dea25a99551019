"""Anchor check of ``linear`` (crl_pipe/models/_anchor_profiles.py): gene-set members that other
programs drive are dropped, the right anchors kept, and the graph is better for it."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

from crl_pipe import tl
from crl_pipe.models import CRLData, LinearSEM
from crl_pipe.models._anchor_profiles import consistent_anchors
from crl_pipe.simulate import screen_to_crl_data, simulate_screen
from crl_pipe.simulate._screen import _design

#: A dense K = 6 screen in the SEM's own units with a third of every gene set wrong (4 of 12 anchors
#: are genes that other programs drive).
WRONG = dict(
    n_programs=6, n_edges=10, min_edge_weight=0.6, max_edge_weight=1.2, guides_per_program=2, n_doubles=0,
    shift=2.5, shift_unit="latent", cells_per_perturbation=200, n_control=2000, n_genes=400, anchors_per_program=12,
    standardise_latents=False, wrong_anchor_fraction=1 / 3,
)  # fmt: skip


def _right_anchors(screen: dict, seed: int) -> dict[str, set[str]]:
    defaults = {k: v.default for k, v in inspect.signature(simulate_screen).parameters.items()}
    knobs = {k: v for k, v in defaults.items() if k not in ("seed", "mean_library_size", "dispersion")}
    design = _design(**(knobs | screen), seed=seed)
    A = pd.DataFrame(design.A, index=design.genes)
    return {p: {g for g in genes if A.loc[g, k] != 0} for k, (p, genes) in enumerate(design.gene_sets.items())}


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_drops_the_anchors_other_programs_drive(seed):
    data = screen_to_crl_data(simulate_screen(**WRONG, seed=seed))
    right = _right_anchors(WRONG, seed)
    model = LinearSEM(readout="scores").fit(data)
    wrong_kept = sum(len(set(model.anchor_sets[p]) - right[p]) for p in right)
    right_dropped = sum(len(right[p] - set(model.anchor_sets[p])) for p in right)
    assert right_dropped == 0, model.anchor_sets
    assert wrong_kept <= 3, (wrong_kept, model.anchor_sets)  # of 24
    assert LinearSEM(readout="scores", check_anchors=False).fit(data).anchor_sets == {
        p: list(data.anchors[p]) for p in right
    }


def test_the_kept_anchors_give_the_graph_the_listed_ones_miss():
    screen = simulate_screen(**WRONG, seed=3)
    data = screen_to_crl_data(screen)
    shd = {}
    for check in (True, False):
        model = tl.train(data, model="linear", params={"check_anchors": check}, seed=0)
        adjacency = model.get_adjacency().stack()
        graph = adjacency[adjacency != 0].rename_axis(["source", "target"]).reset_index(name="weight")
        metrics = tl.evaluate(
            graph=graph, targets=model.get_targets(), latents=model.get_latent_representation(data),
            true_graph=screen.graph, true_targets=screen.targets, true_latents=screen.latents,
        ).set_index("metric")["value"]  # fmt: skip
        shd[check] = metrics["shd"]
    assert shd[True] <= 2 and shd[False] >= shd[True] + 3, shd


def _profiles(n_perturbations: int = 12, seed: int = 0):
    """Cells of controls and perturbations; genes g0-g5 follow program 1 (one profile), g6-g7 another."""
    rng = np.random.default_rng(seed)
    labels = [f"P{i}" for i in range(n_perturbations)]
    d1, d2 = rng.normal(0, 1.5, n_perturbations), rng.normal(0, 1.5, n_perturbations)
    intervention = np.repeat(["control", *labels], 200)
    group = np.repeat(np.arange(n_perturbations + 1), 200)
    z1 = np.r_[0.0, d1][group] + rng.standard_normal(group.size)
    z2 = np.r_[0.0, d2][group] + rng.standard_normal(group.size)
    X = np.column_stack([0.8 * z1] * 6 + [0.8 * z2] * 2 + [0.5 * rng.standard_normal(group.size)] * 3)
    X = X + 0.5 * rng.standard_normal(X.shape)
    genes = [f"g{i}" for i in range(X.shape[1])]
    return X, genes, intervention, labels


def _data(X, genes, intervention, anchors, targets=None):
    return CRLData(
        X=X.astype(np.float32), sample_ids=np.array([f"c{i}" for i in range(len(X))]), features=genes,
        intervention=intervention, is_control=intervention == "control", targets=targets or {}, anchors=anchors,
    )  # fmt: skip


def test_a_gene_with_another_profile_is_dropped_and_a_quiet_program_keeps_its_anchors():
    X, genes, intervention, _ = _profiles()
    anchors = {"A": genes[:8], "Q": genes[8:11]}  # Q: three genes no perturbation moves
    kept = consistent_anchors(_data(X, genes, intervention, anchors), ["A", "Q"])
    assert kept == {"A": genes[:6], "Q": genes[8:11]}


def test_a_gene_knocked_down_by_its_own_perturbation_is_judged_on_the_others():
    """A perturbed gene in its program's set: its knockdown in its own perturbation is not the program's
    response, so that one mean is left out of its profile and the gene is kept."""
    X, genes, intervention, labels = _profiles(seed=1)
    X[intervention == labels[0], 0] -= 4.0  # knockdown of g0 in P0
    anchors = {"A": genes[:6]}
    data = _data(X, genes, intervention, anchors, targets={labels[0]: ("g0",)})
    assert consistent_anchors(data, ["A"]) == anchors
    # without the target annotation the same gene misfits P0 by far and is dropped
    assert consistent_anchors(_data(X, genes, intervention, anchors), ["A"]) == {"A": genes[1:6]}


def test_too_few_perturbations_or_anchors_leave_the_sets_as_listed():
    X, genes, intervention, labels = _profiles(n_perturbations=2)
    anchors = {"A": genes[:8], "B": genes[6:8]}
    data = _data(X, genes, intervention, anchors)
    assert consistent_anchors(data, ["A", "B"]) == anchors
