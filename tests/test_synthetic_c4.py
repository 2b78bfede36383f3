"""dev/synthetic_c4.sh: tokenized synthetic C4 of a chosen size, through the project's data tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "dev" / "synthetic_c4.sh"


def run_script(*args, **env):
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable, **env},
    )


def test_sizes_names_and_tokens(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    proc = run_script(tmp_path / "syn", 40, 2, N_VALIDATION="200")
    assert proc.returncode == 0, proc.stderr
    pre, tok = tmp_path / "syn" / "preprocessed", tmp_path / "syn" / "smoke" / "tokenizer"
    assert proc.stdout.strip().splitlines()[-1] == f"PREPROCESSED_PATH={pre} TOKENIZER_PATH={tok} VOCAB_SIZE=128256"
    # 16 train shards of 40 documents in 8 groups: en_6 and en_7 hold 2 shards each
    for name, docs in (("c4-train.en_6", 80), ("c4-train.en_7", 80), ("c4-validation-200-samples.en", 200)):
        ds = IndexedDataset(str(pre / f"{name}_text_document"))
        assert len(ds) == docs
        manifest = json.loads((pre / f"{name}_text_document.manifest.json").read_text())
        assert manifest["documents"] == docs and manifest["tokens"] == int(ds.sequence_lengths.sum())
        ids = np.concatenate([ds[i] for i in range(len(ds))])
        assert ids.max() < 2048 and ids.min() >= 0  # the embedded 2,048-id tokenizer


def test_bad_argument_is_named(tmp_path):
    proc = run_script(tmp_path / "syn", "many")
    assert proc.returncode == 2
    assert "TRAIN_DOCS_PER_SHARD=many must be a positive whole number" in proc.stderr
    assert not (tmp_path / "syn").exists()  # checked before anything is written
