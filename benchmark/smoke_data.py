"""The embedded smoke data set, as the benchmark reaches it: through ``python -m utils.smoke``.

The data set is built by the data tools (utils/smoke.py, through the same C4 tools as real data).
The benchmark runs that tool as a command instead of importing it, because imports go one way
only: utils/ may import the benchmark's modules, the benchmark never imports utils/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import DataError

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SmokeData:
    """Where the embedded dataset is, in the form the benchmark's data config takes."""

    tokenizer_dir: Path
    data_dir: Path  # the preprocessed folder
    train_prefixes: tuple[str, ...]  # full paths without .bin/.idx: en_6, en_7
    valid_prefix: str
    n_validation: int

    def to_json(self) -> dict:
        return {
            "tokenizer_dir": str(self.tokenizer_dir),
            "data_dir": str(self.data_dir),
            "train_prefixes": list(self.train_prefixes),
            "valid_prefix": self.valid_prefix,
            "n_validation": self.n_validation,
        }

    @classmethod
    def from_json(cls, doc: dict) -> SmokeData:
        return cls(
            Path(doc["tokenizer_dir"]),
            Path(doc["data_dir"]),
            tuple(doc["train_prefixes"]),
            doc["valid_prefix"],
            int(doc["n_validation"]),
        )


def prepare(root: str | Path, seed: int = 1234) -> SmokeData:
    """Build (or reuse) the embedded data set under `root` (``python -m utils.smoke``, which
    serializes concurrent callers such as the ranks of one job) and say where it is.

    The tool's progress lines pass through to stdout; its error, if it fails, is raised as a
    DataError with the tool's own message.
    """
    root = Path(root).resolve()  # the tool runs from the repository root
    with tempfile.TemporaryDirectory(prefix="smoke-summary-") as tmp:
        summary = Path(tmp) / "smoke.json"
        cmd = [sys.executable, "-m", "utils.smoke", "--dst", str(root), "--seed", str(seed), "--summary", str(summary)]
        p = subprocess.run(cmd, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        if p.returncode == 0:
            sys.stderr.write(p.stderr)  # its warnings, as an in-process call would show them
        if p.returncode != 0 or not summary.is_file():
            said = p.stderr.strip().removeprefix("error: ") or f"exit status {p.returncode}"
            raise DataError(f"the embedded smoke data set in {root} could not be built (python -m utils.smoke): {said}")
        return SmokeData.from_json(json.loads(summary.read_text()))
