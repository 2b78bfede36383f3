"""The embedded default dataset: a small synthetic C4 built offline through the real C4 tools.

Run: python -m utils.smoke --dst DIR [--seed 1234]

`prepare(root)` builds, under `root`:
  raw/           C4-format shards from utils.corpus: 16 train (`-of-00016`), 2 validation
  tokenizer/     a 2,048-id Llama 3 style BPE trained on a slice of the train shards (utils.tokenizer)
  merged/        utils.c4.consolidate: c4-train.en_0..en_7.json.gz (2 shards each) and the
                 validation subset c4-validation-{N}-samples.en.json.gz
  preprocessed/  utils.tokenize: only what the benchmark reads, c4-train.en_6/en_7 and the
                 validation subset, as *_text_document.{bin,idx}
  smoke.json     what each stage wrote, with sizes and sha256

It is idempotent: a second call finds every stage's files matching smoke.json and returns at once;
files added beside them later (the benchmark's index cache under preprocessed/) are left alone.
A stage whose files are missing or differ (an interrupted or damaged earlier attempt) is rebuilt,
with every stage after it. Every stage is deterministic for a seed. A lock file serializes
concurrent callers (e.g. several ranks of one job).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmark.smoke_data import SmokeData
from utils.errors import command
from utils.fileio import DataError, iter_raw_lines, read_json, sha256_file, write_json_atomic

# Bump when the recipe below changes, so that older smoke folders are rebuilt.
RECIPE = 1
TRAIN_SHARDS = 16
VALID_SHARDS = 2
DOCS_PER_TRAIN_SHARD = 1150
DOCS_PER_VALID_SHARD = 250
VOCAB_SIZE = 2048
BPE_TRAIN_DOCS = 2000  # a slice of the first train shards
# Validation subset: the fewest documents that reach this many tokens, as the real subset's 91,205
# documents are the fewest that reach 5,760 sequences of 8,192 tokens. Here 4 x the smoke
# preset's evaluation set (64 sequences of 256 + 1 tokens).
VALID_TOKENS = 4 * 64 * 257
BENCHMARK_GROUPS = (6, 7)
STAGES = ("raw", "tokenizer", "merged", "preprocessed")


def _files(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file under `folder` (relative names; temporaries excluded)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            out[str(p.relative_to(folder))] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return out


def _verified(folder: Path, recorded: dict | None) -> bool:
    """Whether every file the stage recorded is there unchanged (size, then sha256).

    Only the recorded files count: others that appear in the folder are not the stage's output and
    do not make it stale. The benchmark's dataset index cache, by default under preprocessed/index_cache
    (INDEX_CACHE_DIR), is one; rebuilding the stage for it would also delete that cache.
    """
    if not isinstance(recorded, dict) or not recorded.get("files"):
        return False
    for name, meta in recorded["files"].items():
        p = folder / name
        if not p.is_file() or p.stat().st_size != meta.get("bytes"):
            return False
    return all(sha256_file(folder / name) == meta.get("sha256") for name, meta in recorded["files"].items())


def n_validation_for(valid_shards: list[Path], tokenizer_dir: Path, min_tokens: int) -> int:
    """The fewest validation documents, in order, whose tokens (no BOS) reach `min_tokens`."""
    from utils.tokenizer import load_fast_tokenizer

    tok = load_fast_tokenizer(tokenizer_dir)
    total = 0
    for n, raw in enumerate((line for s in valid_shards for line in iter_raw_lines(s)), 1):
        total += len(tok.encode(json.loads(raw)["text"], add_special_tokens=False).ids)
        if total >= min_tokens:
            return n
    raise DataError(f"the validation shards hold only {total} tokens, fewer than {min_tokens}")


def _result(root: Path, n_validation: int) -> SmokeData:
    from utils.c4 import validation_name

    data_dir = root / "preprocessed"
    valid_stem = validation_name(n_validation).removesuffix(".json.gz")
    return SmokeData(
        tokenizer_dir=root / "tokenizer",
        data_dir=data_dir,
        train_prefixes=tuple(str(data_dir / f"c4-train.en_{k}_text_document") for k in BENCHMARK_GROUPS),
        valid_prefix=str(data_dir / f"{valid_stem}_text_document"),
        n_validation=n_validation,
    )


@contextlib.contextmanager
def _locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    # Append mode: taking the lock leaves the file (and its time stamps) as it was.
    with open(root / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare(root: str | Path, seed: int = 1234, log: Callable[[str], None] = print) -> SmokeData:
    """Build (or reuse) the embedded dataset under `root`; see the module docstring."""
    from utils import c4, corpus, tokenize, tokenizer

    root = Path(root)
    params = {"recipe": RECIPE, "seed": seed}
    with _locked(root):
        state = read_json(root / "smoke.json")
        if not isinstance(state, dict) or state.get("params") != params:
            state = {"params": params, "stages": {}}
        stages = state["stages"]
        raw, tok_dir, merged, pre = (root / s for s in STAGES)
        n_validation = stages.get("merged", {}).get("n_validation")
        reuse = True  # a stage is reused only if every stage before it was

        def run(stage: str, build: Callable[[], str], extra: Callable[[], dict] | None = None) -> None:
            nonlocal reuse
            folder = root / stage
            if reuse and _verified(folder, stages.get(stage)):
                return
            reuse = False
            t = time.perf_counter()
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            detail = build()
            stages[stage] = {"files": _files(folder), **(extra() if extra else {})}
            write_json_atomic(root / "smoke.json", state)
            log(f"smoke data: {stage:<12} {detail} ({time.perf_counter() - t:.1f} s)")

        def build_raw() -> str:
            # Two processes when there are two cores: generation is the longest stage.
            workers = min(2, os.cpu_count() or 1)
            counts = (TRAIN_SHARDS, VALID_SHARDS, DOCS_PER_TRAIN_SHARD, DOCS_PER_VALID_SHARD)
            corpus.write_corpus(raw, seed, *counts, workers=workers)
            return f"{TRAIN_SHARDS} train + {VALID_SHARDS} validation shards in {raw}"

        def build_tokenizer() -> str:
            shards = c4.find_shards(raw, "train")[:2]
            tokenizer.train_bpe(shards, tok_dir, VOCAB_SIZE, max_docs=BPE_TRAIN_DOCS)
            return f"{VOCAB_SIZE}-id BPE in {tok_dir}"

        def build_merged() -> str:
            nonlocal n_validation
            valid = c4.find_shards(raw, "validation")
            n_validation = n_validation_for(valid, tok_dir, VALID_TOKENS)
            c4.consolidate(raw, merged, n_validation)
            return f"en_0..en_7 + {n_validation} validation documents in {merged}"

        def build_preprocessed() -> str:
            names = [c4.group_name(k) for k in BENCHMARK_GROUPS] + [c4.validation_name(n_validation)]
            tokens = []
            for name in names:
                m = tokenize.tokenize_file(merged / name, pre / name.removesuffix(".json.gz"), tok_dir)
                tokens.append(m["tokens"])
            return f"{sum(tokens[:-1]):,} train + {tokens[-1]:,} validation tokens in {pre}"

        t0 = time.perf_counter()
        run("raw", build_raw)
        run("tokenizer", build_tokenizer)
        run("merged", build_merged, lambda: {"n_validation": n_validation})
        run("preprocessed", build_preprocessed)
        if not reuse:
            log(f"smoke data: ready in {root} ({time.perf_counter() - t0:.1f} s)")
        return _result(root, n_validation)


@command
def main(argv: list[str] | None = None) -> int:
    """python -m utils.smoke --dst DIR [--seed 1234]: build or check the embedded dataset."""
    p = argparse.ArgumentParser(
        prog="python -m utils.smoke",
        description="Build (or reuse) the embedded default dataset: synthetic C4-format shards, a "
        "small BPE tokenizer, consolidated and tokenized files, through the same tools as real C4.",
    )
    p.add_argument("--dst", required=True, type=Path, help="root folder of the embedded dataset")
    p.add_argument("--seed", type=int, default=1234, help="corpus seed (default 1234)")
    p.add_argument(
        "--summary",
        metavar="JSON",
        type=Path,
        help="also write where the data set is (the fields of SmokeData) to this JSON file",
    )
    a = p.parse_args(argv)
    try:
        d = prepare(a.dst, a.seed)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"tokenizer:  {d.tokenizer_dir}")
    print(f"train:      {', '.join(d.train_prefixes)}")
    print(f"validation: {d.valid_prefix} ({d.n_validation} documents)")
    if a.summary:
        write_json_atomic(a.summary, d.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
