"""The engines' interface, and their step on the CPU: a non-finite gradient norm stops it before the
weights change."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from tests.helpers import smoke_config

TINY = {
    "NUM_LAYERS": "1",
    "HIDDEN_SIZE": "64",
    "FFN_HIDDEN_SIZE": "192",
    "NUM_HEADS": "4",
    "NUM_KV_GROUPS": "2",
    "SEQ_LENGTH": "32",
    "MBS": "4",
    "GBS": "4",
    "DEVICE": "cpu",
}


def test_both_engines_have_the_interfaces_methods():
    """Each Engine method exists on both engines with the Protocol's parameters (the GPU one is built on GPUs only)."""
    from benchmark.engine import Engine, LocalEngine, MegatronEngine

    for name in ("train_step", "evaluate", "sharded_state_dict", "load_sharded_state_dict"):
        want = inspect.signature(getattr(Engine, name))
        for cls in (LocalEngine, MegatronEngine):
            got = inspect.signature(getattr(cls, name))
            assert list(got.parameters) == list(want.parameters), (cls.__name__, name)
            assert [p.default for p in got.parameters.values()] == [p.default for p in want.parameters.values()]
        assert hasattr(MegatronEngine, "optimizer_format") and hasattr(LocalEngine, "optimizer_format")


def test_nan_gradient_raises_and_leaves_the_local_engine_weights_unchanged(smoke_data, tmp_path):
    from benchmark.engine import Engine, LocalEngine, NonFiniteError, make_engine
    from benchmark.model import build_model
    from benchmark.train import distributed

    cfg = smoke_config(smoke_data, tmp_path, TINY)
    with distributed(cfg) as device:
        model, _ = build_model(cfg, 256, bf16=False, use_cpu_initialization=True)
        engine = make_engine(cfg, model, device, bf16=False)
        assert isinstance(engine, LocalEngine) and isinstance(engine, Engine)
        x = torch.randint(0, 256, (4, 33), generator=torch.Generator().manual_seed(0))
        batch = [{"tokens": x[:, :-1], "labels": x[:, 1:]}]
        before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        # One parameter's gradient turns NaN in the backward; the loss itself stays finite.
        weight = next(p for p in model.parameters() if p.ndim > 1)
        hook = weight.register_hook(lambda grad: grad * float("nan"))
        with pytest.raises(NonFiniteError, match="gradient norm nan"):
            engine.train_step(batch, 1e-3)
        hook.remove()
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert not engine.optimizer.state  # Adam took no step
        # The next, finite step trains as usual.
        loss, grad_norm = engine.train_step(batch, 1e-3)
        assert torch.isfinite(torch.tensor([loss, grad_norm])).all()


def test_the_gpu_optimizer_is_precision_aware_when_the_knob_is_on(smoke_data, tmp_path, monkeypatch):
    """What MegatronEngine hands Megatron-Core's OptimizerConfig (built on GPUs only): TE's FusedAdam keeps
    whole fp32 master weights when PRECISION_AWARE_OPTIMIZER is on, not when off; benchmark.perf --opt wins."""
    from megatron.core.optimizer import OptimizerConfig

    from benchmark import config as cfgmod
    from benchmark.engine import optimizer_settings

    monkeypatch.setattr(cfgmod, "te_available", lambda: True)
    monkeypatch.setattr(cfgmod, "cuda_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    chosen = {"use_precision_aware_optimizer": True, "store_param_remainders": False}
    on = optimizer_settings(
        smoke_config(smoke_data, tmp_path, {"DEVICE": "cuda", "PRECISION_AWARE_OPTIMIZER": "on"}), True
    )
    assert {k: on[k] for k in chosen} == chosen
    # Every setting is an OptimizerConfig field (built here only where TE is not needed: off).
    assert set(on) <= {f.name for f in dataclasses.fields(OptimizerConfig)}
    assert (on["optimizer"], on["bf16"], on["params_dtype"], on["clip_grad"]) == ("adam", True, torch.bfloat16, 1.0)
    default = smoke_config(smoke_data, tmp_path, {"DEVICE": "cuda"})
    assert default.parallel.precision_aware_optimizer == "on"  # auto, under the TE spec in bf16
    assert {k: optimizer_settings(default, True)[k] for k in chosen} == chosen
    off = optimizer_settings(
        smoke_config(smoke_data, tmp_path, {"DEVICE": "cuda", "PRECISION_AWARE_OPTIMIZER": "off"}), True
    )
    assert not set(chosen) & set(off)
    assert not OptimizerConfig(**off).use_precision_aware_optimizer
    local = optimizer_settings(smoke_config(smoke_data, tmp_path, {"DEVICE": "cuda", "LAYER_SPEC": "local"}), True)
    assert not set(chosen) & set(local)
    overridden = optimizer_settings(
        smoke_config(smoke_data, tmp_path, {"DEVICE": "cuda", "PRECISION_AWARE_OPTIMIZER": "on"}),
        True,
        {"use_precision_aware_optimizer": False, "main_grads_dtype": torch.bfloat16},
    )
    assert (overridden["use_precision_aware_optimizer"], overridden["main_grads_dtype"]) == (False, torch.bfloat16)
