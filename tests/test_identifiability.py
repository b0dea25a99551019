"""Which programs and edges the data can identify: the conditions, checked on hand-made artifacts."""

from __future__ import annotations

import pandas as pd

from crl_pipe.tl import identifiability

LATENTS = ["P1", "P2", "P3", "P4"]


def _labels(groups: dict[str, int]) -> pd.DataFrame:
    rows = []
    for name, n in groups.items():
        targets = [] if name == "control" else name.split("+")
        rows += [(f"{name}-{i}", name, targets, len(targets), name == "control") for i in range(n)]
    return pd.DataFrame(rows, columns=["sample_id", "intervention", "targets", "n_targets", "is_control"])


def _targets(assigned: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(i, p, 1.0 if p in hit else 0.0, p in hit) for i, hit in assigned.items() for p in LATENTS]
    return pd.DataFrame(rows, columns=["intervention", "latent", "score", "is_target"])


def _anchors(counts: dict[str, int]) -> pd.DataFrame:
    rows = [(p, f"{p}_g{k}", 1.0) for p, n in counts.items() for k in range(n)]
    return pd.DataFrame(rows, columns=["program", "feature", "weight"])


def test_programs_and_edges_get_the_verdict_their_conditions_give():
    labels = _labels({"control": 50, "A": 30, "B": 20, "B2": 10, "C+D": 25})
    # A hits P1 alone; B and B2 hit P2 alone; the double C+D hits P3 and P4; P4 has one anchor only
    targets = _targets({"A": ["P1"], "B": ["P2"], "B2": ["P2"], "C+D": ["P3", "P4"]})
    anchors = _anchors({"P1": 3, "P2": 2, "P3": 5, "P4": 1})
    graph = pd.DataFrame(
        {
            "source": ["P1", "P3", "P2"],
            "target": ["P2", "P1", "P4"],
            "weight": [0.8, -0.5, 0.3],
            "stability": [1, 1, 0.4],
        }
    )
    programs, edges = identifiability(labels, targets, LATENTS, anchors, graph)

    by = programs.set_index("program")
    assert by.loc["P1", "verdict"] == "identified" and by.loc["P1", "single_target_cells"] == 30
    assert by.loc["P2", "single_target"] == ["B", "B2"] and by.loc["P2", "single_target_cells"] == 30
    # a multi-target perturbation does not place a program in the graph
    assert by.loc["P3", "verdict"] == "anchored_only" and by.loc["P3", "multi_target"] == ["C+D"]
    assert by.loc["P4", "verdict"] == "nothing" and by.loc["P4", "n_anchors"] == 1
    assert "rests on nothing" in by.loc["P4", "explanation"]

    support = edges.set_index(["source", "target"])
    assert support.loc[("P1", "P2"), "supported_by"] == "A" and not support.loc[("P1", "P2"), "rests_on_nothing"]
    assert support.loc[("P3", "P1"), "rests_on_nothing"] and support.loc[("P3", "P1"), "supported_by"] == "nothing"
    assert support.loc[("P2", "P4"), "cells"] == 30


def test_a_label_with_two_targets_is_not_single_target_even_if_the_model_assigns_one_program():
    labels = _labels({"control": 10, "A+B": 10})
    programs, _ = identifiability(labels, _targets({"A+B": ["P1"]}), LATENTS, _anchors({"P1": 2}))
    row = programs.set_index("program").loc["P1"]
    assert row["single_target"] == [] and row["multi_target"] == ["A+B"] and row["verdict"] == "anchored_only"


def test_observed_causes_of_robot_graphs_are_their_own_intervention():
    labels = _labels({"control": 10, "a": 10})
    graph = pd.DataFrame({"source": ["action.knee"], "target": ["P1"], "weight": [1.0], "stability": [1.0]})
    _, edges = identifiability(labels, _targets({"a": ["P1"]}), LATENTS, None, graph)
    assert edges.loc[0, "supported_by"] == "observed cause (a command)" and not edges.loc[0, "rests_on_nothing"]
