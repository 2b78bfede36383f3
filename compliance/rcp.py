"""Reference convergence points (RCPs) for llama31_8b, as `mlperf_logging.rcp_checker` computes them.

The project keeps no copy of the RCP numbers. Everything here comes from the library's own
`RCP_Checker`: its olympic means (best and worst reference run dropped), its pruned set of RCPs,
and its linear interpolation for a batch size between two pruned RCPs. That way the samples a run
is expected to need, the abort cap derived from them and the projection of `compliance.estimate`
are the numbers the submission checker will hold a result against.

    point = reference_point(16)   # point.mean: olympic mean samples to converge at GBS 16
    point = reference_point(48)   # interpolated between the pruned RCPs at GBS 32 and 64
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from compliance.rules import BENCHMARK, DEFAULT_RULESET, USAGE

# Which RCP list the official check uses; `check_directory` and the package checker default to it.
RCP_PASS = "pruned_rcps"


class RcpError(ValueError):
    """No reference convergence point applies; the message says why and what to do."""


@dataclass(frozen=True)
class ReferencePoint:
    """One batch size's reference convergence, read from the library's RCP checker."""

    gbs: int
    mean: float  # olympic mean samples to converge (the checker's "RCP Mean")
    stdev: float  # the checker's "RCP Stdev"
    min_mean: float  # smallest submission mean the check accepts ("Min Epochs" = mean / max speedup)
    runs: tuple[float, ...]  # samples to converge of each reference run; empty when interpolated
    lr: float | None  # base learning rate the reference runs used ("Hyperparams"); None when interpolated
    warmup_samples: int | None  # their linear warmup in samples; None when interpolated
    source: str  # the RCP file, as ruleset folder / file name
    interpolated_between: tuple[int, int] | None = None

    @property
    def max_speedup(self) -> float:
        return self.mean / self.min_mean


def checker(ruleset: str = DEFAULT_RULESET) -> Any:
    """The library's `RCP_Checker` for llama31_8b under `ruleset` (built once per process)."""
    return _checker(ruleset)  # one cache key per ruleset, however the caller names it


@cache
def _checker(ruleset: str) -> Any:
    from mlperf_logging.rcp_checker import rcp_checker

    path = Path(rcp_checker.__file__).parent / f"{USAGE}_{ruleset}" / f"rcps_{BENCHMARK}.json"
    if not path.is_file():
        raise RcpError(f"the installed mlperf-logging has no {BENCHMARK} RCP file for ruleset {ruleset} ({path})")
    # verbose=False: the checker would otherwise print every record and its pruning to stdout.
    return rcp_checker.RCP_Checker(USAGE, ruleset, BENCHMARK, verbose=False)


def rcp_source(ruleset: str = DEFAULT_RULESET) -> str:
    return f"mlperf-logging {USAGE}_{ruleset}/rcps_{BENCHMARK}.json"


def rcp_batch_sizes(ruleset: str = DEFAULT_RULESET) -> list[int]:
    """Batch sizes that have an RCP record of their own (before pruning)."""
    return sorted(int(r["BS"]) for r in checker(ruleset).rcp_data.values())


def reference_point(gbs: int, ruleset: str = DEFAULT_RULESET) -> ReferencePoint:
    """The RCP the official check compares a set of GBS `gbs` runs with.

    As `rcp_checker.check_directory` does: the pruned RCP of that batch size if there is one, else
    the interpolation between the nearest pruned RCPs below and above. Outside the range of the
    RCPs the check has nothing to compare with (above: "Missing RCP"; below: it accepts only runs
    slower than the smallest batch size's RCP), so there is no point to give and RcpError is raised.
    """
    rcp = checker(ruleset)
    source = rcp_source(ruleset)
    record = rcp._find_rcp(gbs, RCP_PASS)
    if record is not None:
        hyper = _hyperparameters(rcp, gbs)
        return ReferencePoint(
            gbs=gbs,
            mean=float(record["RCP Mean"]),
            stdev=float(record["RCP Stdev"]),
            min_mean=float(record["Min Epochs"]),
            runs=tuple(float(x) for x in record["Epochs to converge"]),
            lr=hyper[0],
            warmup_samples=hyper[1],
            source=source,
        )
    low = rcp._find_top_min_rcp(gbs, RCP_PASS)
    high = rcp._find_bottom_max_rcp(gbs, RCP_PASS)
    if low is None or high is None:
        known = ", ".join(str(bs) for bs in sorted(int(r["BS"]) for r in rcp._get_rcp_data(RCP_PASS).values()))
        raise RcpError(
            f"no RCP covers global batch size {gbs}: the pruned RCPs of {source} are for GBS {known}, "
            "and outside that range there is nothing to interpolate between"
        )
    _, interp = rcp._create_interp_rcp(gbs, low, high)
    hyper = _hyperparameters(rcp, gbs)
    return ReferencePoint(
        gbs=gbs,
        mean=float(interp["RCP Mean"]),
        stdev=float(interp["RCP Stdev"]),
        min_mean=float(interp["Min Epochs"]),
        runs=(),
        lr=hyper[0],
        warmup_samples=hyper[1],
        source=source,
        interpolated_between=(int(low["BS"]), int(high["BS"])),
    )


def _hyperparameters(rcp: Any, gbs: int) -> tuple[float | None, int | None]:
    """Base LR and warmup samples of the reference runs at `gbs`, if the RCP file records them.

    Taken from the full record list: a record the pruning drops was still measured with them.
    """
    for record in rcp.rcp_data.values():
        if int(record["BS"]) == gbs:
            hyper = record.get("Hyperparams") or {}
            lr = hyper.get("opt_base_learning_rate")
            warmup = hyper.get("opt_learning_rate_warmup_samples")
            return (float(lr) if lr is not None else None, int(warmup) if warmup is not None else None)
    return None, None
