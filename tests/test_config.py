"""Configuration: presets, precedence, derived values and the validation messages."""

import argparse
import math

import pytest

from benchmark.config import ConfigError, add_arguments, build_config, grad_accumulation_steps, validate
from tests.helpers import raw_rcps


def cfg_from(argv=(), env=None, preset=None):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return build_config(parser.parse_args(list(argv)), env=env or {}, preset=preset)


def test_llama31_8b_preset_is_spec():
    cfg = cfg_from(env={"PREPROCESSED_PATH": "", "TOKENIZER_PATH": ""}, preset="smoke")  # smoke needs no paths
    assert cfg.preset == "smoke"
    with pytest.raises(ConfigError, match="PREPROCESSED_PATH is not set"):
        cfg_from(preset="llama31_8b")


def test_8b_values_and_rcp_defaults(tmp_path):
    for name in (
        "c4-train.en_6_text_document",
        "c4-train.en_7_text_document",
        "c4-validation-91205-samples.en_text_document",
    ):
        (tmp_path / f"{name}.idx").write_bytes(b"")
    env = {"PREPROCESSED_PATH": str(tmp_path), "TOKENIZER_PATH": str(tmp_path)}
    cfg = cfg_from(env=env, preset="llama31_8b")
    m, t = cfg.model, cfg.train
    assert (m.num_layers, m.hidden_size, m.ffn_hidden_size) == (32, 4096, 14336)
    assert (m.num_attention_heads, m.num_query_groups, m.head_dim) == (32, 8, 128)
    assert (m.seq_length, m.rotary_base, m.rope_scaling_factor, m.norm_eps) == (8192, 500000, 8.0, 1e-5)
    assert (t.global_batch_size, t.lr, t.warmup_samples, t.warmup_steps) == (16, 4e-4, 256, 16)
    assert t.decay_steps == 1_200_000 - 16
    assert t.min_lr == pytest.approx(4e-5)
    assert (t.eval_every, t.eval_samples, t.target) == (12288, 1024, 3.3)
    # twice the RCP checker's olympic mean (161,109.3), rounded up to an eval boundary: 27 x 12,288
    rcps = raw_rcps()
    assert t.max_train_samples == math.ceil(2 * rcps[16]["olympic"] / 12288) * 12288 == 331_776
    assert (t.lr, t.warmup_samples) == (rcps[16]["lr"], rcps[16]["warmup"])
    # GBS 64 takes its own RCP learning rate and warmup, from the RCP file's Hyperparams
    cfg64 = cfg_from(["--gbs", "64"], env=env, preset="llama31_8b")
    assert (cfg64.train.lr, cfg64.train.warmup_samples) == (rcps[64]["lr"], rcps[64]["warmup"]) == (8e-4, 6144)
    assert cfg64.train.warmup_steps == 96
    assert cfg64.train.max_train_samples == math.ceil(2 * rcps[64]["olympic"] / 12288) * 12288


def test_gbs_between_rcps_needs_lr_but_takes_the_interpolated_abort_cap(tmp_path):
    for name in (
        "c4-train.en_6_text_document",
        "c4-train.en_7_text_document",
        "c4-validation-91205-samples.en_text_document",
    ):
        (tmp_path / f"{name}.idx").write_bytes(b"")
    env = {"PREPROCESSED_PATH": str(tmp_path), "TOKENIZER_PATH": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"GBS=48 has no reference convergence point of its own.*set LR"):
        cfg_from(["--gbs", "48"], env=env, preset="llama31_8b")
    cfg = cfg_from(["--gbs", "48", "--lr", "8e-4", "--warmup-samples", "4096"], env=env, preset="llama31_8b")
    rcps = raw_rcps()
    halfway = (rcps[32]["olympic"] + rcps[64]["olympic"]) / 2  # the checker's interpolation at GBS 48
    assert cfg.train.max_train_samples == math.ceil(2 * halfway / 12288) * 12288 == 405_504


def test_precedence_preset_env_flag():
    assert cfg_from(preset="smoke").train.global_batch_size == 16
    assert cfg_from(env={"GBS": "32"}, preset="smoke").train.global_batch_size == 32
    assert cfg_from(["--gbs", "64"], env={"GBS": "32"}, preset="smoke").train.global_batch_size == 64
    assert cfg_from(["--preset", "smoke"], env={"LR": "1e-3", "SEED": "7"}).train.lr == 1e-3
    assert cfg_from(env={"SEED": "7", "PRESET": "smoke"}).train.seed == 7


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--gbs", "12"], {}, r"GBS=12 is not divisible by MBS x data-parallel size = 8 x 1"),
        (["--num-kv-groups", "3"], {}, r"NUM_HEADS=4 is not divisible by NUM_KV_GROUPS=3"),
        (["--hidden-size", "130"], {}, r"HIDDEN_SIZE=130 is not divisible by NUM_HEADS=4"),
        (["--target", "0"], {}, r"TARGET=0.0 must be greater than 0"),
        ([], {"PRESET": "llama3_70b"}, r"PRESET='llama3_70b' is unknown: choose one of llama31_8b, smoke"),
        ([], {"GBS": "sixteen"}, r"GBS='sixteen' is not a valid int"),
        (["--gbs", "24"], {"PRESET": "llama31_8b"}, r"GBS=24 has no reference convergence point"),
        (["--eval-every", "1000"], {}, r"EVAL_EVERY=1000 is not a multiple of GBS=16"),
        (["--preprocessed-path", "/nonexistent"], {}, r"PREPROCESSED_PATH=/nonexistent lacks c4-train.en_6"),
        ([], {"FP8": "maybe"}, r"FP8='maybe' is not a valid bool"),
        ([], {"RECOMPUTE": "1", "RECOMPUTE_LAYERS": "5"}, r"RECOMPUTE_LAYERS=5 must be between 0 .* the 4 layers"),
        ([], {"RECOMPUTE_LAYERS": "2"}, r"RECOMPUTE_LAYERS=2 acts only with RECOMPUTE=1"),
    ],
)
def test_validation_names_knob_and_fix(argv, env, message):
    with pytest.raises(ConfigError, match=message):
        cfg_from(argv, env=env)


def test_benchmark_area_names_the_training_files(tmp_path):
    env = {"PREPROCESSED_PATH": str(tmp_path), "TOKENIZER_PATH": str(tmp_path)}
    for name in ("c4-train.en_6_text_document", "c4-validation-91205-samples.en_text_document"):
        (tmp_path / f"{name}.idx").write_bytes(b"")
    # The 8B default is c4-train.en_6 alone, so a folder without en_7 is complete.
    cfg = cfg_from(env=env, preset="llama31_8b")
    assert (cfg.data.benchmark_area, cfg.data.train_files) == ("en6", ["c4-train.en_6_text_document"])
    with pytest.raises(ConfigError, match=r"lacks c4-train.en_7_text_document.bin/.idx \(BENCHMARK_AREA=en6\+en7\)"):
        cfg_from(env={**env, "BENCHMARK_AREA": "en6+en7"}, preset="llama31_8b")
    (tmp_path / "c4-train.en_7_text_document.idx").write_bytes(b"")
    cfg = cfg_from(env={**env, "BENCHMARK_AREA": "en6+en7"}, preset="llama31_8b")
    assert cfg.data.train_files == ["c4-train.en_6_text_document", "c4-train.en_7_text_document"]
    # The smoke preset keeps both groups of its embedded data set.
    assert cfg_from(preset="smoke").data.train_files == cfg.data.train_files
    with pytest.raises(ConfigError, match=r"BENCHMARK_AREA='en7' must be one of en6, en6\+en7"):
        cfg_from(env={**env, "BENCHMARK_AREA": "en7"}, preset="llama31_8b")


def test_world_size_and_accumulation():
    cfg = cfg_from(preset="smoke")
    assert grad_accumulation_steps(cfg, 1) == 2
    assert grad_accumulation_steps(cfg, 2) == 1
    with pytest.raises(ConfigError, match=r"GBS=16 is not divisible by MBS x data-parallel size = 8 x 4"):
        validate(cfg, world_size=4)
    cfg.parallel.tensor_parallel = 2
    with pytest.raises(ConfigError, match="3 processes cannot be split into TP x PP x CP = 2"):
        validate(cfg, world_size=3)


def test_validation_file_is_found_when_not_named(tmp_path):
    for name in (
        "c4-train.en_6_text_document",
        "c4-train.en_7_text_document",
        "c4-validation-269-samples.en_text_document",
    ):
        (tmp_path / f"{name}.idx").write_bytes(b"")
    env = {"PREPROCESSED_PATH": str(tmp_path), "TOKENIZER_PATH": str(tmp_path)}
    assert cfg_from(env=env).data.valid_file == "c4-validation-269-samples.en_text_document"
    (tmp_path / "c4-validation-91205-samples.en_text_document.idx").write_bytes(b"")
    with pytest.raises(ConfigError, match="holds 2 validation files .*: name one with --valid-file"):
        cfg_from(env=env)
    # the 8B preset names the benchmark's validation file itself
    assert cfg_from(env=env, preset="llama31_8b").data.valid_file == "c4-validation-91205-samples.en_text_document"


@pytest.mark.parametrize(
    "env, method, layers",
    [({}, None, None), ({"RECOMPUTE": "1"}, "uniform", 1), ({"RECOMPUTE": "1", "RECOMPUTE_LAYERS": "3"}, "block", 3)],
)
def test_recompute_and_wgrad_fusion_reach_megatron(env, method, layers):
    """RECOMPUTE[_LAYERS] become Megatron's recompute settings; the CPU model never fuses wgrad."""
    from benchmark.model import transformer_config

    cfg = cfg_from(env={**env, "FUSIONS": "on"})
    tc = transformer_config(cfg, bf16=False, use_cpu_initialization=True)
    assert (tc.recompute_method, tc.recompute_num_layers) == (method, layers)
    assert tc.recompute_granularity == ("full" if method else None)
    # the CPU engine has no fp32 main_grad buffers for the fused weight-gradient GEMM to write into
    assert tc.gradient_accumulation_fusion is False
    assert tc.bias_activation_fusion is True  # FUSIONS=on still applies the compiled SwiGLU


def test_wgrad_fusion_is_a_parameter(monkeypatch):
    """Where the fused weight-gradient GEMM would run (GPU, fusions on), wgrad_fusion=False turns it off."""
    from benchmark import wgrad
    from benchmark.model import transformer_config

    monkeypatch.setattr(wgrad, "available", lambda: True)  # as on a GPU
    cfg = cfg_from(env={"FUSIONS": "on", "LAYER_SPEC": "local"})
    assert transformer_config(cfg, bf16=True, use_cpu_initialization=False).gradient_accumulation_fusion is True
    off = transformer_config(cfg, bf16=True, use_cpu_initialization=False, wgrad_fusion=False)
    assert off.gradient_accumulation_fusion is False


def test_wgrad_kernel_install_names_its_source(monkeypatch):
    """install_wgrad_kernel() hands Megatron our kernel where Apex's is missing, once, and says which one runs."""
    from megatron.core.tensor_parallel import layers

    from benchmark import wgrad
    from benchmark.mcore_workarounds import install_wgrad_kernel

    monkeypatch.setattr(layers, "_grad_accum_fusion_available", False)
    monkeypatch.delattr(layers, "fused_weight_gradient_mlp_cuda", raising=False)
    assert install_wgrad_kernel() == "torch addmm(out_dtype=fp32)"
    assert layers._grad_accum_fusion_available is True
    assert layers.fused_weight_gradient_mlp_cuda.wgrad_gemm_accum_fp32 is wgrad.wgrad_gemm_accum_fp32
    assert install_wgrad_kernel() == "torch addmm(out_dtype=fp32)"  # a second model build: still ours
    monkeypatch.setattr(layers, "fused_weight_gradient_mlp_cuda", object())  # Apex's extension
    assert install_wgrad_kernel() == "apex"


def test_wgrad_kernel_with_fp32_inputs_on_cpu():
    """With PRECISION=fp32 the kernel gets fp32 operands: a plain in-place GEMM, any device."""
    import torch

    from benchmark import wgrad

    g = torch.Generator().manual_seed(0)
    x, dy, main_grad = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((32, 8), (32, 6), (6, 8)))
    expected = main_grad + dy.t() @ x
    main_grad = main_grad.float()
    pointer = main_grad.data_ptr()
    wgrad.wgrad_gemm_accum_fp32(x.float(), dy.float(), main_grad)
    assert main_grad.data_ptr() == pointer
    torch.testing.assert_close(main_grad.double(), expected, rtol=1e-5, atol=1e-5)


def test_the_readme_names_the_knobs_that_are_flags_only():
    """The README's list of the knobs without an environment variable is the configuration's own."""
    import re
    from pathlib import Path

    from benchmark import config as cfgmod

    flags_only = sorted(cfgmod._flag_name(f) for _, f in cfgmod.knob_fields() if not f.metadata.get("env"))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("Every training knob is a flag of `python -m benchmark.train`")
    paragraph = readme[start : readme.index("\n\n", start)]
    named = re.findall(r"`(--[a-z0-9-]+)`", paragraph)
    assert sorted(named) == flags_only
