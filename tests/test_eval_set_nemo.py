"""EVAL_SET=reference against NeMo itself: the validation dataset of NeMo 2's PreTrainingDataModule,
built by its own build() from the trainer values the RCP runs give it (max_steps, val_check_interval,
limit_val_batches), with the data paths and GPTDataset fields of NVIDIA's pretrain.py.

NeMo is not a dependency of the project; this test runs where nemo_toolkit 2 is installed (a
separate virtual environment) and is skipped elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip(
    "nemo.collections.llm.gpt.data", reason="needs nemo_toolkit 2 (pip install 'nemo_toolkit==2.*' in its own venv)"
)

from tests.test_eval_set import (  # noqa: E402
    MAX_STEPS,
    SEQ,
    STEPS_PER_EVAL,
    TOK,
    VALID,
    _config,
    _evaluated,
    _project_valid,
    valid_file,  # noqa: F401 (the fixture)
)


def _nemo_windows(prefix: str, seed: int, gbs: int, cache: str) -> list[np.ndarray]:
    from nemo.collections.llm.gpt.data import PreTrainingDataModule

    dm = PreTrainingDataModule(
        paths={"train": [prefix], "validation": [prefix], "test": [prefix]},
        seq_length=SEQ,
        tokenizer=TOK,
        micro_batch_size=8,
        global_batch_size=gbs,
        num_workers=0,
        index_mapping_dir=cache,
        seed=seed,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        rampup_batch_size=None,
    )
    limit_val_batches = math.ceil(1024 / gbs)
    dm.build(
        trainer_max_steps=MAX_STEPS,
        trainer_val_check_interval=STEPS_PER_EVAL,
        trainer_limit_val_batches=limit_val_batches,
        trainer_limit_test_batches=1,
    )
    # NeMo's validation sampler starts every evaluation at consumed_samples=0
    return [dm._validation_ds[i]["tokens"].numpy() for i in range(limit_val_batches * gbs)]


@pytest.mark.parametrize("gbs", [16, 96])
@pytest.mark.parametrize("seed", [1234, 77])
def test_project_eval_windows_are_nemos(valid_file, tmp_path, gbs, seed):  # noqa: F811
    folder, _ = valid_file
    want = _nemo_windows(str(folder / VALID), seed, gbs, str(tmp_path / "nemo_cache"))
    cfg = _config(gbs, seed)
    valid_ds = _project_valid(cfg, folder, tmp_path)
    for dp in (1, 2):
        for windows in _evaluated(cfg, valid_ds, dp):
            assert len(windows) == len(want) == {16: 1024, 96: 1056}[gbs]
            assert all(np.array_equal(a, b) for a, b in zip(windows, want, strict=True))
