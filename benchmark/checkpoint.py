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
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

LATEST = "latest"


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


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint in directory, or None when there is none."""
    pointer = Path(directory) / LATEST
    if not pointer.is_file():
        return None
    path = Path(directory) / pointer.read_text().strip()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{pointer} names {path.name}, which does not exist: the checkpoint folder was changed by hand; "
            f"point {LATEST} at an existing iter_* folder or remove it to start over"
        )
    return path


def save(directory: str | Path, engine, position: dict) -> Path:
    """Write a checkpoint of engine (model + optimizer) and the run position; return its folder."""
    from megatron.core import dist_checkpointing

    directory = Path(directory)
    name = f"iter_{position['steps']:07d}"
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
    state["run"] = {"position": position, "rng": states}
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


def load(path: str | Path, engine) -> dict:
    """Restore engine and RNG states from a checkpoint folder; return the saved run position."""
    from megatron.core import dist_checkpointing

    state = dist_checkpointing.load(engine.sharded_state_dict(is_loading=True), str(path))
    engine.load_sharded_state_dict(state)
    run = state["run"]
    set_rng_state(run["rng"][_rank()])
    return run["position"]
