"""A camera recording through the workflow: simulate (the MuJoCo arm rendered to a video, LeRobot v3.0)
-> ingest (the video decoded once into obsm) -> labels -> preprocess -> anchors -> camera -> graph ->
evaluate -> report, on a tiny configuration of config/robot_camera.yaml (one module-scoped run).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import _tiny_workflow as tiny
import pytest

from crl_pipe.io import read_h5ad, read_table
from crl_pipe.simulate import ARM_JOINTS
from crl_pipe.simulate._camera import gl_problem

pytest.importorskip("mujoco")
pytest.importorskip("av")
_NO_GL = gl_problem()
pytestmark = pytest.mark.skipif(_NO_GL is not None, reason=f"no offscreen rendering: {_NO_GL}")

SIM = "cam"
CONFIG = {
    "simulations": {
        SIM: {
            "kind": "robot",
            "simulator": "arm",
            "observation": "camera",
            "image_size": 24,
            "n_episodes": 4,
            "n_frames": 100,
            "seed": 0,
        },
    },  # fmt: skip
    "datasets": {
        SIM: {
            "kind": "robot",
            "format": "lerobot",
            "path": f"resources/simulated/{SIM}/lerobot",
            "cameras": ["front"],
            "frame_size": 16,
            "truth": {k: f"resources/simulated/{SIM}/truth/{k}.parquet" for k in ("graph", "targets", "latents")},
            "robot_labels": {"unmeasured": list(ARM_JOINTS)},
            "models": ["camera"],
        }
    },
    "models": {"camera": {"steps": 40, "batch_size": 64, "width": 8, "n_latents": 5, "device": "cpu"}},
    "graph": {"n_refits": 1},
}


@pytest.fixture(scope="module")
def camera_run(tmp_path_factory, venv_bin):
    folder = tmp_path_factory.mktemp("camera_workflow")
    tiny.write_config(folder, CONFIG)
    proc = tiny.run_snakemake(folder, "--cores", "2")
    if proc.returncode != 0:
        pytest.fail(f"snakemake failed ({proc.returncode}):\n{tiny.failure(proc, folder)}", pytrace=False)
    return SimpleNamespace(folder=folder, proc=proc)


@pytest.mark.workflow
def test_camera_simulation_runs_end_to_end(camera_run):
    root = camera_run.folder / f"resources/simulated/{SIM}/lerobot"
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["features"]["observation.images.front"]["dtype"] == "video"
    assert (root / "videos/observation.images.front/chunk-000/file-000.mp4").stat().st_size > 0
    ingested = read_h5ad(camera_run.folder / f"results/{SIM}/ingested.h5ad")
    assert ingested.obsm["frames.front"].shape == (400, 16, 16, 3)
    assert list(ingested.var["kind"]) == ["action"] * 4
    anchors = read_table(camera_run.folder / f"results/{SIM}/anchors.parquet", "anchors")
    assert anchors.empty  # nothing to anchor on: the latents come from the frames
    latents = read_table(camera_run.folder / f"results/{SIM}/camera/latents.parquet", "latents")
    assert list(latents.columns) == ["sample_id", *sorted(ARM_JOINTS), "z1"]
    metrics = read_table(camera_run.folder / f"results/{SIM}/camera/metrics.parquet", "metrics")
    m = dict(zip(metrics["metric"], metrics["value"], strict=True))
    assert m["n_mapped_latents"] == 4 and {"r2_diag", "r2_offdiag_max", "shd", "target_accuracy"} <= set(m)
    html = (camera_run.folder / f"results/{SIM}/report.html").read_text()
    assert "What the latents see</h2>" in html and "<h3>camera</h3>" in html and "Not identified:</strong> z1" in html
    assert "Camera front: for each latent, the training frames where it is lowest" in html
    assert "Camera front: what the decoder draws as one latent moves" in html
