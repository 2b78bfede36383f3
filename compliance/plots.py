"""PNG plots for the folder report: eval curves with the target, and times to train.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so nothing here touches the
global backend of a program that imports this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from compliance.chain import ChainReport

if TYPE_CHECKING:
    from compliance.folder import FolderReport

_PASS_COLOR, _FAIL_COLOR = "#2a7ab9", "#c0392b"


def _label(report: FolderReport, run) -> str:
    if isinstance(run, ChainReport):
        return f"{report.name(run)} ({len(run.parts)} parts)"
    return report.name(run)


def eval_curves(report: FolderReport, path: Path) -> None:
    """eval_accuracy against samples_count for every run, with each target as a dashed line."""
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for run in report.runs:
        if run.eval_curve:
            # A run split over jobs is one curve: its parts' evals joined (samples_count runs on).
            samples, accuracy = zip(*run.eval_curve, strict=True)
            style = "-" if run.passed else ":"
            ax.plot(samples, accuracy, style, marker=".", linewidth=1.2, label=_label(report, run))
    targets = sorted({run.target_accuracy for run in report.runs if run.target_accuracy is not None})
    for target in targets:
        ax.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("training samples (samples_count)")
    ax.set_ylabel("eval_accuracy (mean token cross-entropy)")
    ax.set_title(f"{len(report.runs)} run(s), profile {report.profile}: eval_accuracy against samples")
    ax.grid(True, alpha=0.3)
    if report.runs:
        ax.legend(fontsize="small", ncols=2 if len(report.runs) > 6 else 1)
    fig.savefig(path, dpi=110)


def times_to_train(report: FolderReport, path: Path) -> None:
    """One bar per run (minutes), failed runs in red, with the olympic-mean score as a line."""
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    timed = [run for run in report.runs if run.time_to_train_min is not None]
    names = [_label(report, run) for run in timed]
    # One bar per run; a run split over jobs is one bar stacked from its parts' run_start -> run_stop
    # (edges between the segments), the gaps between its jobs left out as its time leaves them out.
    for x, run in enumerate(timed):
        color = _PASS_COLOR if run.passed else _FAIL_COLOR
        segments = [t.time_to_train_ms / 60_000 for t in run.part_times] if isinstance(run, ChainReport) else None
        if not segments:
            ax.bar(x, run.time_to_train_min, color=color)
            continue
        bottom = 0.0
        for minutes in segments:
            ax.bar(x, minutes, bottom=bottom, color=color, edgecolor="white", linewidth=1.5)
            bottom += minutes
    ax.set_xticks(range(len(timed)), names, rotation=30, ha="right", fontsize="small")
    if report.score_min is not None:
        ax.axhline(
            report.score_min,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"olympic mean {report.score_min:.2f} min",
        )
        ax.legend(fontsize="small")
    untimed = len(report.runs) - len(timed)
    ax.set_ylabel("time to train (min)")
    chained = sum(isinstance(run, ChainReport) for run in timed)
    ax.set_title(
        "time to train per run (red: failed)"
        + (f"; {untimed} run(s) without one" if untimed else "")
        + (f"; {chained} split over jobs (stacked parts, not submittable)" if chained else "")
    )
    ax.grid(True, axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
