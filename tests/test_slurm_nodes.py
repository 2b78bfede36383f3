"""run_llama31.sh on a two-node Slurm: two slurmd, each in its own network namespace.

Each node is a process tree in its own network, UTS and mount namespaces (unshare): its own host
name, its own address on a veth pair whose other end is on a bridge in this machine's namespace,
where slurmctld and munged run, and its own /etc/hosts (bind-mounted inside its mount namespace
only) naming the controller and both nodes. So the job sees two hosts as on a cluster: the batch
script takes MASTER_ADDR from the node list, srun starts one task on each node, and the two
training processes meet over TCP between the two addresses, not over loopback. This uses Debian's
ordinary slurm-wlm build (22.05), one slurmd per namespace, rather than the --enable-multiple-slurmd
build, which Debian does not ship and which would still have the nodes share one address.

Through it, the embedded default (smoke preset, shrunk as in tests/test_slurm.py) with NNODES=2
and GPUS_PER_NODE=0: one log with one seed, the target reached, and the rendezvous printed by rank 0
with world size 2 and each rank on its own node.
Run: bash dev/test.sh tests/test_slurm_nodes.py (as root, with slurm-wlm and munge installed)
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_slurm import CLIENTS, DAEMONS, JOB_TIMEOUT_S, SBIN_PATH, SHRUNK, Cluster, _free_port, job_ids, submit

pytestmark = pytest.mark.slow

NODES = ("llama31n0", "llama31n1")
# Tasks run with both nodes' CPUs counted once: one CPU per node, one task per node.
SLURM_CONF = """\
# Two nodes for the tests, each slurmd in its own network namespace; the controller on the bridge.
ClusterName=llama31nodes
SlurmctldHost=localhost({ctld_ip})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket,cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerParameters=sched_interval=1
MinJobAge=600
KillWait=30
NodeName={n0} NodeHostname={n0} NodeAddr={ip0} CPUs=1 RealMemory=1000 State=UNKNOWN
NodeName={n1} NodeHostname={n1} NodeAddr={ip1} CPUs=1 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={n0},{n1} Default=YES MaxTime=INFINITE State=UP
"""

# Run by unshare inside the new namespaces: name the host, wait for the veth end that the test
# moves in, give it the node's address, put the node's /etc/hosts in place, become slurmd.
NODE_SETUP = r"""
set -euo pipefail
name="$1" addr="$2" hosts="$3" conf="$4"
hostname "${name}"
ip link set lo up
for _ in $(seq 200); do ip link show eth0 >/dev/null 2>&1 && break; sleep 0.05; done
ip addr add "${addr}/24" dev eth0
ip link set eth0 up
mount --bind "${hosts}" /etc/hosts
exec slurmd -D -N "${name}" -f "${conf}"
"""


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _netns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def _unused_subnet() -> str:
    """A 10.x.y.0/24 that no interface of this machine is on."""
    taken = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for _ in range(100):
        prefix = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
        if f" {prefix}." not in taken:
            return prefix
    raise RuntimeError("no free 10.x.y.0/24 subnet for the test bridge")


class TwoNodeCluster(Cluster):
    def __init__(self, root: Path):
        super().__init__(root)
        tag = f"{os.getpid() % 10000:04d}"
        self.bridge = f"l31br{tag}"
        self.veths = [f"l31v{tag}n{k}" for k in range(len(NODES))]
        self.prefix = _unused_subnet()
        self.bridge_made = False

    def start(self) -> None:
        root, prefix = self.root, self.prefix
        (root / "state").mkdir()
        ctld_ip, ips = f"{prefix}.1", [f"{prefix}.{2 + k}" for k in range(len(NODES))]
        self.conf.write_text(
            SLURM_CONF.format(
                root=root,
                ctld_ip=ctld_ip,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                n0=NODES[0],
                n1=NODES[1],
                ip0=ips[0],
                ip1=ips[1],
            )
        )
        hosts = root / "hosts"
        hosts.write_text(
            f"127.0.0.1 localhost\n{ctld_ip} llama31ctld\n"
            + "".join(f"{ip} {name}\n" for ip, name in zip(ips, NODES, strict=True))
        )
        _ip("link", "add", self.bridge, "type", "bridge")
        self.bridge_made = True
        _ip("addr", "add", f"{ctld_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self._start_munged()
        self._spawn("slurmctld", "slurmctld", "-D", "-i", "-f", str(self.conf))
        for name, ip, veth in zip(NODES, ips, self.veths, strict=True):
            self._spawn(
                name,
                "unshare",
                "--net",
                "--uts",
                "--mount",
                "--propagation",
                "private",
                "bash",
                "-c",
                NODE_SETUP,
                "node-setup",
                name,
                ip,
                str(hosts),
                str(self.conf),
            )
            # The peer end goes into the node's network namespace, once unshare has made it: until
            # then the process is still in this one, which has an eth0 of its own.
            pid = self.procs[name].pid
            self._wait(lambda pid=pid: _netns(pid) != _netns(os.getpid()), 10, f"{name} got no network namespace")
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", str(pid))
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")

        def idle() -> bool:
            out = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split("\n")
            return sorted(line.strip() for line in out if line.strip()) == [f"{n} idle" for n in NODES]

        self._wait(idle, 60, "the two nodes did not become idle")

    def daemon_output(self, name: str) -> str:
        text = super().daemon_output(name)
        log = self.root / f"slurmd-{name}.log"
        return text + (f"\n{log.read_text(errors='replace')[-3000:]}" if log.exists() else "")

    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--user", "root", check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
        for name in (*NODES, "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # A node's namespace ends with its slurmd, and its veth pair with it; the bridge is ours.
        for veth in self.veths:
            subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=30)
        if self.bridge_made:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)


def _cannot_run() -> str:
    """Why this machine cannot run the two-node cluster, or "" when it can."""
    tools = (*DAEMONS, *CLIENTS, "unshare", "ip", "mount")
    missing = [t for t in tools if not shutil.which(t, path=SBIN_PATH)]
    if missing:
        return f"{', '.join(missing)} not installed: .ci/run installs slurm-wlm and munge (iproute2, util-linux)"
    if os.geteuid() != 0:
        return "the two-node Slurm creates network namespaces and runs its daemons as root"
    probe = subprocess.run(["unshare", "--net", "--uts", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create network, UTS and mount namespaces here (unshare: {probe.stderr.strip()})"
    return ""


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    reason = _cannot_run()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = TwoNodeCluster(tmp_path_factory.mktemp("slurm2"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_embedded_default_on_two_nodes_trains_one_run(two_nodes, smoke_data, tmp_path):
    from compliance.check import check_log
    from tests.helpers import mllog_events

    job_dir = tmp_path / "jobs"
    proc = submit(
        two_nodes,
        NNODES="2",
        SEEDS="31",
        JOB_DIR=str(job_dir),
        SMOKE_DATA_DIR=str(Path(smoke_data.data_dir).parent),
        **SHRUNK,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (job,) = job_ids(job_dir)
    states = two_nodes.wait_for_jobs([job], timeout=JOB_TIMEOUT_S)
    run = job_dir / "run01_seed31"
    out = (run / f"slurm-{job}.out").read_text()
    assert states == {job: "COMPLETED"}, out[-5000:] + two_nodes.daemon_output(NODES[1])
    # The allocation: both nodes, one task each; the rendezvous on the first node's name.
    assert f"on {NODES[0][:-1]}[0-1], 2 task(s), rendezvous {NODES[0]}:{10000 + int(job) % 20000}" in out, out[:2000]
    assert out.count("[distributed] rendezvous") == 1, out[-5000:]
    assert (
        f"[distributed] rendezvous MASTER_ADDR={NODES[0]} MASTER_PORT={10000 + int(job) % 20000} "
        "world size 2 backend gloo" in out
    )
    assert re.search(rf"\[distributed\] rank 0: node rank 0, local rank 0, node {NODES[0]}, pid \d+", out)
    assert re.search(rf"\[distributed\] rank 1: node rank 1, local rank 0, node {NODES[1]}, pid \d+", out)
    # One log (rank 0's), one seed, the target reached, the smoke profile passed.
    assert sorted(p.name for p in run.glob("*.log")) == ["mlperf.log"]
    events = mllog_events(run / "mlperf.log")
    assert [e["value"] for e in events if e["key"] == "seed"] == [31]
    assert {e["key"]: e["value"] for e in events}["submission_platform"].startswith("2xCPU")
    assert events[-1]["key"] == "run_stop" and events[-1]["metadata"]["status"] == "success"
    report = check_log(run / "mlperf.log", profile="smoke")
    assert report.passed, report.format()
