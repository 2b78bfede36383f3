"""config.sh and run_llama31.sh without a cluster: knobs, validation, --dry-run, the local loop.

Most tests swap the training entry for a stand-in interpreter (LLAMA31_CONTAINER=1 with PYTHON
pointing at a small script) so that they check the launcher, not the model, in well under a second;
the knob test uses the real `python -m benchmark.train --print-config`. tests/test_slurm.py submits
to a real Slurm.
Run: bash dev/test.sh tests/test_launcher.py
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG_SH = REPO / "config.sh"
LAUNCHER = REPO / "run_llama31.sh"
EXPORT_RE = re.compile(r"^export ([A-Z][A-Z0-9_]*)=", re.M)

# Knobs that the launchers consume themselves; every other config.sh knob is read by the training entry.
LAUNCHER_KNOBS = {
    "MODE",
    "GPUS_PER_NODE",
    "ACCOUNT",
    "PARTITION",
    "NNODES",
    "TIME",
    "MAX_RETRIES",
    "IMAGE",
    "DOCKER_IMAGE",
    "JOB_DIR",
    "NEXP",
    "SEEDS",
    "NPAR",
}
# Set by the launcher for each run, so config.sh does not export them.
PER_RUN = {"SEED", "RESULT_DIR"}

# A stand-in for `python`: answers --print-config, records each call, writes the --log-file, and
# fails (status FAKE_EXIT, default 3) its first FAKE_FAILURES calls (counted in FAKE_COUNTER) to exercise retries.
FAKE_PYTHON = r"""#!/usr/bin/env bash
set -euo pipefail
if [[ " $* " == *" --print-config "* ]]; then echo '{"fake": true}'; exit 0; fi
log=""; prev=""
for a in "$@"; do [[ "${prev}" == --log-file ]] && log="${a}"; prev="${a}"; done
n=$(( $(cat "${FAKE_COUNTER}" 2>/dev/null || echo 0) + 1 )); echo "${n}" > "${FAKE_COUNTER}"
echo "call=${n} seed=${SEED} result_dir=${RESULT_DIR} ckpt=${CHECKPOINT_DIR} args=$*" >> "${FAKE_RECORD}"
echo "fake training, call ${n}"
[[ -n "${log}" ]] && echo ":::MLLOG fake ${n}" > "${log}"
if [[ -n "${FAKE_SUCCESS:-}" ]]; then
  echo ':::MLLOG {"key": "run_stop", "value": null, "metadata": {"status": "success"}}' >> "${log}"
fi
if (( n <= ${FAKE_FAILURES:-0} )); then exit "${FAKE_EXIT:-3}"; fi
exit 0
"""


def config_knobs() -> list[str]:
    return EXPORT_RE.findall(CONFIG_SH.read_text())


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any knob, so a developer's shell does not leak in."""
    env = {k: v for k, v in os.environ.items() if k not in set(config_knobs()) | PER_RUN | {"SEED"}}
    env.pop("LLAMA31_CONTAINER", None)
    env.update(overrides)
    return env


def launch(*args: str, env: dict[str, str], config: bool = True, check: bool | None = None):
    """`[source config.sh &&] bash run_llama31.sh ARGS` from a temporary caller folder."""
    script = ('source "$1" && ' if config else "") + 'shift && bash "$0" "$@"'
    cmd = ["bash", "-c", script, str(LAUNCHER), str(CONFIG_SH), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if check is True:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture
def fake(tmp_path):
    """Environment pieces for the stand-in interpreter; ``fake.env(**knobs)`` builds a full environment."""

    class Fake:
        python = tmp_path / "bin" / "fake-python"
        record = tmp_path / "calls.txt"
        counter = tmp_path / "counter"

        def env(self, **knobs: str) -> dict[str, str]:
            return clean_env(
                LLAMA31_CONTAINER="1",
                PYTHON=str(self.python),
                FAKE_RECORD=str(self.record),
                FAKE_COUNTER=str(self.counter),
                **knobs,
            )

        def calls(self) -> list[str]:
            return self.record.read_text().splitlines() if self.record.exists() else []

    Fake.python.parent.mkdir()
    Fake.python.write_text(FAKE_PYTHON)
    Fake.python.chmod(0o755)
    return Fake()


def sbatch_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("env ") and " sbatch " in line]


# ----------------------------------------------------------------------------------------------
# config.sh


def test_config_sh_names_every_knob_once_with_default_and_comment():
    names = config_knobs()
    assert len(names) == len(set(names)), f"a knob is exported twice: {names}"
    for line in CONFIG_SH.read_text().splitlines():
        if line.startswith("export "):
            name = EXPORT_RE.match(line).group(1)
            assert re.match(rf'^export {name}="\$\{{{name}:-[^"]*\}}"\s+# \S', line), (
                f'config.sh: {line!r} should read export {name}="${{{name}:-DEFAULT}}"  # what it does'
            )
    for group in ("Slurm", "Paths", "Model and schedule", "Experiment"):
        assert f"# --- {group}" in CONFIG_SH.read_text()
    for name in (
        "ACCOUNT",
        "PARTITION",
        "NNODES",
        "GPUS_PER_NODE",
        "TIME",
        "MAX_RETRIES",
        "IMAGE",
        "PREPROCESSED_PATH",
        "TOKENIZER_PATH",
        "JOB_DIR",
        "CHECKPOINT_DIR",
        "INDEX_CACHE_DIR",
        "PRESET",
        "GBS",
        "MBS",
        "LR",
        "WARMUP_SAMPLES",
        "TP",
        "PP",
        "CP",
        "FP8",
        "EVAL_EVERY",
        "TARGET",
        "SEEDS",
        "NEXP",
        "NPAR",
        "SAVE_CKPT",
        "USE_CKPT",
        "FROM_HF",
        "MODEL_CKPT",
    ):
        assert name in names


def test_path_knobs_of_dev_lib_are_config_sh_knobs():
    """dev/lib.sh's LLAMA31_PATH_KNOBS (made absolute, mounted into containers) names config.sh's path knobs."""
    proc = subprocess.run(
        ["bash", "-c", 'source dev/lib.sh && printf "%s\\n" "${LLAMA31_PATH_KNOBS[@]}"'],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    names = proc.stdout.split()
    assert set(names) <= set(config_knobs()) and len(set(names)) == len(names)
    assert {"PREPROCESSED_PATH", "TOKENIZER_PATH", "JOB_DIR", "CHECKPOINT_DIR", "MODEL_CKPT"} <= set(names)
    assert all(n.endswith(("_PATH", "_DIR", "_CKPT")) for n in names), names


def test_dev_lib_only_defines_when_sourced():
    """Sourcing dev/lib.sh sets no option and no variable beyond its own LLAMA31_ names, and prints nothing."""
    script = """
        opts() { set -o; shopt; }
        before_opts="$(opts)"; before_vars="$(compgen -v | sort)"
        source dev/lib.sh
        [[ "$(opts)" == "${before_opts}" ]] || { echo "options changed"; exit 1; }
        comm -13 <(printf '%s\\n' "${before_vars}") <(compgen -v | sort) |
            grep -v -e '^LLAMA31_' -e '^before_vars$' -e '^PIPESTATUS$' || true
    """
    proc = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr


def test_config_sh_sources_under_strict_mode_and_keeps_given_values(tmp_path):
    script = f'set -euo pipefail; export GBS=64 NEXP=3; source "{CONFIG_SH}"; echo "$GBS $NEXP $NPAR $PRESET $JOB_DIR"'
    out = subprocess.run(["bash", "-c", script], env=clean_env(), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["64", "3", "1", "llama31_8b"]  # JOB_DIR stays empty: chosen at each launch


def test_each_launch_without_a_job_dir_gets_a_folder_of_its_own(fake):
    """JOB_DIR empty (config.sh's default): every launch names a new results/<date-time>, so two
    launches from one shell never mix into one folder, even within the same second."""
    env = fake.env(MODE="local", GPUS_PER_NODE="0", PRESET="smoke", SEEDS="5")
    first = launch("--dry-run", env=env, check=True)
    taken = Path(re.search(r"JOB_DIR=(\S+)", first.stdout).group(1))
    assert taken.parent == REPO / "results" and not taken.exists()  # a dry run makes nothing
    taken.mkdir(parents=True)
    try:
        second = launch("--dry-run", env=env, check=True)
        other = Path(re.search(r"JOB_DIR=(\S+)", second.stdout).group(1))
        assert other != taken and other.parent == REPO / "results" and not other.exists()
    finally:
        taken.rmdir()


@functools.cache
def entry_env_names() -> frozenset[str]:
    """The environment variables that `python -m benchmark.train --help` says it reads."""
    python = REPO / ".venv/bin/python"
    help_text = subprocess.run(
        [str(python) if python.exists() else "python", "-m", "benchmark.train", "--help"],
        cwd=REPO,
        env=clean_env(COLUMNS="200"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return frozenset(re.findall(r"\(env\s+([A-Z][A-Z0-9_]*)\)", help_text))


def test_config_sh_covers_every_training_knob():
    """Every environment variable that `python -m benchmark.train --help` reads is named in config.sh."""
    read_by_entry = entry_env_names()
    assert {"GBS", "TP", "LR"} <= read_by_entry
    missing = sorted(read_by_entry - set(config_knobs()) - PER_RUN)
    assert not missing, f"config.sh does not name these knobs of benchmark.train: {missing}"


# ----------------------------------------------------------------------------------------------
# Every knob reaches the run


def _sentinels(tmp_path: Path) -> dict[str, str]:
    """A non-default, mutually valid value for every config.sh knob (training knobs on the smoke preset)."""
    data = tmp_path / "data"
    data.mkdir()
    for name in (
        "c4-train.en_6_text_document",
        "c4-train.en_7_text_document",
        "c4-validation-91205-samples.en_text_document",
    ):
        (data / f"{name}.idx").write_bytes(b"")
    for d in ("tok", "model/weights", "model/context", "jobs", "ckpt", "cache"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "model" / "config.json").write_text("{}")  # FROM_HF=1 reads a Hugging Face folder
    return {
        "MODE": "slurm",
        "GPUS_PER_NODE": "4",
        "ACCOUNT": "acct-sentinel",
        "PARTITION": "part-sentinel",
        "NNODES": "2",
        "TIME": "01:23:45",
        "MAX_RETRIES": "3",
        "SIGNAL_MINUTES": "7",
        "IMAGE": "",
        "DOCKER_IMAGE": "docker-sentinel",
        "PREPROCESSED_PATH": str(data),
        "TOKENIZER_PATH": str(tmp_path / "tok"),
        "JOB_DIR": str(tmp_path / "jobs"),
        "CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "INDEX_CACHE_DIR": str(tmp_path / "cache"),
        "SMOKE_DATA_DIR": str(tmp_path / "smoke"),
        "PRESET": "smoke",
        "BENCHMARK_AREA": "en6",
        "GBS": "32",
        "MBS": "2",
        "LR": "0.00123",
        "WARMUP_SAMPLES": "96",
        "MAX_STEPS": "999",
        "TP": "2",
        "PP": "2",
        "CP": "2",
        "PRECISION": "bf16",
        "FP8": "1",
        "RECOMPUTE": "1",
        "RECOMPUTE_LAYERS": "2",
        "DEVICE": "cuda",
        "LAYER_SPEC": "te",
        "SEQUENCE_PARALLEL": "on",
        "FP8_RECIPE": "delayed",
        "FP8_AMAX_HISTORY": "16",
        "FP8_AMAX_ALGO": "max",
        "FP8_ATTENTION": "1",
        # FP8_PARAM_GATHER=off keeps bf16 weights, under which PRECISION_AWARE_OPTIMIZER=auto would be on:
        # off is then a value auto would not give.
        "FP8_PARAM_GATHER": "off",
        "PRECISION_AWARE_OPTIMIZER": "off",
        "FUSIONS": "off",
        "COMPILE": "1",
        "EVAL_EVERY": "64",
        "EVAL_SAMPLES": "6",
        "EVAL_SET": "file-order",
        "TARGET": "4.25",
        "MAX_TRAIN_SAMPLES": "640",
        "LOG_EVERY": "7",
        "NUM_LAYERS": "6",
        "HIDDEN_SIZE": "192",
        "FFN_HIDDEN_SIZE": "320",
        "NUM_HEADS": "6",
        "NUM_KV_GROUPS": "2",
        "SEQ_LENGTH": "128",
        "VOCAB_SIZE": "512",
        "NEXP": "2",
        "SEEDS": "101 202",
        "NPAR": "2",
        "JOB_SAMPLES": "128",
        "SAVE_CKPT": "1",
        "USE_CKPT": "1",
        "FROM_HF": "1",
        "EXIT_DURATION_MINS": "2.5",
        "CKPT_FORMAT": "portable",
        "MODEL_CKPT": str(tmp_path / "model"),
        "SUBMISSION_ORG": "org-sentinel",
        "SUBMISSION_PLATFORM": "platform-sentinel",
        "SUBMISSION_DIVISION": "open",
        "SUBMISSION_STATUS": "cloud",
        "TENSORBOARD_DIR": str(tmp_path / "tb"),
        "WANDB_PROJECT": "wandb-sentinel",
        "PROFILE_STEPS": "3:5",
        "PROFILE_DIR": str(tmp_path / "profile"),
        "PROFILE_RANKS": "0,3",
        "PROFILE_MEMORY": "1",
    }


def _env_fields() -> dict[str, tuple[str, str, type]]:
    """Environment variable -> (section, field, type) of the training configuration."""

    from benchmark import config as cfgmod

    return {
        f.metadata["env"]: (section, f.name, f.type) for section, f in cfgmod.knob_fields() if f.metadata.get("env")
    }


@pytest.fixture(scope="module")
def knob_reach(tmp_path_factory) -> tuple[list[str], str]:
    """The reference exports MAX_LR and TP and then ignores both; here each knob is seen where it acts.

    Launcher knobs must show in the Slurm --dry-run (sbatch/srun options, runs, jobs) or in
    dev/run_docker.sh --dry-run; every other knob must come back, with its value, from the training
    entry's own --print-config, which the dry run runs with the first job's environment.
    """
    tmp_path = tmp_path_factory.mktemp("knobs")
    values = _sentinels(tmp_path)
    knobs = config_knobs()
    assert set(values) == set(knobs), f"give a sentinel to {sorted(set(knobs) - set(values))}"
    # The TE-only knobs (LAYER_SPEC=te, FP8, CP, SEQUENCE_PARALLEL) are validated against an installed
    # TransformerEngine, which this machine lacks: a stand-in package makes it findable (never imported).
    fake_te = tmp_path / "fake_te" / "transformer_engine"
    fake_te.mkdir(parents=True)
    (fake_te / "__init__.py").write_text("")
    # WANDB_PROJECT is validated against an installed wandb (optional, not in requirements.txt): the same.
    (fake_te.parent / "wandb").mkdir()
    (fake_te.parent / "wandb" / "__init__.py").write_text("")
    proc = launch("--dry-run", env=clean_env(**values, PYTHONPATH=str(fake_te.parent)), check=True)
    out = proc.stdout
    resolved = json.loads(out[out.index("\n{") + 1 : out.index("\n}") + 2])
    jobs = sbatch_lines(out)

    seen: dict[str, bool] = {}
    seen["MODE"] = len(jobs) == 4 and "MODE=slurm" in out
    seen["GPUS_PER_NODE"] = all("--gpus-per-node=4" in j and "--ntasks-per-node=4" in j for j in jobs)
    seen["ACCOUNT"] = all("--account=acct-sentinel" in j for j in jobs)
    seen["PARTITION"] = all("--partition=part-sentinel" in j for j in jobs)
    seen["NNODES"] = all(j.count("--nodes=2") == 2 for j in jobs)  # sbatch and srun
    seen["TIME"] = all("--time=01:23:45" in j for j in jobs)
    seen["SIGNAL_MINUTES"] = all("--signal=B:USR1@420 " in j for j in jobs)  # seconds, to the batch shell
    seen["MAX_RETRIES"] = "export MAX_RETRIES=3" in out and all("--requeue" in j for j in jobs)
    seen["JOB_DIR"] = all(f"--output={values['JOB_DIR']}/run0" in j for j in jobs)
    seen["NEXP"] = seen["SEEDS"] = sum("SEED=101 " in j for j in jobs) == 2 and sum("SEED=202 " in j for j in jobs) == 2
    seen["NPAR"] = sum("--dependency=afterok:" in j for j in jobs) == 2
    seen["CHECKPOINT_DIR"] = all(f"CHECKPOINT_DIR={values['CHECKPOINT_DIR']}/run0" in j for j in jobs)
    image_out = launch("--dry-run", env=clean_env(**{**values, "IMAGE": "image-sentinel"}), check=True).stdout
    seen["IMAGE"] = all("--container-image=image-sentinel" in j for j in sbatch_lines(image_out))
    docker = subprocess.run(
        ["bash", "-c", f'source "{CONFIG_SH}" && bash "{REPO}/dev/run_docker.sh" --dry-run true'],
        env=clean_env(**values),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seen["DOCKER_IMAGE"] = " docker-sentinel true" in docker
    # The smoke preset trains on en6+en7; the sentinel's en6 must also narrow the file list.
    seen["BENCHMARK_AREA"] = resolved["data"]["benchmark_area"] == "en6" and resolved["data"]["train_files"] == [
        "c4-train.en_6_text_document"
    ]

    fields = _env_fields()
    assert resolved["train"]["seed"] == 101
    assert resolved["log"]["output_dir"] == f"{values['JOB_DIR']}/run01_seed101"
    for name in knobs:
        if name in seen or name not in fields:
            continue
        section, field_name, typ = fields[name]
        got = resolved[section][field_name]
        want = values[name]
        if isinstance(got, bool):
            seen[name] = got is (want == "1")
        elif isinstance(got, (int, float)):
            seen[name] = got == type(got)(float(want))
        else:
            seen[name] = str(got) == want
    assert resolved["preset"] == "smoke"
    seen["PRESET"] = True
    return [name for name in knobs if not seen.get(name)], out


# The checkpoint knobs come with the harness's save/resume; until `--help` lists them they are
# checked by their own test, which says which ones are missing.
CHECKPOINT_KNOBS = ("SAVE_CKPT", "JOB_SAMPLES", "USE_CKPT", "FROM_HF", "MODEL_CKPT")


def test_every_knob_config_sh_exports_reaches_the_run(knob_reach):
    unseen, out = knob_reach
    unseen = [n for n in unseen if not (n in CHECKPOINT_KNOBS and n not in entry_env_names())]
    assert not unseen, f"these config.sh knobs do not reach the run: {unseen}\n{out}"


def test_checkpoint_knobs_reach_the_run(knob_reach):
    pending = [n for n in CHECKPOINT_KNOBS if n not in entry_env_names()]
    if pending:
        pytest.skip(f"benchmark.train does not read {', '.join(pending)} yet (python -m benchmark.train --help)")
    unseen, out = knob_reach
    assert not [n for n in unseen if n in CHECKPOINT_KNOBS], out


# ----------------------------------------------------------------------------------------------
# Validation


def test_missing_values_are_reported_together_before_anything_is_submitted(tmp_path, fake):
    fake_bin = tmp_path / "bin"
    (fake_bin / "sbatch").write_text(f'#!/bin/sh\necho called >> "{tmp_path}/sbatch-called"\necho 1\n')
    (fake_bin / "sbatch").chmod(0o755)
    env = fake.env(
        MODE="slurm",
        USE_CKPT="1",
        NPAR="2",
        SEEDS="5 5",
        JOB_DIR=str(tmp_path / "jobs"),
        PATH=f"{fake_bin}:{os.environ['PATH']}",
    )
    proc = launch(env=env)
    assert proc.returncode == 2
    err = proc.stderr
    assert "nothing was started or submitted" in err
    for text in (
        "PREPROCESSED_PATH is not set",
        "TOKENIZER_PATH is not set",
        "MODEL_CKPT is not set",
        "set JOB_SAMPLES",
        "repeats a seed",
    ):
        assert text in err, err
    assert not (tmp_path / "sbatch-called").exists()
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"MODE": "cloud"}, "MODE=cloud must be local or slurm"),
        ({"NEXP": "0"}, "NEXP=0 must be a whole number, 1 or more"),
        ({"NEXP": "3", "SEEDS": "1 2"}, "SEEDS has 2 seed(s) for NEXP=3 runs"),
        ({"SEEDS": "7 x"}, "SEEDS has 'x', which is not a whole number"),
        ({"SEEDS": "7 4294967296"}, "SEEDS has 4294967296, above 4294967295: seeds are whole numbers from 0 to"),
        ({"SEEDS": "7 000099999999999999999999"}, "SEEDS has 000099999999999999999999, above 4294967295"),
        ({"SEED": "4294967296"}, "SEED=4294967296 is above 4294967295"),
        ({"NNODES": "2"}, "MODE=local runs on this machine only"),
        ({"FROM_HF": "yes"}, "FROM_HF=yes must be 0 or 1"),
        ({"MODE": "slurm", "SIGNAL_MINUTES": "5m"}, "SIGNAL_MINUTES=5m must be a whole number (0 or more)"),
        (
            {"PRESET": "llama31_8b", "PREPROCESSED_PATH": "/nonexistent/c4", "TOKENIZER_PATH": "/nonexistent/tok"},
            "PREPROCESSED_PATH=/nonexistent/c4 is not a folder",
        ),
        ({"MODE": "slurm", "IMAGE": "img.sqsh", "JOB_DIR": "/tmp/a,b"}, "cannot hold"),
    ],
)
def test_bad_values_are_named(fake, knobs, message):
    proc = launch("--dry-run", env=fake.env(**knobs), config=False)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr


def test_seeds_at_the_top_of_the_range_are_taken(fake):
    proc = launch("--dry-run", env=fake.env(NEXP="2", SEEDS="0 0004294967295"), config=False, check=True)
    assert "# run02_seed0004294967295: seed 0004294967295 (given)" in proc.stdout


def test_a_bad_training_knob_stops_a_local_launch_before_anything_runs(tmp_path):
    """The real entry checks the knobs of a local run (here the largest seed's) before folders are made."""
    jobs = tmp_path / "jobs"
    env = clean_env(
        MODE="local", GPUS_PER_NODE="0", PRESET="smoke", NEXP="2", SEEDS="7 4294967295", PP="2", JOB_DIR=str(jobs)
    )
    proc = launch(env=env, config=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: SEED=4294967295 with PP=2 seeds the last pipeline stage with 4294967395" in proc.stderr
    assert "the training configuration is invalid (above); nothing was started or submitted" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not jobs.exists()


def test_slurm_mode_without_sbatch_says_so(fake, tmp_path):
    bin_dir = tmp_path / "nosbatch"
    bin_dir.mkdir()
    for tool in ("bash", "env", "sed", "date", "od", "tr", "sort", "uniq", "dirname", "cat", "mkdir"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    proc = launch(env=fake.env(MODE="slurm", PRESET="smoke", PATH=str(bin_dir)), config=False)
    assert proc.returncode == 2
    assert "sbatch is not on PATH: MODE=slurm submits from a Slurm login node" in proc.stderr


def test_sbatch_failure_is_reported_in_words_and_earlier_jobs_cancelled(fake, tmp_path):
    bin_dir = tmp_path / "bin"
    (bin_dir / "sbatch").write_text(
        "#!/bin/bash\n"
        f'n=$(( $(cat "{tmp_path}/n" 2>/dev/null || echo 0) + 1 )); echo $n > "{tmp_path}/n"\n'
        "if (( n == 1 )); then echo 4242; exit 0; fi\n"
        'echo "sbatch: error: Batch job submission failed: Invalid account or account/partition combination '
        'specified" >&2; exit 1\n'
    )
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/scancelled"\n')
    for tool in ("sbatch", "scancel"):
        (bin_dir / tool).chmod(0o755)
    env = fake.env(
        MODE="slurm",
        PRESET="smoke",
        NEXP="2",
        ACCOUNT="nope",
        JOB_DIR=str(tmp_path / "jobs"),
        PATH=f"{bin_dir}:{os.environ['PATH']}",
    )
    proc = launch(env=env, config=False)
    assert proc.returncode == 1
    assert "sbatch could not submit run02_seed" in proc.stderr
    assert "Invalid account or account/partition combination specified" in proc.stderr
    assert "ACCOUNT='nope'" in proc.stderr
    assert "were cancelled: 4242" in proc.stderr
    assert (tmp_path / "scancelled").read_text().split() == ["4242"]


def test_existing_logs_are_never_overwritten(fake, tmp_path):
    run_dir = tmp_path / "jobs" / "run01_seed9"
    run_dir.mkdir(parents=True)
    (run_dir / "mlperf.log").write_text("earlier run\n")
    proc = launch(env=fake.env(SEEDS="9", JOB_DIR=str(tmp_path / "jobs")), config=False)
    assert proc.returncode == 2
    assert "mlperf.log exists" in proc.stderr
    assert (run_dir / "mlperf.log").read_text() == "earlier run\n"


# ----------------------------------------------------------------------------------------------
# --dry-run


def test_dry_run_local_cpu_and_torchrun(fake, tmp_path):
    env = fake.env(SEEDS="11", JOB_DIR="rel/jobs")
    out = launch("--dry-run", "--log-every", "5", env=env, config=False, check=True).stdout
    cmd = [line for line in out.splitlines() if line.startswith("env SEED=")]
    assert len(cmd) == 1
    # relative paths are taken from the caller's folder, made absolute for the jobs
    job_dir = f"{os.getcwd()}/rel/jobs"
    run_dir = f"{job_dir}/run01_seed11"
    assert cmd[0].startswith(f"env SEED=11 RESULT_DIR={run_dir} CHECKPOINT_DIR={run_dir}/checkpoints ")
    assert f"{fake.python} -m benchmark.train --log-file {job_dir}/run01_seed11/mlperf.log --log-every 5" in cmd[0]
    assert "torch.distributed.run" not in out
    assert not Path(job_dir).exists()

    out = launch("--dry-run", env=fake.env(SEEDS="11", GPUS_PER_NODE="8"), config=False, check=True).stdout
    torchrun = "-m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=8 -m benchmark.train"
    assert f"{fake.python} {torchrun}" in out


def test_dry_run_generates_distinct_logged_seeds(fake):
    out = launch("--dry-run", env=fake.env(NEXP="6"), config=False, check=True).stdout
    seeds = re.findall(r"^# run0(\d)_seed(\d+): seed (\d+) \(generated\)$", out, re.M)
    assert [int(i) for i, _, _ in seeds] == list(range(1, 7))
    assert len({s for _, s, _ in seeds}) == 6
    assert all(a == b for _, a, b in seeds)


def test_dry_run_chains_npar_jobs_on_one_checkpoint_folder(fake, tmp_path):
    env = fake.env(
        MODE="slurm",
        PRESET="smoke",
        NPAR="3",
        JOB_SAMPLES="1024",
        SEEDS="7",
        MAX_RETRIES="2",
        JOB_DIR=str(tmp_path / "jobs"),
        PARTITION="gpu",
    )
    out = launch("--dry-run", env=env, config=False, check=True).stdout
    jobs = sbatch_lines(out)
    assert len(jobs) == 3
    run_dir = tmp_path / "jobs" / "run01_seed7"
    for k, job in enumerate(jobs, start=1):
        assert f"CHECKPOINT_DIR={run_dir}/checkpoints " in job
        assert f"--log-file {run_dir}/mlperf_part{k}.log" in job
        assert f"LLAMA31_MLPERF_LOG={run_dir}/mlperf_part{k}.log" in job
        assert "--partition=gpu" in job and "--requeue" in job and "--open-mode=append" in job
        assert f"--output={run_dir}/slurm-%j.out" in job
        assert "dev/slurm/llama31.sbatch --nodes=1 --ntasks-per-node=1 -- " in job
        if k == 1:
            assert "--dependency" not in job
        else:
            assert f"--dependency=afterok:JOB_ID_OF_run01_seed7_part{k - 1} " in job
            assert "--kill-on-invalid-dep=yes" in job
    assert "--gpus-per-node" not in out and "--container-image" not in out


def test_dry_run_cpu_nodes_get_one_task_each(fake, tmp_path):
    # GPUS_PER_NODE=0 on several nodes: one CPU process per node, data-parallel over gloo.
    env = fake.env(
        MODE="slurm", PRESET="smoke", NNODES="3", GPUS_PER_NODE="0", SEEDS="7", JOB_DIR=str(tmp_path / "jobs")
    )
    proc = launch("--dry-run", env=env, config=False, check=True)
    (job,) = sbatch_lines(proc.stdout)
    assert " sbatch --nodes=3 --ntasks-per-node=1 " in job
    assert "dev/slurm/llama31.sbatch --nodes=3 --ntasks-per-node=1 -- " in job
    assert "NNODES=3 x GPUS_PER_NODE=0 (3 process(es))" in proc.stdout
    assert "--gpus-per-node" not in job and "--exclusive" not in job


def test_dry_run_container_mounts_every_configured_path(fake, tmp_path):
    paths = {name: tmp_path / name.lower() for name in ("PREPROCESSED_PATH", "TOKENIZER_PATH", "MODEL_CKPT")}
    for p in paths.values():
        p.mkdir()
    # What the login-node check looks for: the data files and a NeMo 2 checkpoint's weights/.
    (paths["MODEL_CKPT"] / "weights").mkdir()
    for name in ("c4-train.en_6_text_document", "c4-validation-91205-samples.en_text_document"):
        (paths["PREPROCESSED_PATH"] / f"{name}.idx").write_bytes(b"")
    env = fake.env(
        MODE="slurm",
        PRESET="llama31_8b",
        IMAGE="/images/llama31.sqsh",
        SEEDS="3",
        JOB_DIR=str(tmp_path / "jobs"),
        CHECKPOINT_DIR=str(tmp_path / "ckpt"),
        INDEX_CACHE_DIR=str(tmp_path / "cache"),
        USE_CKPT="1",
        GPUS_PER_NODE="8",
        NNODES="2",
        **{k: str(v) for k, v in paths.items()},
    )
    out = launch("--dry-run", env=env, config=False, check=True).stdout
    (job,) = sbatch_lines(out)
    (mount_arg,) = [a for a in shlex.split(job) if a.startswith("--container-mounts=")]
    mounts = mount_arg.split("=", 1)[1].split(",")
    expected = [*paths.values(), tmp_path / "jobs", tmp_path / "ckpt", tmp_path / "cache"]
    assert sorted(mounts) == sorted(f"{p}:{p}" for p in expected)
    assert "--container-image=/images/llama31.sqsh" in job
    workdir = re.search(r"^WORKDIR (\S+)$", (REPO / "Dockerfile").read_text(), re.M).group(1)
    assert f"--container-workdir={workdir}" in job
    # inside the image the job runs the image's python
    assert " -- python -m benchmark.train --log-file " in job
    assert "--gpus-per-node=8 --exclusive" in job and "--ntasks-per-node=8" in job
    assert "each job resolves it again where it runs, inside IMAGE" in out


def _bare_host_python(bin_dir: Path) -> None:
    """A `python3` on PATH that sees only the standard library (-S: no site-packages), as a login
    node's system Python that has none of the project's dependencies."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    (bin_dir / "python3").chmod(0o755)


def _recording_sbatch(bin_dir: Path, record: Path) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho called >> "{record}"\necho 1\n')
    (bin_dir / "sbatch").chmod(0o755)


# 4 nodes x 8 GPUs at TP=1 and GBS 16: DP=32 does not divide the batch.
BAD_LAYOUT = {"MODE": "slurm", "PRESET": "smoke", "NNODES": "4", "GPUS_PER_NODE": "8", "GBS": "16", "TP": "1"}
BAD_LAYOUT_ERROR = "error: GBS=16 is not divisible by MBS x data-parallel size = 8 x 32"


@pytest.mark.parametrize(
    "knobs",
    [{"IMAGE": "/images/llama31.sqsh"}, {"FP8": "1"}, {"IMAGE": "/images/llama31.sqsh", "FP8": "1"}],
    ids=["image", "fp8", "both"],
)
def test_a_layout_the_trainer_rejects_stops_slurm_at_dry_run_and_submission(tmp_path, knobs):
    bin_dir = tmp_path / "bin"
    _bare_host_python(bin_dir)
    _recording_sbatch(bin_dir, tmp_path / "sbatch-called")
    jobs = tmp_path / "jobs"
    env = clean_env(**BAD_LAYOUT, **knobs, JOB_DIR=str(jobs), PATH=f"{bin_dir}:{os.environ['PATH']}")
    for args in (["--dry-run"], []):
        proc = launch(*args, env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert BAD_LAYOUT_ERROR in proc.stderr
        assert "the training configuration is invalid (above); nothing was started or submitted" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "sbatch-called").exists()
    assert not jobs.exists()


@pytest.mark.parametrize("image", ["/images/llama31.sqsh", ""], ids=["image", "host-env"])
def test_fp8_for_the_nodes_is_checked_here_without_the_login_nodes_hardware(tmp_path, image):
    """This machine has no GPU and no TransformerEngine; the jobs' nodes do (GPUS_PER_NODE; IMAGE, or
    the checkout's .venv, which the check runs in when there is no IMAGE)."""
    bin_dir = tmp_path / "bin"
    _bare_host_python(bin_dir)
    _recording_sbatch(bin_dir, tmp_path / "sbatch-called")
    env = clean_env(
        MODE="slurm",
        PRESET="smoke",
        NNODES="1",
        GPUS_PER_NODE="2",
        IMAGE=image,
        FP8="1",
        SEEDS="11",
        JOB_DIR=str(tmp_path / "jobs"),
        PATH=f"{bin_dir}:{os.environ['PATH']}",
    )
    out = launch("--dry-run", env=env, check=True).stdout
    resolved = json.loads(out[out.index("\n{") + 1 : out.index("\n}") + 2])
    assert (resolved["parallel"]["fp8"], resolved["parallel"]["device"]) == (True, "cuda")
    assert "# left to the job: LAYER_SPEC=auto: whether TransformerEngine imports on the job's node" in out
    assert len(sbatch_lines(out)) == 1
    if image:  # submitted too (without IMAGE a submission would set up .venv first)
        proc = launch(env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (tmp_path / "sbatch-called").read_text() == "called\n"
    # A combination no machine can run is refused here all the same, naming the knob.
    bad = launch("--dry-run", env={**env, "PRECISION": "fp32", "JOB_DIR": str(tmp_path / "jobs2")})
    assert bad.returncode == 2
    assert "FP8=1 trains with bf16 weights and fp32 master weights: set PRECISION=bf16 or auto" in bad.stderr


# ----------------------------------------------------------------------------------------------
# MODE=local, for real (with the stand-in interpreter)


def test_local_runs_retry_and_log_their_seeds(fake, tmp_path):
    env = fake.env(NEXP="2", SEEDS="31 32", MAX_RETRIES="1", FAKE_FAILURES="1", JOB_DIR=str(tmp_path / "jobs"))
    proc = launch(env=env, config=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = fake.calls()
    assert len(calls) == 3  # run01 failed once and was retried, run02 ran once
    assert [c.split()[1] for c in calls] == ["seed=31", "seed=31", "seed=32"]
    jobs = tmp_path / "jobs"
    assert (jobs / "seeds.txt").read_text() == "run01_seed31 31 given\nrun02_seed32 32 given\n"
    for run in ("run01_seed31", "run02_seed32"):
        assert (jobs / run / "mlperf.log").is_file()
        assert "fake training" in (jobs / run / "output_part1.txt").read_text()
    assert "retry 1 of 1" in proc.stdout
    assert "run01_seed31: success" in proc.stdout and "run02_seed32: success" in proc.stdout


def test_local_early_stop_is_retried_and_said_to_resume(fake, tmp_path):
    # 75: the entry's status after SIGTERM, SIGUSR1 or EXIT_DURATION_MINS, its state saved
    env = fake.env(SEEDS="9", MAX_RETRIES="1", FAKE_FAILURES="1", FAKE_EXIT="75", JOB_DIR=str(tmp_path / "jobs"))
    proc = launch(env=env, config=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(fake.calls()) == 2
    ckpt = tmp_path / "jobs" / "run01_seed9" / "checkpoints"
    assert f"run01_seed9 part 1: stopped early with its state saved in {ckpt}; a retry resumes from it" in proc.stdout
    assert "retry 1 of 1" in proc.stdout and "run01_seed9: success" in proc.stdout


def test_local_failed_part_ends_its_run_and_the_exit_status(fake, tmp_path):
    env = fake.env(NPAR="2", JOB_SAMPLES="1024", SEEDS="8", FAKE_FAILURES="5", JOB_DIR=str(tmp_path / "jobs"))
    proc = launch(env=env, config=False)
    assert proc.returncode == 1
    assert len(fake.calls()) == 1  # part 2 never started
    assert "run01_seed8: failed in part 1 of 2 (exit 3)" in proc.stdout


def test_local_chain_stops_once_the_run_reached_its_target(fake, tmp_path):
    env = fake.env(NPAR="3", JOB_SAMPLES="1024", SEEDS="4", FAKE_SUCCESS="1", JOB_DIR=str(tmp_path / "jobs"))
    proc = launch(env=env, config=False, check=True)
    assert len(fake.calls()) == 1
    assert "run01_seed4 reached its target in part 1; parts 2-3 have nothing left to do" in proc.stdout


def test_the_launch_records_its_compliance_profile_for_the_check(fake, tmp_path):
    # The embedded default (smoke preset) is checked with the smoke profile, so the suggested command
    # `compliance/check.sh JOB_DIR` needs no --profile; other presets get the official rules.
    jobs = tmp_path / "default"
    proc = launch(env=fake.env(SEEDS="5", JOB_DIR=str(jobs)), config=False, check=True)
    assert (jobs / "compliance_profile.txt").read_text() == "smoke\n"
    assert f"check them all: compliance/check.sh {jobs}" in proc.stdout
    assert [p.name for p in jobs.iterdir() if ".tmp." in p.name] == []
    data, tok = tmp_path / "data", tmp_path / "tok"
    data.mkdir()
    tok.mkdir()
    paths = {"PREPROCESSED_PATH": str(data), "TOKENIZER_PATH": str(tok)}
    cases = [
        ({"PRESET": "llama31_8b", **paths}, (), "closed"),
        ({"PRESET": "llama31_8b", **paths}, ("--preset", "smoke"), "smoke"),  # the flag wins, as in the entry
        ({}, ("--preset=llama31_8b",), "closed"),
    ]
    for index, (knobs, args, profile) in enumerate(cases):
        jobs = tmp_path / f"jobs{index}"
        launch(*args, env=fake.env(SEEDS="5", JOB_DIR=str(jobs), **knobs), config=False, check=True)
        assert (jobs / "compliance_profile.txt").read_text() == f"{profile}\n", (knobs, args)
    # A later launch into a folder of smoke runs with a closed preset would mix two profiles: refused.
    proc = launch(env=fake.env(SEEDS="6", JOB_DIR=str(tmp_path / "jobs1"), PRESET="llama31_8b", **paths), config=False)
    assert proc.returncode == 2
    assert (
        f"error: {tmp_path / 'jobs1'} holds runs checked with the smoke profile (compliance_profile.txt), but preset "
        "llama31_8b is checked with closed; choose a new JOB_DIR (nothing was started or submitted)"
    ) in proc.stderr
    assert not (tmp_path / "jobs1" / "run01_seed6").exists()
    assert (tmp_path / "jobs1" / "compliance_profile.txt").read_text() == "smoke\n"
    env = fake.env(MODE="slurm", SEEDS="5", NPAR="2", JOB_SAMPLES="64", JOB_DIR=str(tmp_path / "dry"))
    out = launch("--dry-run", env=env, config=False, check=True).stdout
    record = tmp_path / "dry" / "compliance_profile.txt"
    assert f"# compliance profile: smoke (preset smoke), to be recorded in {record}" in out
    assert not (tmp_path / "dry").exists()


def test_print_config_is_a_question_not_a_run(fake, tmp_path):
    proc = launch("--print-config", env=fake.env(JOB_DIR=str(tmp_path / "jobs")), config=False, check=True)
    assert json.loads(proc.stdout) == {"fake": True}
    assert not (tmp_path / "jobs").exists()


# ----------------------------------------------------------------------------------------------
# Shell hygiene


def _shell_scripts() -> list[Path]:
    scripts = [REPO / "run_llama31.sh", REPO / "config.sh", REPO / "dev/run_docker.sh"]
    return [*scripts, *sorted((REPO / "dev/slurm").glob("*"))]


def test_shell_scripts_are_strict():
    for path in _shell_scripts():
        if path.name == "config.sh":  # sourced into the caller's shell, so it must not change its options
            assert "set -" not in path.read_text()
            continue
        assert "\nset -euo pipefail\n" in path.read_text(), path


# ----------------------------------------------------------------------------------------------
# dev/venv.sh, as the launcher sources it

# A stand-in venv interpreter: records every call (pip included) and answers the training entry.
FAKE_VENV_PYTHON = r"""#!/usr/bin/env bash
echo "$*" >> "${FAKE_RECORD}"
exit 0
"""


@pytest.fixture
def fake_venv(tmp_path):
    """A venv folder (LLAMA31_VENV) whose run requirements are already installed (its stamp matches)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_VENV_PYTHON)
    python.chmod(0o755)
    reqs = b"".join((REPO / name).read_bytes() for name in ("requirements-torch.txt", "requirements.txt"))
    (venv / ".requirements-run.sha256").write_text(hashlib.sha256(reqs).hexdigest() + "\n")
    return venv


@pytest.mark.parametrize("arg", ["--help", "--print-config"])
def test_launcher_arguments_do_not_reach_venv_setup(fake_venv, tmp_path, arg):
    record = tmp_path / "calls.txt"
    env = clean_env(LLAMA31_VENV=str(fake_venv), FAKE_RECORD=str(record), JOB_DIR=str(tmp_path / "jobs"))
    proc = launch(arg, env=env, config=False, check=True)
    assert "[setup]" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in fake_venv.iterdir()) == [".requirements-run.sha256", "bin"]
    calls = record.read_text().splitlines()
    assert calls == [f"-m benchmark.train {arg}"], calls  # no pip install


def test_venv_setup_refuses_an_unknown_requirements_set(fake_venv, tmp_path):
    record = tmp_path / "calls.txt"
    env = clean_env(LLAMA31_VENV=str(fake_venv), FAKE_RECORD=str(record))
    proc = subprocess.run(
        ["bash", "-c", "source dev/venv.sh --help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "dev/venv.sh takes no argument or 'dev', not '--help'" in proc.stderr
    assert not record.exists() and not (fake_venv / ".requirements---help.sha256").exists()


# What docs/CLUSTER.md ("NCCL and TransformerEngine environment settings") says the launcher leaves
# to the user: NCCL, PyTorch NCCL, TransformerEngine and CUDA connection settings.
_TUNING = r"(NCCL_[A-Z0-9_]+|NVTE_[A-Z0-9_]+|TORCH_NCCL_[A-Z0-9_]+|CUDA_DEVICE_MAX_CONNECTIONS)"
# A setting, not a mention: NAME=... (shell, env), ENV NAME (Dockerfile), environ["NAME"] = and
# setdefault("NAME", (Python).
# dev/run_docker.sh names them to pass the caller's own values through (--env NAME), which sets nothing.
TUNING_RE = re.compile(
    rf"\b{_TUNING}=|^ENV\s+{_TUNING}\b|environ\[[\"']{_TUNING}[\"']\]\s*=[^=]|setdefault\([\"']{_TUNING}[\"']", re.M
)


def test_the_launcher_sets_no_nccl_or_transformer_engine_variable_as_the_cluster_doc_says():
    files = [
        LAUNCHER,
        CONFIG_SH,
        REPO / "Dockerfile",
        REPO / "dev" / "run_docker.sh",
        REPO / "dev" / "slurm" / "llama31.sbatch",
        *sorted((REPO / "dev" / "launch").glob("*.sh")),
        *sorted((REPO / "benchmark").rglob("*.py")),
    ]
    found = sorted(
        {
            f"{path.relative_to(REPO)}: {next(n for n in names if n)}"
            for path in files
            for names in TUNING_RE.findall(path.read_text())
        }
    )
    assert not found, f"docs/CLUSTER.md says the launcher sets none of these; update it: {found}"
    doc = (REPO / "docs" / "CLUSTER.md").read_text()
    section = doc.split("## NCCL and TransformerEngine environment settings\n", 1)[1].split("\n## ", 1)[0]
    for name in ("CUDA_DEVICE_MAX_CONNECTIONS", "TORCH_NCCL_AVOID_RECORD_STREAMS", "NCCL_NVLS_ENABLE"):
        assert f"| `{name}=" in section and f"export {name}=" not in "".join(p.read_text() for p in files)
