"""Damaged checkpoints and unwritable checkpoint folders are named errors, found before init_stop.

The CPU engine saves with Megatron-Core dist-checkpointing like the GPU one (benchmark.checkpoint):
the model's tensors in ``__0_*.distcp`` shards indexed by ``.metadata``, the optimizer state and the
run position in ``common.pt`` (a torch zip archive), the format in ``metadata.json``. One paused run
writes a checkpoint once per module; each case damages a copy of it and resumes. The in-process cases
assert the CheckpointError's text and that the MLPerf log ends with an aborted run_stop that carries
the reason and no run_start; the subprocess case asserts `python -m benchmark.train`'s exit status 2
and that no traceback reaches the user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.checkpoint import CheckpointError
from benchmark.config import ConfigError
from benchmark.train import run
from tests.helpers import TINY_MODEL, mllog_events, smoke_config

REPO = Path(__file__).resolve().parents[1]
TINY = {
    **TINY_MODEL,
    "LOG_EVERY": "1000",
    "GBS": "16",
    "MBS": "8",
    "EVAL_EVERY": "32",
    "EVAL_SAMPLES": "8",
    "MAX_TRAIN_SAMPLES": "64",
    "TARGET": "0.01",
    "SEED": "3",
}
STEP = "iter_0000002"


@pytest.fixture(scope="module")
def saved(smoke_data, tmp_path_factory) -> Path:
    """A complete checkpoint folder (CHECKPOINT_DIR) from a run paused after its first block."""
    root = tmp_path_factory.mktemp("saved")
    cfg = smoke_config(smoke_data, root, {**TINY, "CHECKPOINT_DIR": root / "ckpt", "JOB_SAMPLES": 32})
    assert run(cfg, log_path=root / "first.log", echo=False).paused
    assert sorted(p.name for p in (root / "ckpt" / STEP).iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__0_1.distcp",
        "common.pt",
        "metadata.json",
    ]
    return root / "ckpt"


@pytest.fixture
def ckpt(saved, tmp_path) -> Path:
    """A private copy of the saved CHECKPOINT_DIR, to damage."""
    return Path(shutil.copytree(saved, tmp_path / "ckpt"))


def _resume_expecting_error(smoke_data, tmp_path, ckpt: Path, **extra) -> tuple[str, list[dict]]:
    cfg = smoke_config(smoke_data, tmp_path / "results", {**TINY, "CHECKPOINT_DIR": ckpt, **extra})
    log = tmp_path / "results" / "mlperf.log"
    with pytest.raises(CheckpointError) as err:
        run(cfg, log_path=log, echo=False)
    assert isinstance(err.value, ConfigError)  # so the entry point's exit status 2 applies
    events = mllog_events(log)
    keys = [e["key"] for e in events]
    assert keys[:2] == ["cache_clear", "init_start"]
    assert "init_stop" not in keys and "run_start" not in keys
    assert events[-1]["key"] == "run_stop"
    assert events[-1]["metadata"]["status"] == "aborted"
    assert events[-1]["metadata"]["reason"] == str(err.value)
    return str(err.value), events


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_the_undamaged_copy_resumes(smoke_data, tmp_path, ckpt):
    """The baseline the damaged cases depart from: the copy resumes and trains on to the end."""
    cfg = smoke_config(smoke_data, tmp_path, {**TINY, "CHECKPOINT_DIR": ckpt})
    result = run(cfg, log_path=tmp_path / "resumed.log", echo=False)
    assert (result.resumed_samples, result.samples, result.status) == (32, 64, "aborted")


def test_truncated_common_state(smoke_data, tmp_path, ckpt):
    # What torch reported before: "PytorchStreamReader failed reading zip archive", with a traceback.
    _truncate(ckpt / STEP / "common.pt")
    text, _ = _resume_expecting_error(smoke_data, tmp_path, ckpt)
    assert text.startswith(f"checkpoint {ckpt / STEP}: common.pt is truncated or damaged (it is not a whole archive")
    assert "PytorchStreamReader" in text  # what the load said, on one line
    assert text.endswith(f"delete {ckpt / STEP} and {ckpt / 'latest'} to start the run over")
    assert "\n" not in text


def test_truncated_shard_named_with_its_length(smoke_data, tmp_path, ckpt):
    shard = ckpt / STEP / "__0_1.distcp"
    size = shard.stat().st_size
    _truncate(shard)
    text, _ = _resume_expecting_error(smoke_data, tmp_path, ckpt)
    assert (
        f"checkpoint {ckpt / STEP}: __0_1.distcp is truncated or damaged (it holds {size // 2} bytes of the "
        f"{size} its index records"
    ) in text
    assert text.endswith("to start the run over")


def test_truncated_index(smoke_data, tmp_path, ckpt):
    _truncate(ckpt / STEP / ".metadata")
    text, _ = _resume_expecting_error(smoke_data, tmp_path, ckpt)
    assert text.startswith(f"checkpoint {ckpt / STEP}: .metadata is truncated or damaged (it cannot be read: ")
    assert "Traceback" not in text


def test_missing_common_state_found_before_the_model_is_built(smoke_data, tmp_path, ckpt, capsys):
    (ckpt / STEP / "common.pt").unlink()
    text, _ = _resume_expecting_error(smoke_data, tmp_path, ckpt)
    assert text == (
        f"checkpoint {ckpt / STEP} is incomplete: common.pt missing or empty; delete {ckpt / STEP} "
        f"and {ckpt / 'latest'} to start the run over"
    )
    assert "[model]" not in capsys.readouterr().out  # checked before init went further


def test_pointer_to_a_missing_step_offers_the_complete_one(smoke_data, tmp_path, ckpt):
    (ckpt / "latest").write_text("iter_0000099\n")
    text, _ = _resume_expecting_error(smoke_data, tmp_path, ckpt)
    assert text == (
        f"{ckpt / 'latest'} names iter_0000099, which does not exist: the checkpoint folder was changed "
        f"by hand; delete {ckpt / 'latest'} to start the run over, or point latest at {STEP} (write its "
        f"name into {ckpt / 'latest'}) to resume from that one"
    )


def test_pointer_to_nothing_when_no_checkpoint_is_left(smoke_data, tmp_path, ckpt):
    shutil.rmtree(ckpt / STEP)
    text, _ = _resume_expecting_error(smoke_data, tmp_path, ckpt)
    assert text.endswith(
        f"which does not exist: the checkpoint folder was changed by hand; delete {ckpt / 'latest'} "
        "to start the run over"
    )


@pytest.mark.parametrize("content", ["", "../elsewhere", "iter_2"])
def test_pointer_that_holds_no_checkpoint_name(smoke_data, tmp_path, ckpt, content):
    # An empty pointer used to resolve to CHECKPOINT_DIR itself ("is not a distributed checkpoint").
    (ckpt / "latest").write_text(content + "\n")
    text, _ = _resume_expecting_error(smoke_data, tmp_path, ckpt)
    assert text.startswith(f"{ckpt / 'latest'} holds {content!r}, not the name of a checkpoint folder")


def test_checkpoint_of_another_model_shape(smoke_data, tmp_path, ckpt):
    text, _ = _resume_expecting_error(smoke_data, tmp_path, ckpt, HIDDEN_SIZE=128)
    assert text.startswith(
        f"checkpoint {ckpt / STEP} was saved by a run with other model or parallel knobs "
        "(CheckpointingException: Global shape mismatch"
    )
    assert text.endswith("or set CHECKPOINT_DIR to a new folder to start over")


def test_checkpoint_dir_under_a_file(smoke_data, tmp_path):
    (tmp_path / "a_file").write_text("")
    where = tmp_path / "a_file" / "ckpt"
    text, _ = _resume_expecting_error(smoke_data, tmp_path, where, SAVE_CKPT=1)
    assert text == (
        f"CHECKPOINT_DIR={where}: cannot be created (Not a directory): set CHECKPOINT_DIR to a folder "
        "this job can write"
    )


def test_read_only_checkpoint_dir_found_before_init_stop(smoke_data, tmp_path, read_only):
    folder = read_only
    text, _ = _resume_expecting_error(smoke_data, tmp_path, folder, SAVE_CKPT=1)
    assert list(folder.iterdir()) == []  # the probe write left nothing
    assert text.startswith(f"CHECKPOINT_DIR={folder}: cannot be written (")
    assert text.endswith("so no checkpoint could be saved: make it writable or set CHECKPOINT_DIR to a folder that is")


def test_the_entry_point_exits_2_without_a_traceback(smoke_data, tmp_path, ckpt):
    _truncate(ckpt / STEP / "common.pt")
    keep = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env = {
        **keep,
        **TINY,
        "PRESET": "smoke",
        "DEVICE": "cpu",
        "PREPROCESSED_PATH": str(smoke_data.data_dir),
        "TOKENIZER_PATH": str(smoke_data.tokenizer_dir),
        "RESULT_DIR": str(tmp_path / "results"),
        "CHECKPOINT_DIR": str(ckpt),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.train", "--no-check", "--valid-file", Path(smoke_data.valid_prefix).name],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    expect = f"error: checkpoint {ckpt / STEP}: common.pt is truncated or damaged"
    assert expect in proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    stop = mllog_events(tmp_path / "results" / "mlperf_smoke_seed3.log")[-1]
    assert stop["key"] == "run_stop" and stop["metadata"]["status"] == "aborted"
    assert stop["metadata"]["reason"].startswith(expect.removeprefix("error: "))
