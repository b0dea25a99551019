"""The workflow on a real SLURM cluster, through workflow/profiles/slurm as shipped.

The fixture starts the cluster itself, as root, from Debian's ``slurm-wlm`` and ``munge``
packages (.ci/run installs them): ``munged`` with its own key and socket, ``slurmctld`` and two
``slurmd`` on localhost (``slurmd -N``) with a generated slurm.conf in a temporary folder (no
systemd, no cgroups, no accounting database). A small site: node ``cpunode`` (2 CPUs, no GPU) is
the default partition ``cpu``; node ``gpunode`` (2 CPUs, one GPU) is partition ``gpu``. This
machine has no GPU: gres.conf backs the node's GPU with ``/dev/null``, so SLURM schedules and
isolates it (``CUDA_VISIBLE_DEVICES=0``) and PyTorch, finding no CUDA, trains on the CPU.
Its teardown cancels what is left on that cluster and stops the daemons by their PIDs.

The first test runs the tiny demo workflow with ``linear`` and ``sparse_vae`` (``device: auto``,
so its training and graph refits ask for a GPU) through the unedited profile, cancels the
sparse_vae training job (``scancel``) once it has written a checkpoint, and checks that Snakemake
resubmits it (the profile's ``retries: 1``), that the retry resumes from the checkpoint, that
the GPU jobs went to ``gpu`` with one GPU and all others to ``cpu`` without, and that every
artifact equals that of a local run. The second checks that the preflight stops impossible
requests, one line each, before anything is submitted, and that ``crl-pipe cluster-check`` says
the same.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import _tiny_workflow as tiny
import pandas as pd
import pytest

from crl_pipe.io import read_provenance

pytestmark = pytest.mark.workflow

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "slurmstepd")
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo", "sacct", "sacctmgr", "sshare")
NODES = ("cpunode", "gpunode")
DEEP = "sparse_vae"
#: linear and sparse_vae; the deep model trains long enough (without early stopping) for the test to
#: cancel it between its checkpoints (every 10 epochs).
CONFIG = copy.deepcopy(tiny.CONFIG)
CONFIG["datasets"][tiny.DATASET]["models"] = [tiny.MODEL, DEEP]
CONFIG["models"] = {DEEP: {"epochs": 60, "patience": 60}}
CONFIG["graph"]["n_refits_by_model"] = {DEEP: 2}
#: Artifacts that must be byte-identical to the local run's (deterministic data preparation).
BYTE_EQUAL = [
    *tiny.SIMULATED,
    f"results/{tiny.DATASET}/qc.parquet",
    f"results/{tiny.DATASET}/interventions.parquet",
    f"results/{tiny.DATASET}/anchors.parquet",
]
#: Model outputs: same tables (floats to 1e-9) and same provenance as the local run's.
SAME_CONTENT = [
    f"results/{tiny.DATASET}/{model}/{name}.parquet"
    for model in (tiny.MODEL, DEEP)
    for name in ("targets", "latents", "training", "graph", "metrics")
]
DEEP_TARGETS = [path for path in SAME_CONTENT if f"/{DEEP}/" in path] + ["results/benchmark.parquet"]
CHECKPOINT = f"results/{tiny.DATASET}/{DEEP}/checkpoints/checkpoint.pt"
RUN_TIMEOUT = 900  # seconds; the run takes about 3 minutes on 2 idle cores


def _which(name: str) -> str | None:
    """A daemon or client of the SLURM packages (daemons live in /usr/sbin, not on every PATH)."""
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def _missing_prerequisites() -> str | None:
    missing = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if missing:
        return (
            f"needs Debian's slurm-wlm and munge (missing {', '.join(missing)}): "
            "`apt-get install slurm-wlm munge` as root (.ci/run does this)"
        )
    if os.geteuid() != 0:
        return "needs root: slurmd runs jobs as their users and must start as root"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return 'needs snakemake-executor-plugin-slurm: pip install -e ".[slurm]" (make test installs it)'
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]  # what a client needs: SLURM_CONF, and PATH with the client shims first
    daemons: dict[str, subprocess.Popen]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=30)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}\n{self.logs()}")
        return proc

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller remembers (MinJobAge keeps finished ones): id, state, comment, partition."""
        out = self.run("squeue", "--states=all", "--noheader", "--format=%i|%T|%k|%P").stdout
        keys = ("id", "state", "comment", "partition")
        return [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines() if line.strip()]

    def tres_per_job(self, job_id: str) -> str:
        """What the job asked for beyond CPUs and memory (``gres:gpu:1`` for ``sbatch --gpus=1``)."""
        fields = self.run("scontrol", "show", "job", job_id).stdout.split()
        return next((f.split("=", 1)[1] for f in fields if f.startswith("TresPerJob=")), "")

    def logs(self, n: int = 3000) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(parts)


def _slurm_conf(root: Path, ctld_port: int, ports: dict[str, int]) -> str:
    return f"""\
# A two-node cluster for tests/test_slurm.py, on localhost, started by the test itself.
ClusterName=crltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={ports["cpunode"]}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.%n.log
MailProg=/bin/true
# No cgroups and no systemd: processes are tracked by their parent PIDs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: sacct cannot answer, the profile reads job states with squeue, which remembers
# finished jobs for MinJobAge seconds (900 here, so that the test can list every job at the end;
# the profile needs more than 180).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=900
KillWait=5
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
# Two nodes on this 2-core machine, each claiming 2 CPUs and 16 GB (config_overrides lets slurmd
# believe slurm.conf rather than the hardware); only gpunode has a GPU.
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=cpunode NodeHostname=localhost NodeAddr=127.0.0.1 Port={ports["cpunode"]} CPUs=2 RealMemory=16000 State=UNKNOWN
NodeName=gpunode NodeHostname=localhost NodeAddr=127.0.0.1 Port={ports["gpunode"]} CPUs=2 RealMemory=16000 Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=cpunode Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=gpunode MaxTime=INFINITE State=UP
"""  # noqa: E501


def _start(cluster: Cluster, name: str, *args: str, key: str | None = None) -> None:
    key = key or name
    log = open(cluster.root / "log" / f"{key}.out", "w")  # noqa: SIM115 (closed with the daemon)
    cluster.daemons[key] = subprocess.Popen(
        [_which(name), *args], env=cluster.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()


def _wait(what: str, ready, cluster: Cluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, daemon in cluster.daemons.items():
            if daemon.poll() is not None:
                out = (cluster.root / "log" / f"{name}.out").read_text(errors="replace")
                raise AssertionError(f"{name} exited ({daemon.returncode}) before {what}:\n{out}\n{cluster.logs()}")
        if ready():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{cluster.logs()}")


def _stop(cluster: Cluster) -> None:
    """Cancel the jobs left on this cluster, then stop its daemons (newest first) by PID."""
    if "slurmctld" in cluster.daemons and cluster.daemons["slurmctld"].poll() is None:
        try:
            left = [job["id"] for job in cluster.jobs() if job["state"] in ("PENDING", "RUNNING", "COMPLETING")]
            if left:
                cluster.run("scancel", *left, check=False)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and any(
                    job["state"] in ("RUNNING", "COMPLETING") for job in cluster.jobs()
                ):
                    time.sleep(0.5)
        except (AssertionError, subprocess.TimeoutExpired):
            pass
    for name in reversed(list(cluster.daemons)):
        daemon = cluster.daemons[name]
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=5)


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """Start the two-node cluster (as root); cancel its jobs and stop it on exit."""
    # munged wants every folder above its socket searchable by all, and socket paths are short:
    # a folder of our own under /tmp, not pytest's (private) tmp_path.
    root = Path(tempfile.mkdtemp(prefix="crl-slurm-", dir="/tmp"))
    root.chmod(0o755)
    for sub in ("munge", "state", "log", "bin", *(f"spool/{node}" for node in NODES)):
        (root / sub).mkdir(parents=True)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, _free_port(), {node: _free_port() for node in NODES}))
    (root / "gres.conf").write_text("NodeName=gpunode Name=gpu File=/dev/null\n")
    # Client shims: the SLURM job-step plugin drops SLURM_* variables (SLURM_CONF included) before
    # it calls srun inside a job; a site keeps its slurm.conf in /etc/slurm, this cluster here.
    for name in CLIENTS:
        shim = root / "bin" / name
        shim.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {_which(name)} "$@"\n')
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_"))}
    env.update(SLURM_CONF=str(conf), PATH=f"{root / 'bin'}:{env.get('PATH', '')}")
    cluster = Cluster(root, env, {})
    try:
        key, sock = root / "munge" / "munge.key", root / "munge" / "munge.socket"
        subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        _start(
            cluster,
            "munged",
            "--foreground",
            f"--socket={sock}",
            f"--key-file={key}",
            f"--log-file={root / 'log' / 'munged.log'}",
            f"--pid-file={root / 'munge' / 'munged.pid'}",
            f"--seed-file={root / 'munge' / 'munged.seed'}",
        )
        _wait("munged's socket", sock.exists, cluster)
        _start(cluster, "slurmctld", "-D", "-f", str(conf))
        _wait("slurmctld", lambda: cluster.run("scontrol", "ping", check=False).stdout.count("UP") > 0, cluster)
        for node in NODES:  # two slurmd on one host: each with its node name, port, spool and PID file
            _start(cluster, "slurmd", "-D", "-N", node, "-f", str(conf), key=f"slurmd-{node}")

        def idle() -> bool:
            out = cluster.run("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split()
            return dict(zip(out[::2], out[1::2], strict=True)) == dict.fromkeys(NODES, "idle")

        _wait("two idle nodes", idle, cluster)
        yield cluster
    finally:
        _stop(cluster)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    reason = _missing_prerequisites()
    if reason:
        pytest.skip(f"SLURM test skipped: {reason}")
    with running_cluster() as started:
        yield started


@pytest.fixture(scope="module")
def local_deep_run(cached_run, tmp_path_factory) -> Path:
    """The local run with sparse_vae too: a copy of the session's local run, its new jobs run here."""
    folder = tmp_path_factory.mktemp("local_deep") / "run"
    shutil.copytree(cached_run.folder, folder, symlinks=False)
    tiny.write_config(folder, CONFIG)
    proc = tiny.run_snakemake(folder, "--cores", "2", *DEEP_TARGETS)
    assert proc.returncode == 0, tiny.failure(proc, folder)
    return folder


def _slurm_args(folder: Path, *args: str) -> list[str]:
    """snakemake with the unedited slurm profile (and ``args``) on ``folder``."""
    profile = tiny.REPO / "workflow" / "profiles" / "slurm"
    return tiny.snakemake_args(folder, "--workflow-profile", str(profile), *args)


def _cancel_training_after_a_checkpoint(cluster: Cluster, proc: subprocess.Popen, folder: Path, deadline: float):
    """Wait for the sparse_vae train_model job to run and write a checkpoint, then scancel it; its
    SLURM job id (None if never seen)."""
    comment = f"rule_train_model_wildcards_{tiny.DATASET}_{DEEP}"
    while proc.poll() is None and time.monotonic() < deadline:
        if (folder / CHECKPOINT).exists():
            for job in cluster.jobs():
                if job["state"] == "RUNNING" and job["comment"] == comment:
                    if cluster.run("scancel", job["id"], check=False).returncode == 0:
                        return job["id"]
        time.sleep(0.1)
    return None


def test_workflow_on_slurm_matches_the_local_run(cached_run, local_deep_run, cluster, tmp_path):
    folder = tmp_path / "slurm_run"
    tiny.write_config(folder, CONFIG)
    log = tmp_path / "snakemake.log"
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            _slurm_args(folder),
            cwd=folder.parent,
            env=cluster.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            cancelled = _cancel_training_after_a_checkpoint(cluster, proc, folder, start + RUN_TIMEOUT)
            proc.wait(timeout=max(1, RUN_TIMEOUT - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            pytest.fail(
                f"snakemake on SLURM ran past {RUN_TIMEOUT} s:\n"
                f"{tiny.failure(None, folder, log.read_text())}\n{cluster.logs()}"
            )
    wall = time.monotonic() - start
    output = log.read_text()
    slurm_logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in folder.glob(".snakemake/slurm_logs/**/*.log"))
    assert proc.returncode == 0, f"{tiny.failure(None, folder, output)}\n{slurm_logs}\n{cluster.logs()}"
    assert cancelled, f"never saw the {DEEP} training job running with a checkpoint to cancel it:\n{output[-3000:]}"
    print(f"workflow on SLURM: {wall:.0f} s wall")  # shown with pytest -s: the status-check timing at work

    # The preflight ran and found every request satisfiable.
    assert "Cluster preflight: the 12 jobs to submit fit partition(s) cpu, gpu of this cluster." in output

    # The cancelled job failed, Snakemake resubmitted it (retries: 1), the retry resumed and finished.
    jobs = {job["id"]: job for job in cluster.jobs()}
    assert jobs[cancelled]["state"] == "CANCELLED", jobs[cancelled]
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in output, output[-3000:]
    assert "Trying to restart job" in output
    training = sorted(
        (job for job in jobs.values() if job["comment"] == f"rule_train_model_wildcards_{tiny.DATASET}_{DEEP}"),
        key=lambda job: int(job["id"]),
    )
    assert [job["state"] for job in training] == ["CANCELLED", "COMPLETED"], training
    train_log = (folder / "logs" / "train_model" / tiny.DATASET / f"{DEEP}.log").read_text()
    assert f"{CHECKPOINT}: resuming after epoch" in train_log, train_log[-3000:]

    # Routing: the jobs that ask for a GPU (sparse_vae's training and graph refits) in partition
    # gpu with one GPU, every other job in the default partition cpu, without one.
    gpu_jobs = {f"rule_{rule}_wildcards_{tiny.DATASET}_{DEEP}" for rule in ("train_model", "recover_graph")}
    for job in jobs.values():
        if job["comment"] in gpu_jobs:
            assert job["partition"] == "gpu" and cluster.tres_per_job(job["id"]) == "gres:gpu:1", job
        else:
            assert job["partition"] == "cpu" and "gpu" not in cluster.tres_per_job(job["id"]), job
    assert {job["comment"] for job in jobs.values()} >= gpu_jobs
    rules = {job["comment"].split("_wildcards")[0] for job in jobs.values()}
    assert "rule_collect_benchmark" not in rules, "collect_benchmark is a local rule"
    assert {"rule_simulate_screen", "rule_ingest", "rule_recover_graph", "rule_write_report"} <= rules

    # Same artifacts as the local runs (tests/conftest.py: cached_run; sparse_vae: local_deep_run).
    for path in BYTE_EQUAL:
        assert (folder / path).read_bytes() == (cached_run.folder / path).read_bytes(), f"{path} differs"
    for path in SAME_CONTENT + ["results/benchmark.parquet"]:
        local = local_deep_run / path
        pd.testing.assert_frame_equal(pd.read_parquet(folder / path), pd.read_parquet(local), rtol=1e-9, atol=0)
        assert read_provenance(folder / path) == read_provenance(local), path
    html = (folder / "results" / tiny.DATASET / "report.html").read_text()
    assert "<html" in html.lower()

    # Snakemake's report archive of the cluster run, built afterwards as docs/cluster.md says.
    proc = tiny.run_snakemake(folder, "--report", "report.zip", env={"SLURM_CONF": cluster.env["SLURM_CONF"]})
    assert proc.returncode == 0, tiny.failure(proc, folder)
    names = zipfile.ZipFile(folder / "report.zip").namelist()
    assert "report/report.html" in names and any(name.endswith("/report.html") and "raw" in name for name in names)


#: What the preflight says of a profile that asks 8 CPUs for train_model and sends recover_graph
#: to the CPU partition (one line per problem, each with the value to set).
IMPOSSIBLE = ["--set-threads", "train_model=8", "--set-resources", "recover_graph:slurm_partition=cpu"]
PROBLEMS = [
    "train_model (linear) asks 8 CPUs; partition cpu has nodes with at most 2: "
    "set cpus_per_task: 2 for train_model under set-resources in your profile",
    "train_model (sparse_vae) asks 8 CPUs; partition gpu has nodes with at most 2: "
    "set cpus_per_task: 2 for train_model under set-resources in your profile",
    "recover_graph (sparse_vae) asks 1 GPU but partition cpu has none (partitions with GPUs: gpu): "
    "set slurm_partition: gpu for recover_graph under set-resources in your profile",
]


def test_preflight_stops_impossible_requests_before_submission(cluster, tmp_path):
    folder = tmp_path / "impossible"
    tiny.write_config(folder, CONFIG)
    before = cluster.jobs()
    proc = subprocess.run(
        _slurm_args(folder, *IMPOSSIBLE), cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=300
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "cluster preflight: 3 problem(s), nothing was submitted" in output, output[-3000:]
    lines = output.splitlines()
    for problem in PROBLEMS:
        assert problem in lines, f"{problem!r} not a line of:\n{output[-3000:]}"
    assert cluster.jobs() == before, "a job was submitted"

    # crl-pipe cluster-check: the cluster, the requests and the same problems, nothing submitted.
    check = [sys.executable, "-m", "crl_pipe.cli", "cluster-check"]
    cli_env = {**cluster.env, "PYTHONPATH": str(tiny.REPO)}
    proc = subprocess.run(
        [*check, *_slurm_args(folder, *IMPOSSIBLE)[1:]], env=cli_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("problem: ")] == [
        f"problem: {line}" for line in PROBLEMS
    ], proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert ["cpu*", "UP", "1/1", "2", "16000", "0", "unlimited"] in rows, proc.stdout
    assert ["gpu", "UP", "1/1", "2", "16000", "1", "unlimited"] in rows, proc.stdout
    proc = subprocess.run([*check, *_slurm_args(folder)[1:]], env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All 12 jobs fit this cluster; nothing was submitted." in proc.stdout, proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert ["train_model", "(sparse_vae)", "1", "gpu", "2", "6000", "120", "1", "-"] in rows, proc.stdout
    assert ["train_model", "(linear)", "1", "cpu", "(default)", "2", "6000", "120", "0", "-"] in rows, proc.stdout
    # A partition for CPU steps in the profile's default-resources holds for the CPU jobs of the GPU
    # rules too (linear's training); jobs that ask for a GPU still go to the partition with GPUs.
    cpu_steps = ["--default-resources", "tmpdir=system_tmpdir", "slurm_partition=gpu"]
    proc = subprocess.run(
        [*check, *_slurm_args(folder, *cpu_steps)[1:]], env=cli_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert ["train_model", "(linear)", "1", "gpu", "2", "6000", "120", "0", "-"] in rows, proc.stdout
    assert ["ingest", "1", "gpu", "1", "4000", "30", "0", "-"] in rows, proc.stdout
    assert cluster.jobs() == before, "a job was submitted"
