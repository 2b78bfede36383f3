"""Weight gradients computed straight into Megatron's fp32 ``main_grad`` buffers, without Apex.

Megatron-Core's linear layers can fold the gradient accumulation into the weight-gradient GEMM
(``gradient_accumulation_fusion``): ``main_grad += grad_output^T @ input`` in one cuBLAS call with
bf16 operands and an fp32 output, instead of a bf16 ``weight.grad`` that the DDP hook then adds into
``main_grad`` (an extra read and write of every gradient, per micro-batch). Megatron takes that
kernel from Apex's ``fused_weight_gradient_mlp_cuda`` extension, which is absent without Apex or
TransformerEngine. PyTorch's ``addmm`` with ``out_dtype`` (CUDA) computes the same thing, and
``benchmark.mcore_workarounds.install_wgrad_kernel`` gives Megatron that kernel under the name it
looks for.
"""

from __future__ import annotations

import torch


def wgrad_gemm_accum_fp32(total_input: torch.Tensor, grad_output: torch.Tensor, main_grad: torch.Tensor) -> None:
    """main_grad [out, in] (fp32) += grad_output[tokens, out]^T @ total_input[tokens, in] (bf16)."""
    if total_input.dtype == torch.float32:  # PRECISION=fp32: a plain fp32 GEMM accumulates in place
        main_grad.addmm_(grad_output.t(), total_input)
        return
    torch.addmm(main_grad, grad_output.t(), total_input, out_dtype=torch.float32, out=main_grad)


def wgrad_gemm_accum_fp16(total_input: torch.Tensor, grad_output: torch.Tensor, main_grad: torch.Tensor) -> None:
    """The same with a 16-bit main_grad (Megatron calls it when gradients are kept in bf16/fp16)."""
    main_grad.addmm_(grad_output.t(), total_input)


def available() -> bool:
    """True where Megatron's fused path can run: a CUDA device, and addmm with an fp32 out_dtype."""
    if not torch.cuda.is_available():
        return False
    try:
        a = torch.ones(2, 2, device="cuda", dtype=torch.bfloat16)
        out = torch.zeros(2, 2, device="cuda", dtype=torch.float32)
        wgrad_gemm_accum_fp32(a, a, out)
        return bool((out == 2).all())
    except (RuntimeError, TypeError):
        return False
