"""Every place where the benchmark works around Megatron-Core, each with the version and the test.

Pinned version: megatron-core 0.16.1 (requirements.txt; the GPU machine runs the same). Each
workaround below says what in that version needs it, when it applies, and which test proves it;
a megatron-core upgrade re-runs those tests and drops what is no longer needed.

- CPU shims (:func:`apply_cpu_shims`): the CPU path runs the same GPTModel and dist-checkpointing as
  the GPU path, in one process or several data-parallel ones over gloo, where Megatron-Core assumes a
  CUDA device. Applied by the CPU setup in benchmark/train.py and by utils/convert.py.
- The GPU engine's optimizer without TransformerEngine or Apex, where Megatron-Core falls back to
  torch's AdamW: :func:`use_fused_adamw`, :func:`init_empty_adam_state` (before a load),
  :func:`refill_adam_steps` (after a load), :func:`check_grad_norm_before_update` (every step).
- The precision-aware optimizer's load from a ``CKPT_FORMAT=fast`` checkpoint
  (:func:`skip_non_tensor_state_on_load`).
- The weight-gradient kernel (:func:`install_wgrad_kernel`): Megatron's gradient-accumulation fusion
  without Apex, with the kernel of benchmark/wgrad.py.
- The local spec's final norm on a CPU where TransformerEngine imports (:func:`block_with_the_layers_norm`).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
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
    """Idempotently patch Megatron-Core 0.16.1 for a CPU-only process (never called on a GPU).

    Proved by the CPU tests that train, save and resume: tests/test_train.py,
    tests/test_checkpoint.py::test_pause_and_resume_equals_uninterrupted and
    tests/test_data_parallel.py::test_two_cpu_processes_resume_exactly.
    """
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


def _torch_adamw(optimizer) -> torch.optim.AdamW | None:
    """The torch AdamW inside a Megatron-Core optimizer, or None (TE's or Apex's Adam)."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(inner, torch.optim.AdamW) else None


def use_fused_adamw(optimizer) -> None:
    """Switch the torch AdamW inside a Megatron-Core optimizer to its single-kernel fused path.

    Megatron-Core 0.16.1 without TransformerEngine or Apex builds torch's AdamW with its default
    multi-kernel foreach path (measured: 20% of an 8-layer step on an H200, docs/PERFORMANCE.md). The
    parameters it updates are fp32 CUDA master copies, which the fused AdamW handles with the same
    update rule. Proved by tests/test_mcore_workarounds.py::test_fused_adamw_switch; the GPU runs of
    tests/test_gpu.py train through it.
    """
    inner = _torch_adamw(optimizer)
    if inner is not None:
        for group in inner.param_groups:
            group["foreach"], group["fused"] = False, True


def init_empty_adam_state(optimizer) -> None:
    """Give a fresh torch AdamW the state entries a loaded checkpoint will overwrite.

    Megatron-Core 0.16.1's distributed optimizer, without TE/Apex, reads the torch optimizer's
    per-parameter 'step' while building the loading template, and a new torch AdamW has no state until
    its first step; Megatron's own state initialiser fills the moments but not 'step'. Called before a
    load. Proved on a GPU by tests/test_gpu.py::test_pause_and_resume_on_gpu (the load fails without
    it); the entries it makes by tests/test_mcore_workarounds.py::test_empty_adam_state_before_a_load.
    """
    inner = _torch_adamw(optimizer)
    if inner is None:
        return
    for group in inner.param_groups:
        for p in group["params"]:
            state = inner.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)


def refill_adam_steps(optimizer) -> None:
    """After a load, set torch AdamW's per-parameter step counts from their param group's "step".

    Without TE/Apex, Megatron-Core 0.16.1's distributed optimizer keeps Adam's step count in its
    param groups ("step"), but after loading, torch AdamW's per-parameter steps read 0 (seen on an
    H200), which would restart Adam's bias correction (the losses drifted from the 4th step after the
    resume). Proved on a GPU by tests/test_gpu.py::test_pause_and_resume_on_gpu (bit-for-bit losses);
    the refill itself by tests/test_mcore_workarounds.py::test_adam_steps_refilled_after_a_load.
    """
    inner = _torch_adamw(optimizer)
    if inner is None:
        return
    for group in inner.param_groups:
        if "step" in group:
            for p in group["params"]:
                inner.state[p]["step"].fill_(float(group["step"]))


def check_grad_norm_before_update(optimizer, check: Callable[[float], None]) -> None:
    """Have a Megatron-Core optimizer call check(grad_norm) after computing the norm, before its update.

    In bf16 without a loss scale, Megatron-Core 0.16.1's optimizer has no grad scaler, so its step()
    never looks for inf/NaN (``found_inf`` is checked only with a scaler): a NaN gradient norm leaves
    the clipping off (the clip coefficient compares False) and Adam writes NaN into the weights.
    ChainedOptimizer.step(), which get_megatron_optimizer returns for Megatron's DDP, computes the
    norm through self.get_grad_norm() before clipping and step_with_ready_grads(); check raises there,
    so the weights stay as they were. A finite norm is returned unchanged: the step is the library's
    own. Proved by tests/test_mcore_workarounds.py::test_grad_norm_checked_before_the_update (on
    megatron-core's ChainedOptimizer.step).
    """
    computed = optimizer.get_grad_norm

    @functools.wraps(computed)
    def get_grad_norm():
        norm = computed()
        check(float(norm))
        return norm

    optimizer.get_grad_norm = get_grad_norm


def _keep_tensors(set_states):
    @functools.wraps(set_states)
    def set_main_param_and_optimizer_states(self, model_param, tensors):
        return set_states(self, model_param, {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)})

    set_main_param_and_optimizer_states.keeps_tensors_only = True
    return set_main_param_and_optimizer_states


def skip_non_tensor_state_on_load() -> bool:
    """Let the distributed optimizer load a dp_reshardable state with the precision-aware optimizer.

    A ``CKPT_FORMAT=fast`` (dp_reshardable) state holds, per parameter, its tensors beside plain
    entries (``padding``, ``gbuf_local_start``, ``gbuf_local_end``). Megatron-Core 0.16.1's
    ``DistributedOptimizer._set_main_param_and_optimizer_states`` hands every entry to TE FusedAdam's
    ``set_scaled_state`` when ``use_precision_aware_optimizer`` is on, which fails on the first
    plain one (``AttributeError: 'bool' object has no attribute 'dtype'``, seen on an H200); without
    it, only the tensors are copied. Megatron-Core 0.17 skips the plain entries itself (Megatron-LM
    #3537). This passes on the tensors only, which changes nothing in the other path. Applied, once,
    for megatron-core below 0.17; returns whether it is in place. Proved by
    tests/test_mcore_workarounds.py::test_precision_aware_load_skips_plain_entries (on megatron-core's
    own method).
    """
    from megatron.core import __version__ as mcore_version
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    current = DistributedOptimizer._set_main_param_and_optimizer_states
    if getattr(current, "keeps_tensors_only", False):
        return True
    if tuple(int(x) for x in mcore_version.split(".")[:2]) >= (0, 17):
        return False
    DistributedOptimizer._set_main_param_and_optimizer_states = _keep_tensors(current)
    return True


def install_wgrad_kernel() -> str:
    """Point Megatron-Core's linear layers at a wgrad-accumulation kernel; say which one.

    Megatron-Core 0.16.1's gradient_accumulation_fusion takes its kernel from Apex's
    ``fused_weight_gradient_mlp_cuda`` extension, absent without Apex or TransformerEngine; the
    kernel of benchmark/wgrad.py computes the same thing, so it is given to Megatron under the name
    it looks for. Called by benchmark.model.build_model when the fusion is on (GPU). Proved by
    tests/test_config.py::test_wgrad_kernel_install_names_its_source and, for the kernel,
    tests/test_gpu.py::test_wgrad_accumulation_into_fp32_main_grad.
    """
    from megatron.core.tensor_parallel import layers

    from benchmark import wgrad

    ours = "torch addmm(out_dtype=fp32)"
    installed = getattr(layers, "fused_weight_gradient_mlp_cuda", None)
    if getattr(installed, "wgrad_gemm_accum_fp32", None) is wgrad.wgrad_gemm_accum_fp32:
        return ours  # installed by an earlier model build in this process
    if layers._grad_accum_fusion_available:
        return "apex"
    layers.fused_weight_gradient_mlp_cuda = types.SimpleNamespace(
        wgrad_gemm_accum_fp32=wgrad.wgrad_gemm_accum_fp32, wgrad_gemm_accum_fp16=wgrad.wgrad_gemm_accum_fp16
    )
    layers._grad_accum_fusion_available = True
    return ours


def block_with_the_layers_norm(layer_spec, config):
    """The block of ``layer_spec`` layers with the layers' own norm class as its final norm.

    Megatron-Core 0.16.1's TransformerBlock, given a layer spec, builds its final norm from its module
    default ``LayerNormImpl`` (transformer/transformer_block.py), which is TE's norm wherever
    TransformerEngine imports, also for the local spec on a CPU (a CPU run in the container), where
    TE's kernel needs CUDA. Applied by benchmark/model.py to the local spec on a CPU; on a GPU the
    block's default stays, as the local spec's checkpoints hold its state.
    tests/test_model.py::test_local_spec_keeps_its_own_final_norm.
    """
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

    return TransformerBlockSubmodules(
        layer_specs=[layer_spec] * get_num_layers_to_build(config), layer_norm=layer_spec.submodules.input_layernorm
    )
