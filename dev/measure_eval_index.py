"""What the reference evaluation set (EVAL_SET=reference) costs on the 8B geometry.

Writes a synthetic validation file shaped like c4-validation-91205-samples.en_text_document
(91,205 documents, about 47.2M tokens = ~5,760 windows of 8,192, 4-byte tokens as Llama 3.1's
vocabulary needs) and times, each in a fresh process so that its peak RSS is its own:
  build   the first GPTDataset build (document, sample and shuffle indices written to the cache)
  reopen  a second build with the cache in place (what every later run of the same seed does)
  read    one evaluation's windows (ceil(1024 / GBS) x GBS of them) out of the reopened dataset
and the size of the cached index files.

  python dev/measure_eval_index.py [--gbs 16 96] [--dir DIR] [--seed 1234]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DOCS = 91_205
TOKENS = 5_760 * 8_192
SEQ = 8_192
MAX_STEPS = 1_200_000
EVAL_EVERY = 12_288
EVAL_SAMPLES = 1_024
VALID = "c4-validation-91205-samples.en_text_document"


def make_file(folder: Path) -> Path:
    """Documents of C4-like uneven lengths (lognormal) scaled to TOKENS in all, random token ids."""
    import numpy as np

    from benchmark.indexed import IndexedWriter

    prefix = folder / VALID
    if Path(f"{prefix}.idx").is_file():
        return prefix
    rng = np.random.default_rng(0)
    raw = rng.lognormal(mean=5.8, sigma=0.9, size=DOCS)
    lengths = np.maximum(1, np.floor(raw / raw.sum() * TOKENS)).astype(np.int64)
    lengths[-1] += TOKENS - int(lengths.sum())
    writer = IndexedWriter(folder / f"{VALID}.bin.tmp", np.int32)
    for start in range(0, DOCS, 10_000):
        chunk = lengths[start : start + 10_000]
        writer.add(rng.integers(0, 128_256, size=int(chunk.sum()), dtype=np.int32), chunk)
    writer.finalize(folder / f"{VALID}.idx.tmp")
    os.replace(folder / f"{VALID}.bin.tmp", f"{prefix}.bin")
    os.replace(folder / f"{VALID}.idx.tmp", f"{prefix}.idx")
    return prefix


def num_samples(gbs: int) -> int:
    return (MAX_STEPS // (EVAL_EVERY // gbs) + 1) * math.ceil(EVAL_SAMPLES / gbs) * gbs


def phase(name: str, prefix: str, cache: str, gbs: int, seed: int) -> dict:
    from benchmark.data import TokenizerInfo, build_eval_dataset

    tok = TokenizerInfo(vocab_size=128_256, eod=128_001, path="synthetic")
    imported_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch + megatron.core
    t0 = time.perf_counter()
    ds = build_eval_dataset(
        prefix, seq_length=SEQ, num_samples=num_samples(gbs), seed=seed, tokenizer=tok, cache_dir=cache
    )
    out = {"phase": name, "open_s": time.perf_counter() - t0}
    if name == "read":
        n = math.ceil(EVAL_SAMPLES / gbs) * gbs
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]["tokens"].sum()
        out["read_s"], out["windows"] = time.perf_counter() - t0, n
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["imports_rss_mib"] = imported_mib
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gbs", type=int, nargs="+", default=[16, 96])
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--dir", default="", help="where the synthetic file and caches go (default: a temp folder)")
    parser.add_argument("--phase", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(phase(args.phase, str(Path(args.dir) / VALID), args.cache, args.gbs[0], args.seed)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        prefix = make_file(folder)
        print(
            f"validation file: {DOCS:,} documents, {TOKENS:,} tokens ({os.path.getsize(f'{prefix}.bin') / 2**20:.0f} "
            f"MiB .bin), written in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        for gbs in args.gbs:
            cache = folder / f"cache_gbs{gbs}_seed{args.seed}"
            if cache.exists():
                for f in cache.rglob("*"):
                    if f.is_file():
                        f.unlink()
            rows = []
            for name in ("build", "reopen", "read"):
                cmd = [
                    sys.executable,
                    __file__,
                    "--phase",
                    name,
                    "--dir",
                    str(folder),
                    "--cache",
                    str(cache),
                    "--gbs",
                    str(gbs),
                    "--seed",
                    str(args.seed),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            size = sum(f.stat().st_size for f in cache.rglob("*.npy"))
            build, reopen, read = rows
            print(
                f"GBS {gbs}: {num_samples(gbs):,} samples; first build {build['open_s']:.1f} s "
                f"(peak RSS {build['peak_rss_mib']:.0f} MiB, {build['imports_rss_mib']:.0f} of them the imports); "
                f"cached reopen {reopen['open_s'] * 1e3:.0f} ms "
                f"(peak RSS {reopen['peak_rss_mib']:.0f} MiB); reading {read['windows']:,} windows "
                f"{read['read_s']:.2f} s; index files {size / 2**20:.0f} MiB",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
