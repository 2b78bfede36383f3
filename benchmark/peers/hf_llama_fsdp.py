"""Several-device peer: transformers' LlamaForCausalLM under PyTorch FSDP2, bf16 compute, fp32 reduction.

Run:  torchrun --nproc-per-node 2 -m benchmark.peers.hf_llama_fsdp [--layers 32] [--compile] [--ac]
      torchrun --nproc-per-node 2 -m benchmark.peers.hf_llama_fsdp --device cpu --layers 2 --seq 64 \\
          --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 512 --steps 2 --warmup 1   (CPU, gloo)
Without torchrun it runs as a single process (world size 1).

The way PyTorch-native stacks train Llama: the model is built on the meta device, each decoder
layer and then the root are `fully_shard`ed (parameters, gradients and AdamW state split over the
ranks, fp32 master weights), materialised with `to_empty` and initialised as the benchmark's GPTModel
is (normal(0, 0.02), the layers' output projections at 0.02 / sqrt(2 x layers), the RMSNorm scales
at 1.0). `MixedPrecisionPolicy` all-gathers the weights in bf16 for compute and reduce-scatters the
gradients in fp32. AdamW with the benchmark's settings (betas 0.9/0.95, eps 1e-5, weight decay 0.1
except on the RMSNorm scales; foreach) and gradient clipping at 1.0, as the benchmark trains. `--ac`
recomputes each decoder layer in the backward pass (activation checkpointing), `--compile` compiles
each decoder layer.

Each rank draws its own random tokens (mbs sequences of seq+1 tokens per step, seeded by rank), so
the ranks together train a global batch of mbs x world sequences per step. The step time is the
median over the timed steps of the slowest rank's time; tokens/s, TFLOP/s and MFU are per device,
by benchmark/flops.py's count; peak memory is the largest over the ranks; the losses are the mean
over the ranks. Rank 0 prints one JSON line with benchmark.perf's field names.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

from benchmark.config import TrainConfig
from benchmark.peers import common


class Recomputed(torch.nn.Module):
    """A decoder layer whose activations are recomputed in the backward pass instead of kept.

    FSDP shards the wrapper, so its all-gather hooks sit outside the checkpointed region: the
    recomputation runs on the weights that the backward pass has gathered already.
    """

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *args, **kwargs):
        return checkpoint(self.layer, *args, use_reentrant=False, **kwargs)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="torchrun --nproc-per-node N -m benchmark.peers.hf_llama_fsdp",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    common.add_arguments(p, layers=32)
    p.add_argument("--ac", action="store_true", help="activation checkpointing of each decoder layer")
    a = p.parse_args(argv)
    common.check_arguments(p, a)
    return a


def init_distributed(device_type: str) -> torch.device:
    """NCCL on GPUs (one per local rank), gloo on the CPU; a one-process group without torchrun."""
    backend = "nccl" if device_type == "cuda" else "gloo"
    # torchrun sets all of these; a stray RANK alone (another launcher's, a parent process's) is not a group.
    if all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    if device_type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def main(argv=None) -> int:
    a = parse(argv)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    device = init_distributed(a.device)
    rank, world = dist.get_rank(), dist.get_world_size()
    on_gpu = device.type == "cuda"
    m = common.model_config(a)
    config = common.llama_config(m, a.vocab)
    # On the meta device nothing is allocated: the 8B model never exists whole on one rank.
    model = common.build_on_meta(config)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    layers = model.model.layers
    for i in range(len(layers)):
        if a.compile:
            layers[i].compile()
        if a.ac:
            layers[i] = Recomputed(layers[i])
        fully_shard(layers[i], mp_policy=mp)
    # The root holds the embedding, the final norm and the output layer.
    fully_shard(model, mp_policy=mp)
    model.to_empty(device=device)
    torch.manual_seed(rank)  # each rank's shard of the weights its own numbers
    common.init_weights(model, config, m)
    model.train()
    opt = common.adamw(model, foreach=True)
    gen = torch.Generator(device).manual_seed(1000 + rank)

    def batch() -> torch.Tensor:
        return torch.randint(0, a.vocab, (a.mbs, a.seq + 1), device=device, generator=gen)

    def step(tokens: torch.Tensor) -> torch.Tensor:
        loss = common.causal_lm_loss(model, tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), TrainConfig().clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    # Start the clocks together: rank 0 may have compiled or initialised faster than the others.
    dist.barrier()
    times, losses = common.time_steps(step, batch, a.warmup, a.steps, sync)

    # After the timing, so these collectives add nothing to the steps: per step the slowest rank's
    # time, the mean loss over ranks, and the largest peak memory.
    t = torch.tensor(times, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    loss = torch.stack(losses).float()
    dist.all_reduce(loss, op=dist.ReduceOp.SUM)
    mem = None
    if on_gpu:
        peak = torch.tensor(float(torch.cuda.max_memory_allocated(device)), dtype=torch.float64, device=device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        mem = peak.item()
    if rank == 0:
        name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
        out = common.record(
            "benchmark.peers.hf_llama_fsdp",
            a,
            name,
            world,
            statistics.median(t.tolist()),
            (loss / world).tolist(),
            mem,
            recompute=a.ac,
            precision="bf16 compute, fp32 master weights and gradient reduction",
            spec="transformers LlamaForCausalLM, SDPA attention",
            engine="FSDP2, AdamW (foreach), clipping",
        )
        print(json.dumps(out), flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The result is printed and the group destroyed; at interpreter exit, gloo's worker threads of a
    # one-process CPU group can abort the process ("terminate called without an active exception",
    # seen with torch 2.13 on CPU), turning a finished run into exit -6. Leave without that teardown.
    os._exit(code)
