"""What every rule asks of the machine (one table), where GPU jobs go, and the SLURM preflight.

Rules take their threads and resources from RESOURCES only (``threads: get_threads("rule")``,
``resources: **get_resources("rule")``); a profile overrides them per rule with ``set-threads``
and ``set-resources``. Rules marked ``"gpu": "model"`` ask for one GPU when their model trains
with PyTorch on a device other than cpu (``wants_gpu``), and with the slurm executor such a job
goes to a partition with GPUs, the others of the rule to the profile's partition.

Before the slurm executor submits anything, ``onstart`` checks every job's request against the
cluster (crl_pipe.cluster) and stops with one line per request that could never run there.
"""

import ast
import os

from snakemake.logging import logger

from crl_pipe import ClusterError
from crl_pipe.cluster import (
    CHECK_ENV,
    Request,
    check,
    choose_gpu_partition,
    merge_requests,
    read_site,
    write_check_report,
)

#: rule -> CPU threads, memory (MB) and run time (minutes) of one job, sized for a screen of up to
#: a million cells (docs/benchmarks.md) on a small site: 2 CPUs and 6 GB at most. "gpu": "model":
#: one GPU for the jobs whose model wants one (wants_gpu), none for the others.
RESOURCES = {
    "simulate_screen": {"threads": 1, "mem_mb": 4000, "runtime": 60},
    "simulate_robot": {"threads": 1, "mem_mb": 4000, "runtime": 60},
    "ingest": {"threads": 1, "mem_mb": 4000, "runtime": 30},
    "label_interventions": {"threads": 1, "mem_mb": 4000, "runtime": 30},
    "preprocess": {"threads": 2, "mem_mb": 4000, "runtime": 60},
    "build_anchors": {"threads": 1, "mem_mb": 4000, "runtime": 30},
    "train_model": {"threads": 2, "mem_mb": 6000, "runtime": 120, "gpu": "model"},
    "recover_graph": {"threads": 2, "mem_mb": 6000, "runtime": 120, "gpu": "model"},
    "evaluate": {"threads": 1, "mem_mb": 4000, "runtime": 30},
    "predict_held_out": {"threads": 1, "mem_mb": 4000, "runtime": 30},
    "steer": {"threads": 1, "mem_mb": 4000, "runtime": 30},
    "fit_baseline": {"threads": 1, "mem_mb": 4000, "runtime": 60},
    "evaluate_baseline": {"threads": 1, "mem_mb": 4000, "runtime": 30},
    "write_report": {"threads": 1, "mem_mb": 4000, "runtime": 30},
    "collect_benchmark": {"threads": 1, "mem_mb": 1000, "runtime": 10},
    "simulate_module_truth": {"threads": 1, "mem_mb": 4000, "runtime": 30},
    "learn_hierarchy": {"threads": 1, "mem_mb": 4000, "runtime": 30},
}


def get_threads(rule):
    """CPU threads of one job of ``rule`` (on SLURM: ``--cpus-per-task``)."""
    return RESOURCES[rule]["threads"]


def get_resources(rule):
    """Snakemake resources of ``rule``: ``mem_mb``, ``runtime``, and for GPU rules ``gpu`` and
    ``slurm_partition`` (use as ``resources: **get_resources("rule")``)."""
    spec = RESOURCES[rule]
    resources = {"mem_mb": _memory_of(rule), "runtime": spec["runtime"]}
    if spec.get("gpu") == "model":
        resources.update(gpu=get_gpus, slurm_partition=_partition_of(rule))
    return resources


def _executor():
    """The executor running this process's jobs: slurm, slurm-jobstep (inside a job), local, dryrun."""
    return getattr(workflow.executor_plugin, "name", None)


_SITE = {}


def _cluster():
    """The SLURM cluster, read once (None unless the slurm executor submits this run's jobs)."""
    if _executor() != "slurm":
        return None
    if "site" not in _SITE:
        try:
            _SITE["site"] = read_site()
        except ClusterError as err:
            _SITE["site"], _SITE["error"] = None, err
    return _SITE["site"]


def _memory_of(rule):
    """``mem_mb`` of the jobs of ``rule``: the table's, but none on a SLURM cluster whose nodes
    declare no memory (``RealMemory`` unset in slurm.conf): there sbatch refuses any ``--mem``.
    """
    mem_mb = RESOURCES[rule]["mem_mb"]

    def memory(wildcards):
        site = _cluster()
        declared = site is None or site.declares_memory
        return mem_mb if declared else 0  # 0: no --mem

    return memory


def get_gpus(wildcards):
    """GPUs of a job of a GPU rule: 1 when its model wants one (wants_gpu), else 0.

    With the slurm executor, a model on ``device: auto`` asks for none on a cluster without GPUs
    (it trains on CPUs, as ``auto`` does on a machine without one). Inside a SLURM job, the job
    step asks for the GPUs the job was given (``$SLURM_GPUS_ON_NODE``), never more.
    """
    if not wants_gpu(wildcards):
        return 0
    if _executor() != "slurm" and "SLURM_JOB_ID" in os.environ:
        return min(1, int(os.environ.get("SLURM_GPUS_ON_NODE") or 0))
    site = _cluster()
    if site is not None and not site.gpu_partitions:
        return 0 if model_device(config, wildcards.model) == "auto" else 1
    return 1


def _profile_partition():
    """``slurm_partition`` of the profile's ``default-resources`` (None when unset)."""
    defaults = workflow.resource_settings.default_resources
    for arg in getattr(defaults, "args", None) or ():
        name, _, value = str(arg).partition("=")
        if name.strip() == "slurm_partition" and value.strip():
            try:
                value = ast.literal_eval(value.strip())  # "'cpu'" as well as "cpu"
            except (ValueError, SyntaxError):
                pass
            return str(value).strip() or None
    return None


def _partition_of(rule):
    """``slurm_partition`` of the jobs of a GPU rule: a partition with GPUs for those that ask for
    one (crl_pipe.cluster.choose_gpu_partition), the profile's partition for the others.
    """
    spec = RESOURCES[rule]

    def partition(wildcards, threads):
        site = _cluster()
        if site is None:
            return None
        preferred = _profile_partition()
        gpus = get_gpus(wildcards)
        if not gpus:
            return preferred
        return choose_gpu_partition(
            site,
            preferred=preferred,
            cpus=threads,
            mem_mb=spec["mem_mb"],
            runtime=spec["runtime"],
            gpus=gpus,
        )

    return partition


# ---- the preflight -------------------------------------------------------------------------------
def _number(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _request(job):
    """What ``job`` asks of SLURM, as snakemake-executor-plugin-slurm turns it into sbatch options."""
    res = job.resources
    gpus = _number(res.get("gpu")) or 0
    gres = str(res.get("gres") or "")
    if not gpus and gres.startswith("gpu"):
        gpus = _number(gres.split(":")[-1]) or 1
    cpus = _number(res.get("cpus_per_task"))
    if cpus is None and gpus and _number(res.get("cpus_per_gpu")):
        cpus = _number(res.get("cpus_per_gpu")) * gpus
    cpus = max(1, cpus if cpus is not None else job.threads)
    mem = _number(res.get("mem_mb"))
    if _number(res.get("mem_mb_per_cpu")):
        mem = _number(res.get("mem_mb_per_cpu")) * cpus
    model = job.wildcards_dict.get("model")
    return Request(
        job.rule.name,
        cpus=cpus,
        mem_mb=mem,
        runtime=_number(res.get("runtime")),
        gpus=gpus,
        gpu_model=res.get("gpu_model") or None,
        partition=str(res.get("slurm_partition") or "") or None,
        account=str(res.get("slurm_account") or "") or None,
        models=(model,) if model else (),
    )


def cluster_preflight():
    """With the slurm executor: stop before the first submission if a job could never run.

    Under ``crl-pipe cluster-check`` ($CRL_PIPE_CLUSTER_CHECK), write the requests and problems
    there and stop in any case.
    """
    check_report = os.environ.get(CHECK_ENV)
    if _executor() != "slurm":
        if check_report:
            raise WorkflowError(
                "crl-pipe cluster-check: this run does not use the slurm executor: pass "
                "--workflow-profile <repo>/workflow/profiles/slurm (or --executor slurm)"
            )
        return
    site = _cluster()
    if site is None:
        raise WorkflowError(f"cluster preflight: {_SITE['error']}")
    order = {rule: i for i, rule in enumerate(RESOURCES)}
    requests = sorted(
        (_request(job) for job in workflow.dag.needrun_jobs() if not job.is_local),
        key=lambda r: (order.get(r.rule, len(order)), r.rule, r.models),
    )
    status_command = getattr(workflow.executor_settings, "status_command", None)
    problems = check(requests, site, status_command=status_command)
    if check_report:
        write_check_report(check_report, merge_requests(requests), problems)
        raise WorkflowError(
            "crl-pipe cluster-check: requests checked, nothing submitted"
        )
    if problems:
        raise WorkflowError(
            f"cluster preflight: {len(problems)} problem(s), nothing was submitted "
            "(`crl-pipe cluster-check` describes the cluster):\n" + "\n".join(problems)
        )
    partitions = sorted({r.partition or site.default_partition for r in requests})
    logger.info(
        f"Cluster preflight: the {len(requests)} jobs to submit fit partition(s) "
        f"{', '.join(partitions)} of this cluster."
    )


onstart:
    cluster_preflight()
