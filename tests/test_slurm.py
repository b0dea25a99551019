"""The workflow on a real, one-node SLURM cluster, through workflow/profiles/slurm.

The fixture starts the cluster itself, as root, from Debian's ``slurm-wlm`` and ``munge``
packages (.ci/run installs them): ``munged`` with its own key and socket, ``slurmctld`` and
``slurmd`` on localhost with a generated slurm.conf in a temporary folder (no systemd, no
cgroups; a GRES gpu so that GPU requests are scheduled; two partitions, ``cpu`` and ``gpu``,
as the profile names them; no accounting database, so Snakemake asks ``squeue`` for job states).
Its teardown cancels what is left on that cluster and stops the three daemons by their PIDs.

The test runs the tiny demo workflow with ``--executor slurm --workflow-profile
workflow/profiles/slurm``, cancels the training job while it runs (``scancel``) and checks that
Snakemake resubmits it (the profile's ``retries: 1``), that every job went to the partition and
got the GPU the profile asks for, and that the artifacts equal those of the local run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import _tiny_workflow as tiny
import pandas as pd
import pytest

from crl_pipe.io import read_provenance

pytestmark = pytest.mark.workflow

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "slurmstepd")
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
#: Artifacts that must be byte-identical to the local run's (deterministic data preparation).
BYTE_EQUAL = [
    *tiny.SIMULATED,
    f"results/{tiny.DATASET}/qc.parquet",
    f"results/{tiny.DATASET}/interventions.parquet",
    f"results/{tiny.DATASET}/anchors.parquet",
]
#: Model outputs: same tables (floats to 1e-9) and same provenance as the local run's.
SAME_CONTENT = [
    f"results/{tiny.DATASET}/{tiny.MODEL}/targets.parquet",
    f"results/{tiny.DATASET}/{tiny.MODEL}/latents.parquet",
    f"results/{tiny.DATASET}/{tiny.MODEL}/graph.parquet",
    f"results/{tiny.DATASET}/{tiny.MODEL}/metrics.parquet",
    "results/benchmark.parquet",
]
RUN_TIMEOUT = 360  # seconds; the run takes about 2 minutes on 2 cores


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


def _slurm_conf(root: Path, ctld_port: int, slurmd_port: int) -> str:
    return f"""\
# A one-node cluster for tests/test_slurm.py, on localhost, started by the test itself.
ClusterName=crltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
MailProg=/bin/true
# No cgroups and no systemd: processes are tracked by their parent PIDs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: sacct cannot answer, Snakemake queries squeue, which remembers finished jobs
# for MinJobAge seconds (the plugin needs >= 3 x its first status-check delay).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=900
KillWait=5
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
# The node claims what the profile asks of one (4 CPUs and 16 GB for training, a GPU) on this
# 2-core machine; config_overrides lets slurmd believe slurm.conf rather than the hardware.
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=8 RealMemory=32000 Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
"""


def _start(cluster: Cluster, name: str, *args: str) -> None:
    log = open(cluster.root / "log" / f"{name}.out", "w")  # noqa: SIM115 (closed with the daemon)
    cluster.daemons[name] = subprocess.Popen(
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


@pytest.fixture(scope="module")
def cluster():
    reason = _missing_prerequisites()
    if reason:
        pytest.skip(f"single-node SLURM test skipped: {reason}")
    # munged wants every folder above its socket searchable by all, and socket paths are short:
    # a folder of our own under /tmp, not pytest's (private) tmp_path.
    root = Path(tempfile.mkdtemp(prefix="crl-slurm-", dir="/tmp"))
    root.chmod(0o755)
    for sub in ("munge", "state", "spool/localhost", "log", "bin"):
        (root / sub).mkdir(parents=True)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, _free_port(), _free_port()))
    (root / "gres.conf").write_text("NodeName=localhost Name=gpu File=/dev/null\n")
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
        _start(cluster, "slurmd", "-D", "-N", "localhost", "-f", str(conf))
        _wait(
            "an idle node",
            lambda: cluster.run("sinfo", "-h", "-n", "localhost", "-o", "%T", check=False).stdout.strip() == "idle",
            cluster,
        )
        yield cluster
    finally:
        _stop(cluster)
        shutil.rmtree(root, ignore_errors=True)


def _cancel_running_training(cluster: Cluster, proc: subprocess.Popen, deadline: float) -> str | None:
    """Wait for the train_model job to run, then scancel it; its SLURM job id (None if never seen)."""
    while proc.poll() is None and time.monotonic() < deadline:
        for job in cluster.jobs():
            if job["state"] == "RUNNING" and job["comment"].startswith("rule_train_model"):
                if cluster.run("scancel", job["id"], check=False).returncode == 0:
                    return job["id"]
        time.sleep(0.25)
    return None


def test_workflow_on_slurm_matches_the_local_run(cached_run, cluster, tmp_path):
    folder = tmp_path / "slurm_run"
    tiny.write_config(folder)
    args = tiny.snakemake_args(
        folder,
        "--executor",
        "slurm",
        "--workflow-profile",
        str(tiny.REPO / "workflow" / "profiles" / "slurm"),
        # No slurmdbd here: job states from squeue, checked soon after submission.
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--latency-wait",
        "5",
    )
    log = tmp_path / "snakemake.log"
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            args, cwd=folder.parent, env=cluster.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            cancelled = _cancel_running_training(cluster, proc, start + RUN_TIMEOUT)
            proc.wait(timeout=max(1, RUN_TIMEOUT - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            pytest.fail(
                f"snakemake on SLURM ran past {RUN_TIMEOUT} s:\n"
                f"{tiny.failure(None, folder, log.read_text())}\n{cluster.logs()}"
            )
    output = log.read_text()
    slurm_logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in folder.glob(".snakemake/slurm_logs/**/*.log"))
    assert proc.returncode == 0, f"{tiny.failure(None, folder, output)}\n{slurm_logs}\n{cluster.logs()}"
    assert cancelled, f"never saw train_model running to cancel it:\n{output[-3000:]}"

    # The cancelled job failed, Snakemake resubmitted it (retries: 1), the second attempt finished.
    jobs = {job["id"]: job for job in cluster.jobs()}
    assert jobs[cancelled]["state"] == "CANCELLED", jobs[cancelled]
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in output, output[-3000:]
    assert "Trying to restart job" in output
    training = [job for job in jobs.values() if job["comment"].startswith("rule_train_model")]
    training.sort(key=lambda job: int(job["id"]))
    assert [job["state"] for job in training] == ["CANCELLED", "COMPLETED"], training

    # Resources as the profile says: training in the gpu partition with one GPU, the rest on cpu.
    for job in jobs.values():
        if job["comment"].startswith("rule_train_model"):
            assert job["partition"] == "gpu" and cluster.tres_per_job(job["id"]) == "gres:gpu:1", job
        else:
            assert job["partition"] == "cpu" and "gpu" not in cluster.tres_per_job(job["id"]), job
    rules = {job["comment"].split("_wildcards")[0] for job in jobs.values()}
    assert "rule_collect_benchmark" not in rules, "collect_benchmark is a local rule"
    assert {"rule_simulate_screen", "rule_ingest", "rule_recover_graph", "rule_write_report"} <= rules

    # Same artifacts as the local run (tests/conftest.py: cached_run).
    local = cached_run.folder
    for path in BYTE_EQUAL:
        assert (folder / path).read_bytes() == (local / path).read_bytes(), f"{path} differs from the local run"
    for path in SAME_CONTENT:
        pd.testing.assert_frame_equal(pd.read_parquet(folder / path), pd.read_parquet(local / path), rtol=1e-9, atol=0)
        assert read_provenance(folder / path) == read_provenance(local / path), path
    html = (folder / "results" / tiny.DATASET / "report.html").read_text()
    assert "<html" in html.lower()

    # Snakemake's report archive of the cluster run, built afterwards as docs/cluster.md says.
    proc = tiny.run_snakemake(folder, "--report", "report.zip", env={"SLURM_CONF": cluster.env["SLURM_CONF"]})
    assert proc.returncode == 0, tiny.failure(proc, folder)
    names = zipfile.ZipFile(folder / "report.zip").namelist()
    assert "report/report.html" in names and any(name.endswith("/report.html") and "raw" in name for name in names)
