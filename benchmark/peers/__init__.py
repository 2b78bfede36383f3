"""Peer benchmarks: the same Llama 3.1 training step in a stack other than the benchmark's engine.

`python -m benchmark.perf` times the benchmark's own engine (Megatron-Core GPTModel, Megatron DDP
and the distributed optimizer, fp32 master weights). A raw step time from it says little on its
own: it depends on the card, its clocks, the driver and the PyTorch build of the day. The peers time
the same model shape, the same sequence length and the same random-token workload with Hugging Face
transformers' `LlamaForCausalLM`, so that running a peer in the same device call, on the same card,
turns the raw figure into a ratio (engine tokens/s over peer tokens/s). That ratio is the result
docs/PERFORMANCE.md reports; the raw times are recorded next to it only as context.

- `benchmark.peers.hf_llama`: one device, pure bf16 weights, fused AdamW, eager or with each decoder
  layer `torch.compile`d (`python -m benchmark.peers.hf_llama --layers 8 [--compile]`).
- `benchmark.peers.hf_llama_fsdp`: several devices under PyTorch FSDP2, bf16 compute over fp32
  gradient reduction (`torchrun --nproc-per-node 2 -m benchmark.peers.hf_llama_fsdp [--compile] [--ac]`).

Both print one JSON line with the field names of `benchmark.perf` where they mean the same thing, and
count FLOPs with `benchmark.flops` (the causal MLPerf count over the full vocabulary), so that MFU
and TFLOP/s compare one for one. Both run at a tiny shape on the CPU (`--device cpu --hidden 64 ...`),
which is how the tests exercise them.
"""
