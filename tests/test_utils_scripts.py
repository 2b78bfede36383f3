"""preprocess.sh and the thin wrappers in utils/*.sh: arguments, errors, and real runs on tiny data."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils import c4, corpus, tokenizer

REPO = Path(__file__).resolve().parent.parent
WRAPPERS = ("consolidate_data.sh", "parallel_compress_json_to_gz.sh", "download_hf_llama3.sh")
SCRIPTS = [REPO / "preprocess.sh", *(REPO / "utils" / name for name in WRAPPERS)]


def run(cmd, env=None, cwd=None):
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    for name in (
        "MERGED_C4_PATH",
        "PREPROCESSED_PATH",
        "TOKENIZER_PATH",
        "IMAGE",
        "TASK",
        "TASKS",
        "SLURM_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "BENCHMARK_AREA",
    ):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=cwd or REPO)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    shards = corpus.write_corpus(root / "c4", seed=9, train_shards=16, valid_shards=2, docs_per_shard=4)
    tokenizer.train_bpe(shards[:4], root / "tok", vocab_size=512)
    return root


def test_scripts_are_strict_and_have_help():
    for script in SCRIPTS:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    r = run(["bash", "preprocess.sh", "--help"])
    assert r.returncode == 0 and "MERGED_C4_PATH" in r.stdout and "#SBATCH" not in r.stdout
    # The array's default is what the benchmark reads by default: c4-train.en_6 and the validation subset.
    assert "#SBATCH --array=6,8\n" in (REPO / "preprocess.sh").read_text()


@pytest.mark.parametrize(
    "knobs, names",
    [
        ({}, ["c4-train.en_6", "c4-validation-91205-samples.en"]),
        ({"BENCHMARK_AREA": "en6+en7"}, ["c4-train.en_6", "c4-train.en_7", "c4-validation-91205-samples.en"]),
        ({"BENCHMARK_AREA": "en6+en7", "TASKS": "0 3"}, ["c4-train.en_0", "c4-train.en_3"]),
        ({"TASK": "7"}, ["c4-train.en_7"]),
    ],
)
def test_preprocess_default_tasks_follow_the_benchmark_area(tmp_path, knobs, names):
    (tmp_path / "m").mkdir()
    env = {
        "MERGED_C4_PATH": str(tmp_path / "m"),
        "PREPROCESSED_PATH": str(tmp_path / "p"),
        "TOKENIZER_PATH": str(tmp_path / "m"),
        "BENCHMARK_AREA": "",
        "TASKS": "",
        **knobs,
    }
    r = run(["bash", "preprocess.sh", "--dry-run"], env=env)
    assert r.returncode == 0, r.stderr
    prefixes = [line.split("--output-prefix ")[1].split()[0] for line in r.stdout.splitlines()]
    assert prefixes == [f"{tmp_path / 'p'}/{name}" for name in names]


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"BENCHMARK_AREA": "en7"}, "BENCHMARK_AREA=en7 is unknown: choose en6 or en6+en7"),
        ({"TASKS": "6 9"}, "TASKS has '9', which is not a task"),
    ],
)
def test_preprocess_names_a_bad_area_or_task_list(tmp_path, knobs, message):
    env = {
        "MERGED_C4_PATH": str(tmp_path),
        "PREPROCESSED_PATH": str(tmp_path),
        "TOKENIZER_PATH": str(tmp_path),
        **knobs,
    }
    r = run(["bash", "preprocess.sh", "--dry-run"], env=env)
    assert r.returncode == 2 and message in r.stderr and not r.stdout


def test_preprocess_reports_every_problem_at_once(tmp_path):
    r = run(["bash", "preprocess.sh"], env={"TOKENIZER_PATH": str(tmp_path / "none"), "TASK": "9"})
    assert r.returncode == 2
    for text in (
        "MERGED_C4_PATH is not set",
        "PREPROCESSED_PATH is not set",
        f"TOKENIZER_PATH={tmp_path / 'none'} is not a folder",
        "task 9 is out of range",
    ):
        assert text in r.stderr
    env = {"MERGED_C4_PATH": str(tmp_path), "PREPROCESSED_PATH": str(tmp_path), "TOKENIZER_PATH": str(tmp_path)}
    r = run(["bash", "preprocess.sh"], env={**env, "IMAGE": "registry#image"})
    assert r.returncode == 2 and "pyxis containers need a Slurm job" in r.stderr


def test_preprocess_dry_run_in_a_container(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "t").mkdir()
    env = {
        "MERGED_C4_PATH": str(tmp_path / "m"),
        "PREPROCESSED_PATH": str(tmp_path / "p"),
        "TOKENIZER_PATH": str(tmp_path / "t"),
        "IMAGE": "nvcr.io#nvidia/nemo:26.02",
        "SLURM_JOB_ID": "42",
        "SLURM_ARRAY_TASK_ID": "6",
        "SLURM_CPUS_PER_TASK": "24",
    }
    r = run(["bash", "preprocess.sh", "--dry-run"], env=env)
    assert r.returncode == 0, r.stderr
    m, p, t = (str(tmp_path / x) for x in "mpt")
    assert r.stdout.split() == [
        "srun",
        "--ntasks=1",
        "--container-image=nvcr.io#nvidia/nemo:26.02",
        f"--container-mounts={m}:{m}\\,{p}:{p}\\,{t}:{t}",
        "--container-workdir=/workspace/llama31",
        "python",
        "-m",
        "utils.tokenize",
        "--input",
        f"{m}/c4-train.en_6.json.gz",
        "--output-prefix",
        f"{p}/c4-train.en_6",
        "--tokenizer",
        t,
        "--workers",
        "24",
    ]
    assert not (tmp_path / "p").exists()  # a dry run creates nothing


def test_wrappers_and_preprocess_on_tiny_data(tiny, tmp_path):
    merged, pre = tmp_path / "merged", tmp_path / "pre"
    r = run(
        ["bash", "utils/consolidate_data.sh", "--n-validation", "6"],
        env={"C4_PATH": str(tiny / "c4"), "MERGED_C4_PATH": str(merged)},
    )
    assert r.returncode == 0, r.stderr
    assert (merged / "c4-validation-6-samples.en.json.gz").is_file() and (merged / "manifest.json").is_file()
    env = {
        "MERGED_C4_PATH": str(merged),
        "PREPROCESSED_PATH": str(pre),
        "TOKENIZER_PATH": str(tiny / "tok"),
        "N_VALIDATION": "6",
        "WORKERS": "1",
        "TASKS": "0 1 2 3 4 5 6 7 8",
    }
    r = run(["bash", str(REPO / "preprocess.sh")], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = [f"c4-train.en_{k}" for k in range(8)] + ["c4-validation-6-samples.en"]
    for name in names:
        assert (pre / f"{name}_text_document.bin").is_file() and (pre / f"{name}_text_document.idx").is_file()
    assert r.stdout.count("[preprocess] task") == 9
    # Resubmitting redoes nothing that is complete.
    r = run(["bash", str(REPO / "preprocess.sh")], env={**env, "TASK": "8"}, cwd=tmp_path)
    assert r.returncode == 0 and "up to date" in r.stdout
    # A missing input is named.
    r = run(["bash", str(REPO / "preprocess.sh")], env={**env, "TASK": "8", "N_VALIDATION": "7"}, cwd=tmp_path)
    assert r.returncode == 2 and "c4-validation-7-samples.en.json.gz not found" in r.stderr


def test_compress_and_tokenizer_wrappers(tmp_path):
    (tmp_path / "a.json").write_text('{"text": "x"}\n')
    r = run(["bash", "utils/parallel_compress_json_to_gz.sh", str(tmp_path), "--workers", "2"])
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json.gz"]
    r = run(["bash", "utils/parallel_compress_json_to_gz.sh"])
    assert r.returncode == 2 and "C4_PATH" in r.stderr
    r = run(["bash", "utils/download_hf_llama3.sh"])
    assert r.returncode == 2 and "TOKENIZER_PATH" in r.stderr
    r = run(["bash", "utils/download_hf_llama3.sh", str(tmp_path / "tok")], env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "could not reach the Hugging Face hub" in r.stderr and "Traceback" not in r.stderr
    r = run(["bash", "utils/consolidate_data.sh"])
    assert r.returncode == 2 and "C4_PATH and MERGED_C4_PATH" in r.stderr


def test_c4_layout_constants():
    assert c4.group_name(6) == "c4-train.en_6.json.gz"
    assert c4.validation_name(91205) == "c4-validation-91205-samples.en.json.gz"


def test_bench_tokenize_runs(tiny, capsys):
    from utils import bench_tokenize

    shard = tiny / "c4" / "c4-train.00000-of-00016.json.gz"
    args = ["--input", str(shard), "--tokenizer", str(tiny / "tok"), "--repeats", "1", "--ceiling"]
    assert bench_tokenize.main(args) == 0
    out = capsys.readouterr().out
    assert "raw encode_batch" in out and "utils.tokenize --workers 2" in out and "ratio ours/raw" in out
    # The independent encoders counted the same tokens (else main returns 1) and are compared.
    assert "independent encoders x2" in out and "ratio ours/independent encoders" in out


def test_bench_tokenize_without_raw(tiny, capsys):
    from utils import bench_tokenize

    shard = tiny / "c4" / "c4-train.00000-of-00016.json.gz"
    args = ["--input", str(shard), "--tokenizer", str(tiny / "tok"), "--repeats", "1", "--ceiling", "--no-raw"]
    assert bench_tokenize.main(args) == 0
    out = capsys.readouterr().out
    assert "raw encode_batch" not in out and "ratio ours/raw" not in out
    assert "ratio ours/independent encoders" in out and "ours >= 1.0M tok/s" in out


def test_bench_tokenize_ceiling_counts_every_document(tiny):
    from tokenizers import Tokenizer

    from utils import bench_tokenize

    shard = tiny / "c4" / "c4-train.00000-of-00016.json.gz"
    tok = Tokenizer.from_file(str(tiny / "tok" / "tokenizer.json"))
    with gzip.open(shard, "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    expected = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    # 3 processes over a count of documents that 3 does not divide: every document once.
    assert len(texts) % 3 != 0
    wall, cpu, tokens = bench_tokenize._ceiling(shard, tiny / "tok" / "tokenizer.json", 3, dict(os.environ))
    assert tokens == expected and wall > 0 and cpu > 0


STAND_IN = """
# Stands in for Megatron-LM's tools/preprocess_data.py: takes its arguments, writes with utils.tokenize.
import argparse, os, sys
sys.path.insert(0, {repo!r})
from utils.tokenize import main
assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == {tree!r}, "its own tree must come first"
p = argparse.ArgumentParser()
for flag in ("--input", "--output-prefix", "--tokenizer-type", "--tokenizer-model", "--json-keys", "--workers"):
    p.add_argument(flag, required=True)
if __name__ == "__main__":  # utils.tokenize's workers start by spawn, which imports this file again
    a = p.parse_args()
    assert not a.input.endswith(".gz") and a.tokenizer_type == "HuggingFaceTokenizer" and a.json_keys == "text"
    sys.exit(main(["--input", a.input, "--output-prefix", a.output_prefix, "--tokenizer", a.tokenizer_model,
                   "--workers", a.workers, "--no-progress"{extra}]))
"""


@pytest.mark.parametrize("same", [True, False])
def test_bench_tokenize_megatron_baseline(tiny, tmp_path, capsys, same):
    from utils import bench_tokenize

    tree = tmp_path / "megatron-lm"
    (tree / "tools").mkdir(parents=True)
    extra = "" if same else ', "--append-eod"'  # a different output must stop the comparison
    (tree / "tools" / "preprocess_data.py").write_text(STAND_IN.format(repo=str(REPO), tree=str(tree), extra=extra))
    shard = tiny / "c4" / "c4-train.00000-of-00016.json.gz"
    args = ["--input", str(shard), "--tokenizer", str(tiny / "tok"), "--repeats", "2", "--megatron-lm", str(tree)]
    rc = bench_tokenize.main(args)
    captured = capsys.readouterr()
    if same:
        assert rc == 0
        assert "Megatron-LM preprocess_data.py --workers 2" in captured.out and "identical" in captured.out
        assert "ratio ours/megatron" in captured.out and "goals (medians)" in captured.out
    else:
        assert rc == 1 and "not utils.tokenize's: .bin differs" in captured.err


def test_bench_tokenize_megatron_tree_must_have_the_script(tiny, tmp_path, capsys):
    from utils import bench_tokenize

    shard = tiny / "c4" / "c4-train.00000-of-00016.json.gz"
    args = ["--input", str(shard), "--tokenizer", str(tiny / "tok"), "--megatron-lm", str(tmp_path)]
    assert bench_tokenize.main(args) == 2
    assert "no " in capsys.readouterr().err
