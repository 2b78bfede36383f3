"""LAYER_SPEC, FP8, CP, sequence parallelism and the precision-aware optimizer: selection, validation and the
TransformerConfig they make.

TransformerEngine is not installed on the CPU machines, so "TE is here" and "a GPU is here" are
simulated by replacing benchmark.config.te_available / cuda_available; the real TE path runs in the
GPU tests (tests/test_gpu_te.py).
"""

from __future__ import annotations

import argparse
import os
import sys

import pytest

from benchmark import config as cfgmod
from benchmark.config import ConfigError, add_arguments, build_config


def cfg_from(env=None, argv=()):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return build_config(parser.parse_args(list(argv)), env={"PRESET": "smoke", **(env or {})})


@pytest.fixture
def gpu_with_te(monkeypatch):
    monkeypatch.setattr(cfgmod, "te_available", lambda: True)
    monkeypatch.setattr(cfgmod, "cuda_available", lambda: True)


@pytest.fixture
def gpu_without_te(monkeypatch):
    monkeypatch.setattr(cfgmod, "te_available", lambda: False)
    monkeypatch.setattr(cfgmod, "cuda_available", lambda: True)


def test_auto_resolves_to_what_runs_here(monkeypatch):
    monkeypatch.setattr(cfgmod, "te_available", lambda: False)
    monkeypatch.setattr(cfgmod, "cuda_available", lambda: False)
    cfg = cfg_from()
    assert (cfg.parallel.device, cfg.parallel.layer_spec) == ("cpu", "local")
    monkeypatch.setattr(cfgmod, "cuda_available", lambda: True)
    cfg = cfg_from()
    assert (cfg.parallel.device, cfg.parallel.layer_spec) == ("cuda", "local")  # a GPU, but no TE
    monkeypatch.setattr(cfgmod, "te_available", lambda: True)
    cfg = cfg_from()
    assert (cfg.parallel.device, cfg.parallel.layer_spec) == ("cuda", "te")
    assert cfg_from({"DEVICE": "cpu"}).parallel.layer_spec == "local"  # TE's kernels are CUDA only
    assert cfg_from({"LAYER_SPEC": "local"}).parallel.layer_spec == "local"


def test_print_config_shows_the_resolved_spec(gpu_with_te, capsys):
    from benchmark.train import main

    assert main(["--print-config", "--preset", "smoke"]) == 0
    out = capsys.readouterr().out
    assert '"layer_spec": "te"' in out and '"device": "cuda"' in out


@pytest.mark.parametrize(
    "env, message",
    [
        ({"LAYER_SPEC": "transformer"}, r"LAYER_SPEC='transformer' must be one of auto, te, local"),
        ({"LAYER_SPEC": "te", "DEVICE": "cpu"}, r"LAYER_SPEC=te runs on GPUs only"),
        ({"FP8": "1", "DEVICE": "cpu"}, r"FP8=1 needs the TransformerEngine layer spec .* but this run is on CPU"),
        ({"FP8": "1", "DEVICE": "cpu", "FP8_RECIPE": "mxfp8"}, r"FP8_RECIPE='mxfp8' must be one of tensorwise"),
        ({"FP8_AMAX_ALGO": "mean"}, r"FP8_AMAX_ALGO='mean' must be one of most_recent, max"),
        ({"FP8_AMAX_HISTORY": "0"}, r"FP8_AMAX_HISTORY=0 must be 1 or more"),
        ({"FP8_ATTENTION": "1"}, r"FP8_ATTENTION=1 needs FP8=1 .*: set FP8=1, or FP8_ATTENTION=0"),
        ({"FP8_ATTENTION": "1", "DEVICE": "cpu"}, r"FP8_ATTENTION=1 needs FP8=1"),
        ({"SEQUENCE_PARALLEL": "yes"}, r"SEQUENCE_PARALLEL='yes' must be one of auto, on, off"),
        ({"SEQUENCE_PARALLEL": "on", "DEVICE": "cpu"}, r"SEQUENCE_PARALLEL=on needs the TransformerEngine layer spec"),
    ],
)
def test_spec_knobs_are_validated(env, message):
    with pytest.raises(ConfigError, match=message):
        cfg_from(env)


def test_te_and_fp8_without_transformer_engine(gpu_without_te):
    with pytest.raises(ConfigError, match=r"LAYER_SPEC=te needs TransformerEngine, which is not installed here"):
        cfg_from({"LAYER_SPEC": "te"})
    with pytest.raises(ConfigError, match=r"FP8=1 needs .* TransformerEngine is not installed here .*unset FP8"):
        cfg_from({"FP8": "1"})


def test_fp8_and_cp_rules_with_transformer_engine(gpu_with_te, monkeypatch):
    cfg = cfg_from({"FP8": "1"})
    p = cfg.parallel
    # NVIDIA's v5.1 llama31_8b defaults: current (tensorwise) scaling; FP8 weights where there is a gather
    assert (p.layer_spec, p.fp8, p.fp8_recipe, p.fp8_param_gather) == ("te", True, "tensorwise", "auto")
    with pytest.raises(ConfigError, match=r"FP8_PARAM_GATHER='1' must be one of auto, on, off"):
        cfg_from({"FP8": "1", "FP8_PARAM_GATHER": "1"})
    with pytest.raises(ConfigError, match=r"FP8=1 needs .* but LAYER_SPEC=local was asked for"):
        cfg_from({"FP8": "1", "LAYER_SPEC": "local"})
    with pytest.raises(ConfigError, match=r"FP8=1 trains with bf16 weights .* set PRECISION=bf16"):
        cfg_from({"FP8": "1", "PRECISION": "fp32"})
    with pytest.raises(ConfigError, match=r"FP8=1 needs GEMM sizes divisible by 16 .*HIDDEN_SIZE=120"):
        cfg_from({"FP8": "1", "HIDDEN_SIZE": "120", "NUM_HEADS": "4"})
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"SEQ_LENGTH=250 is not divisible by 2 x CP = 4"):
        cfg_from({"CP": "2", "SEQ_LENGTH": "250", "GBS": "16", "MBS": "8"})
    with pytest.raises(ConfigError, match=r"CP=2 needs the TransformerEngine layer spec .* LAYER_SPEC=local"):
        cfg_from({"CP": "2", "LAYER_SPEC": "local"})
    assert cfg_from({"CP": "2"}).parallel.context_parallel == 2
    tp2 = cfg_from({"TP": "2"})
    assert cfgmod.uses_sequence_parallel(tp2)  # auto: on with TP > 1 under the TE spec
    assert not cfgmod.uses_sequence_parallel(cfg_from({"TP": "2", "SEQUENCE_PARALLEL": "off"}))
    assert not cfgmod.uses_sequence_parallel(cfg_from({"TP": "2", "LAYER_SPEC": "local"}))
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError, match=r"SEQUENCE_PARALLEL=on splits activations .* needs TP > 1"):
        cfg_from({"SEQUENCE_PARALLEL": "on"})


def test_precision_aware_optimizer_auto_follows_spec_precision_and_fp8_weights(gpu_with_te, monkeypatch):
    """auto: on under the TE spec in bf16 with bf16 weights, off otherwise; FP8_PARAM_GATHER=auto leaves it
    to the data-parallel size, as it leaves FP8 weights."""
    monkeypatch.setenv("WORLD_SIZE", "1")
    on = cfg_from()
    assert (on.parallel.layer_spec, on.parallel.precision, on.parallel.precision_aware_optimizer) == (
        "te",
        "bf16",
        "on",
    )
    assert cfgmod.uses_precision_aware_optimizer(on, 1)
    assert cfg_from({"FP8": "1", "FP8_PARAM_GATHER": "off"}).parallel.precision_aware_optimizer == "on"
    for env in ({"LAYER_SPEC": "local"}, {"PRECISION": "fp32"}, {"FP8": "1", "FP8_PARAM_GATHER": "on"}):
        cfg = cfg_from(env)
        assert cfg.parallel.precision_aware_optimizer == "off", env
        assert not cfgmod.uses_precision_aware_optimizer(cfg, 1)
    assert cfg_from({"PRECISION_AWARE_OPTIMIZER": "off"}).parallel.precision_aware_optimizer == "off"
    fp8 = cfg_from({"FP8": "1"})
    assert fp8.parallel.precision_aware_optimizer == "auto"
    assert cfgmod.uses_precision_aware_optimizer(fp8, 1)  # one data-parallel rank: bf16 weights
    assert not cfgmod.uses_precision_aware_optimizer(fp8, 2)  # FP8 weights


def test_precision_aware_optimizer_on_is_refused_where_it_cannot_run(gpu_with_te, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert cfg_from({"PRECISION_AWARE_OPTIMIZER": "on"}).parallel.precision_aware_optimizer == "on"
    with pytest.raises(ConfigError, match=r"PRECISION_AWARE_OPTIMIZER='yes' must be one of auto, on, off"):
        cfg_from({"PRECISION_AWARE_OPTIMIZER": "yes"})
    with pytest.raises(
        ConfigError, match=r"PRECISION_AWARE_OPTIMIZER=on needs .* but LAYER_SPEC=local .*unset PRECISION_AWARE"
    ):
        cfg_from({"PRECISION_AWARE_OPTIMIZER": "on", "LAYER_SPEC": "local"})
    with pytest.raises(ConfigError, match=r"PRECISION_AWARE_OPTIMIZER=on needs .* but this run is on CPU"):
        cfg_from({"PRECISION_AWARE_OPTIMIZER": "on", "DEVICE": "cpu"})
    with pytest.raises(ConfigError, match=r"PRECISION_AWARE_OPTIMIZER=on keeps .* set PRECISION=bf16"):
        cfg_from({"PRECISION_AWARE_OPTIMIZER": "on", "PRECISION": "fp32"})
    with pytest.raises(ConfigError, match=r"PRECISION_AWARE_OPTIMIZER=on needs bf16 weights, .*FP8_PARAM_GATHER=on"):
        cfg_from({"PRECISION_AWARE_OPTIMIZER": "on", "FP8": "1", "FP8_PARAM_GATHER": "on"})
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"FP8_PARAM_GATHER=auto keeps them in FP8 with 2 data-parallel ranks:"):
        cfg_from({"PRECISION_AWARE_OPTIMIZER": "on", "FP8": "1"})
    assert cfg_from({"PRECISION_AWARE_OPTIMIZER": "on", "FP8": "1", "FP8_PARAM_GATHER": "off"})


def test_precision_aware_optimizer_is_off_on_cpu_and_without_te(gpu_without_te, monkeypatch):
    assert cfg_from().parallel.precision_aware_optimizer == "off"  # the local spec
    with pytest.raises(ConfigError, match=r"PRECISION_AWARE_OPTIMIZER=on needs .* TransformerEngine is not installed"):
        cfg_from({"PRECISION_AWARE_OPTIMIZER": "on"})
    monkeypatch.setattr(cfgmod, "cuda_available", lambda: False)
    cpu = cfg_from()
    assert (cpu.parallel.device, cpu.parallel.precision_aware_optimizer) == ("cpu", "off")


def test_te_and_fp8_reach_transformer_config(gpu_with_te, monkeypatch):
    """The fields Megatron-Core reads for the TE spec and FP8 (TE itself runs in the GPU tests)."""
    from megatron.core.models.common.embeddings import rope_utils

    from benchmark.model import describe_precision, transformer_config

    # TransformerConfig checks that TE's fused RoPE kernel exists; stand in for it here.
    monkeypatch.setattr(rope_utils, "fused_apply_rotary_pos_emb", lambda *a, **k: None)
    monkeypatch.setenv("WORLD_SIZE", "1")
    tc = transformer_config(cfg_from({"FP8": "1"}), bf16=True, use_cpu_initialization=False)
    # One data-parallel rank: no gather to shrink, so auto keeps bf16 weights.
    assert (tc.fp8, tc.fp8_recipe, tc.fp8_param, tc.tp_only_amax_red) == ("hybrid", "tensorwise", False, True)
    on = cfg_from({"FP8": "1", "FP8_PARAM_GATHER": "on"})
    assert transformer_config(on, bf16=True, use_cpu_initialization=False).fp8_param is True
    assert describe_precision(on, True) == "FP8 hybrid, tensorwise scaling, FP8 weights, bf16 elsewhere"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert transformer_config(cfg_from({"FP8": "1"}), bf16=True, use_cpu_initialization=False).fp8_param is True
    assert (
        transformer_config(cfg_from({"FP8": "1", "TP": "2"}), bf16=True, use_cpu_initialization=False).fp8_param
        is False
    )  # DP 1 again
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert (tc.apply_rope_fusion, tc.cross_entropy_loss_fusion, tc.cross_entropy_fusion_impl) == (True, True, "te")
    assert tc.fused_single_qkv_rope  # NVIDIA's v5.1 FUSED_QKV_ROPE
    assert tc.bf16 and not tc.sequence_parallel
    delayed = cfg_from(
        {
            "FP8": "1",
            "FP8_RECIPE": "delayed",
            "FP8_AMAX_HISTORY": "1024",
            "FP8_AMAX_ALGO": "max",
            "FP8_PARAM_GATHER": "off",
        }
    )
    tc = transformer_config(delayed, bf16=True, use_cpu_initialization=False)
    assert (tc.fp8_recipe, tc.fp8_amax_history_len, tc.fp8_amax_compute_algo, tc.fp8_param) == (
        "delayed",
        1024,
        "max",
        False,
    )
    assert describe_precision(delayed, True) == "FP8 hybrid, delayed scaling (amax history 1024, max), bf16 elsewhere"
    assert tc.fp8_dot_product_attention is False  # NVIDIA's v5.1 FP8 runs keep attention in 16 bits
    attention = cfg_from({"FP8": "1", "FP8_ATTENTION": "1"})
    assert attention.parallel.fp8_attention is True
    assert transformer_config(attention, bf16=True, use_cpu_initialization=False).fp8_dot_product_attention is True
    assert describe_precision(attention, True) == "FP8 hybrid, tensorwise scaling, FP8 attention, bf16 elsewhere"
    bf16 = transformer_config(cfg_from(), bf16=True, use_cpu_initialization=False)
    assert bf16.fp8 is None and bf16.cross_entropy_fusion_impl == "te"
    assert cfg_from().parallel.fp8_attention is False and not bf16.fp8_dot_product_attention
    off = transformer_config(cfg_from({"FUSIONS": "off"}), bf16=True, use_cpu_initialization=False)
    assert (off.apply_rope_fusion, off.cross_entropy_loss_fusion, off.cross_entropy_fusion_impl) == (
        False,
        False,
        "native",
    )
    assert not off.fused_single_qkv_rope
    local = transformer_config(cfg_from({"LAYER_SPEC": "local"}), bf16=True, use_cpu_initialization=False)
    assert (local.apply_rope_fusion, local.cross_entropy_fusion_impl, local.fused_single_qkv_rope) == (
        False,
        "native",
        False,
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    sp = transformer_config(cfg_from({"TP": "2"}), bf16=True, use_cpu_initialization=False)
    assert sp.sequence_parallel and sp.tensor_model_parallel_size == 2


def test_te_op_fuser_follows_fusions_at_tp_1(gpu_with_te, monkeypatch):
    """The MLP goes through TE's op fuser under the TE spec with fusions on at TP 1 only, as NVIDIA's
    v5.1 8B configurations set USE_TE_OPS, in bf16 or FP8 with tensorwise scaling."""
    from benchmark.model import uses_te_op_fuser

    assert uses_te_op_fuser(cfg_from())
    assert uses_te_op_fuser(cfg_from({"FP8": "1"}))  # tensorwise scaling keeps no state between steps
    # TE's fused ops refuse blockwise scaling; their delayed-scaling history would not be checkpointed.
    assert not uses_te_op_fuser(cfg_from({"FP8": "1", "FP8_RECIPE": "blockwise"}))
    assert not uses_te_op_fuser(cfg_from({"FP8": "1", "FP8_RECIPE": "delayed"}))
    assert not uses_te_op_fuser(cfg_from({"FUSIONS": "off"}))
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not uses_te_op_fuser(cfg_from({"TP": "2"}))
    assert not uses_te_op_fuser(cfg_from({"LAYER_SPEC": "local"}))


def test_checkpoint_names_are_the_same_under_both_specs(smoke_data, tmp_path):
    """The local spec maps its norm weights onto TE's fused names in dist-checkpoints, so a checkpoint
    of one spec loads into the other; pinned here on the names the local spec produces on CPU."""
    from benchmark.model import build_model
    from benchmark.train import distributed
    from tests.helpers import smoke_config

    cfg = smoke_config(smoke_data, tmp_path, {})
    with distributed(cfg):
        model, _ = build_model(cfg, 512, bf16=False, use_cpu_initialization=True)
        keys = {v.key for v in model.sharded_state_dict().values()}
    layer = "decoder.layers.self_attention.linear_qkv.layer_norm_weight"
    assert layer in keys and "decoder.layers.mlp.linear_fc1.layer_norm_weight" in keys
    assert not any("input_layernorm" in k or "pre_mlp_layernorm" in k for k in keys)
    assert {
        "decoder.layers.self_attention.linear_qkv.weight",
        "decoder.layers.mlp.linear_fc2.weight",
        "embedding.word_embeddings.weight",
        "output_layer.weight",
        "decoder.final_layernorm.weight",
    } <= keys


# Every documented value of the parallel knobs either builds and runs a tiny model here, or is refused
# with a message that names the knob: an advertised value that can do neither fails this test.
DOCUMENTED = (
    [("LAYER_SPEC", v) for v in ("auto", "te", "local")]
    + [("FP8", v) for v in ("0", "1")]
    + [("CP", v) for v in ("1", "2")]
    + [("PRECISION", v) for v in ("auto", "bf16", "fp32")]
    + [("FUSIONS", v) for v in ("auto", "on", "off")]
    + [("DEVICE", v) for v in ("auto", "cpu", "cuda")]
    + [("FP8_RECIPE", v) for v in cfgmod.FP8_RECIPES]
    + [("FP8_ATTENTION", v) for v in ("0", "1")]
    + [("SEQUENCE_PARALLEL", v) for v in ("auto", "on", "off")]
)


@pytest.mark.parametrize("name, value", DOCUMENTED, ids=[f"{n}={v}" for n, v in DOCUMENTED])
def test_every_documented_value_runs_or_is_refused(smoke_data, tmp_path, name, value):
    import torch

    from benchmark.data import load_tokenizer_info
    from benchmark.engine import make_engine
    from benchmark.model import build_model, padded_vocab_size
    from benchmark.train import distributed
    from tests.helpers import smoke_config

    env = {"DEVICE": "auto", name: value, "NUM_LAYERS": "1", "SEQ_LENGTH": "64", "MBS": "8"}
    try:
        cfg = smoke_config(smoke_data, tmp_path, env)
        with distributed(cfg) as device:
            vocab = padded_vocab_size(load_tokenizer_info(cfg.data.tokenizer).vocab_size, 1)
            bf16 = cfg.parallel.precision == "bf16"
            model, _ = build_model(cfg, vocab, bf16=False, use_cpu_initialization=True)
            engine = make_engine(cfg, model, device, bf16)
            x = torch.randint(0, vocab, (8, 65))
            loss, grad_norm = engine.train_step([{"tokens": x[:, :-1], "labels": x[:, 1:]}], 1e-3)
    except ConfigError as err:
        assert name in str(err) or value in str(err), str(err)
        return
    assert abs(loss - torch.log(torch.tensor(float(vocab))).item()) < 1.0 and grad_norm > 0


def test_fp8_attention_under_tensorwise_takes_delayed_scaling_before_sm100(gpu_with_te, monkeypatch):
    from benchmark import model

    hopper, blackwell = (9, 0), (10, 0)
    tensorwise = cfg_from({"FP8": "1", "FP8_ATTENTION": "1"})
    assert model.attention_fp8_settings(tensorwise, hopper) == {
        "NVTE_DPA_FP8_RECIPE": "DelayedScaling",
        "NVTE_DPA_FP8DS_AMAX_HISTLEN": "1",
        "NVTE_DPA_FP8DS_AMAX_ALGO": "most_recent",
    }
    longer = cfg_from({"FP8": "1", "FP8_ATTENTION": "1", "FP8_AMAX_HISTORY": "16", "FP8_AMAX_ALGO": "max"})
    assert model.attention_fp8_settings(longer, hopper)["NVTE_DPA_FP8DS_AMAX_HISTLEN"] == "16"
    assert model.attention_fp8_settings(longer, hopper)["NVTE_DPA_FP8DS_AMAX_ALGO"] == "max"
    # Blackwell has the tensorwise kernels; delayed scaling brings its own; without FP8 attention, nothing.
    assert model.attention_fp8_settings(tensorwise, blackwell) == {}
    delayed = cfg_from({"FP8": "1", "FP8_ATTENTION": "1", "FP8_RECIPE": "delayed"})
    assert model.attention_fp8_settings(delayed, hopper) == {}
    assert model.attention_fp8_settings(cfg_from({"FP8": "1"}), hopper) == {}

    # Applied: to the environment and, once TE's attention module is imported, to its globals; a later
    # model without them gets the user's own environment back (here: the user set a history of 4).
    fake = type(sys)("fake_te_attention")
    fake._dpa_fp8_recipe, fake._dpa_fp8ds_amax_histlen, fake._dpa_fp8ds_amax_algo = "", 1, "most_recent"
    monkeypatch.setitem(sys.modules, model._TE_ATTENTION_MODULE, fake)
    users = {"NVTE_DPA_FP8_RECIPE": None, "NVTE_DPA_FP8DS_AMAX_HISTLEN": "4", "NVTE_DPA_FP8DS_AMAX_ALGO": None}
    monkeypatch.setattr(model, "_USERS_ATTENTION_SETTINGS", users)
    for name in users:
        monkeypatch.delenv(name, raising=False)
    model.apply_attention_fp8_settings(model.attention_fp8_settings(longer, hopper))
    assert (fake._dpa_fp8_recipe, fake._dpa_fp8ds_amax_histlen, fake._dpa_fp8ds_amax_algo) == (
        "DelayedScaling",
        16,
        "max",
    )
    assert os.environ["NVTE_DPA_FP8_RECIPE"] == "DelayedScaling" and os.environ["NVTE_DPA_FP8DS_AMAX_HISTLEN"] == "16"
    model.apply_attention_fp8_settings({})
    assert (fake._dpa_fp8_recipe, fake._dpa_fp8ds_amax_histlen, fake._dpa_fp8ds_amax_algo) == ("", 4, "most_recent")
    assert "NVTE_DPA_FP8_RECIPE" not in os.environ and os.environ["NVTE_DPA_FP8DS_AMAX_HISTLEN"] == "4"
