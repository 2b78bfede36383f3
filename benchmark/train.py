"""The llama31_8b benchmark: train until the eval loss reaches the target, writing the MLPerf log.

Run:   python -m benchmark.train                       (the embedded CPU default, preset smoke)
       python -m benchmark.train --preset llama31_8b   (PREPROCESSED_PATH and TOKENIZER_PATH set)
       python -m benchmark.train --help                (every knob, with its environment variable)

One visible loop (SPEC: Training and evaluation): blocks of EVAL_EVERY samples of training, each
followed by an evaluation on the first EVAL_SAMPLES validation sequences; the run stops with status
``success`` at the first evaluation at or under TARGET, and ``aborted`` when MAX_TRAIN_SAMPLES pass
without it, when the loss or gradient norm stops being finite, on Ctrl-C, or on any crash.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmark.config import (
    REPO_ROOT,
    Config,
    ConfigError,
    add_arguments,
    build_config,
    grad_accumulation_steps,
    to_dict,
)
from benchmark.mlperf_log import TRACKED_STATS, MLPerfLog
from benchmark.schedule import lr_at


class NonFiniteError(RuntimeError):
    """The training loss or gradient norm became inf or NaN."""


@dataclass
class RunResult:
    status: str
    log_path: Path | None
    samples: int = 0
    steps: int = 0
    eval_curve: list[tuple[int, float]] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    time_to_train_s: float = 0.0
    init_s: float = 0.0
    reason: str = ""

    @property
    def final_eval_loss(self) -> float | None:
        return self.eval_curve[-1][1] if self.eval_curve else None


# ----------------------------------------------------------------------------------------------
# Process and device setup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def distributed(cfg: Config):
    """torch.distributed + Megatron-Core parallel state for the run; torn down afterwards.

    Under torchrun (WORLD_SIZE set) the launcher's rendezvous is used; otherwise a one-process gloo
    group on a free local port, so the CPU path runs the same Megatron-Core code.
    """
    from megatron.core import parallel_state

    use_cuda = cfg.parallel.device == "cuda" or (cfg.parallel.device == "auto" and torch.cuda.is_available())
    if cfg.parallel.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("DEVICE=cuda but PyTorch sees no CUDA device: set DEVICE=cpu or auto")
    created = False
    if not torch.distributed.is_initialized():
        if "WORLD_SIZE" not in os.environ:
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ["MASTER_PORT"] = str(_free_port())
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("LOCAL_RANK", "0")
            torch.distributed.init_process_group("nccl" if use_cuda else "gloo", rank=0, world_size=1)
        else:
            torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
        created = True
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        from benchmark.compat import apply_cpu_shims

        apply_cpu_shims()
        device = torch.device("cpu")
    p = cfg.parallel
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=p.tensor_parallel,
        pipeline_model_parallel_size=p.pipeline_parallel,
        context_parallel_size=p.context_parallel,
    )
    try:
        yield device
    finally:
        parallel_state.destroy_model_parallel()
        if created:
            torch.distributed.destroy_process_group()


def seed_everything(seed: int, device: torch.device) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cuda":
        from megatron.core import tensor_parallel

        tensor_parallel.model_parallel_cuda_manual_seed(seed)


def describe_platform(device: torch.device, world_size: int) -> str:
    if device.type == "cuda":
        return f"{world_size}x{torch.cuda.get_device_name(device)}"
    return f"{world_size}xCPU({os.cpu_count()} cores)"


# ----------------------------------------------------------------------------------------------
# The engine: model, optimizer and one optimizer step


class LocalEngine:
    """One replica: GPTModel + torch AdamW, gradient accumulation, global-norm clipping.

    Weight decay skips 1-D parameters (the RMSNorm weights), as Megatron-Core's optimizer does.
    """

    def __init__(self, cfg: Config, model: torch.nn.Module, device: torch.device, autocast_bf16: bool):
        self.cfg = cfg
        self.model = model
        self.device = device
        self.autocast_bf16 = autocast_bf16
        t = cfg.train
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps,
            foreach=device.type == "cuda",
        )

    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = batch["tokens"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            # GPTModel returns the per-token cross-entropy [b, s] when given labels.
            per_token = self.model(tokens, None, None, labels=labels)
        return per_token.float()

    def train_step(self, micro_batches: list[dict[str, torch.Tensor]], lr: float) -> tuple[float, float]:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for batch in micro_batches:
            loss = self._forward(batch).mean()
            (loss / len(micro_batches)).backward()
            total += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_grad)
        loss_value = (total / len(micro_batches)).item()
        grad_norm_value = float(grad_norm)
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm_value)):
            raise NonFiniteError(f"loss {loss_value}, gradient norm {grad_norm_value}")
        self.optimizer.step()
        return loss_value, grad_norm_value

    @torch.no_grad()
    def evaluate(self, micro_batches) -> float:
        """Mean token cross-entropy (natural log) over all evaluation tokens."""
        self.model.eval()
        total, count = torch.zeros((), dtype=torch.float64, device=self.device), 0
        for batch in micro_batches:
            per_token = self._forward(batch)
            total += per_token.double().sum()
            count += per_token.numel()
        return (total / count).item()


# ----------------------------------------------------------------------------------------------
# The run


def resolve_smoke_data(cfg: Config) -> float:
    """For the smoke preset with no data configured, build (or reuse) the embedded dataset."""
    if cfg.preset != "smoke" or (cfg.data.data_dir and cfg.data.tokenizer):
        return 0.0
    from utils.smoke import prepare

    start = time.perf_counter()
    root = Path(os.environ.get("SMOKE_DATA_DIR") or REPO_ROOT / "work_dir" / "smoke")
    smoke = prepare(root, seed=1234)
    cfg.data.data_dir = str(smoke.data_dir)
    cfg.data.tokenizer = str(smoke.tokenizer_dir)
    cfg.data.train_files = [Path(p).name for p in smoke.train_prefixes]
    cfg.data.valid_file = Path(smoke.valid_prefix).name
    return time.perf_counter() - start


def run(cfg: Config, *, log_path: Path | None = None, echo: bool = True, stop_after_steps: int | None = None) -> RunResult:
    """Run the benchmark described by cfg. ``stop_after_steps`` ends the run early as aborted (tests)."""
    from benchmark import data as data_mod
    from benchmark.model import build_model, padded_vocab_size

    resolve_smoke_data(cfg)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    out_dir = Path(cfg.log.output_dir)
    if log_path is None:
        log_path = out_dir / f"mlperf_{cfg.preset}_seed{cfg.train.seed}.log"
    log = MLPerfLog(log_path if rank == 0 else None, echo=echo)
    result = RunResult(status="aborted", log_path=log_path if rank == 0 else None)
    t, m = cfg.train, cfg.model
    run_started = False
    t_run_start = 0.0
    try:
        log.event("cache_clear", True)
        t_init = time.perf_counter()
        log.start("init_start")
        with distributed(cfg) as device:
            seed_everything(t.seed, device)
            bf16 = cfg.parallel.precision == "bf16" or (cfg.parallel.precision == "auto" and device.type == "cuda")
            if world_size > 1:
                raise ConfigError(
                    f"WORLD_SIZE={world_size}: this harness build trains one replica; run one process"
                )
            tok = data_mod.load_tokenizer_info(cfg.data.tokenizer)
            vocab = m.vocab_size or padded_vocab_size(tok.vocab_size, cfg.parallel.tensor_parallel)
            model, spec_name = build_model(cfg, vocab, bf16=False, use_cpu_initialization=device.type == "cpu")
            model.to(device)
            engine = LocalEngine(cfg, model, device, autocast_bf16=bf16)
            n_params = sum(p.numel() for p in model.parameters())
            print(
                f"[model] {m.num_layers} layers, hidden {m.hidden_size}, {m.num_attention_heads} heads / "
                f"{m.num_query_groups} KV groups, vocab {vocab}, {n_params / 1e6:.2f}M parameters; "
                f"{spec_name}; {'bf16 autocast' if bf16 else 'fp32'} on {device}", flush=True,
            )
            data_dir = Path(cfg.data.data_dir)
            train_prefixes = [str(data_dir / name) for name in cfg.data.train_files]
            cache = cfg.data.index_cache_dir or str(data_dir / "index_cache")
            train_ds = data_mod.build_train_dataset(
                train_prefixes, seq_length=m.seq_length, num_samples=t.max_train_samples, seed=t.seed,
                tokenizer=tok, cache_dir=cache,
            )
            valid_ds = data_mod.ValidationSequences(str(data_dir / cfg.data.valid_file), m.seq_length, t.eval_samples)
            accum = grad_accumulation_steps(cfg, world_size)
            log.submission_and_hyperparameters(
                cfg, platform=cfg.log.submission_platform or describe_platform(device, world_size),
                grad_accum=accum, train_samples=data_mod.one_epoch_sequences(train_prefixes, m.seq_length),
                init_checkpoint_step=0,
            )
            log.end("init_stop")
            result.init_s = time.perf_counter() - t_init
            log.start("run_start")
            run_started = True
            t_run_start = time.perf_counter()
            result.status, result.reason = _train_loop(cfg, engine, train_ds, valid_ds, log, result, stop_after_steps)
    except KeyboardInterrupt:
        result.reason = "interrupted (Ctrl-C)"
        raise
    except NonFiniteError as err:
        result.reason = f"non-finite training values at step {result.steps + 1}: {err}"
    except BaseException as err:
        result.reason = f"crashed: {type(err).__name__}: {err}"
        raise
    finally:
        if run_started:
            result.time_to_train_s = time.perf_counter() - t_run_start
            log.end("run_stop", samples_count=result.samples, status=result.status)
        log.close()
    return result


def _train_loop(cfg, engine, train_ds, valid_ds, log, result, stop_after_steps) -> tuple[str, str]:
    from benchmark.data import batches

    t = cfg.train
    steps_per_block = t.eval_every // t.global_batch_size
    tokens_per_step = t.global_batch_size * cfg.model.seq_length
    while True:
        block_start_samples = result.samples
        log.start("block_start", samples_count=block_start_samples)
        block_losses, block_time = [], 0.0
        for _ in range(steps_per_block):
            lr = lr_at(result.steps, base_lr=t.lr, end_lr=t.min_lr, warmup_steps=t.warmup_steps, max_steps=t.max_steps)
            micro = list(batches(train_ds, result.samples, t.global_batch_size, t.micro_batch_size))
            t0 = time.perf_counter()
            loss, grad_norm = engine.train_step(micro, lr)
            dt = time.perf_counter() - t0
            block_time += dt
            result.steps += 1
            result.samples += t.global_batch_size
            result.train_losses.append(loss)
            block_losses.append(loss)
            if result.steps % cfg.log.log_every == 0 or result.steps == 1:
                print(
                    f"[train] step {result.steps} samples {result.samples} loss {loss:.4f} lr {lr:.3e} "
                    f"grad_norm {grad_norm:.3f} step_time {dt * 1e3:.0f} ms tokens/s {tokens_per_step / dt:,.0f}",
                    flush=True,
                )
            if stop_after_steps is not None and result.steps >= stop_after_steps:
                log.end("block_stop", samples_count=result.samples)
                return "aborted", f"stopped after {result.steps} steps as asked"
        log.end("block_stop", samples_count=result.samples)
        log.event(
            TRACKED_STATS,
            {"train_loss": sum(block_losses) / len(block_losses), "train_step_time": block_time / len(block_losses)},
            step=result.samples,
        )
        log.start("eval_start", samples_count=result.samples)
        eval_loss = engine.evaluate(batches(valid_ds, 0, len(valid_ds), t.micro_batch_size))
        log.event("eval_accuracy", eval_loss, samples_count=result.samples)
        log.end("eval_stop", samples_count=result.samples)
        result.eval_curve.append((result.samples, eval_loss))
        print(f"[eval] samples {result.samples} eval_loss {eval_loss:.4f} (target {t.target})", flush=True)
        if eval_loss <= t.target:
            return "success", f"eval loss {eval_loss:.4f} <= target {t.target} after {result.samples} samples"
        if result.samples >= t.max_train_samples:
            return "aborted", f"no eval at or under {t.target} within MAX_TRAIN_SAMPLES={t.max_train_samples}"


def summarize(cfg: Config, result: RunResult, prep_s: float) -> str:
    lines = [
        "",
        "=" * 72,
        f"llama31_8b benchmark, preset {cfg.preset}: {result.status.upper()} ({result.reason})",
        f"  time to train (run_start -> run_stop): {result.time_to_train_s:.1f} s"
        + (f"   init: {result.init_s:.1f} s" if result.init_s else "")
        + (f"   data preparation: {prep_s:.1f} s" if prep_s else ""),
        f"  samples: {result.samples} ({result.steps} steps of GBS {cfg.train.global_batch_size})",
    ]
    if result.final_eval_loss is not None:
        lines.append(f"  final eval loss: {result.final_eval_loss:.4f} (target {cfg.train.target})")
    if result.log_path:
        lines.append(f"  MLPerf log: {result.log_path}")
    return "\n".join(lines)


def compliance_verdict(cfg: Config, log_path: Path) -> tuple[bool, str]:
    from compliance.check import check_log

    report = check_log(log_path, profile="smoke" if cfg.preset == "smoke" else "closed")
    return report.passed, report.format()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.train", description=__doc__.split("\n\n")[0],
        epilog="Precedence: preset < environment variables (config.sh) < flags.",
    )
    add_arguments(parser)
    parser.add_argument("--log-file", default=None, help="MLPerf log path (default RESULT_DIR/mlperf_<preset>_seed<seed>.log)")
    parser.add_argument("--no-check", action="store_true", help="skip the compliance check after the run")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration as JSON and exit"
    )
    args = parser.parse_args(argv)
    try:
        cfg = build_config(args)
        if args.print_config:
            print(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
            return 0
        prep_s = resolve_smoke_data(cfg)
        result = run(cfg, log_path=Path(args.log_file) if args.log_file else None)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the MLPerf log was closed with status aborted", file=sys.stderr)
        return 130
    print(summarize(cfg, result, prep_s))
    ok = result.status == "success"
    if result.log_path and not args.no_check and int(os.environ.get("RANK", "0")) == 0:
        passed, text = compliance_verdict(cfg, result.log_path)
        print(text)
        ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
