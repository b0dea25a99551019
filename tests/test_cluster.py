"""crl_pipe.cluster: reading scontrol's text, and the preflight's one-line problems.

The texts below are captured from SLURM 22.05 (Debian's slurm-wlm; the two-node cluster of
tests/test_slurm.py), in both layouts of ``scontrol show`` (blocks, and ``-o`` one line per
record; trailing spaces left out), and written after a larger site's (typed GPUs on sockets,
host lists, drained and unresponsive nodes, limits per partition, spaces inside values).
"""

from __future__ import annotations

import io

import pytest

from crl_pipe import ClusterError
from crl_pipe.cluster import (
    Request,
    Site,
    check,
    choose_gpu_partition,
    cluster_check,
    describe,
    expand_hostlist,
    merge_requests,
    parse_gres,
    parse_megabytes,
    parse_minutes,
    parse_records,
    site_from_text,
)

NODES_BLOCKS = """\
NodeName=cpunode Arch=x86_64 CoresPerSocket=1
   CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=5.07
   AvailableFeatures=(null)
   ActiveFeatures=(null)
   Gres=(null)
   NodeAddr=127.0.0.1 NodeHostName=localhost Version=22.05.8
   OS=Linux 6.18.44-fc-v1147 #1 SMP PREEMPT_DYNAMIC @0
   RealMemory=4000 AllocMem=0 FreeMem=19565 Sockets=2 Boards=1
   State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
   Partitions=cpu
   BootTime=2026-12-03T13:34:38 SlurmdStartTime=2026-12-03T14:00:17
   LastBusyTime=2026-12-03T14:00:25
   CfgTRES=cpu=2,mem=4000M,billing=2
   AllocTRES=
   CapWatts=n/a
   CurrentWatts=0 AveWatts=0
   ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s

NodeName=gpunode Arch=x86_64 CoresPerSocket=1
   CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=5.07
   AvailableFeatures=(null)
   ActiveFeatures=(null)
   Gres=gpu:1
   NodeAddr=127.0.0.1 NodeHostName=localhost Port=16819 Version=22.05.8
   OS=Linux 6.18.44-fc-v1147 #1 SMP PREEMPT_DYNAMIC @0
   RealMemory=4000 AllocMem=0 FreeMem=19565 Sockets=2 Boards=1
   State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
   Partitions=gpu
   BootTime=2026-12-03T13:34:38 SlurmdStartTime=2026-12-03T14:00:17
   LastBusyTime=2026-12-03T14:00:25
   CfgTRES=cpu=2,mem=4000M,billing=2
   AllocTRES=
   CapWatts=n/a
   CurrentWatts=0 AveWatts=0
   ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s

"""
NODES_ONELINE = (
    "NodeName=cpunode Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=5.07 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=127.0.0.1 NodeHostName=localhost "
    "Version=22.05.8 OS=Linux 6.18.44-fc-v1147 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=4000 AllocMem=0 "
    "FreeMem=19565 Sockets=2 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A "
    "Partitions=cpu  BootTime=2026-12-03T13:34:38 SlurmdStartTime=2026-12-03T14:00:17 "
    "LastBusyTime=2026-12-03T14:00:25 CfgTRES=cpu=2,mem=4000M,billing=2 AllocTRES= CapWatts=n/a "
    "CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s\n"
    "NodeName=gpunode Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=5.07 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:1 NodeAddr=127.0.0.1 NodeHostName=localhost "
    "Port=16819 Version=22.05.8 OS=Linux 6.18.44-fc-v1147 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=4000 "
    "AllocMem=0 FreeMem=19565 Sockets=2 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A "
    "MCS_label=N/A Partitions=gpu  BootTime=2026-12-03T13:34:38 SlurmdStartTime=2026-12-03T14:00:17 "
    "LastBusyTime=2026-12-03T14:00:25 CfgTRES=cpu=2,mem=4000M,billing=2 AllocTRES= CapWatts=n/a "
    "CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s\n"
)
PARTITIONS_BLOCKS = """\
PartitionName=cpu
   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL
   AllocNodes=ALL Default=YES QoS=N/A
   DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO
   MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED
   Nodes=cpunode
   PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO
   OverTimeLimit=NONE PreemptMode=OFF
   State=UP TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE
   JobDefaults=(null)
   DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED
   TRES=cpu=2,mem=4000M,node=1,billing=2

PartitionName=gpu
   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL
   AllocNodes=ALL Default=NO QoS=N/A
   DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO
   MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED
   Nodes=gpunode
   PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO
   OverTimeLimit=NONE PreemptMode=OFF
   State=UP TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE
   JobDefaults=(null)
   DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED
   TRES=cpu=2,mem=4000M,node=1,billing=2

"""
PARTITIONS_ONELINE = (
    "PartitionName=cpu AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A "
    "DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED "
    "MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=cpunode PriorityJobFactor=1 "
    "PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP "
    "TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED "
    "MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=4000M,node=1,billing=2\n"
    "PartitionName=gpu AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=NO QoS=N/A "
    "DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED "
    "MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=gpunode PriorityJobFactor=1 "
    "PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP "
    "TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED "
    "MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=4000M,node=1,billing=2\n"
)
CONFIG = """\
Configuration data as of 2026-12-03T14:05:12
AccountingStorageBackupHost = (null)
AccountingStorageEnforce = none
AccountingStorageType   = accounting_storage/none
ClusterName             = proto
MinJobAge               = 900 sec
SLURM_VERSION           = 22.05.8
"""

# A larger site: typed GPUs bound to sockets, a node drained with a reason, one not responding,
# host lists, and limits per partition (time, CPUs and memory per node, accounts, groups).
BIG_NODES = """\
NodeName=cpu001 Arch=x86_64 CoresPerSocket=64
   CPUAlloc=128 CPUEfctv=126 CPUTot=128 CPULoad=127.90
   Gres=(null)
   OS=Linux 5.14.0-362.8.1.el9_3.x86_64 #1 SMP PREEMPT_DYNAMIC Tue Oct 3 11:12:36 EDT 2023
   RealMemory=257000 AllocMem=250000 FreeMem=3000 Sockets=2 Boards=1 MemSpecLimit=2000
   State=ALLOCATED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
   Partitions=short,long,private
   CfgTRES=cpu=128,mem=257000M,billing=128

NodeName=cpu002 Arch=x86_64 CoresPerSocket=64
   CPUAlloc=0 CPUEfctv=128 CPUTot=128 CPULoad=0.00
   Gres=(null)
   RealMemory=257000 AllocMem=0 FreeMem=250000 Sockets=2 Boards=1
   State=DOWN+NOT_RESPONDING ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
   Partitions=short,long,maint
   Reason=Not responding [slurm@2024-05-01T10:00:00]

NodeName=gpu001 Arch=x86_64 CoresPerSocket=32
   CPUAlloc=16 CPUEfctv=64 CPUTot=64 CPULoad=12.34
   Gres=gpu:a100:4(S:0-1)
   RealMemory=515000 AllocMem=64000 FreeMem=400000 Sockets=2 Boards=1
   State=MIXED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
   Partitions=gpu
   CfgTRES=cpu=64,mem=515000M,billing=64,gres/gpu=4

NodeName=gpu002 Arch=x86_64 CoresPerSocket=16
   CPUAlloc=0 CPUEfctv=32 CPUTot=32 CPULoad=0.01
   Gres=gpu:v100:2(S:0),gpu:a100:1(S:1),mps:200
   RealMemory=190000 AllocMem=0 FreeMem=180000 Sockets=2 Boards=1
   State=IDLE+DRAIN ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
   Partitions=gpu
   Reason=bad gpu [admin@2024-05-01T10:00:00]
"""
BIG_PARTITIONS = """\
PartitionName=short
   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL Default=YES
   MaxTime=01:00:00 MaxCPUsPerNode=UNLIMITED Nodes=cpu[001-002] State=UP
   DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED

PartitionName=long
   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL Default=NO
   MaxTime=7-00:00:00 MaxCPUsPerNode=64 Nodes=cpu[001-002] State=UP
   DefMemPerNode=UNLIMITED MaxMemPerNode=128000

PartitionName=gpu
   AllowGroups=ALL AllowAccounts=lab_gpu,admin AllowQos=ALL Default=NO
   MaxTime=2-00:00:00 MaxCPUsPerNode=UNLIMITED Nodes=gpu[001-002] State=UP
   MaxMemPerNode=UNLIMITED

PartitionName=private
   AllowGroups=secret AllowAccounts=ALL Default=NO
   MaxTime=UNLIMITED Nodes=cpu001 State=UP

PartitionName=maint
   AllowGroups=ALL AllowAccounts=ALL Default=NO
   MaxTime=UNLIMITED Nodes=cpu002 State=DOWN
"""
BIG_CONFIG = """\
AccountingStorageEnforce = associations,limits,qos
AccountingStorageType   = accounting_storage/slurmdbd
MinJobAge               = 60 sec
"""


@pytest.fixture
def small() -> Site:
    return site_from_text(PARTITIONS_BLOCKS, NODES_BLOCKS, CONFIG, user="alice", groups=["alice"])


@pytest.fixture
def big() -> Site:
    return site_from_text(BIG_PARTITIONS, BIG_NODES, BIG_CONFIG, "lab\nlab_gpu\n", user="bob", groups=["bob", "lab"])


# ---- parsing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "first_key", "layouts"),
    [(NODES_BLOCKS, "NodeName", NODES_ONELINE), (PARTITIONS_BLOCKS, "PartitionName", PARTITIONS_ONELINE)],
    ids=["node", "partition"],
)
def test_both_scontrol_layouts_give_the_same_records(text, first_key, layouts):
    blocks, oneline = parse_records(text, first_key), parse_records(layouts, first_key)
    assert blocks == oneline and len(blocks) == 2


def test_values_with_spaces_and_equal_signs_stay_whole():
    node = parse_records(NODES_BLOCKS, "NodeName")[0]
    assert node["OS"] == "Linux 6.18.44-fc-v1147 #1 SMP PREEMPT_DYNAMIC @0"
    assert node["CfgTRES"] == "cpu=2,mem=4000M,billing=2" and node["AllocTRES"] == ""
    drained = parse_records(BIG_NODES, "NodeName")[3]
    assert drained["Reason"] == "bad gpu [admin@2024-05-01T10:00:00]" and drained["State"] == "IDLE+DRAIN"


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("gpu:1", {None: 1}),
        ("gpu", {None: 1}),
        ("gpu:a100:4(S:0-1)", {"a100": 4}),
        ("gpu:tesla:2(S:0,1)", {"tesla": 2}),
        ("gpu:v100:2(S:0),gpu:a100:1(S:1),mps:200", {"v100": 2, "a100": 1}),
        ("gpu:a100_3g.20gb:2(IDX:0-1)", {"a100_3g.20gb": 2}),
        ("mps:100,shard:8", {}),
        ("gpu:0", {}),
        ("(null)", {}),
        ("", {}),
        (None, {}),
    ],
)
def test_gpus_of_a_gres_string(gres, gpus):
    assert parse_gres(gres) == gpus


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("UNLIMITED", None),
        ("INFINITE", None),
        ("60", 60),
        ("30:00", 30),
        ("30:01", 31),
        ("02:00:00", 120),
        ("1-00:00:00", 1440),
        ("7-00:00:00", 10080),
        ("2-3", 3060),
        ("1-02:03", 1563),
    ],
)
def test_slurm_time_limits_in_minutes(text, minutes):
    assert parse_minutes(text) == minutes


def test_unreadable_limits_say_what_was_expected():
    with pytest.raises(ClusterError, match=r"cannot read the time limit 'soon' \(expected e.g. 60"):
        parse_minutes("soon")
    with pytest.raises(ClusterError, match="cannot read the memory size 'lots'"):
        parse_megabytes("lots")


@pytest.mark.parametrize(
    ("text", "mb"), [("4000", 4000), ("4000M", 4000), ("1.5G", 1536), ("1T", 1048576), ("UNLIMITED", None)]
)
def test_memory_sizes_in_megabytes(text, mb):
    assert parse_megabytes(text) == mb


def test_host_lists():
    assert expand_hostlist("cpu[001-003,007],gpu1") == ["cpu001", "cpu002", "cpu003", "cpu007", "gpu1"]
    assert expand_hostlist("r[1-2]n[1-2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    assert expand_hostlist("(null)") == []


# ---- the site -----------------------------------------------------------------------------------
def test_small_site_as_scontrol_shows_it(small):
    assert small.default_partition == "cpu" and small.gpu_partitions == ["gpu"]
    cpu, gpu = small.partitions["cpu"], small.partitions["gpu"]
    assert (cpu.max_cpus, cpu.max_memory_mb, cpu.max_gpus, cpu.max_time) == (2, 4000, 0, None)
    assert (gpu.max_cpus, gpu.max_memory_mb, gpu.max_gpus) == (2, 4000, 1)
    assert not small.keeps_accounts and small.min_job_age == 900
    assert site_from_text(PARTITIONS_ONELINE, NODES_ONELINE, CONFIG, user="alice", groups=["alice"]) == small


def test_big_site_limits_per_partition(big):
    short, long, gpu = big.partitions["short"], big.partitions["long"], big.partitions["gpu"]
    assert [node.name for node in short.nodes] == ["cpu001", "cpu002"]
    assert [node.usable for node in short.nodes] == [True, False]  # ALLOCATED, DOWN+NOT_RESPONDING
    assert short.max_cpus == 128 and short.max_time == 60
    assert long.max_cpus == 64 and long.max_memory_mb == 128000 and long.max_time == 10080
    assert short.max_memory_mb == 257000  # cpu002; cpu001 keeps 2000 MB for the system (MemSpecLimit)
    assert gpu.max_gpus == 4 and gpu.gpu_types == ["a100", "v100"]
    assert gpu.max_gpus_of("a100") == 4 and gpu.max_gpus_of("v100") == 2
    assert [node.usable for node in gpu.nodes] == [True, False]  # MIXED, IDLE+DRAIN
    assert big.keeps_accounts and big.accounts == ("lab", "lab_gpu") and big.min_job_age == 60


def test_nodes_found_from_the_partition_host_list_without_a_partitions_field():
    nodes = "\n\n".join(block.replace("Partitions=gpu\n", "") for block in BIG_NODES.split("\n\n"))
    site = site_from_text(BIG_PARTITIONS, nodes, BIG_CONFIG)
    assert [node.name for node in site.partitions["gpu"].nodes] == ["gpu001", "gpu002"]


# ---- the check ----------------------------------------------------------------------------------
def test_requests_that_fit_raise_nothing(small):
    requests = [
        Request("ingest", cpus=1, mem_mb=4000, runtime=30),
        Request("train_model", cpus=2, mem_mb=4000, runtime=120, gpus=1, partition="gpu", models=("sparse_vae",)),
    ]
    assert check(requests, small, status_command="squeue") == []


def test_too_many_cpus_memory_time_and_gpus_each_get_a_line_with_the_value_to_set(small, big):
    problems = check(
        [
            Request("train_model", cpus=4, mem_mb=16000, gpus=2, partition="gpu", models=("sparse_vae",)),
            Request("ingest", runtime=90),
        ],
        small,
    )
    assert problems == [
        "train_model (sparse_vae) asks 4 CPUs; partition gpu has nodes with at most 2: "
        "set cpus_per_task: 2 for train_model under set-resources in your profile",
        "train_model (sparse_vae) asks 16000 MB; partition gpu has nodes with at most 4000 MB: "
        "set mem_mb: 4000 for train_model under set-resources in your profile",
        "train_model (sparse_vae) asks 2 GPUs; partition gpu has nodes with at most 1: "
        "set gpu: 1 for train_model under set-resources in your profile",
    ]
    assert check([Request("ingest", runtime=90)], big) == [
        "ingest asks 90 minutes; partition short allows at most 60 (MaxTime): "
        "set runtime: 60 for ingest under set-resources in your profile"
    ]


def test_gpu_jobs_in_a_partition_without_gpus(small):
    problems = check([Request("recover_graph", gpus=1, partition="cpu", models=("sparse_vae",))], small)
    assert problems == [
        "recover_graph (sparse_vae) asks 1 GPU but partition cpu has none (partitions with GPUs: gpu): "
        "set slurm_partition: gpu for recover_graph under set-resources in your profile"
    ]
    no_gpus = site_from_text(PARTITIONS_BLOCKS, NODES_BLOCKS.replace("Gres=gpu:1", "Gres=(null)"), CONFIG)
    assert check([Request("train_model", gpus=1, models=("causal_vae",))], no_gpus) == [
        "train_model (causal_vae) asks 1 GPU but no partition of this cluster has GPUs: "
        "set device: auto (or cpu) in your config: the model then trains on CPUs and asks for none"
    ]


def test_gpu_types(big):
    problems = check([Request("train_model", gpus=1, gpu_model="h100", partition="gpu", account="lab_gpu")], big)
    assert problems == [
        "train_model asks GPUs of type h100; partition gpu has a100, v100: "
        "set gpu_model: a100 for train_model under set-resources in your profile"
    ]
    assert check([Request("train_model", gpus=2, gpu_model="v100", partition="gpu", account="lab_gpu")], big) == []


def test_partitions_that_are_missing_down_drained_or_closed(big):
    requests = [
        Request("ingest", partition="cpu"),
        Request("preprocess", partition="cpu"),
        Request("evaluate", partition="maint"),
        Request("write_report", partition="private"),
    ]
    assert check(requests, big) == [
        "partition cpu (asked by ingest, preprocess) does not exist (partitions: short*, long, gpu, private, "
        "maint; * = default): set slurm_partition to one of them in your profile (default-resources, or "
        "set-resources for a rule), or remove it to use the default",
        "partition maint (asked by evaluate) is DOWN: jobs would wait there until it is UP; set another "
        "slurm_partition in your profile, or ask your admins",
        "partition private (asked by write_report) admits only the groups secret, and user bob is in none: "
        "set another slurm_partition in your profile",
    ]
    drained = site_from_text(BIG_PARTITIONS, BIG_NODES.replace("State=MIXED", "State=DOWN*"), BIG_CONFIG)
    assert check([Request("train_model", gpus=1, partition="gpu")], drained) == [
        "partition gpu (asked by train_model) has no node that takes jobs (gpu001: DOWN*, gpu002: IDLE+DRAIN): "
        "set another slurm_partition in your profile, or ask your admins"
    ]


def test_accounts_where_accounting_keeps_them(big, small):
    requests = [Request("ingest", account="myproject"), Request("train_model", gpus=1, partition="gpu")]
    assert check(requests, big) == [
        "account myproject (for ingest) is not one of user bob's accounts (lab, lab_gpu): "
        "set slurm_account: lab in default-resources of your profile"
    ]
    assert check([Request("train_model", gpus=1, partition="gpu", account="lab")], big) == [
        "train_model: account lab may not use partition gpu (AllowAccounts=lab_gpu,admin): set slurm_account "
        "to one of them, or another slurm_partition, in your profile"
    ]
    # without slurmdbd, SLURM takes any account name: nothing to check
    assert check([Request("ingest", account="myproject")], small) == []


def test_job_states_and_min_job_age(small, big):
    assert check([Request("ingest")], small, status_command="sacct") == [
        "job states are read with sacct, but this cluster keeps no accounting "
        "(AccountingStorageType=accounting_storage/none): set slurm-status-command: squeue in your profile"
    ]
    assert check([Request("ingest")], big, status_command="squeue") == [
        "squeue forgets a finished job after MinJobAge=60 s, sooner than the executor's longest wait between "
        "status checks (180 s), so a finished job could look queued forever: set slurm-status-command: sacct "
        "in your profile (MinJobAge of 300 s or more in slurm.conf)"
    ]
    assert check([Request("ingest")], big, status_command="sacct") == []


def test_unset_real_memory_is_named(small):
    site = site_from_text(PARTITIONS_BLOCKS, NODES_BLOCKS.replace("RealMemory=4000", "RealMemory=1"), CONFIG)
    # rules/resources.smk then asks for no memory (sbatch refuses any --mem); a profile's is checked
    assert small.declares_memory and not site.declares_memory
    assert "Memory: no node declares it (RealMemory in slurm.conf), so jobs ask for none" in describe(site)
    (problem,) = check([Request("ingest", mem_mb=4000)], site)
    assert problem.endswith(
        "(RealMemory is not set in slurm.conf: `slurmd -C` prints the node's memory for your admins)"
    )


def test_requests_of_one_rule_merge_to_the_largest():
    merged = merge_requests(
        [
            Request("evaluate", cpus=1, mem_mb=4000, runtime=30, models=("linear",)),
            Request("evaluate", cpus=2, mem_mb=2000, runtime=60, models=("causal_vae",)),
            Request("train_model", gpus=1, partition="gpu", models=("sparse_vae",)),
            Request("train_model", gpus=0, models=("linear",)),
        ]
    )
    assert merged[0] == Request("evaluate", cpus=2, mem_mb=4000, runtime=60, models=("causal_vae", "linear"), jobs=2)
    assert [(r.rule, r.partition, r.gpus) for r in merged[1:]] == [("train_model", "gpu", 1), ("train_model", None, 0)]


def test_gpu_jobs_go_to_a_partition_with_gpus_that_fits(small, big):
    assert choose_gpu_partition(small) == "gpu"
    assert choose_gpu_partition(small, cpus=4) == "gpu"  # none fits: the first with GPUs, the check says why
    assert choose_gpu_partition(site_from_text(PARTITIONS_BLOCKS, NODES_BLOCKS.replace("Gres=gpu:1", ""))) is None
    both = PARTITIONS_BLOCKS.replace("Nodes=cpunode", "Nodes=cpunode,gpunode")
    site = site_from_text(both, NODES_BLOCKS.replace("Partitions=gpu", "Partitions=cpu,gpu"), CONFIG)
    assert choose_gpu_partition(site) == "cpu"  # the default partition, now with the GPU node
    assert choose_gpu_partition(site, preferred="gpu") == "gpu"  # the profile's partition first
    assert choose_gpu_partition(big, gpus=1, runtime=60) == "gpu"


def test_cluster_check_without_a_workflow_describes_the_cluster(small):
    out = io.StringIO()
    assert cluster_check([], out=out, reader=lambda: small) == 0
    rows = [line.split() for line in out.getvalue().splitlines()]
    assert ["cpu*", "UP", "1/1", "2", "4000", "0", "unlimited"] in rows
    assert ["gpu", "UP", "1/1", "2", "4000", "1", "unlimited"] in rows
    assert "Accounting: accounting_storage/none; MinJobAge: 900 s" in out.getvalue()
    assert "a100, v100" in describe(site_from_text(BIG_PARTITIONS, BIG_NODES, BIG_CONFIG))


def test_cluster_check_without_scontrol_says_so(monkeypatch, capsys):
    from crl_pipe.cli import main

    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["cluster-check"]) == 1
    assert capsys.readouterr().err == (
        "crl-pipe cluster-check: error: `scontrol` is not installed here: run this on a login node of the "
        "SLURM cluster\n"
    )
