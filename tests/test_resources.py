"""Every rule's threads and resources come from the one table in rules/resources.smk.

Checked on the workflow as Snakemake loads it (its API, no DAG): each rule (but ``all``) has a
row, its threads, ``mem_mb`` and ``runtime`` are that row's, and only the rules marked
``"gpu": "model"`` (training and graph refits) carry the ``gpu`` and ``slurm_partition``
resources, so that CPU-only steps never ask for a GPU.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    workdir = tmp_path_factory.mktemp("resources")
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        yield api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[REPO / "config" / "config.yaml"]),
            snakefile=REPO / "Snakefile",
            workdir=workdir,
        )._workflow


def test_every_rule_takes_its_resources_from_the_table(workflow):
    from snakemake.iocontainers import Wildcards

    table = workflow.globals["RESOURCES"]
    rules = {rule.name: rule for rule in workflow.rules if rule.name != "all"}
    assert set(rules) == set(table), "rules and rows of RESOURCES differ"
    for name, rule in rules.items():
        row, resources = table[name], rule.resources
        assert resources["_cores"].value == row["threads"], name
        memory = resources["mem_mb"]  # a function (no --mem on a cluster whose nodes declare no memory)
        assert memory.evaluate(Wildcards()).value == row["mem_mb"], name
        assert resources["runtime"].value == row["runtime"], name
        gpu_rule = row.get("gpu") == "model"
        assert ("gpu" in resources) == gpu_rule and ("slurm_partition" in resources) == gpu_rule, name
    assert sorted(name for name, row in table.items() if row.get("gpu")) == ["recover_graph", "train_model"]


def test_rules_name_no_numbers_of_their_own():
    """threads and resources only through the table's getters (rules/*.smk)."""
    for path in sorted((REPO / "rules").glob("*.smk")):
        text = path.read_text()
        for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n|\n)*)", text, flags=re.MULTILINE):
            assert f'    threads: get_threads("{rule}")\n' in body, f"{path.name}: rule {rule}"
            resources = re.search(r"    resources:\n((?:        .*\n)*)", body)
            assert resources and resources[1] == f'        **get_resources("{rule}"),\n', f"{path.name}: rule {rule}"
