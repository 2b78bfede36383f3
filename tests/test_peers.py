"""benchmark.peers: the transformers peers run on the CPU, print benchmark.perf's JSON fields, count
FLOPs with benchmark.flops, and train the same model as the benchmark's GPTModel."""

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.config import ModelConfig, build_config
from benchmark.flops import flops_per_token
from benchmark.hf_mapping import LlamaShape, megatron_to_hf
from benchmark.model import build_model
from benchmark.peers import common, hf_llama
from benchmark.train import distributed, seed_everything

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--device",
    "cpu",
    "--hidden",
    "64",
    "--ffn",
    "128",
    "--heads",
    "4",
    "--kv-heads",
    "2",
    "--vocab",
    "256",
    "--layers",
    "2",
    "--seq",
    "64",
    "--steps",
    "2",
    "--warmup",
    "1",
]
# The same shape as benchmark.config's ModelConfig.
TINY_MODEL = dict(
    num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4, num_query_groups=2, seq_length=64
)
# The model shape, the last fields of both benchmark.perf's and the peers' lines.
SHAPE_FIELDS = ["hidden", "ffn", "heads", "kv_heads", "vocab"]


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    # Not the distributed variables an earlier test in this process may have left set.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )


def _perf_fields() -> list[str]:
    """The keys of the `record` dict that benchmark/perf.py prints, read from its source."""
    tree = ast.parse((REPO / "benchmark" / "perf.py").read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict)
            and any(isinstance(t, ast.Name) and t.id == "record" for t in node.targets)
        ):
            return [k.value for k in node.value.keys]
    raise AssertionError("benchmark/perf.py has no `record = {...}`")


def _check_line(stdout: str, bench: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    out = json.loads(lines[0])
    perf = _perf_fields()
    assert "tokens_per_sec_per_gpu" in perf and "mfu" in perf  # the parse found the real record
    assert list(out) == perf  # benchmark.perf's fields, in its order
    assert perf[-len(SHAPE_FIELDS) :] == SHAPE_FIELDS
    assert out["bench"] == bench and out["device"] == "cpu"
    assert (out["layers"], out["seq"], out["mbs"], out["gbs"], out["dp"]) == (2, 64, 1, 1, 1)
    assert (out["hidden"], out["ffn"], out["heads"], out["kv_heads"], out["vocab"]) == (64, 128, 4, 2, 256)
    for key in ("step_time_s", "tokens_per_sec_per_gpu", "tflops_per_gpu"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    assert all(math.isfinite(x) and x > 0 for x in out["loss_first_last"])
    # Random tokens over 256 ids at init: the loss is near ln(256) = 5.55.
    assert all(abs(x - math.log(256)) < 0.3 for x in out["loss_first_last"])
    # tokens/s is one step's tokens over the step time; TFLOP/s is benchmark.flops' count per token.
    assert out["tokens_per_sec_per_gpu"] == pytest.approx(64 / out["step_time_s"], rel=1e-3)
    fpt = flops_per_token(ModelConfig(**TINY_MODEL), 256)
    assert out["tflops_per_gpu"] == pytest.approx(out["tokens_per_sec_per_gpu"] * fpt / 1e12, rel=1e-3)
    assert out["mfu"] is None and out["peak_mem_gib"] is None  # no bf16 peak or CUDA memory on a CPU
    return out


@pytest.mark.parametrize("module", ["benchmark.peers.hf_llama", "benchmark.peers.hf_llama_fsdp"])
def test_help(module):
    r = _run(module, "--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--layers", "--compile", "--device", "--kv-heads", "--vocab"):
        assert flag in r.stdout
    assert ("--ac" in r.stdout) == module.endswith("fsdp")


def test_one_device_peer_tiny_run():
    r = _run("benchmark.peers.hf_llama", *TINY, "--label", "tiny")
    assert r.returncode == 0, r.stderr
    out = _check_line(r.stdout, "benchmark.peers.hf_llama")
    assert out["label"] == "tiny" and out["gpus"] == 1 and out["recompute"] is False
    assert out["precision"].startswith("bf16 weights")


def test_fsdp_peer_world_size_one_on_gloo():
    # Without torchrun: a one-process gloo group, FSDP2 over one CPU rank.
    r = _run("benchmark.peers.hf_llama_fsdp", *TINY, "--ac")
    assert r.returncode == 0, r.stderr
    out = _check_line(r.stdout, "benchmark.peers.hf_llama_fsdp")
    assert out["gpus"] == 1 and out["recompute"] is True
    assert "fp32 master weights" in out["precision"]


@pytest.mark.parametrize("module", ["benchmark.peers.hf_llama", "benchmark.peers.hf_llama_fsdp"])
@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "0"], "--layers: 0: must be at least 1"),
        (["--steps", "two"], "--steps: invalid positive_int value: 'two'"),
        (["--warmup", "-1"], "--warmup: -1: must be 0 or more"),
        (["--hidden", "66"], "--hidden 66 is not a multiple of --heads 4"),
        (["--kv-heads", "3"], "--heads 4 is not a multiple of --kv-heads 3"),
        (["--hidden", "24", "--heads", "8", "--kv-heads", "8"], "head size 3 (--hidden / --heads) must be even"),
        (["--device", "tpu"], "--device: invalid choice: 'tpu'"),
    ],
)
def test_bad_arguments_are_argparse_errors(module, args, message):
    r = _run(module, *TINY, *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_a_device_is_refused():
    r = _run("benchmark.peers.hf_llama", *TINY[2:])  # the default --device cuda
    assert r.returncode == 2 and "no CUDA device is visible" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def gptmodel():
    """The benchmark's GPTModel (local spec, fp32, CPU) at the tiny shape; its forward needs the
    process group and Megatron's parallel state, kept up while the tests use it."""
    cfg = build_config(env={"DEVICE": "cpu"}, preset="smoke")
    for key, value in TINY_MODEL.items():
        setattr(cfg.model, key, value)
    with distributed(cfg) as device:
        seed_everything(5, device)
        model, _ = build_model(cfg, 256, bf16=False, use_cpu_initialization=True)
        yield cfg, model.eval()


def _peer(dtype=torch.float32):
    torch.manual_seed(0)
    return hf_llama.build(ModelConfig(**TINY_MODEL), 256, torch.device("cpu"), dtype)


def test_same_parameters_and_same_loss_as_the_benchmark_model(gptmodel):
    cfg, model = gptmodel
    peer = _peer()
    assert sum(p.numel() for p in peer.parameters()) == sum(p.numel() for p in model.parameters())
    shape = LlamaShape(2, 64, 4, 2)
    sd = {k: v for k, v in model.state_dict().items() if "_extra_state" not in k}
    # strict: every parameter of the peer is given, nothing is left over (the rotary buffers are
    # not part of the state dict on either side).
    peer.load_state_dict(megatron_to_hf(sd, shape), strict=True)
    peer.eval()
    x = torch.randint(0, 256, (2, 65), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x[:, :-1], None, None, labels=x[:, 1:]).mean()
        theirs = common.causal_lm_loss(peer, x)
    assert abs(ours.item() - math.log(256)) < 0.3  # a loss at init, not a degenerate value
    assert theirs.item() == pytest.approx(ours.item(), abs=1e-5)


def test_rotary_frequencies_are_the_benchmark_ones_in_fp32_even_in_bf16(gptmodel):
    _, model = gptmodel
    ref = model.rotary_pos_emb.inv_freq.float()
    for dtype in (torch.float32, torch.bfloat16):
        peer = _peer(dtype)
        assert next(peer.parameters()).dtype == dtype
        inv = peer.model.rotary_emb.inv_freq
        # bf16 would keep 8 bits of mantissa: the llama3 scaling's smallest frequencies would be off
        # by up to 0.4%, which shifts the angle at position 8191 by radians.
        assert inv.dtype == torch.float32
        torch.testing.assert_close(inv, ref, rtol=1e-6, atol=0)


def test_init_matches_the_benchmark_model(gptmodel):
    _, model = gptmodel
    shape = LlamaShape(2, 64, 4, 2)
    sd = megatron_to_hf({k: v for k, v in model.state_dict().items() if "_extra_state" not in k}, shape)
    peer = dict(_peer().named_parameters())
    scaled = 0.02 / math.sqrt(2 * 2)
    for name, ref in sd.items():
        mine = peer[name].detach()
        if name.endswith("norm.weight"):
            assert torch.equal(mine, torch.ones_like(mine)) and torch.equal(ref, torch.ones_like(ref)), name
            continue
        # Both sides draw normal(0, std): the sample stds agree within sampling error (>= 2,048 values).
        assert mine.std().item() == pytest.approx(ref.std().item(), rel=0.1), name
        want = scaled if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
        assert mine.std().item() == pytest.approx(want, rel=0.1), name


def test_no_weight_decay_on_the_norm_scales():
    opt = common.adamw(_peer())
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(no_decay["params"]) == 2 * 2 + 1  # two norms per layer and the final norm
    assert decay["betas"] == (0.9, 0.95) and decay["eps"] == 1e-5
