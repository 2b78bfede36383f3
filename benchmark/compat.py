"""Shims for the places where Megatron-Core 0.16 assumes a CUDA device.

The CPU path runs the same GPTModel as the GPU path, in one process. Each shim below is applied only
when no CUDA device is in use, says why it exists, and is exercised by tests/test_compat.py.
"""

from __future__ import annotations

import functools
from unittest import mock

import torch

_applied = False


def apply_cpu_shims() -> None:
    """Idempotently patch Megatron-Core for a CPU-only process."""
    global _applied
    if _applied:
        return
    from megatron.core.models.common.embeddings import rotary_pos_embedding

    # RotaryEmbedding.get_emb moves its inv_freq buffer to torch.cuda.current_device() on first use;
    # on CPU, keep it where it is by answering "cpu" for the current device during that call.
    original_get_emb = rotary_pos_embedding.RotaryEmbedding.get_emb

    @functools.wraps(original_get_emb)
    def get_emb_on_cpu(self, *args, **kwargs):
        with mock.patch.object(torch.cuda, "current_device", lambda: "cpu"):
            return original_get_emb(self, *args, **kwargs)

    rotary_pos_embedding.RotaryEmbedding.get_emb = get_emb_on_cpu
    _applied = True
