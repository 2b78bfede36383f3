"""Helpers shared by the tests that run the benchmark loop on the embedded dataset."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.config import Config, build_config


def smoke_config(smoke_data, tmp_path, env: dict) -> Config:
    """The smoke preset on the embedded dataset, results under tmp_path, with env's knobs on top."""
    full = {"PRESET": "smoke", "DEVICE": "cpu", "PREPROCESSED_PATH": str(smoke_data.data_dir),
            "TOKENIZER_PATH": str(smoke_data.tokenizer_dir), "RESULT_DIR": str(tmp_path)}
    full.update({k: str(v) for k, v in env.items()})
    return build_config(env=full)


def mllog_events(path) -> list[dict]:
    """The JSON of every :::MLLOG line of a log, in order."""
    return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in Path(path).read_text().splitlines()
            if line.startswith(":::MLLOG ")]
