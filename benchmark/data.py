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
    prefixes: list[str], *, seq_length: int, num_samples: int, seed: int, tokenizer: TokenizerInfo,
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
        seed=seed, seq_length=seq_length, tokenizer=tokenizer, cache_dir=cache_dir,
        blend_per_split=[(list(prefixes), weights), None, None],
    )
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    datasets = BlendedMegatronDatasetBuilder(
        GPTDataset, [num_samples, 0, 0], lambda: True, config
    ).build()
    return datasets[0]


def build_eval_dataset(
    prefix: str, *, seq_length: int, num_samples: int, seed: int, tokenizer: TokenizerInfo, cache_dir: str,
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
        seed=seed, seq_length=seq_length, tokenizer=tokenizer, cache_dir=cache_dir,
        blend_per_split=[None, ([prefix], None), None],
    )
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    datasets = BlendedMegatronDatasetBuilder(GPTDataset, [0, num_samples, 0], lambda: True, config).build()
    return datasets[1]


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
