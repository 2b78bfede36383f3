"""Save and resume a run with Megatron-Core dist-checkpointing (torch_dist format).

A checkpoint holds everything a resumed run needs to continue exactly as if it had not stopped:
model weights, optimizer state (moments and fp32 master weights), the training position (steps and
samples: the learning rate and the data order follow from them), the evaluation curve so far, and
the RNG states of every rank.

Layout under CHECKPOINT_DIR:
    iter_0000064/     one dist-checkpoint per save (a folder written by every rank)
    latest            the name of the newest complete checkpoint, replaced atomically
A save goes to ``iter_N.tmp`` and is renamed once every rank has finished, and only then does
``latest`` move; a crash mid-save leaves the previous checkpoint and ``latest`` untouched. Once the
pointer has moved, older checkpoints are removed.

What can be checked before training starts is (``check_directory``, before ``init_stop``): that
CHECKPOINT_DIR can be written, that ``latest`` names a folder that exists, and that the folder holds
the files every save writes. A file damaged inside is found when the load fails; either way the run
stops with a ``CheckpointError`` (a ConfigError: exit status 2) that names the file and the fix.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from benchmark.config import ConfigError

if TYPE_CHECKING:
    from benchmark.engine import Engine

LATEST = "latest"
# What every save writes into iter_N: Megatron-Core's format record, torch.distributed.checkpoint's
# index of the sharded tensors, the common (unsharded) state with the run position, and the shards.
FORMAT_FILE, INDEX_FILE, COMMON_FILE = "metadata.json", ".metadata", "common.pt"
_NAME = re.compile(r"iter_\d{7}")


class CheckpointError(ConfigError):
    """A checkpoint in CHECKPOINT_DIR cannot be used or written; the message names the file and the fix."""


@dataclass
class Position:
    """Where the run stands, exactly what a checkpoint records of it: the steps and samples trained (the
    learning rate and the data order follow from them) and the evaluations so far, (samples, eval loss)."""

    steps: int = 0
    samples: int = 0
    eval_curve: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The form saved in a checkpoint's common state (plain lists: the keys and layout on disk)."""
        return {"steps": self.steps, "samples": self.samples, "eval_curve": [list(p) for p in self.eval_curve]}

    @classmethod
    def from_dict(cls, saved: dict) -> Position:
        return cls(
            steps=saved["steps"], samples=saved["samples"], eval_curve=[tuple(point) for point in saved["eval_curve"]]
        )


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
        from megatron.core import tensor_parallel

        state["megatron_cuda"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
        from megatron.core import tensor_parallel

        tensor_parallel.get_cuda_rng_tracker().set_states(state["megatron_cuda"])


def _fix(directory: Path, damaged: Path | None) -> str:
    """How to get past an unusable checkpoint: start over, or fall back on another complete one."""
    pointer = directory / LATEST
    drop = f"delete {damaged} and {pointer}" if damaged is not None and damaged.exists() else f"delete {pointer}"
    others = sorted(
        p.name
        for p in directory.glob("iter_*")
        if p != damaged and _NAME.fullmatch(p.name) and p.is_dir() and not _missing_files(p)
    )
    fix = f"{drop} to start the run over"
    if others:
        fix += f", or point {LATEST} at {others[-1]} (write its name into {pointer}) to resume from that one"
    return fix


def _missing_files(path: Path) -> list[str]:
    """The files every save writes that path lacks or holds empty."""
    absent = [
        name
        for name in (FORMAT_FILE, INDEX_FILE, COMMON_FILE)
        if not (path / name).is_file() or (path / name).stat().st_size == 0
    ]
    if not any(p.stat().st_size for p in path.glob("*.distcp")):
        absent.append("*.distcp")
    return absent


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint in directory, or None when there is none."""
    directory = Path(directory)
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{pointer} cannot be read ({err}): {_fix(directory, None)}") from None
    if not _NAME.fullmatch(name):
        raise CheckpointError(
            f"{pointer} holds {name!r}, not the name of a checkpoint folder (iter_ and 7 digits): "
            f"{_fix(directory, None)}"
        )
    path = directory / name
    if not path.is_dir():
        raise CheckpointError(
            f"{pointer} names {name}, which does not exist: the checkpoint folder was changed by hand; "
            f"{_fix(directory, None)}"
        )
    return path


def check_directory(directory: str | Path) -> Path | None:
    """Before training starts: CHECKPOINT_DIR is writable and its newest checkpoint, if any, looks whole.

    A save comes only after the first block (or at an early stop), so a folder that cannot be written
    would otherwise be found after the run had started and its time had been spent. Returns the
    checkpoint the run will resume from, or None.
    """
    directory = Path(directory)
    knob = f"CHECKPOINT_DIR={directory}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(
            f"{knob}: cannot be created ({err.strerror or err}): set CHECKPOINT_DIR to a folder this job can write"
        ) from None
    try:
        # A real write, not os.access: root passes access checks on a read-only mount.
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CheckpointError(
            f"{knob}: cannot be written ({err.strerror or err}), so no checkpoint could be saved: make it "
            "writable or set CHECKPOINT_DIR to a folder that is"
        ) from None
    path = latest_checkpoint(directory)
    if path is None:
        return None
    absent = _missing_files(path)
    if absent:
        raise CheckpointError(
            f"checkpoint {path} is incomplete: {', '.join(absent)} missing or empty; {_fix(directory, path)}"
        )
    try:
        json.loads((path / FORMAT_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path}: {path / FORMAT_FILE} is damaged ({err}); {_fix(directory, path)}"
        ) from None
    return path


def _damaged_file(path: Path) -> tuple[Path, str] | None:
    """After a failed load: the file of checkpoint path found truncated or damaged, and how, if any.

    Cheap checks only: the index unpickles, the common state is a whole zip archive, and every shard
    file is as long as the index says. Damage inside a shard that keeps its length goes unnamed.
    """
    try:
        with open(path / INDEX_FILE, "rb") as f:
            index = pickle.load(f)
        ends: dict[str, int] = {}
        for item in index.storage_data.values():
            ends[item.relative_path] = max(ends.get(item.relative_path, 0), item.offset + item.length)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the index is damaged
        return path / INDEX_FILE, f"it cannot be read: {type(err).__name__}: {err}"
    try:
        with zipfile.ZipFile(path / COMMON_FILE) as archive:
            bad = archive.testzip()
        if bad is not None:
            return path / COMMON_FILE, f"its member {bad} fails its checksum"
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        return path / COMMON_FILE, f"it is not a whole archive: {err}"
    for name, end in sorted(ends.items()):
        size = (path / name).stat().st_size if (path / name).is_file() else None
        if size is None:
            return path / name, "it is missing"
        if size < end:
            return path / name, f"it holds {size} bytes of the {end} its index records"
    return None


def _first_line(err: BaseException) -> str:
    # torch.distributed.checkpoint wraps each rank's error, with its traceback, in one exception.
    failures = getattr(err, "failures", None)
    if failures:
        err = next(iter(failures.values()))[0]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def save(directory: str | Path, engine: Engine, position: Position) -> Path:
    """Write a checkpoint of engine (model + optimizer) and the run position; return its folder."""
    from megatron.core import dist_checkpointing

    directory = Path(directory)
    name = f"iter_{position.steps:07d}"
    final, tmp = directory / name, directory / f"{name}.tmp"
    if _rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    _barrier()
    state = engine.sharded_state_dict()
    # Per-rank RNG states are kept by rank 0 for every rank: gathered here, scattered on load.
    states = [None] * (torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1)
    if torch.distributed.is_initialized():
        torch.distributed.all_gather_object(states, rng_state())
    else:
        states[0] = rng_state()
    # What a resume must match before its load template can be built (see load).
    saved_with = {"layer_spec": engine.cfg.parallel.layer_spec, "optimizer_format": engine.optimizer_format}
    state["run"] = {"position": position.to_dict(), "rng": states, "saved_with": saved_with}
    dist_checkpointing.save(state, str(tmp))
    _barrier()
    if _rank() == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer_tmp = directory / f"{LATEST}.tmp"
        pointer_tmp.write_text(name + "\n")
        os.replace(pointer_tmp, directory / LATEST)
        # An 8B checkpoint with optimizer state is about 16 bytes per parameter (~130 GB): keep only
        # the newest, now that it is complete and named by the pointer.
        for old in directory.glob("iter_*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def _check_compatible(path: Path, saved_with: dict, engine: Engine) -> None:
    """A checkpoint whose optimizer state follows the saving spec's parameter order ("fast" on GPU,
    the torch optimizer on CPU) resumes only under that spec."""
    spec, fmt = saved_with.get("layer_spec"), saved_with.get("optimizer_format")
    here = engine.cfg.parallel.layer_spec
    if fmt is not None and (fmt == "torch") != (engine.optimizer_format == "torch"):
        saver, resumer = ("CPU", "GPU") if fmt == "torch" else ("GPU", "CPU")
        raise CheckpointError(
            f"checkpoint {path} was saved by a {saver} run and this run is on {resumer}: their optimizers keep "
            f"their state differently; resume on a {saver} (DEVICE), or set CHECKPOINT_DIR to a new folder"
        )
    if spec is None or spec == here or fmt == "portable":
        return
    raise CheckpointError(
        f"checkpoint {path} was saved under LAYER_SPEC={spec} with CKPT_FORMAT={fmt}, whose optimizer state "
        f"follows that spec's parameter order, and this run uses LAYER_SPEC={here}: resume with LAYER_SPEC={spec}, "
        f"or save with CKPT_FORMAT=portable (GPU) to move a run between layer specs"
    )


def load(path: str | Path, engine: Engine) -> Position:
    """Restore engine and RNG states from a checkpoint folder; return the saved run position."""
    from megatron.core import dist_checkpointing
    from torch.distributed.checkpoint.api import CheckpointException

    path = Path(path)
    try:
        # The unsharded part first: it says how the optimizer state was laid out, which the load
        # template must repeat, and under which layer spec.
        saved_with = dist_checkpointing.load_common_state_dict(str(path))["run"].get("saved_with", {})
        _check_compatible(path, saved_with, engine)
        template = engine.sharded_state_dict(is_loading=True, optimizer_format=saved_with.get("optimizer_format"))
        state = dist_checkpointing.load(template, str(path))
        engine.load_sharded_state_dict(state)
        run = state["run"]
    except CheckpointError:
        raise
    # CheckpointException derives from BaseException, not Exception; it carries every rank's error.
    except (Exception, CheckpointException) as err:
        detail = _first_line(err)
        if "shape mismatch" in detail or "size mismatch" in detail:
            raise CheckpointError(
                f"checkpoint {path} was saved by a run with other model or parallel knobs ({detail}): resume "
                "with the knobs it was saved with (its run's .config.json records them), or set CHECKPOINT_DIR "
                "to a new folder to start over"
            ) from None
        found = _damaged_file(path)
        if found is not None:
            file, how = found
            raise CheckpointError(
                f"checkpoint {path}: {file.name} is truncated or damaged ({how}; loading said {detail}); "
                f"{_fix(path.parent, path)}"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded ({detail}): if the model or optimizer knobs changed since it "
            f"was saved, set them back; else its files are damaged: {_fix(path.parent, path)}"
        ) from None
    set_rng_state(run["rng"][_rank()])
    return Position.from_dict(run["position"])
