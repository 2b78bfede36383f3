"""Engines: the model, its optimizer and one optimizer step, behind one interface, :class:`Engine`.

``train_step(micro_batches, lr) -> (loss, grad_norm)``, ``evaluate(micro_batches) -> mean loss``,
and ``sharded_state_dict()`` / ``load_sharded_state_dict()`` for the dist-checkpoints of
benchmark/checkpoint.py. The training loop in train.py does not know which engine it drives.

- :class:`MegatronEngine` (GPU): Megatron-Core's DDP wrapper (bf16 gradients, reduced in bf16) and its
  distributed optimizer (fp32 master weights), bf16 parameters through Float16Module, Megatron's
  forward/backward schedule (gradient accumulation, pipeline parallelism).
- :class:`LocalEngine` (CPU): the same GPTModel with torch AdamW. Megatron-Core's DDP buffers and
  distributed optimizer allocate on the current CUDA device, so the CPU path keeps the same update
  rule (AdamW, decoupled weight decay skipping 1-D parameters, global-norm clipping) with plain
  PyTorch pieces; several processes are data-parallel replicas through torch's own
  DistributedDataParallel over gloo, each holding the whole model and optimizer.

Both check the loss and the gradient norm before the optimizer updates the weights: an inf or NaN
raises :class:`NonFiniteError` and leaves the weights as they were. Where Megatron-Core needs a
workaround (the GPU optimizer without TE/Apex), it lives in benchmark/mcore_workarounds.py.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch

from benchmark import mcore_workarounds
from benchmark.config import Config, uses_precision_aware_optimizer, world_size_from_env
from benchmark.profiling import nvtx_range


class NonFiniteError(RuntimeError):
    """The training loss or gradient norm became inf or NaN."""


MicroBatch = dict[str, torch.Tensor]  # "tokens" and "labels", [micro-batch size, sequence length]


@runtime_checkable
class Engine(Protocol):
    """What the training loop (train.py), the checkpoints (checkpoint.py) and benchmark.perf use."""

    cfg: Config
    device: torch.device  # where the micro-batches go

    @property
    def optimizer_format(self) -> str:
        """How the optimizer state is laid out in a checkpoint: "torch" (CPU), else CKPT_FORMAT."""
        ...

    def train_step(self, micro_batches: list[MicroBatch], lr: float) -> tuple[float, float]:
        """One optimizer step over the global batch's micro-batches; the mean loss and the gradient norm.

        Raises NonFiniteError, with the weights unchanged, when the loss or the gradient norm is inf or NaN.
        """
        ...

    def evaluate(self, micro_batches: Iterable[MicroBatch]) -> float:
        """Mean token cross-entropy over all evaluation tokens of every data-parallel replica."""
        ...

    def sharded_state_dict(self, is_loading: bool = False, optimizer_format: str | None = None) -> dict:
        """Model and optimizer state for Megatron-Core dist-checkpointing (as a load template if is_loading)."""
        ...

    def load_sharded_state_dict(self, state: dict) -> None:
        """Restore what dist-checkpointing loaded into a sharded_state_dict(is_loading=True) template."""
        ...


def _check_finite(loss: float, grad_norm: float | None) -> None:
    if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
        raise NonFiniteError(f"loss {loss}, gradient norm {grad_norm}")


class LocalEngine:
    """GPTModel + torch AdamW on CPU, one process or data-parallel replicas in torch DDP (gloo).

    With several replicas every rank trains on its contiguous share of each global batch (the
    training loop's DataShard) and DDP averages the gradients, so every rank takes the same step as
    one process would on the whole batch: the mean over equal shares of equal-length sequences is
    the mean over the batch. Losses are averaged over the replicas the same way.
    """

    def __init__(self, cfg: Config, model: torch.nn.Module, device: torch.device, autocast_bf16: bool = False):
        self.cfg = cfg
        self.model = model.to(device)
        self.device = device
        self.autocast_bf16 = autocast_bf16
        self.dp_group, self.dp_size = None, 1
        if torch.distributed.is_initialized():
            from megatron.core import parallel_state

            if parallel_state.model_parallel_is_initialized():
                self.dp_group = parallel_state.get_data_parallel_group()
                self.dp_size = parallel_state.get_data_parallel_world_size()
        # The module the forward pass runs through: DDP's wrapper with several replicas (its
        # construction also broadcasts rank 0's weights, which the shared seed already made equal).
        # Checkpoints and clipping use the bare model, whose parameters DDP shares.
        self.forward_module: torch.nn.Module = self.model
        if self.dp_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            # GPTModel registers no buffers (RoPE frequencies are plain attributes), so DDP's
            # per-forward buffer broadcast has nothing to send.
            self.forward_module = DistributedDataParallel(self.model, process_group=self.dp_group)
        t = cfg.train
        # Megatron-Core's optimizer applies no weight decay to 1-D parameters (the RMSNorm weights).
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=t.lr,
            betas=(t.adam_beta1, t.adam_beta2),
            eps=t.adam_eps,
            foreach=device.type == "cuda",
        )

    def _per_token_loss(self, batch: MicroBatch, module: torch.nn.Module | None = None) -> torch.Tensor:
        tokens = batch["tokens"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            # GPTModel returns the per-token cross-entropy [b, s] when given labels.
            per_token = (module or self.forward_module)(tokens, None, None, labels=labels)
        return per_token.float()

    def train_step(self, micro_batches: list[MicroBatch], lr: float) -> tuple[float, float]:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        last = len(micro_batches) - 1
        with nvtx_range("forward_backward"):
            for i, batch in enumerate(micro_batches):
                # Gradient accumulation: DDP all-reduces in the backward of the last micro-batch only.
                sync = self.dp_size == 1 or i == last
                with contextlib.nullcontext() if sync else self.forward_module.no_sync():
                    loss = self._per_token_loss(batch).mean()
                    (loss / len(micro_batches)).backward()
                total += loss.detach()
        with nvtx_range("optimizer"):
            # After DDP's all-reduce every replica holds the same averaged gradients, so the norm and
            # the clipping are the same on every rank.
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_grad))
            mean = total / len(micro_batches)
            if self.dp_size > 1:
                torch.distributed.all_reduce(mean, group=self.dp_group)
                mean /= self.dp_size
            loss_value = mean.item()
            # Before the update: a non-finite norm leaves the weights as they were (the clipping above
            # scaled only the gradients), as the GPU engine's check does.
            _check_finite(loss_value, grad_norm)
            self.optimizer.step()
        return loss_value, grad_norm

    @torch.no_grad()
    def evaluate(self, micro_batches: Iterable[MicroBatch]) -> float:
        """Mean token cross-entropy (natural log) over all evaluation tokens, of every replica."""
        self.model.eval()
        # fp64 sum and token count, reduced over the replicas: the mean over the whole evaluation set.
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        for batch in micro_batches:
            # The bare model: an evaluation has no backward, so DDP has nothing to reduce.
            per_token = self._per_token_loss(batch, self.model)
            sums[0] += per_token.double().sum()
            sums[1] += per_token.numel()
        if self.dp_size > 1:
            torch.distributed.all_reduce(sums, group=self.dp_group)
        return (sums[0] / sums[1]).item()

    # The torch optimizer's state is one object in parameter order, which one layer spec fixes.
    optimizer_format = "torch"

    def sharded_state_dict(self, is_loading: bool = False, optimizer_format: str | None = None) -> dict:
        """Model as dist-checkpoint ShardedTensors; the torch optimizer's state as a common object."""
        return {"model": self.model.sharded_state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_sharded_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def optimizer_settings(cfg: Config, bf16: bool, optimizer_overrides: dict | None = None) -> dict:
    """The GPU engine's Megatron-Core OptimizerConfig fields; optimizer_overrides (benchmark.perf --opt) win."""
    t = cfg.train
    settings = dict(
        optimizer="adam",
        lr=t.lr,
        min_lr=t.min_lr,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_eps=t.adam_eps,
        clip_grad=t.clip_grad,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=True,
    )
    if uses_precision_aware_optimizer(cfg, world_size_from_env()):
        # TE's FusedAdam keeps the fp32 master weights and reads the bf16 gradient buffer itself, so the
        # distributed optimizer holds no fp32 copy of either and skips the copies into and out of them.
        # The master weights stay whole fp32 tensors, as the default path keeps them, rather than the
        # 16 remainder bits that the bf16 weights lack (store_param_remainders).
        settings.update(use_precision_aware_optimizer=True, store_param_remainders=False)
    return {**settings, **(optimizer_overrides or {})}


class MegatronEngine:
    """GPU: Float16Module(GPTModel) in DDP with the distributed optimizer, Megatron's schedules."""

    def __init__(self, cfg: Config, model: torch.nn.Module, bf16: bool, optimizer_overrides: dict | None = None):
        from megatron.core import parallel_state
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.distributed.finalize_model_grads import finalize_model_grads
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
        from megatron.core.transformer.module import Float16Module

        self.cfg = cfg
        self.gpt = model
        config = model.config
        module = Float16Module(config, model) if bf16 else model
        # Gradients are kept and reduced in bf16 (the parameters' dtype), and averaged inside the
        # collective, as both the reference and NVIDIA's v5.1 code that produced the RCPs configure
        # Megatron's DDP; the fp32 master weights and Adam moments stay in the distributed optimizer.
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=False,
            average_in_collective=True,
            overlap_grad_reduce=True,
            overlap_param_gather=False,
            use_distributed_optimizer=True,
            check_for_nan_in_grad=False,
            bucket_size=40_000_000,
            # FP8 weights (TransformerConfig.fp8_param) are all-gathered in FP8 after the optimizer step.
            fp8_param_gather=bool(config.fp8_param),
        )
        self.model = DistributedDataParallel(config=config, ddp_config=ddp_config, module=module)
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(**optimizer_settings(cfg, bf16, optimizer_overrides)), [self.model]
        )
        # Without TE/Apex, Megatron-Core's torch AdamW would take its slower multi-kernel path.
        mcore_workarounds.use_fused_adamw(self.optimizer)
        # A CKPT_FORMAT=fast state must load under the precision-aware optimizer too.
        mcore_workarounds.skip_non_tensor_state_on_load()
        # A non-finite gradient norm stops the step before the weights change, as on the CPU engine;
        # in bf16 Megatron-Core's optimizer would apply it.
        self._step_loss = float("nan")
        mcore_workarounds.check_grad_norm_before_update(self.optimizer, self._check_grad_norm)
        # Wire the schedule to DDP, as Megatron's own training loop does: no gradient all-reduce
        # until the last micro-batch, then the (overlapped) reduce-scatter.
        config.no_sync_func = self.model.no_sync
        config.finalize_model_grads_func = finalize_model_grads
        config.grad_sync_func = None
        # Loss sums are reduced over data- and context-parallel ranks: each CP rank holds a share of
        # every sequence's tokens.
        self.dp_group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        self.pp_last = parallel_state.is_pipeline_last_stage()
        self.cp_size = parallel_state.get_context_parallel_world_size()
        # Megatron-Core marks the 1-D parameters (the RMSNorm gains) with wd_mult 0 in their param
        # groups, but only its OptimizerParamScheduler, which this engine does not use, turns wd_mult
        # into a group's weight_decay: without this, they would be decayed at the full rate.
        self._set_weight_decay()
        self.device = torch.device("cuda", torch.cuda.current_device())

    @staticmethod
    def _loss_func(per_token: torch.Tensor):
        per_token = per_token.float()
        total = per_token.sum()
        count = torch.tensor(per_token.numel(), device=per_token.device, dtype=torch.int)
        # The schedule divides the returned loss in place (by tokens and micro-batches) for the
        # backward pass, so the reported sum must be a copy, not a view of the same storage.
        return total, count, {"loss_sum": total.detach().clone(), "tokens": count.clone()}

    def _check_grad_norm(self, grad_norm: float) -> None:
        _check_finite(self._step_loss, grad_norm)

    def _set_weight_decay(self) -> None:
        for group in self.optimizer.param_groups:
            group["weight_decay"] = self.cfg.train.weight_decay * group.get("wd_mult", 1.0)

    def _forward_step(self, data_iterator, model):
        batch = next(data_iterator)
        tokens = batch["tokens"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        if self.cp_size > 1:
            # Context parallelism: this rank keeps two of 2 x CP sequence chunks (Megatron's load
            # balancing of the causal mask); RotaryEmbedding cuts its table the same way itself.
            from megatron.core.utils import get_batch_on_this_cp_rank

            cut = get_batch_on_this_cp_rank({"tokens": tokens, "labels": labels})
            tokens, labels = cut["tokens"], cut["labels"]
        output = model(tokens, None, None, labels=labels)
        return output, self._loss_func

    def _run(self, micro_batches, forward_only: bool) -> tuple[float, int]:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        micro_batches = list(micro_batches)
        mbs, seq = micro_batches[0]["tokens"].shape
        stores = get_forward_backward_func()(
            forward_step_func=self._forward_step,
            data_iterator=iter(micro_batches),
            model=[self.model],
            num_microbatches=len(micro_batches),
            seq_length=seq,
            micro_batch_size=mbs,
            forward_only=forward_only,
        )
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        for store in stores:  # filled on the last pipeline stage only
            sums[0] += store["loss_sum"].double()
            sums[1] += store["tokens"].double()
        torch.distributed.all_reduce(sums, group=self.dp_group)
        if not self.pp_last or sums[1] == 0:
            # Other pipeline stages learn the loss from the last one.
            from megatron.core import parallel_state

            torch.distributed.broadcast(
                sums,
                src=parallel_state.get_pipeline_model_parallel_last_rank(),
                group=parallel_state.get_pipeline_model_parallel_group(),
            )
        return (sums[0] / sums[1]).item(), int(sums[1].item())

    def train_step(self, micro_batches: list[MicroBatch], lr: float) -> tuple[float, float]:
        self.model.train()
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        with nvtx_range("forward_backward"):
            loss, _ = self._run(micro_batches, forward_only=False)
        _check_finite(loss, None)
        self._step_loss = loss  # for the gradient-norm check inside optimizer.step()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._set_weight_decay()  # a loaded optimizer state brings its groups' values back
        with nvtx_range("optimizer"):
            _, grad_norm, _ = self.optimizer.step()
        # No norm: the optimizer skipped the step on an inf/NaN it found itself (a loss scale set by
        # benchmark.perf --opt), leaving the weights as they were.
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        _check_finite(loss, grad_norm)
        return loss, grad_norm

    @torch.no_grad()
    def evaluate(self, micro_batches: Iterable[MicroBatch]) -> float:
        self.model.eval()
        loss, _ = self._run(micro_batches, forward_only=True)
        return loss

    # The distributed optimizer's checkpoint formats (CKPT_FORMAT). "fast": each data-parallel rank
    # writes its own flat buffers, in parallel, with no gather; the buffers follow the order in which
    # the layer spec builds its parameters, which differs between the local and the TE spec, so such
    # a checkpoint resumes only under the spec that saved it (loaded under the other, the moments land
    # on the wrong parameters: seen on an H200). "portable": per-parameter tensors under the model's
    # own keys (the local spec maps its norms to the TE names), gathered on data-parallel rank 0 over
    # gloo to keep GPU memory flat, so it resumes under either spec.
    OPTIMIZER_FORMATS = {
        "fast": {"distrib_optim_sharding_type": "dp_reshardable"},
        "portable": {
            "distrib_optim_sharding_type": "fully_reshardable",
            "distrib_optim_fully_reshardable_mem_efficient": True,
        },
    }

    @property
    def optimizer_format(self) -> str:
        return self.cfg.ckpt.optimizer_format

    def sharded_state_dict(self, is_loading: bool = False, optimizer_format: str | None = None) -> dict:
        """optimizer_format: how the state is (to be) laid out; default the run's CKPT_FORMAT."""
        metadata = self.OPTIMIZER_FORMATS[optimizer_format or self.optimizer_format]
        if is_loading:
            # The loading template reads Adam state entries a fresh torch AdamW does not have yet.
            mcore_workarounds.init_empty_adam_state(self.optimizer)
        model = self.model.sharded_state_dict(metadata=metadata)
        optimizer = self.optimizer.sharded_state_dict(model, is_loading=is_loading, metadata=metadata)
        return {"model": model, "optimizer": optimizer}

    def load_sharded_state_dict(self, state: dict) -> None:
        # Float16Module names its child "module." in the sharded state dict but passes load_state_dict
        # straight through to it, so load into the GPTModel itself, without that prefix.
        prefix = "module." if self.gpt is not self.model.module else ""
        self.gpt.load_state_dict({k.removeprefix(prefix): v for k, v in state["model"].items()}, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        # Adam's bias correction would otherwise restart from the per-parameter steps a load leaves at 0.
        mcore_workarounds.refill_adam_steps(self.optimizer)


def make_engine(
    cfg: Config, model: torch.nn.Module, device: torch.device, bf16: bool, optimizer_overrides: dict | None = None
) -> Engine:
    """optimizer_overrides: OptimizerConfig fields for a GPU experiment (benchmark.perf --opt)."""
    if device.type == "cuda":
        return MegatronEngine(cfg, model, bf16, optimizer_overrides)
    p = cfg.parallel
    if p.tensor_parallel * p.pipeline_parallel * p.context_parallel > 1:
        # Validation refuses this for a run (config.validate); a caller that built its own
        # configuration learns it here rather than training with unreduced model-parallel gradients.
        from benchmark.config import ConfigError

        raise ConfigError(
            f"TP={p.tensor_parallel}, PP={p.pipeline_parallel}, CP={p.context_parallel} on CPU: the CPU engine "
            "has data parallelism only; set TP=PP=CP=1 or run on GPUs"
        )
    return LocalEngine(cfg, model, device, autocast_bf16=bf16)
