"""Shims for the places where Megatron-Core 0.16 assumes a CUDA device.

The CPU path runs the same GPTModel, and the same dist-checkpointing, as the GPU path, in one
process or in several data-parallel ones over gloo. Each shim below is applied only when no CUDA
device is in use (apply_cpu_shims is called by the CPU setup in benchmark/train.py), says why it
exists, and is exercised by the CPU tests that train, save and resume (tests/test_train.py,
tests/test_checkpoint.py, tests/test_data_parallel.py).
"""

from __future__ import annotations

import functools
from unittest import mock

import torch

_applied = False


def _with_cpu_as_current_device(fn):
    """Run fn with torch.cuda.current_device() answering "cpu", so its tensors stay on the host."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with mock.patch.object(torch.cuda, "current_device", lambda: "cpu"):
            return fn(*args, **kwargs)

    return wrapper


def apply_cpu_shims() -> None:
    """Idempotently patch Megatron-Core for a CPU-only process."""
    global _applied
    if _applied:
        return
    from megatron.core.dist_checkpointing.strategies import torch as dist_torch_strategy
    from megatron.core.dist_checkpointing.strategies.filesystem_async import FileSystemWriterAsync
    from megatron.core.models.common.embeddings import rotary_pos_embedding

    # 1. RotaryEmbedding.get_emb moves its inv_freq buffer to torch.cuda.current_device() on first use.
    rope = rotary_pos_embedding.RotaryEmbedding
    rope.get_emb = _with_cpu_as_current_device(rope.get_emb)

    # 2. Dist-checkpoint saving finishes with a broadcast of a failure flag it allocates on
    #    torch.cuda.current_device().
    dist_torch_strategy.save_state_dict_async_finalize = _with_cpu_as_current_device(
        dist_torch_strategy.save_state_dict_async_finalize
    )

    # 3. Dist-checkpoint saving copies tensors to host "non_blocking" and then calls
    #    torch.cuda.synchronize(); on CPU the copies are synchronous already, so ask for blocking ones.
    original_preload = FileSystemWriterAsync.preload_tensors

    def preload_tensors_on_cpu(write_buckets, non_blocking=True):
        return original_preload(write_buckets, non_blocking=False)

    FileSystemWriterAsync.preload_tensors = staticmethod(preload_tensors_on_cpu)
    _applied = True
