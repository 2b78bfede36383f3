"""One-device peer: transformers' LlamaForCausalLM, pure bf16 weights, fused AdamW, timed per step.

Run:  python -m benchmark.peers.hf_llama --layers 8 [--compile]          (one GPU, next to benchmark.perf)
      python -m benchmark.peers.hf_llama --device cpu --layers 2 --seq 64 --hidden 64 --ffn 128 \\
          --heads 4 --kv-heads 2 --vocab 512 --steps 2 --warmup 1        (a tiny shape on the CPU)

The Llama 3.1 8B shape cut to --layers decoder layers (RoPE base 500000 with the llama3 scaling,
RMSNorm eps 1e-5, GQA, untied embeddings, PyTorch SDPA attention), initialised as the benchmark's
GPTModel is, trained on random tokens: each step draws mbs sequences of seq+1 tokens, predicts the
last seq from the first seq, back-propagates and takes an AdamW step with the benchmark's betas,
eps and weight decay (none on the RMSNorm scales). Weights, gradients and optimizer state are all
bf16 (no fp32 master copy) and the gradients are not clipped: the peer's best case for speed,
cheaper per step than the benchmark's mixed precision. Warm-up
steps are not timed; the step time is the median of the timed steps. Prints one JSON line with
tokens/s, TFLOP/s and MFU by benchmark/flops.py's count, as benchmark.perf does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from benchmark.peers import common


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmark.peers.hf_llama",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    common.add_arguments(p, layers=8)
    a = p.parse_args(argv)
    common.check_arguments(p, a)
    return a


def build(m, vocab: int, device: torch.device, dtype: torch.dtype):
    """The peer's model at m's shape on `device`: parameters in `dtype`, the benchmark's init.

    Built on the meta device and materialised there in `dtype` directly, so no fp32 copy of the
    weights ever exists (at the 8B shape it would be the largest allocation of the run); the rotary
    frequencies stay fp32 (common.init_weights).
    """
    config = common.llama_config(m, vocab)
    model = common.build_on_meta(config).to(dtype)
    model.to_empty(device=device)
    common.init_weights(model, config, m)
    return model.train()


def main(argv=None) -> int:
    a = parse(argv)
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = build(common.model_config(a), a.vocab, device, torch.bfloat16)
    if a.compile:
        for layer in model.model.layers:
            layer.compile()
    opt = common.adamw(model, fused=True)
    gen = torch.Generator(device).manual_seed(0)
    on_gpu = device.type == "cuda"

    def batch() -> torch.Tensor:
        return torch.randint(0, a.vocab, (a.mbs, a.seq + 1), device=device, generator=gen)

    def step(tokens: torch.Tensor) -> torch.Tensor:
        loss = common.causal_lm_loss(model, tokens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    times, losses = common.time_steps(step, batch, a.warmup, a.steps, sync)
    name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    out = common.record(
        "benchmark.peers.hf_llama",
        a,
        name,
        1,
        statistics.median(times),
        [float(x) for x in losses],
        torch.cuda.max_memory_allocated(device) if on_gpu else None,
        recompute=False,
        precision="bf16 weights, gradients and AdamW state",
        spec="transformers LlamaForCausalLM, SDPA attention",
        engine="AdamW (fused), no clipping",
    )
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
