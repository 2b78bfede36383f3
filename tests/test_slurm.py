"""run_llama31.sh against a real Slurm: a one-node cluster on loopback, started by the fixture.

Debian's slurm-wlm and munge (installed by .ci/run, never by the tests) run here as root: munged with
a freshly generated key, slurmctld and slurmd with a slurm.conf in a temporary folder, on free ports.
The fixture waits for the node to be idle and stops every daemon by its PID afterwards. Through it:
the embedded-default benchmark submitted with NEXP=2 (two logs, two seeds, both passing the smoke
compliance profile), an NPAR=2 chain that resumes from its checkpoint, a job that fails and is
requeued, a job warned by SIGUSR1 before its time limit that saves, is requeued and resumes, a
cancelled job that saves and a new launch that resumes from it, and submission errors reported in
words. The benchmark runs are shrunk through the environment (a few evaluations of a few steps) so
that the module stays within a few minutes.
Run: bash dev/test.sh tests/test_slurm.py
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SBIN_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
KNOBS_RE = re.compile(r"^export ([A-Z][A-Z0-9_]*)=", re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_name() -> str:
    """This machine's name when it resolves (the batch script's rendezvous address), else localhost."""
    name = socket.gethostname()
    try:
        socket.gethostbyname(name)
        return name
    except OSError:
        return "localhost"


SLURM_CONF = """\
# A one-node cluster for the tests, on loopback, everything as root, no cgroups, no accounting.
ClusterName=llama31test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
# A short credential lifetime also shortens the wait before a requeued job may start again.
AuthInfo=socket={root}/munge.socket,cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
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
JobRequeue=1
MinJobAge=600
# Seconds between SIGTERM and SIGKILL: long enough for a cancelled smoke job, on a loaded 2-core
# machine, to end its step and save (an early stop, benchmark/preempt.py).
KillWait=30
NodeName={node} NodeHostname={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """The running cluster: its environment for client commands and a few helpers."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": SBIN_PATH}

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def start(self) -> None:
        root = self.root
        for d in ("state", "spool"):
            (root / d).mkdir()
        self.conf.write_text(
            SLURM_CONF.format(
                root=root,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                node=_node_name(),
                cpus=os.cpu_count() or 1,
            )
        )
        self._start_munged()
        self._spawn("slurmctld", "slurmctld", "-D", "-i", "-f", str(self.conf))
        self._spawn("slurmd", "slurmd", "-D", "-N", _node_name(), "-f", str(self.conf))

        def idle() -> bool:
            out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
            return out == ["idle"]

        self._wait(idle, 30, "the node did not become idle")

    def _start_munged(self) -> None:
        """munged with a fresh key, its socket under the cluster's folder (slurm.conf's AuthInfo)."""
        root = self.root
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._spawn(
            "munged",
            "munged",
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={root}/munge.socket",
            f"--pid-file={root}/munged.pid",
            f"--seed-file={root}/munged.seed",
            f"--log-file={root}/munged.log",
        )
        self._wait(lambda: (root / "munge.socket").exists(), 10, "munged did not create its socket")

    def _spawn(self, name: str, *cmd: str) -> None:
        log = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.daemon_output(name)}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} within {timeout} s:\n" + "\n".join(self.daemon_output(n) for n in self.procs))

    def daemon_output(self, name: str) -> str:
        texts = []
        for suffix in (".out", ".log"):
            path = self.root / f"{name}{suffix}"
            if path.exists():
                texts.append(path.read_text(errors="replace")[-3000:])
        return f"--- {name}\n" + "\n".join(texts)

    def stop(self) -> None:
        """Cancel what is left, then stop each daemon by its PID (SIGTERM, then SIGKILL)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--user", "root", check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait_for_jobs(self, job_ids: list[str], timeout: float) -> dict[str, str]:
        """Wait until none of the jobs is pending or running; return each job's final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run("squeue", "-h", "-j", ",".join(job_ids), check=False).stdout.strip():
                break
            time.sleep(1)
        else:
            raise AssertionError(f"jobs {job_ids} still queued after {timeout} s:\n{self.run('squeue').stdout}")
        states = {}
        for job in job_ids:
            out = self.run("scontrol", "show", "job", job).stdout
            states[job] = re.search(r"JobState=(\S+)", out).group(1)
        return states


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [t for t in (*DAEMONS, *CLIENTS) if not shutil.which(t, path=SBIN_PATH)]
    reason = ""
    if missing:
        reason = f"{', '.join(missing)} not installed: .ci/run installs slurm-wlm and munge"
    elif os.geteuid() != 0:
        reason = "the one-node Slurm runs its daemons as root"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _clean_env(cluster: Cluster, **knobs: str) -> dict[str, str]:
    names = set(KNOBS_RE.findall((REPO / "config.sh").read_text())) | {"SEED", "RESULT_DIR", "LLAMA31_CONTAINER"}
    env = {k: v for k, v in cluster.env.items() if k not in names}
    env.update(knobs)
    return env


def submit(cluster: Cluster, **knobs: str) -> subprocess.CompletedProcess:
    """`source config.sh && bash run_llama31.sh` with MODE=slurm and the given knobs."""
    env = _clean_env(cluster, MODE="slurm", **knobs)
    cmd = ["bash", "-c", 'source config.sh && bash run_llama31.sh "$@"', "submit"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def job_ids(job_dir: Path) -> list[str]:
    return [line.split()[2] for line in (job_dir / "jobs.txt").read_text().splitlines()]


# ----------------------------------------------------------------------------------------------
# The plumbing, with a stand-in interpreter (seconds)

FAKE_PYTHON = r"""#!/usr/bin/env bash
# Stand-in for python: records the rendezvous it was given, writes the --log-file, and fails the
# first attempt of a job when FAIL_FIRST_ATTEMPT is set.
set -euo pipefail
if [[ " $* " == *" --print-config "* ]]; then echo '{}'; exit 0; fi
log=""; prev=""
for a in "$@"; do [[ "${prev}" == --log-file ]] && log="${a}"; prev="${a}"; done
echo "rank=${RANK} world=${WORLD_SIZE} local=${LOCAL_RANK} master=${MASTER_ADDR}:${MASTER_PORT}" \
     "seed=${SEED} attempt=${SLURM_RESTART_COUNT:-0} ckpt=${CHECKPOINT_DIR}"
echo ":::MLLOG attempt ${SLURM_RESTART_COUNT:-0}" > "${log}"
if [[ -n "${FAKE_SUCCESS:-}" ]]; then
  echo ':::MLLOG {"key": "run_stop", "value": null, "metadata": {"status": "success"}}' >> "${log}"
fi
python3 -c "import socket, os; socket.create_connection((os.environ['MASTER_ADDR'], 1), 0.5)" 2>/dev/null \
  || python3 -c "import socket, os; socket.getaddrinfo(os.environ['MASTER_ADDR'], None)"
if [[ -n "${FAIL_FIRST_ATTEMPT:-}" && "${SLURM_RESTART_COUNT:-0}" == 0 ]]; then exit 3; fi
"""


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "fake-python"
    path.write_text(FAKE_PYTHON)
    path.chmod(0o755)
    return path


def test_jobs_get_seeds_rendezvous_and_a_requeue_after_failure(slurm, fake_python, tmp_path):
    job_dir = tmp_path / "jobs"
    proc = submit(
        slurm,
        LLAMA31_CONTAINER="1",
        PYTHON=str(fake_python),
        PRESET="smoke",
        GPUS_PER_NODE="0",
        NEXP="2",
        SEEDS="17 18",
        MAX_RETRIES="1",
        FAIL_FIRST_ATTEMPT="1",
        JOB_DIR=str(job_dir),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = job_ids(job_dir)
    assert len(ids) == 2
    states = slurm.wait_for_jobs(ids, timeout=90)
    assert set(states.values()) == {"COMPLETED"}, states
    for run, seed, job in (("run01_seed17", "17", ids[0]), ("run02_seed18", "18", ids[1])):
        out = (job_dir / run / f"slurm-{job}.out").read_text()
        assert f"seed={seed}" in out
        assert "rank=0 world=1 local=0 master=" in out
        assert f":{10000 + int(job) % 20000} " in out
        assert "attempt 1 failed (exit 3); requeueing" in out
        assert "attempt=1" in out
        assert (job_dir / run / "mlperf.log").read_text() == ":::MLLOG attempt 1\n"
        assert (job_dir / run / "mlperf.log.failed-attempt-0").read_text() == ":::MLLOG attempt 0\n"
    assert (job_dir / "seeds.txt").read_text() == "run01_seed17 17 given\nrun02_seed18 18 given\n"


def test_chained_jobs_wait_for_each_other_and_stop_after_the_target(slurm, fake_python, tmp_path):
    job_dir = tmp_path / "jobs"
    proc = submit(
        slurm,
        LLAMA31_CONTAINER="1",
        PYTHON=str(fake_python),
        PRESET="smoke",
        GPUS_PER_NODE="0",
        NPAR="3",
        JOB_SAMPLES="1024",
        SEEDS="5",
        FAKE_SUCCESS="1",
        JOB_DIR=str(job_dir),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = job_ids(job_dir)
    assert len(ids) == 3
    states = slurm.wait_for_jobs(ids, timeout=90)
    assert list(states.values()) == ["COMPLETED"] * 3, states
    times = [slurm.run("scontrol", "show", "job", job).stdout for job in ids]
    ends = [re.search(r"EndTime=(\S+)", t).group(1) for t in times]
    starts = [re.search(r"StartTime=(\S+)", t).group(1) for t in times]
    assert starts[1] >= ends[0] and starts[2] >= ends[1]
    run = job_dir / "run01_seed5"
    assert (run / "mlperf_part1.log").is_file()
    for job in ids[1:]:
        out = (run / f"slurm-{job}.out").read_text()
        assert "the run reached its target in mlperf_part1.log; nothing left for this job" in out
        assert "rank=0" not in out  # the training entry was not started
    assert not (run / "mlperf_part2.log").exists()


def test_bad_partition_is_reported_in_words(slurm, fake_python, tmp_path):
    job_dir = tmp_path / "jobs"
    proc = submit(
        slurm,
        LLAMA31_CONTAINER="1",
        PYTHON=str(fake_python),
        PRESET="smoke",
        GPUS_PER_NODE="0",
        PARTITION="no-such-partition",
        JOB_DIR=str(job_dir),
    )
    assert proc.returncode == 1
    assert "sbatch could not submit run01_seed" in proc.stderr
    assert "invalid partition" in proc.stderr.lower()
    assert "PARTITION='no-such-partition'" in proc.stderr
    assert not slurm.run("squeue", "-h").stdout.strip()


def test_unreachable_controller_is_reported_in_words(slurm, fake_python, tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text(re.sub(r"SlurmctldPort=\d+", f"SlurmctldPort={_free_port()}", slurm.conf.read_text()))
    env = _clean_env(
        slurm,
        MODE="slurm",
        LLAMA31_CONTAINER="1",
        PYTHON=str(fake_python),
        PRESET="smoke",
        GPUS_PER_NODE="0",
        JOB_DIR=str(tmp_path / "jobs"),
        SLURM_CONF=str(conf),
    )
    proc = subprocess.run(["bash", "run_llama31.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "sbatch could not submit run01_seed" in proc.stderr
    assert "slurm controller" in proc.stderr.lower() or "connection refused" in proc.stderr.lower(), proc.stderr


# ----------------------------------------------------------------------------------------------
# The benchmark itself (the embedded default, shrunk)

# Evaluations every 4 steps on 16 sequences; a target the smoke model passes at its first evaluation.
# (Its eval loss starts near ln(2048) = 7.6 and is 6.87-6.88 after 4 steps, 6.21-6.27 after 8, for
# seeds 5 and 77.)
SHRUNK = {
    "PRESET": "smoke",
    "GPUS_PER_NODE": "0",
    "EVAL_EVERY": "64",
    "EVAL_SAMPLES": "16",
    "TARGET": "7.3",
    "WARMUP_SAMPLES": "32",
    "MAX_TRAIN_SAMPLES": "256",
    "LOG_EVERY": "2",
}
# Generous: a loaded 2-core machine runs a smoke step in seconds rather than a fraction of one.
JOB_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    """One embedded dataset for every job of the module (utils.smoke serializes concurrent builders)."""
    return tmp_path_factory.mktemp("smoke-data")


def _check(log: Path):
    from compliance.check import check_log

    return check_log(log, profile="smoke")


def test_benchmark_two_runs_with_distinct_seeds_pass_the_smoke_check(slurm, smoke_data, tmp_path):
    job_dir = tmp_path / "jobs"
    proc = submit(slurm, NEXP="2", JOB_DIR=str(job_dir), SMOKE_DATA_DIR=str(smoke_data), **SHRUNK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = job_ids(job_dir)
    states = slurm.wait_for_jobs(ids, timeout=JOB_TIMEOUT_S)
    runs = sorted(p for p in job_dir.iterdir() if p.is_dir())
    outputs = "\n".join(p.read_text()[-3000:] for run in runs for p in run.glob("slurm-*.out"))
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{outputs}"
    seeds = [line.split()[1] for line in (job_dir / "seeds.txt").read_text().splitlines()]
    assert len(runs) == 2 and len(set(seeds)) == 2
    for run, seed in zip(runs, seeds, strict=True):
        assert run.name.endswith(f"_seed{seed}")
        log = run / "mlperf.log"
        text = log.read_text()
        assert f'"key": "seed", "value": {seed},' in text
        assert '"status": "success"' in text
        report = _check(log)
        assert report.passed, report.format()


def test_benchmark_npar_chain_resumes_from_the_first_jobs_checkpoint(slurm, smoke_data, tmp_path):
    """Two chained jobs on one run's checkpoint folder: the first trains one block of JOB_SAMPLES and
    checkpoints, the second resumes there and reaches the target (seed 77: eval loss 6.88 after 64
    samples, 6.27 after 128; target 6.5)."""
    job_dir = tmp_path / "jobs"
    knobs = {**SHRUNK, "TARGET": "6.5", "JOB_SAMPLES": "64"}
    proc = submit(slurm, NPAR="2", SEEDS="77", JOB_DIR=str(job_dir), SMOKE_DATA_DIR=str(smoke_data), **knobs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = job_ids(job_dir)
    assert len(ids) == 2
    states = slurm.wait_for_jobs(ids, timeout=JOB_TIMEOUT_S)
    run = job_dir / "run01_seed77"
    outputs = "\n".join(p.read_text()[-3000:] for p in sorted(run.glob("slurm-*.out")))
    assert list(states.values()) == ["COMPLETED", "COMPLETED"], f"{states}\n{outputs}"
    # the dependency held the second job until the first had finished
    first_end = re.search(r"EndTime=(\S+)", slurm.run("scontrol", "show", "job", ids[0]).stdout).group(1)
    second_start = re.search(r"StartTime=(\S+)", slurm.run("scontrol", "show", "job", ids[1]).stdout).group(1)
    assert second_start >= first_end
    checkpoints = run / "checkpoints"
    assert (checkpoints / "latest").is_file(), f"the first job saved no checkpoint:\n{outputs}"
    first = (run / "mlperf_part1.log").read_text()
    second = (run / "mlperf_part2.log").read_text()
    assert re.search(r'"key": "init_checkpoint_step", "value": 0\b', first)
    assert '"status": "aborted"' in first  # paused, not finished
    step = re.search(r'"key": "init_checkpoint_step", "value": (\d+)', second)
    assert step and int(step.group(1)) == 4, f"the second job did not resume from step 4:\n{outputs}"
    assert '"status": "success"' in second
    # The check the launcher suggests reports the two part logs as one run, with the profile it recorded.
    from compliance.check import main as check_main
    from compliance.folder import check_folder

    assert (job_dir / "compliance_profile.txt").read_text() == "smoke\n"
    folder = check_folder(job_dir, profile="smoke", report_dir=None)
    assert folder.passed, folder.format()
    (chain,) = folder.runs
    assert chain.part_numbers == [1, 2] and [p.status for p in chain.parts] == ["aborted", "success"]
    assert [samples for samples, _ in chain.eval_curve] == [64, 128]
    assert chain.time_to_train_ms == sum(t.time_to_train_ms for t in chain.part_times)
    assert chain.gaps_ms[0] > 0
    assert check_main([str(job_dir), "--no-report"]) == 0


def test_benchmark_warned_before_its_time_limit_saves_requeues_and_reaches_the_target(slurm, smoke_data, tmp_path):
    """SIGUSR1 to the batch shell, as `--signal=B:USR1@<s>` (SIGNAL_MINUTES) sends it before the time
    limit (here by `scancel --signal=USR1 --batch`, without waiting for a real limit): the batch script
    passes it to the task, which saves and exits 75; the job is requeued and its second attempt resumes
    from the checkpoint and reaches the target (seed 77: eval loss 6.27 after 128 samples; target 6.5)."""
    job_dir = tmp_path / "jobs"
    knobs = {**SHRUNK, "TARGET": "6.5", "LOG_EVERY": "1", "SIGNAL_MINUTES": "5", "TIME": "30"}
    proc = submit(slurm, SEEDS="77", MAX_RETRIES="1", JOB_DIR=str(job_dir), SMOKE_DATA_DIR=str(smoke_data), **knobs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (job,) = job_ids(job_dir)
    run = job_dir / "run01_seed77"
    out = run / f"slurm-{job}.out"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (out.is_file() and "[train] step 2 " in out.read_text()):
        assert time.monotonic() < deadline, "the job did not reach step 2"
        time.sleep(0.2)
    slurm.run("scancel", "--signal=USR1", "--batch", job)
    states = slurm.wait_for_jobs([job], timeout=JOB_TIMEOUT_S)
    text = out.read_text()
    assert states == {job: "COMPLETED"}, text[-4000:]
    assert "SIGUSR1 received" in text and "passing it to the training tasks" in text
    assert "stopped early with its state saved (exit 75)" in text
    assert "attempt 1 stopped early (exit 75); requeueing job" in text
    stopped = mllog_lines(run / "mlperf.log.failed-attempt-0")[-1]
    assert stopped["key"] == "run_stop" and stopped["metadata"]["status"] == "aborted"
    assert stopped["metadata"]["reason"].startswith("stopped by SIGUSR1"), stopped
    at = stopped["metadata"]["samples_count"]
    assert 32 <= at < 128
    resumed = mllog_lines(run / "mlperf.log")
    assert [e["value"] for e in resumed if e["key"] == "init_checkpoint_step"] == [at // 16]
    assert resumed[-1]["key"] == "run_stop" and resumed[-1]["metadata"]["status"] == "success"


def mllog_lines(path: Path) -> list[dict]:
    import json

    return [
        json.loads(line.split(":::MLLOG ", 1)[1])
        for line in path.read_text().splitlines()
        if line.startswith(":::MLLOG ")
    ]


def test_benchmark_cancelled_job_closes_its_log_and_a_new_launch_resumes(slurm, smoke_data, tmp_path):
    """scancel (SIGTERM to the batch shell and the task, SIGKILL KillWait=5 s later): the task saves
    and closes its log within KillWait, the batch script requeues nothing, and a new launch on the same
    CHECKPOINT_DIR resumes and reaches the target (seed 77, target 6.5)."""
    knobs = {
        **SHRUNK,
        "TARGET": "6.5",
        "LOG_EVERY": "1",
        "SEEDS": "77",
        "MAX_RETRIES": "1",
        "CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "SMOKE_DATA_DIR": str(smoke_data),
    }
    first_dir = tmp_path / "first"
    proc = submit(slurm, JOB_DIR=str(first_dir), **knobs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (job,) = job_ids(first_dir)
    out = first_dir / "run01_seed77" / f"slurm-{job}.out"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (out.is_file() and "[train] step 2 " in out.read_text()):
        assert time.monotonic() < deadline, "the job did not reach step 2"
        time.sleep(0.2)
    slurm.run("scancel", job)
    states = slurm.wait_for_jobs([job], timeout=120)
    text = out.read_text()
    assert states == {job: "CANCELLED"}, text[-4000:]
    assert "requeueing" not in text
    stopped = mllog_lines(first_dir / "run01_seed77" / "mlperf.log")[-1]
    assert stopped["key"] == "run_stop" and stopped["metadata"]["status"] == "aborted", text[-4000:]
    assert stopped["metadata"]["reason"].startswith("stopped by SIGTERM")
    at = stopped["metadata"]["samples_count"]
    assert (tmp_path / "ckpt" / "run01_seed77" / "latest").read_text().strip() == f"iter_{at // 16:07d}"

    second_dir = tmp_path / "second"
    proc = submit(slurm, JOB_DIR=str(second_dir), **knobs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (job2,) = job_ids(second_dir)
    states = slurm.wait_for_jobs([job2], timeout=JOB_TIMEOUT_S)
    resumed = mllog_lines(second_dir / "run01_seed77" / "mlperf.log")
    assert states == {job2: "COMPLETED"}
    assert [e["value"] for e in resumed if e["key"] == "init_checkpoint_step"] == [at // 16]
    assert resumed[-1]["metadata"]["status"] == "success"
