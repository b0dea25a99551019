"""Read a SLURM cluster and check the workflow's job requests against it before anything is submitted.

SLURM accepts a job that no node of its partition can ever run (more CPUs, memory, GPUs or time
than any node has) and leaves it PENDING for good, and Snakemake waits without a word. The
preflight here reads the cluster once (``scontrol show partition``, ``scontrol show node``,
``scontrol show config``, and ``sacctmgr`` where accounting is on), then :func:`check` turns
every request that cannot run into one line that says what to change, e.g. ``train_model asks 4
CPUs; partition gpu has nodes with at most 2: set cpus_per_task: 2 for train_model under
set-resources in your profile``.

The workflow runs :func:`check` before it submits anything (``onstart`` in
``rules/resources.smk``, with the slurm executor), and ``crl-pipe cluster-check`` runs the same
check, plus a summary of the cluster, without submitting (:func:`cluster_check`). Only the
standard library is used, so that the Snakemake process can import this module cheaply.
"""

from __future__ import annotations

import getpass
import grp
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from ._errors import ClusterError

__all__ = [
    "CHECK_ENV",
    "MAX_STATUS_INTERVAL",
    "Node",
    "Partition",
    "Request",
    "Site",
    "check",
    "choose_gpu_partition",
    "cluster_check",
    "describe",
    "expand_hostlist",
    "merge_requests",
    "parse_gres",
    "parse_megabytes",
    "parse_minutes",
    "parse_records",
    "read_site",
    "site_from_text",
    "write_check_report",
]

#: Environment variable set by ``crl-pipe cluster-check``: the workflow's ``onstart`` writes its
#: requests and problems as JSON to this path and stops before submitting anything.
CHECK_ENV = "CRL_PIPE_CLUSTER_CHECK"
#: The longest wait (seconds) of snakemake-executor-plugin-slurm between two status checks of a job
#: (its interval grows by 10 s per check without a finished job, up to this). ``squeue`` must still
#: remember a finished job after that long: ``MinJobAge`` above it.
MAX_STATUS_INTERVAL = 180
#: Node states in which SLURM starts no new job (``DOWN*``: not responding).
_UNUSABLE = {"DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "FAILING", "FUTURE", "INVAL", "NOT_RESPONDING"}
_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_]*)=", re.MULTILINE)
_UNLIMITED = {"", "UNLIMITED", "INFINITE", "NONE", "N/A", "(NULL)"}


# ---- parsing ------------------------------------------------------------------------------------
def parse_records(text: str, first_key: str) -> list[dict[str, str]]:
    """The records of ``scontrol show node`` or ``scontrol show partition``, as key -> value.

    Both layouts are read: the default blocks (a record over several indented lines, records
    separated by a blank line) and ``scontrol -o`` (one record per line). A record starts at
    ``first_key`` (``NodeName`` or ``PartitionName``); a value runs to the next ``Key=`` that
    follows white space, so values with spaces (``OS=Linux 6.1 #1 SMP``, ``Reason=Not
    responding``) and with ``=`` inside (``CfgTRES=cpu=2,mem=4000M``) stay whole.
    """
    records: list[dict[str, str]] = []
    matches = list(_KEY.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        key, value = match[1], " ".join(text[match.end() : end].split())
        if key == first_key:
            records.append({})
        if records:
            records[-1][key] = value
    return records


def expand_hostlist(text: str | None) -> list[str]:
    """Node names of a SLURM host list: ``node[01-03,07],gpu1`` -> node01, node02, node03, node07, gpu1."""
    if text is None or text.strip().upper() in _UNLIMITED:
        return []
    names = []
    for item in _split_outside_brackets(text):
        match = re.search(r"\[([^\]]*)\]", item)
        if not match:
            names.append(item)
            continue
        head, tail = item[: match.start()], item[match.end() :]
        for part in match[1].split(","):
            low, _, high = part.partition("-")
            width = len(low)
            for number in range(int(low), int(high or low) + 1):
                names += expand_hostlist(f"{head}{number:0{width}d}{tail}")
    return names


def _split_outside_brackets(text: str, opening: str = "[", closing: str = "]") -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        depth += 1 if char == opening else -1 if char == closing else 0
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config`` as key -> value (``MinJobAge = 300 sec`` -> ``{"MinJobAge": "300 sec"}``)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def _count(text: str) -> int | None:
    """A GRES count (``4``; ``2K`` = 2048); ``None`` when ``text`` is a type name, not a count."""
    match = re.fullmatch(r"(\d+)([KMGT]?)", text.strip(), flags=re.IGNORECASE)
    if not match:
        return None
    return int(match[1]) * 1024 ** ("KMGT".index(match[2].upper()) + 1) if match[2] else int(match[1])


def parse_gres(text: str | None) -> dict[str | None, int]:
    """GPUs in a GRES string, by type (``None``: untyped).

    ``gpu:1`` -> ``{None: 1}``; ``gpu:a100:4(S:0-1)`` -> ``{"a100": 4}``;
    ``gpu:a100:2,gpu:v100:2,mps:200`` -> ``{"a100": 2, "v100": 2}``; ``gpu`` -> ``{None: 1}``;
    ``(null)`` or empty -> ``{}``. Socket or index lists in parentheses are ignored.
    """
    out: dict[str | None, int] = {}
    if text is None or text.strip().upper() in _UNLIMITED:
        return out
    for item in _split_outside_brackets(text, "(", ")"):
        parts = item.split("(", 1)[0].strip().split(":")
        if parts[0].strip().lower() != "gpu":
            continue
        rest = [part.strip() for part in parts[1:] if part.strip()]
        count = _count(rest[-1]) if rest else None
        if count is not None:
            rest = rest[:-1]
        kind = ":".join(rest) or None
        out[kind] = out.get(kind, 0) + (1 if count is None else count)
    return {kind: n for kind, n in out.items() if n > 0}


def parse_minutes(text: str | None) -> int | None:
    """A SLURM time limit in whole minutes (rounded up); ``None`` for ``UNLIMITED``/``INFINITE``.

    SLURM's forms: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``.
    """
    if text is None or text.strip().upper() in _UNLIMITED:
        return None
    text = text.strip()
    days, _, clock = text.rpartition("-") if "-" in text else ("", "", text)
    try:
        fields = [int(part) for part in clock.split(":")]
        day_count = int(days) if days else 0
    except ValueError:
        raise ClusterError(f"cannot read the time limit {text!r} (expected e.g. 60, 2:00:00 or 1-00:00:00)") from None
    if days:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (fields + [0, 0])[:3]
    elif len(fields) == 3:
        hours, minutes, seconds = fields
    elif len(fields) == 2:
        hours, (minutes, seconds) = 0, fields
    else:
        hours, minutes, seconds = 0, fields[0], 0
    return (day_count * 24 + hours) * 60 + minutes + math.ceil(seconds / 60)


def parse_megabytes(text: str | None) -> int | None:
    """A memory size in MB as SLURM writes it (``4000``, ``4000M``, ``187.50G``, ``1T``); ``None`` if unlimited."""
    if text is None or text.strip().upper() in _UNLIMITED:
        return None
    match = re.fullmatch(r"([\d.]+)\s*([KMGTP]?)B?", text.strip(), flags=re.IGNORECASE)
    if not match:
        raise ClusterError(f"cannot read the memory size {text!r} (expected e.g. 4000, 4000M or 1.5G)")
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}[match[2].upper()]
    return int(float(match[1]) * factor)


def _seconds(text: str | None) -> int | None:
    """``300 sec``, ``300``, ``5 min`` or ``1h`` as seconds (``scontrol show config``'s MinJobAge)."""
    match = re.fullmatch(r"(\d+)\s*([a-z]*)", (text or "").strip().lower())
    if not match:
        return None
    unit = match[2]
    factor = 3600 if unit.startswith("h") else 60 if unit.startswith("min") else 1
    return int(match[1]) * factor


# ---- the cluster --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    """A compute node: what one job on it can get at most."""

    name: str
    cpus: int
    memory_mb: int
    gpus: Mapping[str | None, int] = field(default_factory=dict)  # by type (None: untyped)
    state: str = "IDLE"
    partitions: tuple[str, ...] = ()

    @property
    def gpu_count(self) -> int:
        return sum(self.gpus.values())

    @property
    def usable(self) -> bool:
        """Whether SLURM starts jobs on it now (not down, drained, failing or unresponsive)."""
        flags = set(re.split(r"[+]", self.state.upper().rstrip("*")))
        return not (flags & _UNUSABLE or self.state.endswith("*"))


@dataclass(frozen=True)
class Partition:
    """A partition: its limits and its nodes."""

    name: str
    nodes: tuple[Node, ...]
    default: bool = False
    state: str = "UP"
    max_time: int | None = None  # minutes; None: unlimited
    max_cpus_per_node: int | None = None
    max_mem_per_node: int | None = None  # MB
    allow_accounts: tuple[str, ...] | None = None  # None: ALL
    allow_groups: tuple[str, ...] | None = None  # None: ALL

    def cpus(self, node: Node) -> int:
        return min(node.cpus, self.max_cpus_per_node or node.cpus)

    def memory(self, node: Node) -> int:
        return min(node.memory_mb, self.max_mem_per_node or node.memory_mb)

    @property
    def max_cpus(self) -> int:
        return max((self.cpus(node) for node in self.nodes), default=0)

    @property
    def max_memory_mb(self) -> int:
        return max((self.memory(node) for node in self.nodes), default=0)

    @property
    def max_gpus(self) -> int:
        return max((node.gpu_count for node in self.nodes), default=0)

    @property
    def gpu_types(self) -> list[str]:
        return sorted({kind for node in self.nodes for kind in node.gpus if kind})

    def max_gpus_of(self, kind: str | None) -> int:
        """GPUs of type ``kind`` on its best node (any type when ``kind`` is None)."""
        if kind is None:
            return self.max_gpus
        return max((node.gpus.get(kind, 0) for node in self.nodes), default=0)

    @property
    def up(self) -> bool:
        return self.state.upper() == "UP"

    def admits(self, user_groups: Iterable[str] | None) -> bool:
        """Whether a user in ``user_groups`` may submit here (``None``: groups not known, assume so)."""
        return self.allow_groups is None or user_groups is None or bool(set(self.allow_groups) & set(user_groups))

    def fits(self, cpus: int = 1, mem_mb: int | None = None, runtime: int | None = None, gpus: int = 0) -> bool:
        """Whether one of its nodes can ever run a job asking this much."""
        if runtime is not None and self.max_time is not None and runtime > self.max_time:
            return False
        return any(
            self.cpus(node) >= cpus and (mem_mb is None or self.memory(node) >= mem_mb) and node.gpu_count >= gpus
            for node in self.nodes
        )


@dataclass(frozen=True)
class Site:
    """What the preflight knows of a cluster."""

    partitions: Mapping[str, Partition]  # in the order scontrol lists them
    accounting: str = "accounting_storage/none"  # AccountingStorageType
    enforce: tuple[str, ...] = ()  # AccountingStorageEnforce
    min_job_age: int | None = None  # seconds
    accounts: tuple[str, ...] | None = None  # the user's accounts (None: not known)
    user: str = ""
    groups: tuple[str, ...] | None = None  # the user's groups (None: not known)

    @property
    def keeps_accounts(self) -> bool:
        return self.accounting.endswith("/slurmdbd")

    @property
    def declares_memory(self) -> bool:
        """Whether some node declares its memory (``RealMemory`` above SLURM's default of 1 MB);
        where none does, sbatch refuses every ``--mem``."""
        return any(node.memory_mb > 1 for p in self.partitions.values() for node in p.nodes)

    @property
    def default_partition(self) -> str | None:
        return next((p.name for p in self.partitions.values() if p.default), None)

    @property
    def gpu_partitions(self) -> list[str]:
        return [p.name for p in self.partitions.values() if p.max_gpus > 0]

    def partition_list(self) -> str:
        """``cpu*, gpu`` (``*``: the default partition)."""
        return ", ".join(p.name + ("*" if p.default else "") for p in self.partitions.values()) or "none"


def _names(text: str | None) -> tuple[str, ...] | None:
    """``AllowAccounts=ALL`` -> None, ``a,b`` -> ("a", "b")."""
    if text is None or text.strip().upper() in ("ALL", ""):
        return None
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def site_from_text(
    partitions: str,
    nodes: str,
    config: str = "",
    accounts: str | None = None,
    *,
    user: str = "",
    groups: Sequence[str] | None = None,
) -> Site:
    """A :class:`Site` from the text of ``scontrol show partition``, ``scontrol show node``,
    ``scontrol show config`` and ``sacctmgr -nP show assoc format=account`` (either layout)."""
    node_list = []
    for record in parse_records(nodes, "NodeName"):
        node_list.append(
            Node(
                name=record["NodeName"],
                cpus=_int(record.get("CPUEfctv")) or _int(record.get("CPUTot")) or 1,
                memory_mb=max(0, (_int(record.get("RealMemory")) or 1) - (_int(record.get("MemSpecLimit")) or 0)),
                gpus=parse_gres(record.get("Gres")),
                state=record.get("State", "UNKNOWN"),
                partitions=tuple(p for p in record.get("Partitions", "").split(",") if p),
            )
        )
    parts = {}
    for record in parse_records(partitions, "PartitionName"):
        name = record["PartitionName"]
        listed = record.get("Nodes", "")
        listed_names = {n.name for n in node_list} if listed.upper() == "ALL" else set(expand_hostlist(listed))
        members = tuple(node for node in node_list if name in node.partitions or node.name in listed_names)
        parts[name] = Partition(
            name=name,
            nodes=members,
            default=record.get("Default", "NO").upper() == "YES",
            state=record.get("State", "UP"),
            max_time=parse_minutes(record.get("MaxTime")),
            max_cpus_per_node=_int(record.get("MaxCPUsPerNode")),
            max_mem_per_node=parse_megabytes(record.get("MaxMemPerNode")),
            allow_accounts=_names(record.get("AllowAccounts")),
            allow_groups=_names(record.get("AllowGroups")),
        )
    settings = parse_config(config)
    account_list = None
    if accounts is not None:
        account_list = tuple(sorted({line.strip().lower() for line in accounts.splitlines() if line.strip()}))
    return Site(
        partitions=parts,
        accounting=settings.get("AccountingStorageType", "accounting_storage/none"),
        enforce=tuple(e for e in settings.get("AccountingStorageEnforce", "").lower().split(",") if e),
        min_job_age=_seconds(settings.get("MinJobAge")),
        accounts=account_list,
        user=user,
        groups=None if groups is None else tuple(groups),
    )


def _run(args: Sequence[str], check: bool = True) -> str | None:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ClusterError(
            f"`{args[0]}` is not installed here: run this on a login node of the SLURM cluster"
        ) from None
    except subprocess.TimeoutExpired:
        raise ClusterError(f"`{' '.join(args)}` did not answer within 60 s") from None
    if proc.returncode != 0:
        if not check:
            return None
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {proc.returncode}"  # scontrol ends with its fatal error
        raise ClusterError(f"`{' '.join(args)}` failed: {reason}")
    return proc.stdout


def read_site() -> Site:
    """Read this cluster with ``scontrol`` (and ``sacctmgr`` where accounting keeps accounts).

    Raises
    ------
    ClusterError
        ``scontrol`` is missing or fails (one line saying which command and why).
    """
    partitions = _run(["scontrol", "-o", "show", "partition"]) or ""
    nodes = _run(["scontrol", "-o", "show", "node"]) or ""
    config = _run(["scontrol", "show", "config"]) or ""
    user = getpass.getuser()
    accounts = None
    if parse_config(config).get("AccountingStorageType", "").endswith("/slurmdbd"):
        accounts = _run(["sacctmgr", "-nP", "show", "assoc", "where", f"user={user}", "format=account"], check=False)
    groups = []
    for gid in sorted({os.getgid(), *os.getgroups()}):
        try:
            groups.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return site_from_text(partitions, nodes, config, accounts, user=user, groups=groups)


# ---- requests and the check ---------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """What the jobs of one rule ask of SLURM (the largest over those jobs)."""

    rule: str
    cpus: int = 1
    mem_mb: int | None = None
    runtime: int | None = None  # minutes
    gpus: int = 0
    gpu_model: str | None = None
    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None
    models: tuple[str, ...] = ()  # the {model} of those jobs, to name them in messages
    jobs: int = 1

    @property
    def label(self) -> str:
        return f"{self.rule} ({', '.join(self.models)})" if self.models else self.rule


def merge_requests(requests: Iterable[Request]) -> list[Request]:
    """One request per rule, partition, account and GPU need: the largest CPUs, memory and time."""
    merged: dict[tuple, Request] = {}
    for req in requests:
        key = (req.rule, req.partition, req.account, req.gpus > 0, req.gpu_model)
        old = merged.get(key)
        if old is None:
            merged[key] = req
            continue
        merged[key] = Request(
            rule=req.rule,
            cpus=max(old.cpus, req.cpus),
            mem_mb=max(filter(None, (old.mem_mb, req.mem_mb)), default=None),
            runtime=max(filter(None, (old.runtime, req.runtime)), default=None),
            gpus=max(old.gpus, req.gpus),
            gpu_model=req.gpu_model,
            partition=req.partition,
            account=req.account,
            models=tuple(sorted(set(old.models) | set(req.models))),
            jobs=old.jobs + req.jobs,
        )
    return list(merged.values())


def _profile_hint(rule: str, key: str, value: object) -> str:
    return f"set {key}: {value} for {rule} under set-resources in your profile"


def _gpus(n: int) -> str:
    return f"{n} GPU" + ("s" if n != 1 else "")


def _request_problems(req: Request, part: Partition, site: Site) -> list[str]:
    """What keeps ``req`` from ever running in ``part``, one line each."""
    where = f"partition {part.name}"
    out = []
    if req.cpus > part.max_cpus:
        out.append(
            f"{req.label} asks {req.cpus} CPUs; {where} has nodes with at most {part.max_cpus}: "
            + _profile_hint(req.rule, "cpus_per_task", part.max_cpus)
        )
    if req.mem_mb is not None and req.mem_mb > part.max_memory_mb:
        hint = _profile_hint(req.rule, "mem_mb", part.max_memory_mb)
        if part.max_memory_mb <= 1:
            hint += " (RealMemory is not set in slurm.conf: `slurmd -C` prints the node's memory for your admins)"
        out.append(f"{req.label} asks {req.mem_mb} MB; {where} has nodes with at most {part.max_memory_mb} MB: {hint}")
    if req.runtime is not None and part.max_time is not None and req.runtime > part.max_time:
        out.append(
            f"{req.label} asks {req.runtime} minutes; {where} allows at most {part.max_time} (MaxTime): "
            + _profile_hint(req.rule, "runtime", part.max_time)
        )
    if req.gpus > 0:
        others = [name for name in site.gpu_partitions if name != part.name]
        if part.max_gpus == 0 and others:
            out.append(
                f"{req.label} asks {_gpus(req.gpus)} but {where} has none (partitions with GPUs: "
                f"{', '.join(others)}): " + _profile_hint(req.rule, "slurm_partition", others[0])
            )
        elif part.max_gpus == 0:
            out.append(
                f"{req.label} asks {_gpus(req.gpus)} but no partition of this cluster has GPUs: "
                "set device: auto (or cpu) in your config: the model then trains on CPUs and asks for none"
            )
        elif req.gpu_model and part.max_gpus_of(req.gpu_model) == 0:
            types = ", ".join(part.gpu_types) or "untyped"
            out.append(
                f"{req.label} asks GPUs of type {req.gpu_model}; {where} has {types}: "
                + _profile_hint(req.rule, "gpu_model", part.gpu_types[0] if part.gpu_types else "(none)")
            )
        elif req.gpus > part.max_gpus_of(req.gpu_model):
            most = part.max_gpus_of(req.gpu_model)
            out.append(
                f"{req.label} asks {_gpus(req.gpus)}; {where} has nodes with at most {most}: "
                + _profile_hint(req.rule, "gpu", most)
            )
    if (
        req.account
        and part.allow_accounts is not None
        and req.account.lower() not in (a.lower() for a in part.allow_accounts)
    ):
        out.append(
            f"{req.label}: account {req.account} may not use {where} (AllowAccounts={','.join(part.allow_accounts)}): "
            "set slurm_account to one of them, or another slurm_partition, in your profile"
        )
    return out


def check(
    requests: Iterable[Request],
    site: Site,
    *,
    status_command: str | None = None,
) -> list[str]:
    """Every reason a request could never run on ``site``, one line each with the value to set.

    Parameters
    ----------
    requests
        What the jobs ask (:func:`merge_requests` is applied).
    site
        The cluster (:func:`read_site`).
    status_command
        How the executor reads job states (``sacct`` or ``squeue``); checked against accounting
        and ``MinJobAge`` when given.

    Returns
    -------
    One line per problem (empty when every request fits), in a stable order.
    """
    requests = merge_requests(requests)
    lines: dict[str, None] = {}
    default = site.default_partition
    by_partition: dict[str | None, list[str]] = {}
    for req in requests:
        by_partition.setdefault(req.partition, []).append(req.rule)

    bad_partitions = set()
    for name, rules in by_partition.items():
        asked_by = ", ".join(dict.fromkeys(rules))
        if name is None and default is None:
            lines[
                f"{asked_by}: no partition is set and the cluster has no default partition (partitions: "
                f"{site.partition_list()}): set slurm_partition in default-resources of your profile"
            ] = None
            bad_partitions.add(name)
            continue
        part = site.partitions.get(name or default)
        if part is None:
            lines[
                f"partition {name} (asked by {asked_by}) does not exist (partitions: {site.partition_list()}; "
                "* = default): set slurm_partition to one of them in your profile (default-resources, "
                "or set-resources for a rule), or remove it to use the default"
            ] = None
            bad_partitions.add(name)
        elif not part.up:
            lines[
                f"partition {part.name} (asked by {asked_by}) is {part.state}: jobs would wait there until "
                "it is UP; set another slurm_partition in your profile, or ask your admins"
            ] = None
            bad_partitions.add(name)
        elif not any(node.usable for node in part.nodes):
            states = ", ".join(f"{node.name}: {node.state}" for node in part.nodes) or "no nodes"
            lines[
                f"partition {part.name} (asked by {asked_by}) has no node that takes jobs ({states}): "
                "set another slurm_partition in your profile, or ask your admins"
            ] = None
            bad_partitions.add(name)
        elif not part.admits(site.groups):
            lines[
                f"partition {part.name} (asked by {asked_by}) admits only the groups "
                f"{','.join(part.allow_groups or ())}, and user {site.user} is in none: "
                "set another slurm_partition in your profile"
            ] = None
            bad_partitions.add(name)

    for req in requests:
        if req.partition in bad_partitions:
            continue
        part = site.partitions[req.partition or default]  # checked above
        for line in _request_problems(req, part, site):
            lines[line] = None

    lines.update(dict.fromkeys(_account_problems(requests, site)))
    lines.update(dict.fromkeys(_status_problems(status_command, site)))
    return list(lines)


def _account_problems(requests: list[Request], site: Site) -> list[str]:
    out = []
    accounts: dict[str, list[str]] = {}
    for req in requests:
        if req.account:
            accounts.setdefault(req.account, []).append(req.rule)
    for account, rules in accounts.items():
        asked_by = ", ".join(dict.fromkeys(rules))
        if not site.keeps_accounts:
            continue  # without slurmdbd, SLURM takes any account name
        if site.accounts is not None and account.lower() not in site.accounts:
            known = ", ".join(site.accounts) or "none"
            first = site.accounts[0] if site.accounts else "<account>"
            out.append(
                f"account {account} (for {asked_by}) is not one of user {site.user}'s accounts ({known}): "
                f"set slurm_account: {first} in default-resources of your profile"
            )
    if site.keeps_accounts and site.accounts == () and "associations" in site.enforce:
        out.append(
            f"user {site.user} has no SLURM account (sacctmgr lists no association) and this cluster "
            "enforces them: ask your admins for one"
        )
    return out


def _status_problems(status_command: str | None, site: Site) -> list[str]:
    if status_command == "sacct" and not site.keeps_accounts:
        return [
            f"job states are read with sacct, but this cluster keeps no accounting (AccountingStorageType="
            f"{site.accounting}): set slurm-status-command: squeue in your profile"
        ]
    if status_command == "squeue" and site.min_job_age is not None and site.min_job_age <= MAX_STATUS_INTERVAL:
        fix = "set slurm-status-command: sacct in your profile" if site.keeps_accounts else "ask your admins"
        return [
            f"squeue forgets a finished job after MinJobAge={site.min_job_age} s, sooner than the executor's "
            f"longest wait between status checks ({MAX_STATUS_INTERVAL} s), so a finished job could look queued "
            f"forever: {fix} (MinJobAge of 300 s or more in slurm.conf)"
        ]
    return []


def choose_gpu_partition(
    site: Site,
    *,
    preferred: str | None = None,
    cpus: int = 1,
    mem_mb: int | None = None,
    runtime: int | None = None,
    gpus: int = 1,
) -> str | None:
    """The partition for a job that asks for GPUs: ``preferred`` (the profile's partition) or the
    default partition where they have GPUs, else the first partition with GPUs whose nodes can run
    the job, else the first with GPUs; ``None`` when no partition has GPUs."""
    usable = [p for p in site.partitions.values() if p.max_gpus > 0 and p.up and p.admits(site.groups)]
    first = [name for name in (preferred, site.default_partition) if name]
    ordered = sorted(usable, key=lambda p: first.index(p.name) if p.name in first else len(first))
    for part in ordered:
        if part.fits(cpus, mem_mb, runtime, gpus):
            return part.name
    return ordered[0].name if ordered else None


def describe(site: Site, requests: Sequence[Request] = ()) -> str:
    """A summary of the cluster (one row per partition) and, when given, of the requests."""
    rows = [("partition", "state", "nodes", "CPUs", "memory MB", "GPUs", "max time")]
    for p in site.partitions.values():
        time_limit = "unlimited" if p.max_time is None else f"{p.max_time} min"
        gpus = str(p.max_gpus) + (f" ({', '.join(p.gpu_types)})" if p.gpu_types else "")
        usable = sum(node.usable for node in p.nodes)
        rows.append(
            (p.name + ("*" if p.default else ""), p.state, f"{usable}/{len(p.nodes)}", str(p.max_cpus),
             str(p.max_memory_mb), gpus, time_limit)
        )  # fmt: skip
    lines = ["Partitions (* = default; CPUs, memory and GPUs of the largest node; nodes taking jobs/all):"]
    lines += _table(rows)
    age = "unknown" if site.min_job_age is None else f"{site.min_job_age} s"
    accounts = "" if site.accounts is None else f"; accounts of {site.user}: {', '.join(site.accounts) or 'none'}"
    lines.append(f"Accounting: {site.accounting}{accounts}; MinJobAge: {age}")
    if not site.declares_memory:
        lines.append("Memory: no node declares it (RealMemory in slurm.conf), so jobs ask for none (no --mem)")
    if requests:
        lines.append("Requests of the jobs to submit (largest per rule and partition):")
        req_rows = [("rule", "jobs", "partition", "CPUs", "memory MB", "minutes", "GPUs", "account")]
        for r in merge_requests(requests):
            req_rows.append(
                (r.label, str(r.jobs), r.partition or f"{site.default_partition} (default)", str(r.cpus),
                 str(r.mem_mb or "-"), str(r.runtime or "-"), str(r.gpus), r.account or "-")
            )  # fmt: skip
        lines += _table(req_rows)
    return "\n".join(lines)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


# ---- crl-pipe cluster-check ---------------------------------------------------------------------
def cluster_check(
    snakemake_args: Sequence[str] = (),
    *,
    out: IO[str] | None = None,
    reader: Callable[[], Site] = read_site,
) -> int:
    """``crl-pipe cluster-check [SNAKEMAKE ARGS]``: describe the cluster and, given the arguments of
    a ``snakemake`` command, check what its jobs would ask, without submitting anything.

    The workflow is started with those arguments and ``$CRL_PIPE_CLUSTER_CHECK`` set: its
    ``onstart`` hook (``rules/resources.smk``) writes the requests of the jobs it would submit and
    the problems found, then stops before the first submission.

    Returns
    -------
    0 when every request fits, 1 when some cannot run (each printed on one line), 2 when the
    workflow did not get as far as its jobs.
    """
    out = out or sys.stdout
    site = reader()
    if not snakemake_args:
        print(describe(site), file=out)
        return 0
    with tempfile.TemporaryDirectory(prefix="crl-pipe-check-") as tmp:
        report = Path(tmp) / "check.json"
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", *snakemake_args],
            env={**os.environ, CHECK_ENV: str(report)},
            capture_output=True,
            text=True,
            check=False,
        )
        if not report.exists():
            text = proc.stdout + proc.stderr
            print(describe(site), file=out)
            if "Nothing to be done" in text:
                print("Nothing to submit: every output is up to date (add -F to check every rule).", file=out)
                return 0
            print(f"snakemake stopped before its jobs (exit status {proc.returncode}):\n{text[-3000:]}", file=out)
            return 2
        result = json.loads(report.read_text())
    requests = [Request(**{**r, "models": tuple(r["models"])}) for r in result["requests"]]
    print(describe(site, requests), file=out)
    problems = result["problems"]
    for line in problems:
        print(f"problem: {line}", file=out)
    if not problems:
        print(f"All {sum(r.jobs for r in requests)} jobs fit this cluster; nothing was submitted.", file=out)
    return 1 if problems else 0


def write_check_report(path: str | os.PathLike, requests: Sequence[Request], problems: Sequence[str]) -> None:
    """The JSON that the workflow's ``onstart`` leaves for :func:`cluster_check`."""
    data: dict[str, Any] = {"requests": [asdict(r) for r in requests], "problems": list(problems)}
    Path(path).write_text(json.dumps(data, indent=1))
