"""The Megatron-Core workarounds of benchmark/mcore_workarounds.py that can be checked on a CPU.

The optimizer ones act on the torch AdamW that Megatron-Core's optimizer holds as ``.optimizer``
without TransformerEngine or Apex; a namespace holding a torch AdamW stands in for that wrapper here.
"""

from __future__ import annotations

import math
import types

import pytest
import torch

from benchmark import mcore_workarounds


def _wrapped_adamw(weights=((2, 3), (3,))):
    params = [torch.nn.Parameter(torch.ones(*shape)) for shape in weights]
    return types.SimpleNamespace(optimizer=torch.optim.AdamW(params, lr=0.1)), params


def test_fused_adamw_switch():
    wrapper, _ = _wrapped_adamw()
    mcore_workarounds.use_fused_adamw(wrapper)
    assert all(g["fused"] is True and g["foreach"] is False for g in wrapper.optimizer.param_groups)
    other = types.SimpleNamespace(optimizer=torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1))
    mcore_workarounds.use_fused_adamw(other)  # not torch's AdamW (TE's or Apex's Adam): left alone
    assert "fused" not in other.optimizer.param_groups[0] or not other.optimizer.param_groups[0]["fused"]


def test_empty_adam_state_before_a_load():
    wrapper, params = _wrapped_adamw()
    mcore_workarounds.init_empty_adam_state(wrapper)
    for p in params:
        state = wrapper.optimizer.state[p]
        assert state["step"].shape == () and state["step"].dtype == torch.float32 and state["step"] == 0
        assert torch.equal(state["exp_avg"], torch.zeros_like(p))
        assert torch.equal(state["exp_avg_sq"], torch.zeros_like(p))
    # A state that exists already is kept.
    wrapper.optimizer.state[params[0]]["step"].fill_(7.0)
    mcore_workarounds.init_empty_adam_state(wrapper)
    assert wrapper.optimizer.state[params[0]]["step"] == 7


def test_adam_steps_refilled_after_a_load():
    wrapper, params = _wrapped_adamw()
    for p in params:
        p.grad = torch.ones_like(p)
    wrapper.optimizer.step()
    # What a load leaves behind: the group's step is right, the per-parameter ones read 0.
    for p in params:
        wrapper.optimizer.state[p]["step"].fill_(0.0)
    wrapper.optimizer.param_groups[0]["step"] = 5
    mcore_workarounds.refill_adam_steps(wrapper)
    assert [float(wrapper.optimizer.state[p]["step"]) for p in params] == [5.0, 5.0]


class _StubOptimizer:
    """What megatron-core's ChainedOptimizer.step() calls on each optimizer it chains."""

    def __init__(self, norm: float):
        self.config = types.SimpleNamespace(
            clip_grad=1.0,
            log_num_zeros_in_grad=False,
            use_precision_aware_optimizer_no_fp8_or_ds_fp8=False,
            overlap_param_gather_with_optimizer_step=False,
        )
        self.param = torch.nn.Parameter(torch.ones(3))
        self.param.grad = torch.full((3,), norm)
        self.norm, self.updates = norm, 0

    def prepare_grads(self) -> bool:
        return False  # no grad scaler in bf16: nothing looks for inf/NaN here

    def get_grad_norm(self) -> float:
        return self.norm

    def get_parameters(self):
        return [self.param]

    def step_with_ready_grads(self) -> bool:
        self.updates += 1
        return True


@pytest.mark.parametrize("norm", [float("nan"), float("inf")])
def test_grad_norm_checked_before_the_update(norm):
    """megatron-core's ChainedOptimizer.step() computes the norm before it updates; the check runs there."""
    from megatron.core.optimizer.optimizer import ChainedOptimizer

    class NonFinite(Exception):
        pass

    def check(grad_norm: float) -> None:
        if not math.isfinite(grad_norm):
            raise NonFinite(grad_norm)

    stub = _StubOptimizer(norm)
    chained = ChainedOptimizer([stub])
    mcore_workarounds.check_grad_norm_before_update(chained, check)
    with pytest.raises(NonFinite):
        chained.step()
    assert stub.updates == 0
    # A finite norm: the library's own step, with its norm returned (unclipped: its clipping asserts
    # CUDA gradients).
    stub.norm, stub.config.clip_grad = 0.5, 0.0
    success, grad_norm, _ = chained.step()
    assert success and grad_norm == 0.5 and stub.updates == 1


def _dist_optimizer_stand_in(precision_aware: bool):
    """What DistributedOptimizer._set_main_param_and_optimizer_states reads of itself: the param maps,
    the config flag, and an optimizer whose set_scaled_state reads .dtype as TE FusedAdam's does."""
    param = torch.nn.Parameter(torch.zeros(4))
    master = torch.zeros(4)
    written = {}

    def set_scaled_state(p, key, value):
        assert p is master
        if value.dtype != torch.float32:  # TE's FusedAdam reads the value's dtype first
            value = value.float()
        written[key] = value.clone()

    optimizer = types.SimpleNamespace(
        param_groups=[{"params": [master]}], state={master: {}}, set_scaled_state=set_scaled_state
    )
    if not precision_aware:
        optimizer.state[master] = {"exp_avg": torch.zeros(4), "exp_avg_sq": torch.zeros(4)}
    stand_in = types.SimpleNamespace(
        model_param_group_index_map={param: (0, 0)},
        optimizer=optimizer,
        config=types.SimpleNamespace(use_precision_aware_optimizer_no_fp8_or_ds_fp8=precision_aware),
    )
    return stand_in, param, master, written


def test_precision_aware_load_skips_plain_entries():
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    # One parameter's entry of a dp_reshardable state, as the fast checkpoint format stores it.
    entry = {
        "param": torch.full((4,), 2.0),
        "exp_avg": torch.full((4,), 3.0),
        "exp_avg_sq": torch.full((4,), 4.0),
        "padding": False,
        "gbuf_local_start": 0,
        "gbuf_local_end": 4,
    }
    original = DistributedOptimizer._set_main_param_and_optimizer_states
    original = getattr(original, "__wrapped__", original)
    stand_in, param, _, _ = _dist_optimizer_stand_in(precision_aware=True)
    with pytest.raises(AttributeError, match="'bool' object has no attribute 'dtype'"):
        original(stand_in, param, dict(entry))  # megatron-core 0.16.1 as it comes

    assert mcore_workarounds.skip_non_tensor_state_on_load()
    assert mcore_workarounds.skip_non_tensor_state_on_load()  # idempotent: wrapped once
    patched = DistributedOptimizer._set_main_param_and_optimizer_states
    assert patched.__wrapped__ is original
    stand_in, param, _, written = _dist_optimizer_stand_in(precision_aware=True)
    patched(stand_in, param, dict(entry))
    assert sorted(written) == ["exp_avg", "exp_avg_sq", "master_param"]
    assert torch.equal(written["master_param"], entry["param"])
    assert torch.equal(written["exp_avg_sq"], entry["exp_avg_sq"])
    # Without the precision-aware optimizer the tensors are copied into the fp32 master and moments.
    stand_in, param, master, _ = _dist_optimizer_stand_in(precision_aware=False)
    patched(stand_in, param, dict(entry))
    assert torch.equal(master, entry["param"])
    assert torch.equal(stand_in.optimizer.state[master]["exp_avg"], entry["exp_avg"])
