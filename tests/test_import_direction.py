"""Imports run one way: utils/ (the data and conversion tools) may import benchmark/, never the
reverse, so that the training harness does not depend on the tools' modules."""

import ast
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmark"


def utils_imports(path: Path) -> list[str]:
    """`import utils...` and `from utils... import` anywhere in a file (module level or in a function)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{path.name}:{node.lineno}: {n}" for n in names if n == "utils" or n.startswith("utils.")]
    return found


def test_the_scan_finds_both_forms(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nimport utils.c4\ndef f():\n    from utils import smoke\n"
        "from benchmark import utils_like\nimport utilsx\n"
    )
    assert utils_imports(sample) == ["sample.py:2: utils.c4", "sample.py:4: utils"]


def test_benchmark_imports_nothing_from_utils():
    files = sorted(BENCHMARK.rglob("*.py"))
    assert len(files) > 10 and BENCHMARK / "train.py" in files
    offenders = [hit for f in files for hit in utils_imports(f)]
    assert offenders == [], "benchmark/ must not import utils/ (move what it needs into benchmark/):\n" + (
        "\n".join(offenders)
    )
