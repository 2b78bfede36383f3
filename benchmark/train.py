"""The llama31_8b benchmark: train until the eval loss reaches the target, writing the MLPerf log.

Run:   python -m benchmark.train                       (the embedded CPU default, preset smoke)
       python -m benchmark.train --preset llama31_8b   (PREPROCESSED_PATH and TOKENIZER_PATH set)
       python -m benchmark.train --help                (every knob, with its environment variable)

One visible loop (docs/FIDELITY.md): blocks of EVAL_EVERY samples of training, each followed by
an evaluation on the same validation sequences each time (EVAL_SET); the run stops with status
``success`` at the first evaluation at or under TARGET, and ``aborted`` when MAX_TRAIN_SAMPLES pass
without it, when the loss or gradient norm stops being finite, on Ctrl-C, or on any crash.
SIGTERM, SIGUSR1 and EXIT_DURATION_MINS stop it early at the next step boundary (benchmark.preempt):
a checkpoint to CHECKPOINT_DIR, ``run_stop`` aborted with the reason, and exit status 75, so that a
requeued or retried job continues from that checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmark import checkpoint
from benchmark.checkpoint import Position
from benchmark.config import (
    REPO_ROOT,
    Config,
    ConfigError,
    add_arguments,
    build_config,
    grad_accumulation_steps,
    to_dict,
    unset_paths,
)
from benchmark.engine import Engine, NonFiniteError, make_engine
from benchmark.metrics import Metrics, format_step_values, progress_text, step_values
from benchmark.mlperf_log import TRACKED_STATS, MLPerfLog
from benchmark.preempt import EXIT_STOPPED, StopRequest
from benchmark.profiling import NoProfile, ProfileWindow, nvtx_range
from benchmark.schedule import lr_at


def print0(text: str) -> None:
    """Print on rank 0 only: every rank runs the same code, and one copy of each line is the report.
    Flushed, so that the lines keep their order among the launcher's and the other ranks' output."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(text, flush=True)


@dataclass
class RunResult:
    """The end of a run: how it ended, where it got to (its final Position) and how long it took."""

    status: str
    log_path: Path | None
    position: Position = field(default_factory=Position)
    train_losses: list[float] = field(default_factory=list)  # every step's loss, in order
    time_to_train_s: float = 0.0
    init_s: float = 0.0
    prep_s: float = 0.0  # building the embedded smoke data set, before the log opens
    reason: str = ""
    resumed_samples: int = 0
    paused: bool = False  # stopped after JOB_SAMPLES with a checkpoint, for the next job to continue
    stopped: bool = False  # stopped early by a signal or EXIT_DURATION_MINS (benchmark.preempt)
    checkpoint: str = ""  # the checkpoint that early stop wrote ("" when none was written)

    @property
    def steps(self) -> int:
        return self.position.steps

    @property
    def samples(self) -> int:
        return self.position.samples

    @property
    def eval_curve(self) -> list[tuple[int, float]]:
        return self.position.eval_curve

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

    Under torchrun or srun (WORLD_SIZE set) the launcher's rendezvous is used (MASTER_ADDR,
    MASTER_PORT, RANK, WORLD_SIZE; rank 0 prints it); otherwise a one-process gloo group on a free
    local port, so the CPU path runs the same Megatron-Core code. On CPU, several processes are
    data-parallel replicas over gloo (benchmark.engine.LocalEngine).
    """
    from megatron.core import parallel_state

    use_cuda = cfg.parallel.device == "cuda"  # DEVICE=auto was resolved by build_config (resolve_auto)
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
            _print_rendezvous()
        created = True
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        from benchmark.mcore_workarounds import apply_cpu_shims

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


def _print_rendezvous() -> None:
    """Rank 0 says where the group met and which process is where: the first line to read when a
    multi-node job hangs or trains apart."""
    world = torch.distributed.get_world_size()
    me = {
        "rank": torch.distributed.get_rank(),
        "local_rank": os.environ.get("LOCAL_RANK", "?"),
        "node_rank": os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "?")),
        # Slurm's node name where there is one (two slurmd on one host share its hostname).
        "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "pid": os.getpid(),
    }
    everyone = [None] * world
    torch.distributed.all_gather_object(everyone, me)
    print0(
        f"[distributed] rendezvous MASTER_ADDR={os.environ.get('MASTER_ADDR')} "
        f"MASTER_PORT={os.environ.get('MASTER_PORT')} world size {world} "
        f"backend {torch.distributed.get_backend()}"
    )
    for r in everyone:
        print0(
            f"[distributed] rank {r['rank']}: node rank {r['node_rank']}, local rank {r['local_rank']}, "
            f"node {r['node']}, pid {r['pid']}"
        )


def pipeline_seed(seed: int) -> int:
    """The run seed offset by 100 x pipeline rank, as NeMo and Megatron-LM seed each pipeline stage.

    Stages hold different layers; without the offset every stage would draw the same init stream.
    Tensor-parallel ranks are told apart inside Megatron's model_parallel_cuda_manual_seed (its
    tensor-parallel RNG state is seeded with seed + 2718 + TP rank), so no offset is added for them here.
    """
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return seed
    return seed + 100 * parallel_state.get_pipeline_model_parallel_rank()


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed Python, NumPy, torch and Megatron's CUDA RNG tracker from the run seed.

    The weights are drawn from the run seed (offset per pipeline stage), so they change from run to
    run as the MLPerf rules ask of a seed; NeMo instead seeds them with a fixed 1234 and lets the run
    seed reach only the data order (docs/FIDELITY.md, "Seeds"). The data order takes the run seed
    itself, the same on every rank, in benchmark.data.
    """
    import random

    import numpy as np

    seed = pipeline_seed(seed)
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
# The run


def resolve_smoke_data(cfg: Config) -> float:
    """For a preset with embedded data (smoke) and no data configured, build (or reuse) the embedded dataset
    and point cfg.data at it; return the seconds that took (0 when the data were configured)."""
    if not cfg.embedded_data or (cfg.data.data_dir and cfg.data.tokenizer):
        return 0.0
    from benchmark.smoke_data import prepare

    start = time.perf_counter()
    root = Path(cfg.data.smoke_data_dir or REPO_ROOT / "work_dir" / "smoke")
    smoke = prepare(root, seed=1234)
    cfg.data.data_dir = str(smoke.data_dir)
    cfg.data.tokenizer = str(smoke.tokenizer_dir)
    # The embedded set holds en_6 and en_7; the run reads the ones its BENCHMARK_AREA names.
    made = {Path(p).name for p in smoke.train_prefixes}
    absent = [name for name in cfg.data.train_files if name not in made]
    if absent:
        raise ConfigError(
            f"the embedded smoke data set has no {', '.join(absent)}: it holds {', '.join(sorted(made))} "
            f"(BENCHMARK_AREA=en6 or en6+en7), or set PREPROCESSED_PATH and TOKENIZER_PATH to your own data"
        )
    cfg.data.valid_file = Path(smoke.valid_prefix).name
    return time.perf_counter() - start


# TransformerEngine 2.12's words when no attention kernel takes the shape (cuDNN decides at the first step).
NO_ATTENTION_KERNEL = "No dot product attention backend is available"


def no_attention_kernel(cfg: Config) -> str:
    m, p = cfg.model, cfg.parallel
    head = m.hidden_size // m.num_attention_heads
    shape = f"head size {head}, sequence {m.seq_length}"
    if p.fp8 and p.fp8_attention:
        return (
            f"TransformerEngine has no FP8 attention kernel for this shape ({shape}; the 8B's head size 128 "
            f"runs): set FP8_ATTENTION=0, or use a head size of 128 (HIDDEN_SIZE / NUM_HEADS)"
        )
    return f"TransformerEngine has no attention kernel for this shape ({shape}): set LAYER_SPEC=local"


def run(
    cfg: Config, *, log_path: Path | None = None, echo: bool = True, stop_after_steps: int | None = None
) -> RunResult:
    """Run the benchmark described by cfg. ``stop_after_steps`` ends the run early as aborted (tests)."""
    from benchmark import data as data_mod
    from benchmark.model import build_model, describe_precision, padded_vocab_size

    prep_s = resolve_smoke_data(cfg)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    out_dir = Path(cfg.log.output_dir)
    if log_path is None:
        log_path = out_dir / f"mlperf_{cfg.preset}_seed{cfg.train.seed}.log"
    log = MLPerfLog(log_path if rank == 0 else None, echo=echo)
    # The report, filled in as the run goes: the ways out below (a crash included) close the log from it.
    result = RunResult(status="aborted", log_path=log_path if rank == 0 else None, prep_s=prep_s)
    t, m = cfg.train, cfg.model
    run_started = run_closed = False
    t_run_start = 0.0
    # Installed before the log opens: from here on SIGTERM/SIGUSR1 only set a flag, and the loop
    # stops at its next safe point, with the log closed, instead of being killed mid-write.
    stop = StopRequest(cfg.ckpt.exit_duration_mins)
    stack = contextlib.ExitStack()
    stack.enter_context(stop)
    try:
        log.event("cache_clear", True)
        t_init = time.perf_counter()
        log.start("init_start")
        tok = data_mod.check_inputs(cfg)
        if cfg.ckpt.directory:
            checkpoint.check_directory(cfg.ckpt.directory)
        with distributed(cfg) as device:
            from megatron.core import parallel_state

            seed_everything(t.seed, device)
            bf16 = cfg.parallel.precision == "bf16"  # PRECISION=auto: resolved with DEVICE
            vocab = m.vocab_size or padded_vocab_size(tok.vocab_size, cfg.parallel.tensor_parallel)
            on_gpu = device.type == "cuda"
            model, spec_name = build_model(cfg, vocab, bf16=bf16 and on_gpu, use_cpu_initialization=not on_gpu)
            if on_gpu:
                model.cuda(device)
            n_params = sum(p.numel() for p in model.parameters())
            weights_step = initial_weights(cfg, model)
            engine = make_engine(cfg, model, device, bf16)
            precision = describe_precision(cfg, bf16)
            print0(
                f"[model] {m.num_layers} layers, hidden {m.hidden_size}, {m.num_attention_heads} heads / "
                f"{m.num_query_groups} KV groups, vocab {vocab}, {n_params / 1e6:.2f}M parameters per "
                f"model-parallel rank; {spec_name}; {precision} on {device.type}; {type(engine).__name__}"
            )
            if rank == 0:
                record_run_config(cfg, log_path, model=spec_name, precision=precision, engine=type(engine).__name__)
            data_dir = Path(cfg.data.data_dir)
            train_prefixes = [str(data_dir / name) for name in cfg.data.train_files]
            cache = cfg.data.index_cache_dir or str(data_dir / "index_cache")
            train_ds = data_mod.build_train_dataset(
                train_prefixes,
                seq_length=m.seq_length,
                num_samples=t.max_train_samples,
                seed=t.seed,
                tokenizer=tok,
                cache_dir=cache,
            )
            valid_ds = build_valid_dataset(cfg, data_dir, tok, cache)
            shard = DataShard(parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size())
            resumed = resume(cfg, engine)
            if resumed is not None:
                result.position, result.resumed_samples = resumed, resumed.samples
            init_step = resumed.steps if resumed is not None else weights_step
            log.submission_and_hyperparameters(
                cfg,
                platform=cfg.log.submission_platform or describe_platform(device, world_size),
                grad_accum=grad_accumulation_steps(cfg, world_size),
                train_samples=data_mod.one_epoch_sequences(train_prefixes, m.seq_length),
                init_checkpoint_step=init_step,
            )
            # Closed on every way out (stack.close below), the W&B run marked failed on a crash.
            metrics = Metrics(cfg, rank)
            stack.callback(lambda: metrics.close(failed=result.reason.startswith(("crashed", "interrupted"))))
            profile = ProfileWindow(cfg, rank, world_size, device)
            stack.callback(profile.close)
            log.end("init_stop")
            result.init_s = time.perf_counter() - t_init
            log.start("run_start")
            run_started = True
            t_run_start = time.perf_counter()
            ctx = RunContext(
                train_ds=train_ds,
                valid_ds=valid_ds,
                shard=shard,
                world_size=world_size,
                vocab=vocab,
                log=log,
                stop=stop,
                metrics=metrics,
                profile=profile,
            )
            # The loop advances result.position in place, so that a crash's run_stop has the samples trained.
            end = _train_loop(
                cfg,
                engine,
                ctx,
                result.position,
                train_losses=result.train_losses,
                stop_after_steps=stop_after_steps,
            )
            result.status, result.reason = end.status, end.reason
            result.paused, result.stopped, result.checkpoint = end.paused, end.stopped, end.checkpoint
            # The log is closed while the process group still exists, and every rank waits for it:
            # under srun --kill-on-bad-exit a rank leaving first with status 75 would get rank 0
            # killed before its run_stop is written.
            _close_run(log, result, t_run_start)
            run_closed = True
            if torch.distributed.is_initialized():
                torch.distributed.barrier()
    except KeyboardInterrupt:
        result.reason = "interrupted (Ctrl-C)"
        raise
    except ConfigError as err:
        # A bad input or checkpoint found during init (the log holds init_start): end it as an aborted
        # run that says why, not as one that seems to be still under way.
        result.reason = str(err)
        if not run_started:
            log.end("run_stop", samples_count=0, status="aborted", reason=str(err))
        raise
    except NonFiniteError as err:
        result.reason = f"non-finite training values at step {result.steps + 1}: {err}"
    except BaseException as err:
        if isinstance(err, ValueError) and str(err).startswith(NO_ATTENTION_KERNEL):
            result.reason = no_attention_kernel(cfg)
            raise ConfigError(result.reason) from None
        result.reason = f"crashed: {type(err).__name__}: {err}"
        raise
    finally:
        if run_started and not run_closed:
            # A crash while an early stop saved its checkpoint: run_stop still says why the run stopped.
            result.stopped = result.stopped or bool(stop.reason)
            _close_run(log, result, t_run_start)
        log.close()
        stack.close()
    return result


def _close_run(log: MLPerfLog, result: RunResult, t_run_start: float) -> None:
    """run_stop with the status; an early stop also says why (mlperf_logging allows extra metadata)."""
    result.time_to_train_s = time.perf_counter() - t_run_start
    extra = {"reason": result.reason} if result.stopped else {}
    log.end("run_stop", samples_count=result.samples, status=result.status, **extra)
    log.close()


def build_valid_dataset(cfg: Config, data_dir: Path, tok, cache: str):
    """The evaluation set EVAL_SET names; every evaluation reads its first eval_sequences windows."""
    from benchmark import data as data_mod

    t, m = cfg.train, cfg.model
    prefix = str(data_dir / cfg.data.valid_file)
    if t.eval_set == "file-order":
        return data_mod.ValidationSequences(prefix, m.seq_length, t.eval_samples)
    return data_mod.build_eval_dataset(
        prefix,
        seq_length=m.seq_length,
        num_samples=t.eval_dataset_samples,
        seed=t.seed,
        tokenizer=tok,
        cache_dir=cache,
    )


def record_run_config(cfg: Config, log_path: Path, **built: str) -> Path:
    """Write what this run resolved and built beside its MLPerf log (<log>.config.json), atomically."""
    path = log_path.with_name(log_path.stem + ".config.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"built": built, "config": to_dict(cfg)}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class DataShard:
    """This replica's share of every global batch and of the evaluation set (contiguous slices)."""

    rank: int
    size: int


@dataclass(frozen=True)
class RunContext:
    """What the training loop reads and never changes: the data, this replica's shard of it, the world,
    the vocabulary (for the FLOP count), and where the loop reports to and takes its stop requests from.
    Without metrics or profile the loop writes no metrics and profiles nothing."""

    train_ds: Any
    valid_ds: Any
    shard: DataShard
    world_size: int
    vocab: int
    log: MLPerfLog
    stop: StopRequest = field(default_factory=StopRequest)
    metrics: Metrics | None = None
    profile: ProfileWindow | NoProfile = field(default_factory=NoProfile)


@dataclass(frozen=True)
class LoopEnd:
    """How the training loop ended: run_stop's status, why, and whether the next job continues the run."""

    status: str
    reason: str
    paused: bool = False  # after JOB_SAMPLES, with a checkpoint
    stopped: bool = False  # early, by a signal or EXIT_DURATION_MINS
    checkpoint: str = ""  # the checkpoint an early stop leaves for the next job ("" when none)


def _train_loop(
    cfg: Config,
    engine: Engine,
    ctx: RunContext,
    position: Position,
    *,
    train_losses: list[float] | None = None,
    stop_after_steps: int | None = None,
) -> LoopEnd:
    """Train from position to the end of the run, advancing position in place and appending each step's
    loss to train_losses. ``stop_after_steps`` ends the run early as aborted (tests)."""
    from benchmark.data import batches
    from benchmark.flops import flops_per_token

    device = torch.device(getattr(engine, "device", "cpu"))
    flops_per_tok = flops_per_token(cfg.model, ctx.vocab)

    t = cfg.train
    log, shard, stop, profile = ctx.log, ctx.shard, ctx.stop, ctx.profile
    metrics = ctx.metrics or Metrics(cfg, rank=-1)  # writes nothing
    train_losses = [] if train_losses is None else train_losses
    # Where this job took the run up: JOB_SAMPLES counts from here, and an early stop with nothing
    # trained since has nothing new to save.
    started_at = position.samples
    per_replica = t.global_batch_size // shard.size
    eval_per_replica = t.eval_sequences // shard.size
    tokens_per_step = t.global_batch_size * cfg.model.seq_length
    while True:
        block_start_samples = position.samples
        log.start("block_start", samples_count=block_start_samples)
        block_losses, block_time = [], 0.0
        # A job resumed from a checkpoint that an early stop wrote mid-block finishes that block first,
        # so the evaluations stay at multiples of EVAL_EVERY.
        steps_left = (t.eval_every - position.samples % t.eval_every) // t.global_batch_size
        for _ in range(steps_left):
            # The safe point between steps; a signal during init or the last step is acted on here.
            if stop.poll(device):
                log.end("block_stop", samples_count=position.samples)
                return _stop_early(cfg, engine, position, started_at, stop)
            lr = lr_at(
                position.steps, base_lr=t.lr, end_lr=t.min_lr, warmup_steps=t.warmup_steps, max_steps=t.max_steps
            )
            first = position.samples + shard.rank * per_replica
            micro = list(batches(ctx.train_ds, first, per_replica, t.micro_batch_size))
            profile.before_step(position.steps + 1)
            t0 = time.perf_counter()
            with nvtx_range("train_step"):
                loss, grad_norm = engine.train_step(micro, lr)
            dt = time.perf_counter() - t0
            block_time += dt
            position.steps += 1
            position.samples += t.global_batch_size
            train_losses.append(loss)
            block_losses.append(loss)
            profile.after_step(position.steps)
            values = step_values(device, flops_per_tok, tokens_per_step / dt / ctx.world_size)
            metrics.train_step(position.samples, loss=loss, lr=lr, grad_norm=grad_norm, values=values)
            if position.steps % cfg.log.log_every == 0 or position.steps == 1:
                print0(
                    f"[train] step {position.steps} samples {position.samples} loss {loss:.4f} lr {lr:.3e} "
                    f"grad_norm {grad_norm:.3f} step_time {dt * 1e3:.0f} ms "
                    + format_step_values(values)
                    + " | "
                    + progress_text(position.samples, t.eval_every, t.global_batch_size, block_time / len(block_losses))
                )
            if stop_after_steps is not None and position.steps >= stop_after_steps:
                log.end("block_stop", samples_count=position.samples)
                return LoopEnd("aborted", f"stopped after {position.steps} steps as asked")
        log.end("block_stop", samples_count=position.samples)
        log.event(
            TRACKED_STATS,
            {"train_loss": sum(block_losses) / len(block_losses), "train_step_time": block_time / len(block_losses)},
            step=position.samples,
        )
        log.start("eval_start", samples_count=position.samples)
        t_eval = time.perf_counter()
        with nvtx_range("eval"):
            eval_loss = engine.evaluate(
                batches(ctx.valid_ds, shard.rank * eval_per_replica, eval_per_replica, t.micro_batch_size)
            )
        t_eval = time.perf_counter() - t_eval
        log.event("eval_accuracy", eval_loss, samples_count=position.samples)
        log.end("eval_stop", samples_count=position.samples)
        position.eval_curve.append((position.samples, eval_loss))
        metrics.evaluation(
            position.samples,
            eval_loss=eval_loss,
            block_tokens_per_s_per_device=tokens_per_step * len(block_losses) / block_time / ctx.world_size,
            block_samples_per_s=t.global_batch_size * len(block_losses) / block_time,
        )
        print0(f"[eval] samples {position.samples} eval_loss {eval_loss:.4f} (target {t.target}) in {t_eval:.1f} s")
        if eval_loss <= t.target:
            reason = f"eval loss {eval_loss:.4f} <= target {t.target} after {position.samples} samples"
            return LoopEnd("success", reason)
        if position.samples >= t.max_train_samples:
            return LoopEnd("aborted", f"no eval at or under {t.target} within MAX_TRAIN_SAMPLES={t.max_train_samples}")
        if stop.poll(device):  # a signal during the evaluation: acted on once it is logged
            return _stop_early(cfg, engine, position, started_at, stop)
        c = cfg.ckpt
        pause = c.job_samples and position.samples - started_at >= c.job_samples
        if c.save or pause:
            path = checkpoint.save(c.directory, engine, position)
            print0(f"[checkpoint] saved {path} at step {position.steps}")
        if pause:
            reason = f"paused after JOB_SAMPLES={c.job_samples} samples; the next job resumes from {c.directory}"
            return LoopEnd("aborted", reason, paused=True)


def _stop_early(cfg: Config, engine: Engine, position: Position, started_at: int, stop: StopRequest) -> LoopEnd:
    """Save the run's state for the next job (collective, every rank is here at the same step)."""
    directory = cfg.ckpt.directory
    saved = ""
    if not directory:
        where = "no checkpoint (CHECKPOINT_DIR is not set): a new job starts the run over"
    elif position.samples == started_at:
        # Nothing trained since the start or the resume: what CHECKPOINT_DIR holds is current.
        latest = checkpoint.latest_checkpoint(directory)
        saved = str(latest or "")
        where = (
            f"nothing trained since {latest}, which the next job resumes from"
            if latest
            else "nothing trained yet, so no checkpoint: a new job starts the run over"
        )
    else:
        path = checkpoint.save(directory, engine, position)
        saved = str(path)
        where = f"checkpoint {path}; the next job resumes from it"
        print0(f"[checkpoint] saved {path} at step {position.steps}")
    reason = f"stopped by {stop.reason} at step {position.steps} ({position.samples} samples); {where}"
    return LoopEnd("aborted", reason, stopped=True, checkpoint=saved)


def initial_weights(cfg: Config, model) -> int:
    """Load MODEL_CKPT into the bare model when USE_CKPT is set (before the engine copies the weights
    into its fp32 master parameters); return the checkpoint's step, else 0."""
    if not cfg.ckpt.use_ckpt:
        return 0
    from benchmark.hf_weights import load_hf_weights_into, load_nemo_weights_into

    load = load_hf_weights_into if cfg.ckpt.from_hf else load_nemo_weights_into
    step = load(model, cfg.ckpt.model_ckpt)
    print0(f"[checkpoint] weights from {cfg.ckpt.model_ckpt} (step {step})")
    return step


def resume(cfg: Config, engine: Engine) -> Position | None:
    """Continue from CHECKPOINT_DIR's newest checkpoint, if there is one: load it into engine and return
    the position it saved (None when there is none)."""
    latest = checkpoint.latest_checkpoint(cfg.ckpt.directory) if cfg.ckpt.directory else None
    if latest is None:
        return None
    position = checkpoint.load(latest, engine)
    print0(f"[checkpoint] resumed from {latest} at step {position.steps}")
    return position


def summarize(cfg: Config, result: RunResult) -> str:
    lines = [
        "",
        "=" * 72,
        f"llama31_8b benchmark, preset {cfg.preset}: {result.status.upper()} ({result.reason})",
        f"  time to train (run_start -> run_stop): {result.time_to_train_s:.1f} s"
        + (f"   init: {result.init_s:.1f} s" if result.init_s else "")
        + (f"   data preparation: {result.prep_s:.1f} s" if result.prep_s else ""),
        f"  samples: {result.samples} ({result.steps} steps of GBS {cfg.train.global_batch_size})",
    ]
    if result.final_eval_loss is not None:
        lines.append(f"  final eval loss: {result.final_eval_loss:.4f} (target {cfg.train.target})")
    if result.log_path:
        lines.append(f"  MLPerf log: {result.log_path}")
    return "\n".join(lines)


def compliance_verdict(cfg: Config, log_path: Path) -> tuple[bool, str]:
    from compliance.check import check_log

    report = check_log(log_path, profile=cfg.compliance_profile)
    return report.passed, report.format()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.train",
        description=__doc__.split("\n\n")[0],
        epilog="Precedence: preset < environment variables (config.sh) < flags.",
    )
    add_arguments(parser)
    parser.add_argument(
        "--log-file", default=None, help="MLPerf log path (default RESULT_DIR/mlperf_<preset>_seed<seed>.log)"
    )
    parser.add_argument("--no-check", action="store_true", help="skip the compliance check after the run")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration as JSON and exit; data paths a run needs and lacks are "
        "named on stderr (python -m benchmark.config --print-config makes them errors, as a run does)",
    )
    args = parser.parse_args(argv)
    try:
        # A question about the configuration may leave the data paths for later; a run may not.
        cfg = build_config(args, need_paths=not args.print_config)
        if args.print_config:
            print(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
            for note in unset_paths(cfg):
                print(note, file=sys.stderr)
            return 0
        result = run(cfg, log_path=Path(args.log_file) if args.log_file else None)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the MLPerf log was closed with status aborted", file=sys.stderr)
        return 130
    print0(summarize(cfg, result))  # one summary per run, not one per process
    if result.stopped:
        print0(
            f"[stop] {result.reason}; exit status {EXIT_STOPPED}: a requeued or retried job (MAX_RETRIES) "
            f"or a new launch on the same CHECKPOINT_DIR continues the run"
        )
        return EXIT_STOPPED
    if result.paused:
        # A deliberate pause is not a failure: the next job of the chain (Slurm afterok, or the local
        # loop) must start, and the part's log, which ends without the target, is checked with the run.
        return 0
    ok = result.status == "success"
    # result.log_path is rank 0's alone: the other ranks write no log, so only rank 0 checks one.
    if result.log_path and not args.no_check:
        passed, text = compliance_verdict(cfg, result.log_path)
        print(text)
        ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
