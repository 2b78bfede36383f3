"""Training and validation sequences from tokenized C4 (docs/FIDELITY.md, docs/DATA.md).

Training: Megatron-Core's GPTDataset over the benchmark area (documents concatenated into
seq_length + 1 token windows, no resets at document boundaries, no EOD masking), documents and
samples shuffled with the run's seed.
Validation, EVAL_SET=reference (the default): a GPTDataset over the validation file built as NeMo's
PreTrainingDataModule builds the one the reference convergence points were measured on: the run's
seed, the validation split mapped to the whole file, and as many samples as NeMo asks for
(TrainConfig.eval_dataset_samples). Every evaluation reads its first TrainConfig.eval_sequences
windows, from index 0, as NeMo's validation sampler does (it always starts at consumed_samples=0).
Validation, EVAL_SET=file-order: the first ``eval_samples`` windows of the file *in order*, cut with
GPTDataset's geometry (window i = tokens [i*s, i*s + s + 1) of the concatenated documents) straight
from Megatron-Core's IndexedDataset.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset


@dataclass(frozen=True)
class TokenizerInfo:
    """What GPTDataset needs of a tokenizer: its size and its end-of-document id."""

    vocab_size: int
    eod: int
    path: str = ""

    @property
    def unique_identifiers(self) -> dict:
        # GPTDataset hashes its config, tokenizer included, to name its cached index files.
        return {"class": "TokenizerInfo", "path": self.path, "vocab_size": self.vocab_size, "eod": self.eod}


def load_tokenizer_info(tokenizer_dir: str) -> TokenizerInfo:
    """Load a Hugging Face tokenizer folder exactly as the Llama 3.1 one is loaded."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer {tokenizer_dir} has no eos token; it cannot serve as end-of-document")
    return TokenizerInfo(vocab_size=len(tok), eod=int(tok.eos_token_id), path=str(Path(tokenizer_dir).resolve()))


# What a check of the token ids reads of a .bin with no manifest: this many evenly spaced runs of
# this many tokens (2 MB of int32 in all), whatever the file's size; a whole 80 GB file is too much.
ID_SAMPLE_RUNS = 8
ID_SAMPLE_TOKENS = 65536
TOKENIZE_FIX = "re-tokenize it with the tokenizer the run uses (preprocess.sh, python -m utils.tokenize)"


def check_inputs(cfg) -> TokenizerInfo:
    """Check the tokenizer and the data files a run reads, before any model is built; return the
    tokenizer's TokenizerInfo. Raises ConfigError naming the file and the fix.

    Without it these fail deep inside the run: a missing or corrupt tokenizer in huggingface_hub, a
    truncated index inside Megatron-Core, token ids beyond the vocabulary in the embedding after
    training has started, a validation file too small for the eval set in a bare ValueError, and a
    training set smaller than one global batch trains on nothing.
    """
    from benchmark.config import ConfigError
    from benchmark.errors import DataError
    from benchmark.indexed import IndexedReader
    from benchmark.tokenizer import load_fast_tokenizer

    d, t, m = cfg.data, cfg.train, cfg.model
    try:
        load_fast_tokenizer(d.tokenizer)  # names a missing folder, a missing or malformed tokenizer.json
    except DataError as err:
        raise ConfigError(f"TOKENIZER_PATH={d.tokenizer}: {err}") from None
    try:
        tok = load_tokenizer_info(d.tokenizer)
    except Exception as err:  # transformers raises whatever its loaders raise; the cause is in the text
        raise ConfigError(
            f"TOKENIZER_PATH={d.tokenizer}: cannot be loaded with transformers' AutoTokenizer "
            f"({type(err).__name__}: {err}); point TOKENIZER_PATH at a Hugging Face tokenizer folder "
            f"(python -m utils.tokenizer download --dst DIR)"
        ) from None
    # Ids must index the embedding: the tokenizer's own size bounds them (an id past it is not text
    # this tokenizer wrote), and VOCAB_SIZE, when set, bounds the embedding's rows.
    limit = min(tok.vocab_size, m.vocab_size) if m.vocab_size else tok.vocab_size
    if m.vocab_size and m.vocab_size < tok.vocab_size:
        limit_name = f"VOCAB_SIZE={m.vocab_size}"
        fix = f"set VOCAB_SIZE=0 (the tokenizer's size) or at least {tok.vocab_size}"
    else:
        limit_name = f"the {tok.vocab_size}-id tokenizer at TOKENIZER_PATH={d.tokenizer}"
        fix = f"point TOKENIZER_PATH at the tokenizer the data was made with, or {TOKENIZE_FIX}"

    def windows(prefix: str, role: str) -> int:
        try:
            reader = IndexedReader.open(prefix)
        except DataError as err:
            raise ConfigError(f"{role} file: {err} ({TOKENIZE_FIX})") from None
        _check_ids(prefix, reader, limit, limit_name, fix, role)
        return max(reader.tokens - 1, 0) // m.seq_length

    data_dir = Path(d.data_dir)
    train = {name: windows(str(data_dir / name), "training") for name in d.train_files}
    empty = [name for name, n in train.items() if n == 0]
    if empty:
        raise ConfigError(
            f"training file {data_dir / empty[0]}.bin holds not one sequence of SEQ_LENGTH + 1 = "
            f"{m.seq_length + 1} tokens: {TOKENIZE_FIX}, or lower SEQ_LENGTH"
        )
    if sum(train.values()) < t.global_batch_size:
        raise ConfigError(
            f"the training files ({', '.join(str(data_dir / n) + '.bin' for n in train)}) hold "
            f"{sum(train.values())} sequences of SEQ_LENGTH={m.seq_length}, fewer than one global batch "
            f"(GBS={t.global_batch_size}): use more training data (BENCHMARK_AREA, PREPROCESSED_PATH) or "
            f"lower GBS or SEQ_LENGTH"
        )
    valid = str(data_dir / d.valid_file)
    have = windows(valid, "validation")
    # Each evaluation reads eval_sequences distinct windows: file-order cuts them from the file once,
    # and a reference set drawn from fewer would repeat windows within one evaluation.
    need = t.eval_sequences
    if have < need:
        raise ConfigError(
            f"validation file {valid}.bin holds {have} sequences of SEQ_LENGTH={m.seq_length}, fewer than the "
            f"{need} that one evaluation reads (EVAL_SAMPLES={t.eval_samples}, EVAL_SET={t.eval_set}): lower "
            f"EVAL_SAMPLES or SEQ_LENGTH, or use a larger validation file (utils.c4 consolidate)"
        )
    return tok


def _read_manifest(path: Path):
    """The parsed manifest beside a tokenized file, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _check_ids(prefix: str, reader, limit: int, limit_name: str, fix: str, role: str) -> None:
    """Every token id of a file must lie in [0, limit). Cheap whatever the size: the manifest that
    utils.tokenize writes beside the file records the vocabulary it was tokenized with; without one,
    the dtype may already bound the ids, else a fixed sample of the .bin is read."""
    from benchmark.config import ConfigError

    manifest_path = Path(f"{prefix}.manifest.json")
    manifest = None
    if manifest_path.is_file():
        try:
            manifest = _read_manifest(manifest_path)
        except Exception:  # an unreadable manifest is no evidence either way: sample the file instead
            manifest = None
    recorded = manifest.get("vocab_size") if isinstance(manifest, dict) else None
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        if recorded > limit:
            raise ConfigError(
                f"{role} file {prefix}.bin was tokenized with a {recorded}-id vocabulary ({manifest_path}), "
                f"more ids than {limit_name}: {fix}"
            )
        return
    dtype = reader.dtype
    if np.issubdtype(dtype, np.unsignedinteger) and np.iinfo(dtype).max < limit:
        return
    tokens = reader.tokens_mmap
    n = len(tokens)
    if n == 0:
        return
    run = min(ID_SAMPLE_TOKENS, n)
    starts = np.unique(np.linspace(0, n - run, num=ID_SAMPLE_RUNS).astype(np.int64))
    lo = min(int(tokens[s : s + run].min()) for s in starts)
    hi = max(int(tokens[s : s + run].max()) for s in starts)
    if lo < 0 or hi >= limit:
        bad = hi if hi >= limit else lo
        raise ConfigError(
            f"{role} file {prefix}.bin holds token id {bad}, outside {limit_name} (ids 0 to {limit - 1}): {fix}"
        )


def one_epoch_sequences(prefixes: list[str], seq_length: int) -> int:
    """Full seq_length windows in one pass over the files (the log's train_samples)."""
    total = 0
    for prefix in prefixes:
        # Keep the dataset alive while reading: sequence_lengths is a view into its memory map.
        dataset = IndexedDataset(prefix)
        tokens = int(dataset.sequence_lengths.sum(dtype=np.int64))
        del dataset
        total += (tokens - 1) // seq_length
    return total


def _gpt_config(*, seed: int, seq_length: int, tokenizer: TokenizerInfo, cache_dir: str, blend_per_split):
    # The fields NeMo's PreTrainingDataModule sets (reset_* and eod_mask_loss off, mmap'd .bin files,
    # its index_mapping_dir as path_to_cache); add_extra_token_to_sequence and
    # drop_last_partial_validation_sequence keep Megatron-Core's defaults (True), as NeMo leaves them.
    return GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend_per_split=blend_per_split,
        path_to_cache=cache_dir,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
        mmap_bin_files=True,
        add_extra_token_to_sequence=True,
    )


def build_train_dataset(
    prefixes: list[str],
    *,
    seq_length: int,
    num_samples: int,
    seed: int,
    tokenizer: TokenizerInfo,
    cache_dir: str,
) -> GPTDataset:
    """GPTDataset (blended over the files in proportion to their size) with num_samples sequences."""
    # Several files need explicit weights: without them Megatron-Core blends one pass over each and
    # ignores num_samples, so a run longer than the area would read past its end. With weights each
    # file is repeated as often as its share of num_samples asks (as one file always is).
    weights = None
    if len(prefixes) > 1:
        weights = [float(one_epoch_sequences([p], seq_length)) for p in prefixes]
    config = _gpt_config(
        seed=seed,
        seq_length=seq_length,
        tokenizer=tokenizer,
        cache_dir=cache_dir,
        blend_per_split=[(list(prefixes), weights), None, None],
    )
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return announced_build(
        "train",
        num_samples,
        cache_dir,
        lambda: BlendedMegatronDatasetBuilder(GPTDataset, [num_samples, 0, 0], lambda: True, config).build()[0],
    )


def build_eval_dataset(
    prefix: str,
    *,
    seq_length: int,
    num_samples: int,
    seed: int,
    tokenizer: TokenizerInfo,
    cache_dir: str,
) -> GPTDataset:
    """The reference evaluation set: GPTDataset's validation split over the whole file, num_samples long.

    Its document, sample and shuffle indices are cached under cache_dir (named by a hash of the
    configuration), so they are built once per seed, sequence length and size and reopened after.
    """
    if not Path(f"{prefix}.idx").is_file() or not Path(f"{prefix}.bin").is_file():
        raise ValueError(
            f"validation file {prefix}.bin/.idx is missing: tokenize it into the data folder (preprocess.sh)"
        )
    config = _gpt_config(
        seed=seed,
        seq_length=seq_length,
        tokenizer=tokenizer,
        cache_dir=cache_dir,
        blend_per_split=[None, ([prefix], None), None],
    )
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return announced_build(
        "eval",
        num_samples,
        cache_dir,
        lambda: BlendedMegatronDatasetBuilder(GPTDataset, [0, num_samples, 0], lambda: True, config).build()[1],
    )


# Megatron-Core logs "Build and save the <class> ... indices" (INFO) exactly when it is about to
# compute an index that is not in the cache, from these modules; a cached one is only loaded.
_INDEX_LOGGERS = ("megatron.core.datasets.gpt_dataset", "megatron.core.datasets.blended_dataset")
_BUILD_MESSAGE = "Build and save the "


class _BuildWatch(logging.Filter):
    """Calls `started` on Megatron-Core's build message and lets a record through only if the
    logger's own level would have: watching changes nothing in what the run's logging shows."""

    def __init__(self, started: Callable[[], None], levels: dict[str, int]):
        super().__init__()
        self.started, self.levels = started, levels

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(_BUILD_MESSAGE):
            self.started()
        return record.levelno >= self.levels.get(record.name, logging.WARNING)


@contextlib.contextmanager
def _watch_builds(started: Callable[[], None]):
    loggers = [logging.getLogger(name) for name in _INDEX_LOGGERS]
    levels = {lg.name: lg.getEffectiveLevel() for lg in loggers}
    saved = [(lg, lg.level) for lg in loggers]
    watch = _BuildWatch(started, levels)
    for lg in loggers:
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)  # else the INFO record is dropped before any filter sees it
        lg.addFilter(watch)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.removeFilter(watch)
            lg.setLevel(level)


def _rank0_print(text: str) -> None:
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))
    if rank == 0:
        print(text, flush=True)


def announced_build(
    what: str, num_samples: int, cache_dir: str, build: Callable, say: Callable[[str], None] | None = None
):
    """Run `build()` (a GPTDataset build) and say what it did: a timed start and finish line when it
    computes its index (a minute or more on the 8B evaluation geometry), one line when it reuses
    the cached one. Printed on rank 0 only; `say` replaces that print (tests)."""
    say = say or _rank0_print
    before = set(os.listdir(cache_dir))
    t0: list[float] = []

    def started() -> None:
        if not t0:
            t0.append(time.perf_counter())
            say(f"[data] building the {what} index for {num_samples:,} samples ...")

    t_call = time.perf_counter()
    with _watch_builds(started):
        dataset = build()
    split = getattr(dataset, "index_split", None) or getattr(dataset, "split", None)
    where = os.path.join(
        cache_dir, f"{dataset.unique_description_hash}-{type(dataset).__name__}-{getattr(split, 'name', split)}-*"
    )
    added = set(os.listdir(cache_dir)) - before
    if not t0 and not added:
        say(f"[data] reusing the cached {what} index at {where}")
    else:
        # No build message but new files: Megatron-Core's wording changed; still report the build.
        say(
            f"[data] {what} index for {num_samples:,} samples built in "
            f"{time.perf_counter() - (t0[0] if t0 else t_call):.1f} s, cached at {where}"
        )
    return dataset


class ValidationSequences(torch.utils.data.Dataset):
    """The first ``count`` validation windows, in file order, as GPTDataset would cut them unshuffled."""

    def __init__(self, prefix: str, seq_length: int, count: int):
        dataset = IndexedDataset(prefix)
        needed = count * seq_length + 1
        pieces, have = [], 0
        for i in range(len(dataset)):
            if have >= needed:
                break
            doc = dataset[i]
            pieces.append(doc)
            have += len(doc)
        if have < needed:
            raise ValueError(
                f"validation file {prefix} holds {have} tokens, fewer than the {needed} that "
                f"{count} sequences of {seq_length} need: lower EVAL_SAMPLES or use a larger validation file"
            )
        self.tokens = torch.from_numpy(np.concatenate(pieces)[:needed].astype(np.int64))
        self.seq_length = seq_length
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        window = self.tokens[i * self.seq_length : (i + 1) * self.seq_length + 1]
        return {"tokens": window[:-1], "labels": window[1:]}


def batches(dataset, start: int, count: int, micro_batch_size: int):
    """Yield stacked micro-batches of samples [start, start + count) of a dataset, in order."""
    for first in range(start, start + count, micro_batch_size):
        samples = [dataset[i] for i in range(first, min(first + micro_batch_size, start + count))]
        yield {
            "tokens": torch.stack([s["tokens"] for s in samples]),
            "labels": torch.stack([s["labels"] for s in samples]),
        }
