"""The conda environments in envs/ pin what pyproject.toml requires, inside its ranges."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))

#: pip name -> the conda-forge names that provide it (the pip name itself is always accepted).
CONDA_NAMES = {
    "torch": {"pytorch", "pytorch-cpu", "pytorch-gpu"},
    "matplotlib": {"matplotlib-base"},
    "snakemake": {"snakemake-minimal"},
    "seaborn": {"seaborn-base"},
    "mujoco": {"mujoco-python"},
}
#: Optional dependencies that rules import (rule simulate_robot runs the MuJoCo arm and writes its camera's
#: video; rule ingest decodes camera videos with PyAV), so the envs pin them too.
RULE_EXTRAS = {"mujoco", "av"}
_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<op>==|=)?\s*(?P<version>[^\s=<>!*]+)?\s*$")


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    robot = [Requirement(r) for r in extras["robot"]]
    required = [Requirement(r) for r in project["dependencies"] + extras["workflow"]]
    return required + [r for r in robot if r.name in RULE_EXTRAS]


def conda_pins(env_file: Path) -> dict[str, str | None]:
    """Package -> pinned version (None where unpinned) of a conda environment file."""
    env = yaml.safe_load(env_file.read_text())
    pins: dict[str, str | None] = {}
    for dep in env["dependencies"]:
        assert isinstance(dep, str), f"{env_file.name}: only conda packages expected, found {dep!r}"
        match = _SPEC.match(dep)
        assert match, f"{env_file.name}: cannot read the dependency {dep!r}"
        pins[canonicalize_name(match["name"])] = match["version"]
    return pins


def test_there_are_env_files():
    assert {p.name for p in ENV_FILES} >= {"crl-pipe.yaml", "crl-pipe-gpu.yaml"}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_uses_conda_forge_only(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"][0] == "conda-forge"
    assert set(env["channels"]) <= {"conda-forge", "nodefaults"}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_every_package_is_pinned(env_file):
    unpinned = [name for name, version in conda_pins(env_file).items() if not version]
    assert not unpinned, f"{env_file.name}: unpinned {unpinned}"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_pins_lie_inside_the_pyproject_ranges(env_file):
    pins = conda_pins(env_file)
    problems = []
    for req in pyproject_requirements():
        names = {canonicalize_name(req.name)} | {canonicalize_name(n) for n in CONDA_NAMES.get(req.name, ())}
        found = [name for name in names if name in pins]
        if len(found) != 1:
            problems.append(f"{req.name}: expected one of {sorted(names)}, found {found}")
            continue
        version = Version(pins[found[0]])
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{found[0]}={version} is outside {req.name}{req.specifier}")
    assert not problems, f"{env_file.name}: " + "; ".join(problems)


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_python_and_snakemake_are_in_the_env(env_file):
    pins = conda_pins(env_file)
    requires_python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert "python" in pins and SpecifierSet(requires_python).contains(Version(pins["python"]))
    assert {"snakemake", "snakemake-minimal"} & set(pins)


def test_gpu_env_differs_only_in_pytorch():
    cpu = conda_pins(REPO / "envs" / "crl-pipe.yaml")
    gpu = conda_pins(REPO / "envs" / "crl-pipe-gpu.yaml")
    assert gpu.pop("pytorch-gpu") == cpu.pop("pytorch")
    assert gpu == cpu


# ---- which environment and resources train_model gets ------------------------------------------
def _train_rule(config: dict, workdir: Path):
    """The ``train_model`` rule of the workflow loaded with ``config`` (Snakemake's API, no DAG)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    demo["datasets"]["demo"]["models"] = ["linear", "sparse_vae"]
    (workdir / "config.yaml").write_text(yaml.safe_dump({**demo, **config}))
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[workdir / "config.yaml"]),
            snakefile=REPO / "Snakefile",
            workdir=workdir,
        )._workflow
        return workflow.get_rule("train_model")


def _dry_run_gpus(workdir: Path, model: str) -> int:
    """The ``gpu`` resource of ``train_model`` for ``model``, as ``snakemake -n`` prints it."""
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml",
         "--cores", "1", "--", f"results/demo/{model}/model.pt"],
        cwd=workdir, capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"rule train_model:\n(?:    .*\n)*?    resources: .*\bgpu=(\d+)", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    return int(found[1])


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, {"linear": ("crl-pipe.yaml", 0), "sparse_vae": ("crl-pipe-gpu.yaml", 1)}),
        ({"device": "cuda"}, {"linear": ("crl-pipe.yaml", 0), "sparse_vae": ("crl-pipe-gpu.yaml", 1)}),
        ({"device": "cpu"}, {"linear": ("crl-pipe.yaml", 0), "sparse_vae": ("crl-pipe.yaml", 0)}),
        ({"device": "cuda", "models": {"sparse_vae": {"device": "cpu"}}}, {"sparse_vae": ("crl-pipe.yaml", 0)}),
    ],
    ids=["auto", "cuda", "cpu", "per-model-cpu"],
)
def test_gpu_training_asks_for_a_gpu_and_the_cuda_environment(config, expected, tmp_path, monkeypatch):
    """``--sdm conda`` gives PyTorch models the CUDA environment exactly when their job asks for a GPU."""
    from snakemake.iocontainers import Wildcards
    from snakemake.rules import _NOT_CACHED

    monkeypatch.chdir(tmp_path)
    rule = _train_rule(config, tmp_path)
    for model, (env, gpus) in expected.items():
        wildcards = Wildcards(fromdict={"dataset": "demo", "model": model})
        rule._expanded_conda_env = _NOT_CACHED  # the env is a function of the wildcards: not cached
        assert Path(str(rule.expand_conda_env(wildcards).file)).name == env, model
        assert _dry_run_gpus(tmp_path, model) == gpus, model
