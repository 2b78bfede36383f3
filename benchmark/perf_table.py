"""The throughput comparison as a table: JSON lines of benchmark.perf and its peers in, markdown out.

Run:  python -m benchmark.perf_table OUTPUT...        (files holding the commands' output; - = stdin)

Every line that is a JSON record of ``python -m benchmark.perf`` or of a peer in benchmark/peers/
counts; anything else in the files (logs, warnings) is skipped. Records are grouped by what makes
two measurements comparable (card, GPU count, layers, sequence length, micro-batch size), and each
row's ratio is taken against the peer of its own group: the compiled one where there is one, so
a table made from one device call compares like with like, as docs/PERFORMANCE.md does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

BENCHES = ("benchmark.perf", "benchmark.peers.hf_llama", "benchmark.peers.hf_llama_fsdp")
GROUP_KEYS = ("device", "gpus", "layers", "seq", "mbs")


def read_records(lines: Iterable[str]) -> list[dict]:
    """The benchmark records among the lines, in order."""
    records = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("bench") in BENCHES and "tokens_per_sec_per_gpu" in record:
            records.append(record)
    return records


def is_peer(record: dict) -> bool:
    return record["bench"] != "benchmark.perf"


def variant(record: dict) -> str:
    """A row's name: its --label, else what distinguishes it (spec, precision, compile, the precision-aware
    optimizer, experiments)."""
    if record.get("label"):
        return record["label"]
    parts = [record.get("spec") or record["bench"], record.get("precision") or ""]
    if record.get("compile") and "compiled" not in parts[0]:
        parts.append("compiled")
    if record.get("precision_aware_optimizer") == "on":
        parts.append("precision-aware optimizer")
    for key, value in (record.get("experiment") or {}).items():
        parts.append(f"{key}={value}")
    return ", ".join(p for p in parts if p)


def _reference_peer(group: list[dict]) -> dict | None:
    peers = [r for r in group if is_peer(r)]
    compiled = [r for r in peers if r.get("compile")]
    return (compiled or peers or [None])[-1]


def table(records: list[dict]) -> str:
    """One markdown table per comparable group, rows in the order measured."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(tuple(record.get(k) for k in GROUP_KEYS), []).append(record)
    out = []
    for key, group in groups.items():
        device, gpus, layers, seq, mbs = key
        peer = _reference_peer(group)
        title = f"{gpus}x {device}, {layers} layers, seq {seq}, MBS {mbs}"
        if peer is not None:
            title += f"; ratios against {variant(peer)} ({peer['tokens_per_sec_per_gpu']:,.0f} tokens/s per GPU)"
        out += [f"{title}:", "", "| variant | tokens/s per GPU (MFU) | peak GiB | vs peer |", "|---|---|---|---|"]
        for r in group:
            mfu = f" ({r['mfu']:.3f})" if r.get("mfu") is not None else ""
            mem = f"{r['peak_mem_gib']:.1f}" if r.get("peak_mem_gib") is not None else "-"
            ratio = f"{r['tokens_per_sec_per_gpu'] / peer['tokens_per_sec_per_gpu']:.2f}" if peer else "-"
            out.append(f"| {variant(r)} | {r['tokens_per_sec_per_gpu']:,.0f}{mfu} | {mem} | {ratio} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.perf_table", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="files with the JSON lines of benchmark.perf and the peers; - = stdin")
    a = p.parse_args(argv)
    lines: list[str] = []
    for name in a.files:
        if name == "-":
            lines += sys.stdin.read().splitlines()
            continue
        try:
            lines += Path(name).read_text(errors="replace").splitlines()
        except OSError as err:
            print(f"error: {name}: cannot be read ({err.strerror or err})", file=sys.stderr)
            return 2
    records = read_records(lines)
    if not records:
        print(
            f"error: {', '.join(a.files)}: no JSON line of benchmark.perf or of a peer (python -m "
            "benchmark.perf ... and python -m benchmark.peers.hf_llama ... print one each)",
            file=sys.stderr,
        )
        return 2
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
