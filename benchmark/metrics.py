"""Watching a run: the numbers of the progress line, and the same numbers for TensorBoard and W&B.

None of this reaches the MLPerf log, which holds only what the rules ask for. Only rank 0 writes:
every rank computes the same loss, and the throughput of one rank stands for the others (they step
together). The x axis of every scalar is the number of training samples, the MLPerf log's
``samples_count``, so curves of runs with other batch sizes line up.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from benchmark.config import Config, to_dict


def step_values(device: torch.device, flops_per_tok: float, tokens_per_s_per_device: float) -> dict[str, float]:
    """Throughput, MFU (on a GPU whose peak is known) and peak memory (GPU) of the last step."""
    from benchmark.flops import peak_flops

    values = {"tokens_per_s_per_device": tokens_per_s_per_device}
    if device.type == "cuda":
        peak = peak_flops(torch.cuda.get_device_name(device))
        if peak:
            values["mfu"] = tokens_per_s_per_device * flops_per_tok / peak
        values["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return values


def format_step_values(values: dict[str, float]) -> str:
    text = f"tokens/s/device {values['tokens_per_s_per_device']:,.0f}"
    if "mfu" in values:
        text += f" mfu {values['mfu']:.3f}"
    if "max_memory_allocated_gib" in values:
        text += f" mem {values['max_memory_allocated_gib']:.1f} GiB"
    return text


def progress_text(samples: int, eval_every: int, global_batch_size: int, mean_step_s: float) -> str:
    """How far the next evaluation is, in samples, steps and seconds at the block's mean step time.

    Evaluations come after every EVAL_EVERY samples, so at a multiple of it the evaluation is next.
    """
    to_eval = (eval_every - samples % eval_every) % eval_every
    if to_eval == 0:
        return "eval next"
    steps = to_eval // global_batch_size
    return f"next eval in {to_eval} samples ({steps} step{'s' if steps > 1 else ''}), eta {steps * mean_step_s:.1f} s"


def run_name(cfg: Config) -> str:
    """One name per run: the jobs of a run (NPAR, requeues) share it and their curves continue."""
    return f"{cfg.preset}_seed{cfg.train.seed}"


class Metrics:
    """Scalars to TensorBoard (TENSORBOARD_DIR) and Weights & Biases (WANDB_PROJECT), rank 0 only.

    With neither set, or on another rank, every call does nothing. :meth:`close` flushes and closes
    both; the run calls it on every way out (success, abort, early stop, exception).
    """

    def __init__(self, cfg: Config, rank: int):
        self._tb = None
        self._wandb = None
        if rank != 0:
            return
        lg = cfg.log
        if lg.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(lg.tensorboard_dir) / run_name(cfg)))
        if lg.wandb_project:
            self._wandb = _start_wandb(cfg)

    @property
    def active(self) -> bool:
        return self._tb is not None or self._wandb is not None

    def _write(self, samples: int, scalars: dict[str, float]) -> None:
        if self._tb is not None:
            for tag, value in scalars.items():
                self._tb.add_scalar(tag, value, global_step=samples)
        if self._wandb is not None:
            self._wandb.log({"samples": samples, **scalars})

    def train_step(self, samples: int, *, loss: float, lr: float, grad_norm: float, values: dict[str, float]) -> None:
        if not self.active:
            return
        scalars = {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm}
        scalars.update({f"train/{key}": value for key, value in values.items()})
        self._write(samples, scalars)

    def evaluation(
        self, samples: int, *, eval_loss: float, block_tokens_per_s_per_device: float, block_samples_per_s: float
    ) -> None:
        if not self.active:
            return
        self._write(
            samples,
            {
                "eval/loss": eval_loss,
                "block/tokens_per_s_per_device": block_tokens_per_s_per_device,
                "block/samples_per_s": block_samples_per_s,
            },
        )
        # An evaluation is a natural point to make the curves visible to a running TensorBoard.
        if self._tb is not None:
            self._tb.flush()

    def close(self, failed: bool = False) -> None:
        """Flush and close; a failure in one writer is reported, never raised over the run's own outcome."""
        tb, run = self._tb, self._wandb
        self._tb = self._wandb = None
        if tb is not None:
            try:
                tb.flush()
                tb.close()
            except Exception as err:  # noqa: BLE001 - the run's result matters more than its charts
                print(f"[metrics] closing the TensorBoard writer failed: {err}", file=sys.stderr, flush=True)
        if run is not None:
            try:
                run.finish(exit_code=1 if failed else 0)
            except Exception as err:  # noqa: BLE001
                print(f"[metrics] finishing the W&B run failed: {err}", file=sys.stderr, flush=True)


def _start_wandb(cfg: Config):
    from benchmark.config import ConfigError

    try:
        import wandb
    except Exception as err:  # an installed but broken wandb fails here, not at validation
        raise ConfigError(
            f"WANDB_PROJECT={cfg.log.wandb_project} but wandb does not import ({type(err).__name__}: {err}): "
            f"repair or install wandb, or unset WANDB_PROJECT"
        ) from None
    out = Path(cfg.log.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # console="off": W&B would otherwise wrap stdout, where the MLPerf log lines are echoed.
    run = wandb.init(
        project=cfg.log.wandb_project,
        name=run_name(cfg),
        dir=str(out),
        config=to_dict(cfg),
        settings=wandb.Settings(console="off"),
    )
    run.define_metric("samples")
    run.define_metric("*", step_metric="samples")
    return run
