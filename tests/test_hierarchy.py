"""Level 2 of the concept graph: modules recovered on a simulated two-level screen, spurious
within-module edges removed, bad given hierarchies refused before any fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from crl_pipe import ConfigError, pipeline
from crl_pipe.io import read_table, write_table
from crl_pipe.simulate import CONTROL_LABEL, simulate_screen
from crl_pipe.tl import graph_metrics, hierarchy, module_metrics

TWO_LEVEL = dict(n_programs=6, n_genes=200, n_modules=2, n_control=2000, cells_per_perturbation=300)


def _interventions(screen) -> pd.DataFrame:
    labels = screen.adata.obs["perturbation"].astype(str).to_numpy()
    return pd.DataFrame(
        {
            "sample_id": screen.adata.obs_names,
            "intervention": labels,
            "targets": [[] if lab == CONTROL_LABEL else lab.split("+") for lab in labels],
            "n_targets": [0 if lab == CONTROL_LABEL else lab.count("+") + 1 for lab in labels],
            "is_control": labels == CONTROL_LABEL,
        }
    )


def _stage_inputs(tmp_path, screen):
    """The learn_hierarchy stage's inputs of a simulated screen, written to ``tmp_path``."""
    lat, iv, anc = tmp_path / "latents.parquet", tmp_path / "interventions.parquet", tmp_path / "anchors.parquet"
    write_table(screen.latents, lat, "latents")
    write_table(_interventions(screen), iv, "interventions")
    anchors = [(p, g, 1.0) for p, genes in screen.gene_sets.items() for g in genes]
    write_table(pd.DataFrame(anchors, columns=["program", "feature", "weight"]), anc, "anchors")
    return lat, iv, anc


@pytest.fixture(scope="module")
def two_level():
    screen = simulate_screen(**TWO_LEVEL, seed=0)
    return screen, hierarchy(screen.latents, _interventions(screen), n_resamples=5, seed=0)


def test_simulator_modules_truth_and_default_unchanged():
    s = simulate_screen(**TWO_LEVEL, seed=3)
    assert sorted(s.hierarchy["parent"].unique()) == ["M1", "M2"]
    assert (s.hierarchy.groupby("parent").size() >= 2).all() and (s.hierarchy["weight"] > 0).all()
    assert sorted(s.hierarchy["child"]) == [f"P{k}" for k in range(1, 7)]  # each program in one module
    labels = s.adata.obs["perturbation"].astype(str)
    assert {"MREG1", "MREG2"} <= set(labels) and "MREG1" not in set(s.targets["intervention"])
    # a module knockdown shifts its module (controls at SD 1) and, through it, its programs
    mod = s.modules.set_index("sample_id")
    ctrl = (labels == CONTROL_LABEL).to_numpy()
    assert np.allclose(mod[ctrl].std(), 1.0, atol=0.1)
    assert mod.loc[(labels == "MREG1").to_numpy(), "M1"].mean() - mod.loc[ctrl, "M1"].mean() < -1.5
    assert abs(mod.loc[(labels == "REG1").to_numpy(), "M1"].mean() - mod.loc[ctrl, "M1"].mean()) < 0.2
    # without modules: no module truth, the same draw as before modules existed
    plain = simulate_screen(n_programs=4, n_genes=80, anchors_per_program=5, n_control=200, seed=3)
    again = simulate_screen(n_programs=4, n_genes=80, anchors_per_program=5, n_control=200, seed=3, n_modules=0)
    assert plain.hierarchy is None and (plain.adata.X != again.adata.X).nnz == 0


def test_modules_recovered_and_spurious_edges_removed(two_level):
    screen, result = two_level
    mapping = {p: p for p in screen.latents.columns[1:]}
    scores = module_metrics(
        result.membership,
        result.module_graph,
        result.program_graph,
        true_hierarchy=screen.hierarchy,
        true_module_graph=screen.module_graph,
        true_graph=screen.graph,
        mapping=mapping,
    )
    assert scores["module_ari"] == pytest.approx(1.0)
    assert scores["module_shd"] == 0
    # the one-level readout draws edges inside the modules; given the modules they are gone
    assert scores["program_shd_given_modules"] < scores["program_shd_one_level"]
    assert scores["program_shd_given_modules"] == 0
    explained = result.program_graph[result.program_graph["status"] == "explained"]
    module_of = dict(zip(screen.hierarchy["child"], screen.hierarchy["parent"], strict=True))
    assert len(explained) >= 2 and all(module_of[s] == module_of[t] or module_of[t] for s, t in
                                       zip(explained["source"], explained["target"], strict=True))  # fmt: skip
    assert set(result.module_targets["intervention"]) == {"MREG1", "MREG2"}
    # memberships are stable and each module is identified (>= 2 programs of its own)
    assert (result.membership["stability"] >= 0.8).all()
    assert result.identifiability["identifiable"].all()
    best = result.selection.iloc[0]
    assert best["chosen"] and best["n_modules"] == 2 and best["partition"].count("{") == 2
    assert result.selection["description_length"].is_monotonic_increasing


def test_one_level_screen_gets_no_module():
    screen = simulate_screen(n_programs=5, n_genes=150, n_control=2000, cells_per_perturbation=300, seed=1)
    result = hierarchy(screen.latents, _interventions(screen), n_resamples=0)
    assert result.membership.empty and result.module_graph.empty
    one = result.program_graph
    assert graph_metrics(one, screen.graph, {p: p for p in screen.latents.columns[1:]})["shd"] <= 1


def test_given_hierarchy_is_kept_and_flagged_when_the_data_disagree(two_level):
    screen, _ = two_level
    truth = screen.hierarchy.groupby("parent")["child"].apply(list).to_dict()
    result = hierarchy(screen.latents, _interventions(screen), given=truth, n_resamples=0)
    assert sorted(result.membership["parent"].unique()) == ["M1", "M2"]
    wrong = {"A": ["P1", "P2", "P3"], "B": ["P4", "P5", "P6"]}
    if sorted(map(sorted, truth.values())) != sorted(map(sorted, wrong.values())):
        flagged = hierarchy(screen.latents, _interventions(screen), given=wrong, n_resamples=0)
        assert sorted(flagged.membership["parent"].unique()) == ["A", "B"]
        assert list(flagged.scores.columns) == ["sample_id", "A", "B"]  # the same names in every table
        assert any("the data prefer" in note for note in flagged.notes)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"M1": ["P1", "P9"]}, "hierarchy.M1: member 'P9' is neither a program"),
        ({"M1": []}, "hierarchy.M1: module has no member"),
        ({"A": ["P1", "B"], "B": ["P2", "A"]}, "hierarchy: cycle across levels"),
        ({"P1": ["P2", "P3"]}, "hierarchy.P1: a module cannot have the name of a program"),
    ],
)
def test_bad_given_hierarchy(two_level, given, message):
    screen, _ = two_level
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        hierarchy(screen.latents, _interventions(screen), given=given)
    assert "\n" not in str(err.value)


def test_stage_writes_the_artifacts_and_nothing_on_bad_input(tmp_path, two_level):
    screen, _ = two_level
    lat, iv, anc = _stage_inputs(tmp_path, screen)
    outs = {
        "out_hierarchy": tmp_path / "out" / "hierarchy.parquet",
        "out_modules": tmp_path / "out" / "modules.parquet",
        "out_module_graph": tmp_path / "out" / "module_graph.parquet",
        "out_program_graph": tmp_path / "out" / "graph_given_modules.parquet",
        "out_summary": tmp_path / "out" / "hierarchy.json",
    }
    with pytest.raises(ConfigError, match="hierarchy.modules.M1: member 'P7'"):
        pipeline.hierarchy(latents=lat, interventions=iv, anchors=anc, given={"M1": ["P1", "P7"]}, **outs)
    assert not any(p.exists() for p in outs.values())
    pipeline.hierarchy(latents=lat, interventions=iv, anchors=anc, n_resamples=3, **outs)
    table = read_table(outs["out_hierarchy"], "hierarchy")
    assert set(table["level"]) == {1, 2} and (table.loc[table["level"] == 1, "parent"].str.startswith("P")).all()
    modules = read_table(outs["out_modules"], "modules")
    assert list(modules.columns) == ["sample_id", "M1", "M2"] and len(modules) == len(screen.latents)
    assert np.isfinite(modules[["M1", "M2"]].to_numpy()).all()
    assert "stability" in read_table(outs["out_module_graph"], "graph")
    assert outs["out_summary"].read_text().startswith("{")


def test_concept_graph_figure_and_report_section(tmp_path, two_level):
    from crl_pipe.pl import concept_graph

    screen, result = two_level
    anchors = pd.DataFrame(
        [(1, p, g, 1.0, np.nan) for p, genes in screen.gene_sets.items() for g in genes],
        columns=["level", "parent", "child", "weight", "stability"],
    )
    membership = pd.concat([anchors, result.membership], ignore_index=True)
    fig = concept_graph(membership, result.program_graph, result.module_graph, title="two-level")
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert {"M1", "M2", "P1", "P6"} <= labels and any(lab.startswith("GENE") for lab in labels)
    assert fig.axes[0].get_yticklabels()[2].get_text() == "modules"


def test_report_shows_the_levels_only_with_a_hierarchy(tmp_path, two_level):
    import re

    from test_report import make_artifacts

    from crl_pipe.report import ReportInputs, write_report

    screen, result = two_level
    paths = make_artifacts(tmp_path, models={"linear": {"epochs": 1}}, with_truth=False)
    page = write_report(tmp_path / "plain.html", ReportInputs.from_paths("x", paths)).read_text()
    assert "Concept levels" not in page  # no hierarchy outputs: the section is left out, numbering unchanged
    folder = Path(paths["models"]["linear"])
    write_table(result.membership, folder / "hierarchy.parquet", "hierarchy")
    write_table(result.module_graph, folder / "module_graph.parquet", "graph")
    write_table(result.program_graph, folder / "graph_given_modules.parquet", "graph")
    write_table(result.program_graph, folder / "graph.parquet", "graph")  # the model drew the explained edges
    (folder / "hierarchy.json").write_text(
        json.dumps(
            {
                "notes": ["minimality cannot choose: <b>x</b>"],
                "identifiability": result.identifiability.astype(object).to_dict(orient="records"),
                "module_targets": [],
            }
        )  # fmt: skip
    )
    page = write_report(tmp_path / "levels.html", ReportInputs.from_paths("x", paths)).read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", page)
    assert titles[titles.index("5. Causal graph among programs") + 1] == "6. Concept levels: programs and modules"
    assert "linear: 2 module(s)" in page and "Memberships (6)" in page
    assert "M1: P" not in page  # without names (an older run), a module is its bare id
    assert "minimality cannot choose: &lt;b&gt;x&lt;/b&gt;" in page  # notes are escaped
    assert "Program edges a module explains" in page
    n = int((result.program_graph["status"] == "explained").sum())
    assert n and f"{n} edge" in page and "explained by a module (Concept levels, below)" in page  # in the graph section
    named = result.membership.assign(parent_name=result.membership["parent"] + ": P-name")
    write_table(named, folder / "hierarchy.parquet", "hierarchy")
    page = write_report(tmp_path / "named.html", ReportInputs.from_paths("x", paths)).read_text()
    assert "<td>M1: P-name</td>" in page and "<td>M2: P-name</td>" in page  # the memberships by readable name


def test_without_controls_modules_come_from_all_samples_and_the_graph_is_not_reread(two_level):
    screen, _ = two_level
    iv = _interventions(screen).assign(is_control=False, intervention="frame")
    result = hierarchy(screen.latents, iv, n_resamples=0)
    assert result.program_graph.empty and result.module_targets.empty
    assert result.membership["parent"].nunique() >= 1  # the programs' co-variation still forms modules


def test_a_given_nested_hierarchy_adds_level_3(two_level):
    screen, _ = two_level
    truth = screen.hierarchy.groupby("parent")["child"].apply(list).to_dict()
    result = hierarchy(
        screen.latents, _interventions(screen), given={**truth, "cell_state": ["M1", "M2"]}, n_resamples=0
    )
    level3 = result.membership[result.membership["level"] == 3]
    assert sorted(level3["child"]) == ["M1", "M2"] and set(level3["parent"]) == {"cell_state"}
    assert list(result.scores.columns) == ["sample_id", "M1", "M2"]


# ---- readable module names (from the programs' gene sets) ----------------------------------------
def test_module_names_from_gene_sets():
    from crl_pipe.tl import module_names

    membership = pd.DataFrame(
        [
            (2, "M1", "HALLMARK_INTERFERON_GAMMA_RESPONSE", 0.4, 1.0),
            (2, "M1", "HALLMARK_INTERFERON_ALPHA_RESPONSE", 0.7, 1.0),
            (2, "M2", "z1", 0.5, 1.0),
            (2, "M2", "z2", 0.5, 1.0),
            (2, "M3", "P1", 0.9, 1.0),
            (2, "M3", "P2", 0.8, 1.0),
            (2, "M3", "P3", 0.7, 1.0),
            (2, "M3", "P4", 0.6, 1.0),
            (2, "M3", "z3", 0.5, 1.0),
            (2, "M4", "joint_2", 0.5, 1.0),
            (2, "M4", "joint_0", 0.6, 1.0),
        ],
        columns=["level", "parent", "child", "weight", "stability"],
    )
    named = {"HALLMARK_INTERFERON_GAMMA_RESPONSE", "HALLMARK_INTERFERON_ALPHA_RESPONSE", "P1", "P2", "P3", "P4"}
    named |= {"joint_0", "joint_2"}
    assert module_names(membership, named) == {
        "M1": "M1: INTERFERON ALPHA RESPONSE + INTERFERON GAMMA RESPONSE",  # largest loading first
        "M2": "M2",  # no program from a gene set: the bare id
        "M3": "M3: P1 + P2 + P3 + 2 more",
        "M4": "M4: joint_0 + joint_2",  # a name without a collection prefix is kept as it is
    }


def test_stage_and_report_name_modules_by_their_programs_gene_sets(tmp_path, two_level):
    from crl_pipe.pl import concept_graph

    screen, _ = two_level
    lat, iv, anc = _stage_inputs(tmp_path, screen)
    out = tmp_path / "out"
    pipeline.hierarchy(
        latents=lat, interventions=iv, anchors=anc, n_resamples=0, out_hierarchy=out / "hierarchy.parquet",
        out_modules=out / "modules.parquet", out_module_graph=out / "module_graph.parquet",
        out_program_graph=out / "graph_given_modules.parquet", out_summary=out / "hierarchy.json",
    )  # fmt: skip
    table = read_table(out / "hierarchy.parquet", "hierarchy")
    level2 = table[table["level"] == 2]
    truth = screen.hierarchy.groupby("parent")["child"].apply(lambda s: sorted(s)).tolist()
    for module, group in level2.groupby("parent"):
        assert sorted(group["child"]) in truth  # the true modules, named by their programs (largest loading first)
        first = group.sort_values("weight", ascending=False)["child"].tolist()
        assert set(group["parent_name"]) == {f"{module}: {' + '.join(first)}"}
    level1 = table[table["level"] == 1]
    assert (level1["parent_name"] == level1["parent"]).all()  # a program is named by itself
    names = json.loads((out / "hierarchy.json").read_text())["module_names"]
    assert names == dict(zip(level2["parent"], level2["parent_name"], strict=True))
    graph = read_table(out / "graph_given_modules.parquet", "graph")
    fig = concept_graph(table, graph, read_table(out / "module_graph.parquet", "graph"))
    labels = {t.get_text().replace("\n", " ") for t in fig.axes[0].texts}
    assert set(names.values()) <= labels
    # an older hierarchy.parquet without the column reads back with it empty
    write_table(table.drop(columns="parent_name"), tmp_path / "old.parquet", "hierarchy")
    assert read_table(tmp_path / "old.parquet", "hierarchy")["parent_name"].isna().all()


# ---- robots: joints grouped into limbs that share a hidden command -------------------------------
ROBOT = dict(n_joints=6, n_episodes=10, n_frames=200)


def test_robot_limbs_truth_and_default_unchanged(tmp_path):
    from crl_pipe.simulate import limb_truth, simulate_robot

    plain = simulate_robot(**ROBOT, seed=1)
    again = simulate_robot(**ROBOT, seed=1, n_limbs=0)
    limbs = simulate_robot(**ROBOT, seed=1, n_limbs=2)
    assert plain.hierarchy is None and np.array_equal(plain.adata.X, again.adata.X)
    actions = plain.adata.var["kind"].to_numpy() == "action"  # the logged commands are drawn as before
    assert np.array_equal(plain.adata.X[:, actions], limbs.adata.X[:, actions])
    assert not np.allclose(
        plain.adata.X[:, ~actions], limbs.adata.X[:, ~actions]
    )  # the hidden commands move the joints
    truth = limbs.hierarchy
    assert sorted(truth["parent"].unique()) == ["limb_1", "limb_2"] and (truth.groupby("parent").size() >= 2).all()
    assert sorted(truth["child"]) == [f"joint_{j}" for j in range(6)] and (truth["weight"] > 0).all()
    pd.testing.assert_frame_equal(truth, limb_truth([f"joint_{j}" for j in range(6)], 2, 0.8, 1))
    # the workflow's module-truth step writes the same limbs from the settings alone, without rolling out
    pipeline.simulate_modules(out_truth_dir=tmp_path, params={"kind": "robot", "simulator": "linear", **ROBOT,
                                                               "n_limbs": 2, "seed": 1})  # fmt: skip
    written = read_table(tmp_path / "hierarchy.parquet", "hierarchy")
    pd.testing.assert_frame_equal(written.drop(columns="parent_name"), truth)
    assert read_table(tmp_path / "module_graph.parquet", "graph").empty
    with pytest.raises(ConfigError, match="n_limbs=4 needs n_joints >= 2 \\* n_limbs") as err:
        simulate_robot(**ROBOT, n_limbs=4)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("seed", [0, 2])
def test_robot_limbs_recovered_from_the_logs(seed):
    from crl_pipe.kinds import get_kind
    from crl_pipe.pp import robot_interventions
    from crl_pipe.simulate import simulate_robot

    robot = simulate_robot(**ROBOT, n_limbs=2, seed=seed)
    frames, labels = get_kind("robot").hierarchy_samples(robot.latents, robot_interventions(robot.adata))
    assert len(frames) == 10 * (200 - 2) and labels["is_control"].all()  # innovations: two frames per episode used up
    result = hierarchy(frames, labels, n_resamples=0)
    names = {c: c for c in robot.latents.columns[1:]}
    scores = module_metrics(
        result.membership, result.module_graph, result.program_graph,
        true_hierarchy=robot.hierarchy, true_module_graph=None, true_graph=None, mapping=names,
    )  # fmt: skip
    assert scores["module_ari"] == pytest.approx(1.0) and scores["n_modules"] == 2
    # the same joints without limbs: no module
    plain = simulate_robot(**ROBOT, seed=seed)
    frames, labels = get_kind("robot").hierarchy_samples(plain.latents, robot_interventions(plain.adata))
    assert hierarchy(frames, labels, n_resamples=0).membership.empty


def test_arm_limbs_are_its_kinematic_groups():
    pytest.importorskip("mujoco")
    from crl_pipe.kinds import get_kind
    from crl_pipe.pp import robot_interventions
    from crl_pipe.simulate import ARM_LIMBS, simulate_arm

    plain = simulate_arm(n_episodes=3, n_frames=60, seed=2)
    arm = simulate_arm(n_episodes=10, n_frames=200, limbs=True, seed=2)
    short = simulate_arm(n_episodes=3, n_frames=60, limbs=True, seed=2)
    actions = plain.adata.var["kind"].to_numpy() == "action"  # the logged commands are drawn as without limbs
    assert np.array_equal(plain.adata.X[:, actions], short.adata.X[:, actions]) and plain.hierarchy is None
    assert {p: sorted(g["child"]) for p, g in arm.hierarchy.groupby("parent")} == {
        limb: sorted(joints) for limb, joints in ARM_LIMBS.items()
    }
    frames, labels = get_kind("robot").hierarchy_samples(arm.latents, robot_interventions(arm.adata))
    found = hierarchy(frames, labels, n_resamples=0).membership
    groups = sorted(sorted(j for j in g["child"] if j != "gate") for _, g in found.groupby("parent"))
    assert groups == [["elbow", "wrist"], ["shoulder_pitch", "shoulder_yaw"]]


# ---- level 3 and deeper: the same search on the module scores ---------------------------------------
THREE_LEVEL = dict(
    n_programs=8, n_genes=200, n_modules=4, n_control=2000, cells_per_perturbation=300, module_loading=1.2,
    edge_density=0.3,
)  # fmt: skip


def _level3_ari(screen, result) -> float:
    """ARI of the true modules' supermodule labels against the learned level 3 (modules matched by programs)."""
    truth, est = screen.hierarchy, result.membership
    true_module = dict(
        zip(truth.loc[truth["level"] == 2, "child"], truth.loc[truth["level"] == 2, "parent"], strict=True)
    )
    est2 = est[est["level"] == 2]
    to_true = {m: pd.Series([true_module[p] for p in g["child"]]).mode()[0] for m, g in est2.groupby("parent")}
    super_of = dict(zip(truth.loc[truth["level"] == 3, "child"], truth.loc[truth["level"] == 3, "parent"], strict=True))
    est3 = est[est["level"] == 3]
    learned = {to_true[c]: p for c, p in zip(est3["child"], est3["parent"], strict=True)}
    modules = sorted(super_of)
    return adjusted_rand_score([super_of[m] for m in modules], [learned.get(m, f"-{m}") for m in modules])


def test_simulator_supermodules_truth_and_module_draws_unchanged():
    three = simulate_screen(**THREE_LEVEL, n_supermodules=2, seed=0)
    two = simulate_screen(**THREE_LEVEL, seed=0)
    level3 = three.hierarchy[three.hierarchy["level"] == 3]
    assert sorted(level3["parent"].unique()) == ["S1", "S2"] and (level3["weight"] > 0).all()
    assert sorted(level3["child"]) == ["M1", "M2", "M3", "M4"] and (level3.groupby("parent").size() == 2).all()
    # the programs' modules are those of the same screen without supermodules (own random stream)
    cols = ["parent", "child"]
    assert three.hierarchy.loc[three.hierarchy["level"] == 2, cols].equals(two.hierarchy[cols])
    assert three.graph[["source", "target"]].equals(two.graph[["source", "target"]])  # weights: other program SDs
    # modules of one supermodule co-vary in the controls; modules stay at control SD 1
    ctrl = (three.adata.obs["perturbation"].astype(str) == CONTROL_LABEL).to_numpy()
    values = three.modules.set_index("sample_id")[ctrl]
    assert np.allclose(values.std(), 1.0, atol=0.1)
    a, b = level3.groupby("parent")["child"].apply(list).iloc[0]
    assert values[a].corr(values[b]) > 0.2
    with pytest.raises(ConfigError, match="n_supermodules=3 needs n_modules >= 2 \\* n_supermodules"):
        simulate_screen(**THREE_LEVEL, n_supermodules=3)


def test_level3_learned_where_the_data_support_it():
    screen = simulate_screen(**THREE_LEVEL, n_supermodules=2, seed=0)
    result = hierarchy(screen.latents, _interventions(screen), n_resamples=3, seed=0)
    assert _level3_ari(screen, result) == pytest.approx(1.0)
    scores = module_metrics(result.membership, result.module_graph, result.program_graph,
                            true_hierarchy=screen.hierarchy, true_module_graph=None, true_graph=None,
                            mapping={p: p for p in screen.latents.columns[1:]})  # fmt: skip
    assert scores["module_ari"] == pytest.approx(1.0) and scores["level3_ari"] == pytest.approx(1.0)
    level3 = result.membership[result.membership["level"] == 3]
    assert sorted(level3["parent"].unique()) == ["L3M1", "L3M2"]
    assert set(level3["child"]) == set(result.membership.loc[result.membership["level"] == 2, "parent"])
    assert (level3["weight"] > 0).all() and level3["stability"].between(0, 1).all()
    # names unique across levels; the anchor rule one level up is stated
    ident = result.identifiability.set_index("module")
    assert ident.index.is_unique and {"L3M1", "L3M2"} <= set(ident.index)
    assert ident.loc[["L3M1", "L3M2"], "reason"].str.startswith("level 3: 2 exclusive modules").all()
    upper = result.upper[0]
    assert list(upper.scores.columns) == ["sample_id", "L3M1", "L3M2"] and len(upper.scores) == len(screen.latents)
    # max_level 2 turns it off and leaves level 2 as it is
    two = hierarchy(screen.latents, _interventions(screen), n_resamples=3, seed=0, max_level=2)
    assert set(two.membership["level"]) == {2} and not two.upper
    assert two.membership.equals(result.membership[result.membership["level"] == 2])
    assert two.program_graph.equals(result.program_graph) and two.scores.equals(result.scores)
    with pytest.raises(ConfigError, match="max_level must be at least 2, got 1"):
        hierarchy(screen.latents, _interventions(screen), max_level=1)


def test_no_level3_where_the_data_do_not_support_it(two_level):
    # four modules without supermodules: minimality keeps none over them
    screen = simulate_screen(**THREE_LEVEL, seed=0)
    result = hierarchy(screen.latents, _interventions(screen), n_resamples=0)
    assert result.membership["parent"].nunique() == 4 and set(result.membership["level"]) == {2}
    assert any(n.startswith("level 3: minimality keeps no module over the 4 level-2 modules") for n in result.notes)
    # the demo-like two-level screen: two modules are too few for a level above them
    _, demo = two_level
    assert set(demo.membership["level"]) == {2} and not demo.upper
    assert any("2 modules are too few" in n for n in demo.notes)


def test_stage_and_report_carry_level3(tmp_path):
    from test_report import make_artifacts

    from crl_pipe.report import ReportInputs, write_report

    screen = simulate_screen(**THREE_LEVEL, n_supermodules=2, seed=0)
    lat, iv, anc = _stage_inputs(tmp_path, screen)
    paths = make_artifacts(tmp_path / "run", models={"linear": {"epochs": 1}}, with_truth=False)
    folder = Path(paths["models"]["linear"])
    outs = {
        "out_hierarchy": folder / "hierarchy.parquet",
        "out_modules": folder / "modules.parquet",
        "out_module_graph": folder / "module_graph.parquet",
        "out_program_graph": folder / "graph_given_modules.parquet",
        "out_summary": folder / "hierarchy.json",
    }
    pipeline.hierarchy(latents=lat, interventions=iv, anchors=anc, n_resamples=0, **outs)
    table = read_table(outs["out_hierarchy"], "hierarchy")
    assert set(table["level"]) == {1, 2, 3} and table.loc[table["level"] == 3, "parent"].nunique() == 2
    summary = json.loads(outs["out_summary"].read_text())
    assert {"L3M1", "L3M2"} <= {r["module"] for r in summary["identifiability"]} and "3" in summary[
        "upper_module_graphs"
    ]
    modules = read_table(outs["out_modules"], "modules")
    assert list(modules.columns) == ["sample_id", "M1", "M2", "M3", "M4", "L3M1", "L3M2"] and len(modules) == len(
        screen.latents
    )
    page = write_report(tmp_path / "levels.html", ReportInputs.from_paths("x", paths)).read_text()
    n = int((table["level"] >= 2).sum())
    assert f"Memberships ({n})" in page and "<td>L3M1</td>" in page and "level 3: 2 exclusive modules" in page
    pipeline.hierarchy(latents=lat, interventions=iv, anchors=anc, n_resamples=0, max_level=2, **outs)
    assert set(read_table(outs["out_hierarchy"], "hierarchy")["level"]) == {1, 2}
