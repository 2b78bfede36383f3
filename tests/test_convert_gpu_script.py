"""dev/check_convert_gpu.py, the one-GPU 8B conversion proof, rehearsed on a small shape on CPU.

Run: .venv/bin/python -m pytest tests/test_convert_gpu_script.py -q
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_check_script_cpu_path(tmp_path):
    out = tmp_path / "figures.json"
    subprocess.run(
        [
            sys.executable,
            "dev/check_convert_gpu.py",
            "--shape",
            "small",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(out.read_text())
    assert figures["pass"] is True
    assert figures["init_checkpoint_step"] == 0
    assert figures["roundtrip"] == {"tensors": 21, "mismatched": []}
    assert figures["logits"]["rel_gptmodel_bf16_vs_hf_bf16"] < 0.02
    assert figures["hf_to_nemo"]["peak_rss_gib"] > 0
    assert not any(tmp_path.glob("tmp*"))  # its working folder is removed
