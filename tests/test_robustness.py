"""The robustness atlas (issue 16): its simulator knobs, its workflow and aggregation, and the report's place on it."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import yaml

from crl_pipe import tl
from crl_pipe._provenance import provenance
from crl_pipe.io import write_table
from crl_pipe.report import SECTIONS, ReportInputs, write_report
from crl_pipe.simulate import CONTROL_LABEL, simulate_screen

REPO = Path(__file__).resolve().parents[1]
ATLAS = REPO / "benchmarks" / "robustness"
SMALL = dict(n_programs=4, n_genes=80, anchors_per_program=6, n_control=300, cells_per_perturbation=100, n_doubles=0)


def _scripts():
    if str(ATLAS / "scripts") not in sys.path:
        sys.path.insert(0, str(ATLAS / "scripts"))
    import aggregate
    import atlas
    import cells

    return atlas, aggregate, cells


# -- simulator knobs ----------------------------------------------------------------------------------------------
def _log_norm(screen) -> pd.DataFrame:
    adata = screen.adata.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    return pd.DataFrame(adata.X.toarray(), index=adata.obs["perturbation"].astype(str), columns=adata.var_names)


def test_knobs_at_their_defaults_leave_the_draw_as_it_was():
    plain = simulate_screen(**SMALL, seed=4)
    spelled = simulate_screen(
        **SMALL, knockdown=0.85, off_target_fraction=0.0, mislabelled_fraction=0.0, unintervened_programs=0, seed=4
    )
    assert (plain.adata.X != spelled.adata.X).nnz == 0
    pd.testing.assert_frame_equal(plain.latents, spelled.latents)


def test_knockdown_sets_the_target_genes_remaining_expression_and_the_shift():
    weak, strong = (simulate_screen(**SMALL, knockdown=k, seed=1) for k in (0.3, 0.85))
    for screen, k in ((weak, 0.3), (strong, 0.85)):
        expr = _log_norm(screen)
        remaining = expr.loc["REG1", "REG1"].mean() / expr.loc[CONTROL_LABEL, "REG1"].mean()
        assert remaining == pytest.approx(1 - k, abs=0.08)
    shifts = []
    for screen in (weak, strong):
        z = screen.latents.set_index(screen.adata.obs_names)[["P2"]].assign(label=screen.adata.obs["perturbation"])
        shifts.append(z[z["label"] == "REG2"]["P2"].mean() - z[z["label"] == CONTROL_LABEL]["P2"].mean())
    assert abs(shifts[0]) < 0.5 * abs(shifts[1])  # 0.3 / 0.85 of the shift


def test_off_target_mislabelled_and_unintervened_knobs():
    clean = simulate_screen(**SMALL, seed=2)
    off = simulate_screen(**SMALL, off_target_fraction=1.0, seed=2)

    def moved(screen) -> int:  # programs each single moves by > 0.5 control SD, summed
        z = screen.latents.drop(columns="sample_id").set_index(screen.adata.obs["perturbation"].astype(str).to_numpy())
        delta = z.groupby(level=0).mean() - z.loc[CONTROL_LABEL].mean()
        return int((delta.drop(index=CONTROL_LABEL).abs() > 0.5).sum().sum())

    assert moved(off) > moved(clean)
    pd.testing.assert_frame_equal(off.targets, clean.targets)  # the truth lists the intended programs
    mis = simulate_screen(**SMALL, mislabelled_fraction=0.3, seed=2)
    changed = (mis.adata.obs["perturbation"].astype(str) != clean.adata.obs["perturbation"].astype(str)).mean()
    assert changed == pytest.approx(0.3 * 400 / 700, abs=0.01)
    assert (mis.adata.X != clean.adata.X).nnz == 0  # the counts are those of the real perturbation
    none = simulate_screen(**SMALL, unintervened_programs=2, seed=2)
    assert set(none.targets["program"]) == {"P3", "P4"} and "REG1" in none.adata.var_names
    with pytest.raises(Exception, match="knockdown must be in"):
        simulate_screen(**SMALL, knockdown=1.0)


# -- the atlas workflow and its aggregation ---------------------------------------------------------------------
def test_atlas_workflow_dry_runs_on_its_small_config(tmp_path):
    exe = Path(sys.executable).parent / "snakemake"
    if not exe.exists():
        pytest.skip("snakemake is not installed beside this interpreter")
    config = ATLAS / "config" / "small.yaml"
    cmd = [str(exe), "-s", str(ATLAS / "Snakefile"), "--configfile", str(config), "-n", "--cores", "1"]
    run = subprocess.run([*cmd, "--directory", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    _, _, cells = _scripts()
    n_cells = len(cells.cells_of(yaml.safe_load(config.read_text())))
    assert n_cells > 30
    assert re.search(rf"^cell\s+{n_cells}$", run.stdout, flags=re.M), run.stdout[-2000:]
    assert re.search(r"^aggregate\s+1$", run.stdout, flags=re.M)


def test_aggregation_writes_the_table_plots_page_block_and_package_summary(tmp_path):
    atlas, aggregate, cells = _scripts()
    config = {
        "name": "tiny", "seeds": [0, 1], "n_refits": 2, "docs": str(tmp_path / "docs"),
        "page": str(tmp_path / "robustness.md"), "package_summary": str(tmp_path / "pkg" / "atlas.csv"),
        "screen": {"base": {"n_programs": 4, "anchors_per_program": 6, "knockdown": 0.85},
                   "axes": {"knockdown": [0.85, 0.5]}},
    }  # fmt: skip
    rng = np.random.default_rng(0)
    files = []
    for cell in ("base", cells.cell_name("knockdown", 0.5)):
        rows = pd.DataFrame(
            [
                {"kind": "screen", "cell": cell, "seed": s, "method": m, **{c: rng.random() for c in atlas.METRICS}}
                for s in (0, 1)
                for m in ("linear", "pc")
            ]
        ).assign(false_edge=[1.0, 0.0, 0.0, 0.0])  # linear: 1 of 2 seeds
        files.append(tmp_path / f"{cell}.parquet")
        rows[atlas.ROW_COLUMNS].to_parquet(files[-1])
    (tmp_path / "robustness.md").write_text(f"# Atlas\nprose\n{aggregate.BEGIN}\nold\n{aggregate.END}\nafter\n")
    summary = aggregate.aggregate([str(f) for f in files], config)
    assert list(summary.columns) == aggregate.SUMMARY_COLUMNS
    assert len(summary) == 4 and set(summary["level"]) == {0.85, 0.5}
    base_linear = summary[(summary["level"] == 0.85) & (summary["method"] == "linear")].iloc[0]
    assert base_linear["false_edge_rate"] == 0.5 and base_linear["n_seeds"] == 2
    table = pd.read_parquet(tmp_path / "docs" / "atlas.parquet")
    assert {"axis", "level", "method", "seed", "edge_f1", "false_edge"} <= set(table.columns) and len(table) == 8
    assert sorted(p.name for p in (tmp_path / "docs").glob("*.png")) == sorted(
        f"screen_{m}.png" for m in aggregate.PLOTTED["screen"]
    )
    page = (tmp_path / "robustness.md").read_text()
    assert page.startswith("# Atlas\nprose\n") and page.endswith("after\n") and "old" not in page
    assert "--configfile benchmarks/robustness/config/tiny.yaml" in page and "| knockdown | 0.5 | pc |" in page
    shipped = tl.read_atlas(tmp_path / "pkg" / "atlas.csv")
    assert len(shipped) == 4


def test_the_package_ships_an_atlas_summary():
    table = tl.read_atlas()
    screen = table[table["kind"] == "screen"]
    assert {"knockdown", "cells_per_perturbation", "anchors_given", "wrong_anchor_fraction"} <= set(screen["axis"])
    assert {"linear", "pc", "ges"} <= set(screen["method"])
    assert "robot" in set(table["kind"])


# -- the data placed on the atlas -------------------------------------------------------------------------------
def _artifacts(root: Path, screen) -> dict:
    """Stage artifacts of a simulated screen (as the workflow writes them), without a model."""
    root.mkdir(parents=True, exist_ok=True)
    adata = screen.adata.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    labels = adata.obs["perturbation"].astype(str)
    targets = [[] if lab == CONTROL_LABEL else lab.split("+") for lab in labels]
    iv = pd.DataFrame(
        {"sample_id": adata.obs_names, "intervention": labels.to_numpy(), "targets": targets,
         "n_targets": [len(t) for t in targets], "is_control": (labels == CONTROL_LABEL).to_numpy()}
    )  # fmt: skip
    write_table(iv, root / "interventions.parquet", "interventions", provenance("label", {}))
    qc = pd.DataFrame({"sample_id": adata.obs_names, "total_counts": 1e4, "n_genes": 100})
    write_table(qc, root / "qc.parquet", "qc", provenance("ingest", {}))
    (root / "programs.gmt").write_text("".join(f"{p}\tna\t" + "\t".join(g) + "\n" for p, g in screen.gene_sets.items()))
    anchors = pd.DataFrame(
        [(p, g, 1.0) for p, gs in screen.gene_sets.items() for g in gs], columns=["program", "feature", "weight"]
    )
    write_table(
        anchors, root / "anchors.parquet", "anchors", provenance("anchors", {"gene_sets": root / "programs.gmt"})
    )
    adata.write_h5ad(root / "preprocessed.h5ad")
    return {k: root / f"{k}.parquet" for k in ("interventions", "qc", "anchors")} | {
        "expression": root / "preprocessed.h5ad"
    }


def _atlas_section(page: str) -> str:
    return page.split(f". {html.escape(dict(SECTIONS)['atlas'])}</h2>")[1].split("</section>")[0]


def test_knockdown_and_coverage_estimates_on_a_simulated_screen(tmp_path):
    screen = simulate_screen(**SMALL, knockdown=0.5, wrong_anchor_fraction=0.5, seed=3)
    paths = _artifacts(tmp_path, screen)
    inputs = ReportInputs.from_paths("sim", paths)
    place = tl.place_on_atlas(ad.read_h5ad(paths["expression"]), inputs.labels, inputs.anchors)
    est = place.estimates.set_index("knob")
    assert est.at["knockdown", "estimate"] == pytest.approx(0.5, abs=0.07)
    assert est.at["knockdown", "level"] == 0.5 and est.at["knockdown", "inside"]
    assert est.at["cells_per_perturbation", "estimate"] == 100
    assert est.at["anchors_given", "estimate"] == pytest.approx(6 / 8)  # the atlas lists 8 anchors per program
    assert est.at["wrong_anchor_fraction", "estimate"] >= 0.3  # half of the anchors are wrong
    blind = tl.place_on_atlas(None, inputs.labels, inputs.anchors)  # no expression: no knockdown, no purity
    assert blind.estimates.set_index("knob").loc[["knockdown", "wrong_anchor_fraction"], "estimate"].isna().all()
    expected = place.expectations
    assert set(expected["method"]) == {"linear"} and "knockdown" in set(expected["knob"])


def test_report_section_places_the_data_and_says_when_they_are_outside(tmp_path):
    screen = simulate_screen(**(SMALL | {"cells_per_perturbation": 20}), knockdown=0.5, seed=5)
    paths = _artifacts(tmp_path, screen)
    out = write_report(tmp_path / "report.html", ReportInputs.from_paths("sim", paths))
    section = _atlas_section(out.read_text(encoding="utf-8"))
    assert "knockdown strength" in section and "median over 4 measured target genes" in section
    assert "Outside the atlas: cells per perturbation is estimated at 20, beyond the atlas&#39;s range 25" in section
    assert re.search(r"<td>cells per perturbation</td><td class=\"num\">20</td>", section)
    assert "The weakest point is" in section


def test_programs_without_a_single_target_perturbation_are_counted_from_a_models_targets(tmp_path):
    from crl_pipe.simulate import screen_to_crl_data

    screen = simulate_screen(**(SMALL | {"n_programs": 6, "n_genes": 120}), unintervened_programs=1, seed=0)
    data = screen_to_crl_data(screen, with_counts=False)
    targets = tl.train(data, model="linear", seed=0).get_targets()
    inputs = ReportInputs.from_paths("sim", _artifacts(tmp_path, screen))
    est = tl.place_on_atlas(None, inputs.labels, inputs.anchors, targets=targets).estimates.set_index("knob")
    # one of 6 (as the atlas's 6); which one is the model's call: here REG3 (on P3, the parent of the
    # unperturbed P1) reads as P1, so P3 is the one left without a single of its own
    assert est.at["unintervened_programs", "estimate"] == 1
    assert est.at["unintervened_programs", "detail"].startswith("1 of 6 programs (")


def test_weakening_knobs_from_the_workflow_config(tmp_path):
    from crl_pipe.config import validate_config
    from crl_pipe.io import read_h5ad
    from crl_pipe.pipeline import simulate

    knobs = dict(knockdown=0.4, off_target_fraction=0.5, mislabelled_fraction=0.1, unintervened_programs=1)
    config = {"simulations": {"weak": {**SMALL, **knobs}}, "datasets": {"d": {"format": "h5ad", "path": "x.h5ad"}}}
    params = validate_config(config, REPO / "workflow/schemas/config.schema.yaml")["simulations"]["weak"]
    simulate(out_h5ad=tmp_path / "s.h5ad", out_gmt=tmp_path / "p.gmt", out_truth_dir=tmp_path / "truth", params=params)
    expected = simulate_screen(**SMALL, **knobs)
    written = read_h5ad(tmp_path / "s.h5ad")
    assert (written.obs["perturbation"].astype(str) == expected.adata.obs["perturbation"].astype(str)).all()
    with pytest.raises(Exception, match="knockdown"):
        validate_config(
            {**config, "simulations": {"weak": {**SMALL, "knockdown": 1.5}}},
            REPO / "workflow/schemas/config.schema.yaml",
        )


# -- robot logs placed on the atlas -----------------------------------------------------------------------------
ATLAS_ROBOT = dict(n_joints=4, n_episodes=10, n_frames=200)


def _robot_log(sensor_noise: float = 0.0, *, seed: int = 0, drop: tuple[str, ...] = (), **params):
    """A simulated log as the workflow preprocesses it, with the atlas's sensor noise (SD, radians) added to
    every state channel, and the command channels ``drop`` left out: (preprocessed, interventions, anchors)."""
    from crl_pipe import pp
    from crl_pipe.simulate import simulate_robot

    robot = simulate_robot(**(ATLAS_ROBOT | params), noise_channels=1, seed=seed)
    adata = robot.adata[:, [v for v in robot.adata.var_names if v not in drop]].copy()
    if sensor_noise > 0:  # as benchmarks/robustness/scripts/atlas.py adds it
        state = np.asarray(adata.var["kind"] == "state")
        adata.X[:, state] += np.random.default_rng([seed, 7]).normal(0.0, sensor_noise, (adata.n_obs, state.sum()))
    labels = pp.robot_interventions(adata)
    log = pp.preprocess_robot(adata, labels)
    return log, labels, pp.robot_anchors(log)


def test_robot_constants_are_those_of_the_atlas_config():
    from crl_pipe.tl import _atlas_robot as ar

    base = yaml.safe_load((ATLAS / "config" / "small.yaml").read_text())["robot"]["base"]
    assert (ar.ATLAS_JOINTS, ar.ATLAS_FRAMES) == (base["n_joints"], base["n_frames"])
    motion = []  # the atlas's joints' RMS change over 10 frames, as the constant says it was measured
    for seed in range(5):
        log, _, _ = _robot_log(seed=seed)
        episodes = log.obs["episode"].to_numpy()
        per_joint = []
        for j in [c for c in log.var_names if c.startswith("joint_")]:
            x = np.asarray(log[:, j].X, dtype=float).ravel()
            span = np.concatenate([x[episodes == e][10:] - x[episodes == e][:-10] for e in np.unique(episodes)])
            per_joint.append(np.sqrt(np.mean(span**2)))
        motion.append(np.median(per_joint))
    assert np.median(motion) == pytest.approx(ar.ATLAS_MOTION, rel=0.05)


@pytest.mark.parametrize("noise", [0.0, 0.01, 0.03, 0.1])
def test_sensor_noise_is_estimated_in_the_atlas_units_on_simulated_logs(noise):
    log, labels, anchors = _robot_log(noise, seed=4)
    est = tl.place_on_atlas(log, labels, anchors, kind="robot").estimates.set_index("knob")
    value = est.at["sensor_noise", "estimate"]
    if noise:
        assert value == pytest.approx(noise, rel=0.2)
    else:  # the joints' own velocity jitter is all that is left: an upper bound well under the first level
        assert value < 0.004
    assert est.at["sensor_noise", "level"] == noise and est.at["sensor_noise", "inside"]
    degrees = log.copy()  # the same log in degrees: the noise is read against the channels' motion
    degrees.X = degrees.X * np.float32(180 / np.pi)
    in_degrees = tl.place_on_atlas(degrees, labels, anchors, kind="robot").estimates.set_index("knob")
    assert in_degrees.at["sensor_noise", "estimate"] == pytest.approx(value, rel=1e-3)
    assert "in the channels' units" in in_degrees.at["sensor_noise", "detail"]


def test_episodes_and_channels_without_a_command_on_a_short_log():
    log, labels, anchors = _robot_log(seed=1, n_episodes=8, n_frames=75, drop=("action.joint_0", "action.joint_3"))
    place = tl.place_on_atlas(log, labels, anchors, kind="robot")
    est = place.estimates.set_index("knob")
    assert est.at["n_episodes", "estimate"] == 3.0  # 600 frames: three of the atlas's 200-frame episodes
    assert est.at["n_episodes", "detail"].startswith("8 episodes of median 75 frames (600 frames)")
    assert est.at["n_episodes", "level"] == 3 and est.at["n_episodes", "inside"]
    # joint_0, joint_3 (commands dropped) and noise_0 (never commanded): at most 3 unlogged commands
    assert est.at["unlogged_commands", "estimate"] == 3
    assert "2 command channels logged; 2 of 5 state channels" in est.at["unlogged_commands", "detail"]
    assert "without: joint_0, joint_3, noise_0" in est.at["unlogged_commands", "detail"]
    assert not est.at["unlogged_commands", "inside"] and est.at["unlogged_commands", "level"] == 2
    assert any(n.startswith("Outside the atlas: state channels without a logged command") for n in place.notes)
    assert any("episodes had 200 frames; these have a median of 75" in n for n in place.notes)
    expected = place.expectations
    assert set(expected["method"]) == {"temporal"} and set(expected["knob"]) == set(est.index)
    blind = tl.place_on_atlas(None, labels, anchors, kind="robot").estimates.set_index("knob")
    assert np.isnan(blind.at["sensor_noise", "estimate"]) and blind.at["n_episodes", "estimate"] == 3.0
    from crl_pipe import pp

    commands_only = pp.preprocess_robot(log, labels, kinds=("action",))  # as a camera log: no state channel
    place = tl.place_on_atlas(commands_only, labels, anchors.iloc[:0], kind="robot")
    assert place.estimates.set_index("knob").loc[["sensor_noise", "unlogged_commands"], "detail"].tolist() == [
        "no state channels",
        "no state channels",
    ]
    assert any(n.startswith("No state channel: the variables are learned from other channels") for n in place.notes)
    with pytest.raises(Exception, match="atlas rows 'plate' unknown"):
        tl.place_on_atlas(log, labels, anchors, kind="plate")


def test_robot_report_places_the_log_on_the_atlas(tmp_path):
    from crl_pipe.kinds import ROBOT

    log, labels, anchors = _robot_log(0.2, seed=2)
    write_table(labels, tmp_path / "interventions.parquet", "interventions", provenance("label", {}))
    qc = pd.DataFrame({"sample_id": labels["sample_id"], "total_counts": 0.0, "n_genes": 0})
    write_table(qc, tmp_path / "qc.parquet", "qc", provenance("ingest", {}))
    write_table(anchors, tmp_path / "anchors.parquet", "anchors", provenance("anchors", {}))
    log.write_h5ad(tmp_path / "preprocessed.h5ad")
    paths = {k: tmp_path / f"{k}.parquet" for k in ("interventions", "qc", "anchors")}
    paths["expression"] = tmp_path / "preprocessed.h5ad"
    page = write_report(tmp_path / "r.html", ReportInputs.from_paths("arm", paths, vocabulary=ROBOT))
    page = page.read_text(encoding="utf-8")
    assert re.search(r"<h2>\d+\. Where these data sit on the robustness atlas</h2>", page)
    section = _atlas_section(page)
    assert "simulated robot logs that start clean" in section
    assert re.search(
        r"<td>episodes \(counted in the atlas&#39;s episodes of 200 frames\)</td><td class=\"num\">10", section
    )
    assert (
        "Outside the atlas: sensor noise (SD, in the atlas&#39;s radians for its joints&#39; motion) is estimated at 0."
        in section
    )
    assert "without: noise_0" in section and "<td>temporal</td>" in section
    assert (
        "The weakest point is sensor noise" in section and "into a pure-noise channel (no parent, no child)" in section
    )
    assert "knockdown" not in section and "gene" not in section


@pytest.mark.parametrize("noise", [0.01, 0.03])
def test_sensor_noise_in_the_channels_units_on_another_robot(noise):
    """The MuJoCo arm (other dynamics, joints read with ``noise`` rad): the SD in the channels' units is its noise."""
    pytest.importorskip("mujoco")
    from crl_pipe import pp
    from crl_pipe.simulate import simulate_arm

    adata = simulate_arm(n_episodes=4, n_frames=200, noise=noise, seed=0).adata
    labels = pp.robot_interventions(adata)
    log = pp.preprocess_robot(adata, labels)
    detail = tl.place_on_atlas(log, labels, pp.robot_anchors(log), kind="robot").estimates.set_index("knob")
    raw = float(re.search(r"SD ([0-9.e-]+) in the channels' units", detail.at["sensor_noise", "detail"]).group(1))
    assert raw == pytest.approx(noise, rel=0.1)
    # the arm's gate and light are state channels that no logged command acts on
    assert "4 of 6 state channels" in detail.at["unlogged_commands", "detail"]
    assert "without: gate, light" in detail.at["unlogged_commands", "detail"]
