"""Proof of the HF -> NeMo conversion at full size: random Llama 3.1 8B weights, bf16 logits on one GPU.

Run (one GPU, no network):
    python dev/check_convert_gpu.py --out convert_gpu.json
CPU rehearsal on a small shape (what tests/test_convert_gpu_script.py runs):
    python dev/check_convert_gpu.py --shape small --device cpu --out /tmp/convert_small.json

Steps, each timed: build transformers' LlamaForCausalLM with random weights in bf16 on the device
(norms perturbed away from ones), save it as safetensors; convert it with
`python -m utils.convert hf-to-nemo` in its own process (its peak RSS is the converter's);
build the benchmark's GPTModel and load the NeMo checkpoint with load_nemo_weights_into; compare
logits of one random sequence with transformers' in bf16, and both against transformers in fp32;
convert back with nemo-to-hf and check every tensor equals the original. Figures go to --out as JSON.
Passes when the GPTModel's bf16 logits are no further from transformers' fp32 logits (relative
Frobenius error) than 1.25 x transformers' own bf16 logits are, plus 1e-3, and the round trip is
exact. The fp32 model is the reference: at the 8B shape with random weights the two bf16
computations each sit about 7% from it in different directions (measured on an H200), so their
distance from each other (about 8.5%) measures bf16 rounding, not the conversion.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script from anywhere: the project's packages live at the repository root.
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

SHAPES = {
    # Llama 3.1 8B (docs/FIDELITY.md): 32 layers, 4096 wide, SwiGLU 14336, 32 heads / 8 KV groups, 128,256 tokens.
    "8b": dict(
        num_layers=32,
        hidden_size=4096,
        ffn_hidden_size=14336,
        num_attention_heads=32,
        num_query_groups=8,
        vocab=128256,
        seq=2048,
    ),
    "small": dict(
        num_layers=2,
        hidden_size=128,
        ffn_hidden_size=320,
        num_attention_heads=4,
        num_query_groups=2,
        vocab=1024,
        seq=64,
    ),
}


def hf_config(shape: dict):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["ffn_hidden_size"],
        num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_query_groups"],
        head_dim=shape["hidden_size"] // shape["num_attention_heads"],
        rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )


def run_convert(direction: str, src: Path, dst: Path, summary: Path) -> dict:
    """The CLI in its own process, so its peak RSS is the converter's alone."""
    cmd = [
        sys.executable,
        "-m",
        "utils.convert",
        "--summary",
        str(summary),
        direction,
        "--src",
        str(src),
        "--dst",
        str(dst),
    ]
    subprocess.run(cmd, cwd=REPO, check=True)
    return json.loads(summary.read_text())


@contextlib.contextmanager
def model_parallel(device: torch.device):
    """One process, TP = PP = 1: the Megatron-Core state build_model needs. (benchmark.train has the
    same, but imports the whole harness, MLPerf logging included, which a bare GPU box may lack.)"""
    from megatron.core import parallel_state, tensor_parallel

    with socket.socket() as sock:  # a free local port for the one-process rendezvous
        sock.bind(("127.0.0.1", 0))
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(sock.getsockname()[1])
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        from benchmark.mcore_workarounds import apply_cpu_shims

        apply_cpu_shims()
    parallel_state.initialize_model_parallel(1, 1)
    torch.manual_seed(2)
    if device.type == "cuda":
        tensor_parallel.model_parallel_cuda_manual_seed(2)  # the RNG tracker GPU initialisation draws from
    try:
        yield
    finally:
        parallel_state.destroy_model_parallel()
        torch.distributed.destroy_process_group()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).float().norm() / b.float().norm()).item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="JSON file for the figures")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="8b", help="model shape (default 8b)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="where the models run")
    parser.add_argument("--seq", type=int, default=0, help="tokens in the compared sequence (0 = the shape's)")
    parser.add_argument(
        "--workdir",
        default="",
        help="folder for the checkpoints (default: a temporary one, deleted afterwards; the 8B needs about 50 GB)",
    )
    parser.add_argument("--no-roundtrip", action="store_true", help="skip the NeMo -> HF conversion back")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but PyTorch sees no GPU")
    shape = SHAPES[args.shape]
    seq = args.seq or shape["seq"]
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    result: dict = {
        "shape": args.shape,
        "seq": seq,
        "device": args.device,
        "card": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "timings_s": {},
    }
    timings = result["timings_s"]
    with tempfile.TemporaryDirectory(dir=args.workdir or None) as tmp:
        work = Path(tmp)
        hf_dir, nemo_dir, back_dir = work / "hf", work / "nemo", work / "hf_back"

        # 1. transformers' Llama with random bf16 weights, saved as safetensors.
        from transformers import LlamaForCausalLM

        t = time.perf_counter()
        torch.manual_seed(0)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(device):
            hf = LlamaForCausalLM(hf_config(shape)).eval()
        torch.set_default_dtype(previous)
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if "norm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        hf.save_pretrained(hf_dir)
        timings["make_hf"] = round(time.perf_counter() - t, 1)
        result["params"] = sum(p.numel() for p in hf.parameters())

        # 2. HF -> NeMo in its own process.
        result["hf_to_nemo"] = run_convert("hf-to-nemo", hf_dir, nemo_dir, work / "s1.json")

        # 3. The benchmark's GPTModel, loaded from the NeMo checkpoint.
        from benchmark.config import build_config
        from benchmark.hf_weights import load_nemo_weights_into
        from benchmark.model import build_model

        # Resolved for the device the model is built on (FUSIONS, PRECISION and the layer spec follow it).
        cfg = build_config(env={"DEVICE": device.type}, preset="smoke")
        for k in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups"):
            setattr(cfg.model, k, shape[k])
        cfg.model.seq_length = seq
        tokens = torch.randint(0, shape["vocab"], (1, seq), generator=torch.Generator().manual_seed(1)).to(device)
        with model_parallel(device):
            t = time.perf_counter()
            model, _ = build_model(cfg, shape["vocab"], bf16=True, use_cpu_initialization=device.type == "cpu")
            model = model.to(device).eval()
            result["init_checkpoint_step"] = load_nemo_weights_into(model, nemo_dir)
            timings["build_and_load_gptmodel"] = round(time.perf_counter() - t, 1)
            with torch.no_grad():
                ours = model(tokens, None, None).float().cpu()
            del model
        with torch.no_grad():
            theirs = hf(tokens).logits.float().cpu()
            hf.float()
            reference = hf(tokens).logits.float().cpu()
        del hf
        if device.type == "cuda":
            result["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
        errors = {
            "rel_gptmodel_bf16_vs_hf_bf16": rel_err(ours, theirs),
            "rel_gptmodel_bf16_vs_hf_fp32": rel_err(ours, reference),
            "rel_hf_bf16_vs_hf_fp32": rel_err(theirs, reference),
            "max_abs_gptmodel_vs_hf_bf16": (ours - theirs).abs().max().item(),
            "top1_agreement_gptmodel_vs_hf_bf16": (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item(),
        }
        result["logits"] = errors
        ok_logits = errors["rel_gptmodel_bf16_vs_hf_fp32"] <= 1.25 * errors["rel_hf_bf16_vs_hf_fp32"] + 1e-3
        ok_finite = all(math.isfinite(v) for v in errors.values())

        # 4. NeMo -> HF, compared tensor by tensor with the original.
        ok_roundtrip = None
        if not args.no_roundtrip:
            from safetensors import safe_open

            result["nemo_to_hf"] = run_convert("nemo-to-hf", nemo_dir, back_dir, work / "s2.json")
            t = time.perf_counter()

            def tensors(folder: Path):
                for f in sorted(folder.glob("*.safetensors")):
                    with safe_open(f, "pt") as handle:
                        for key in handle.keys():
                            yield key, f, handle

            back = {key: f for key, f, _ in tensors(back_dir)}
            mismatched, count = [], 0
            for key, _, handle in tensors(hf_dir):
                count += 1
                if key not in back:
                    mismatched.append(key)
                    continue
                with safe_open(back[key], "pt") as other:
                    if not torch.equal(handle.get_tensor(key), other.get_tensor(key)):
                        mismatched.append(key)
            ok_roundtrip = not mismatched and count == len(back)
            result["roundtrip"] = {"tensors": count, "mismatched": mismatched[:10]}
            timings["compare_roundtrip"] = round(time.perf_counter() - t, 1)

    result["pass"] = bool(ok_logits and ok_finite and ok_roundtrip is not False)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
