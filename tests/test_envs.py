"""The conda environments in envs/ pin what pyproject.toml requires, inside its ranges."""

from __future__ import annotations

import re
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
}
_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<op>==|=)?\s*(?P<version>[^\s=<>!*]+)?\s*$")


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["workflow"]]


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
