"""Progress on stderr (utils/progress.py) in every long-running tool, and the index build messages.

Each tool is run with progress forced on (PROGRESS=1: a tqdm bar), left to its default on a
non-terminal stderr (plain lines) and turned off (--no-progress, PROGRESS=0): the bar or line
reaches the right total, "off" writes nothing, and the outputs are the same bytes every way.
"""

import gzip
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from tests.test_utils_r2 import BIG, DATASET_FILES, server  # noqa: F401 (the loopback server fixture)
from utils import c4, corpus, download, progress, tokenizer
from utils.fileio import DataError

REPO = Path(__file__).resolve().parent.parent


def env_with(**kw):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CF_ACCESS_TOKEN", None)
    env.pop("PROGRESS", None)
    env.update(kw)
    return env


def tree_bytes(folder: Path) -> dict[str, bytes]:
    # Record files only: the verified-files record holds mtimes, which differ from run to run.
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".r2-verified.json"
    }


class Tty(io.StringIO):
    def isatty(self):
        return True


# ----------------------------------------------------------------------------- the helper
@pytest.mark.parametrize(
    "value, enabled, stream, want",
    [
        ("", True, Tty(), "bar"),
        ("", True, io.StringIO(), "lines"),
        ("auto", True, io.StringIO(), "lines"),
        ("1", True, io.StringIO(), "bar"),
        ("0", True, Tty(), "off"),
        ("", False, Tty(), "off"),
        ("1", False, Tty(), "off"),
    ],
)
def test_mode(monkeypatch, value, enabled, stream, want):
    monkeypatch.setenv("PROGRESS", value)
    assert progress.mode(enabled, stream) == want


def test_bad_progress_value_is_named(monkeypatch):
    monkeypatch.setenv("PROGRESS", "maybe")
    with pytest.raises(DataError, match=r"PROGRESS='maybe': use 0 \(no progress\), 1 .* or auto"):
        progress.check_env()
    r = subprocess.run(
        [sys.executable, "-m", "utils.corpus", "--dst", "/nonexistent/x"],
        capture_output=True,
        text=True,
        env=env_with(PROGRESS="maybe"),
    )
    assert r.returncode == 2 and r.stderr.startswith("error: PROGRESS='maybe'") and "Traceback" not in r.stderr


def test_lines_are_sparse_and_end_with_the_total(monkeypatch):
    monkeypatch.delenv("PROGRESS", raising=False)
    out = io.StringIO()
    with progress.Bar(3000, "f.bin", "B", stream=out, interval=3600) as bar:
        for _ in range(3):
            bar.update(1000)
    # Within the interval no line; close writes the last one, with the exact count and no \r.
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()
    assert out.getvalue().startswith("f.bin: 100% 3,000 of 3,000 bytes (2.9 KiB of 2.9 KiB), 0:00:00 elapsed")
    out = io.StringIO()
    with progress.Bar(4, "model", "tensors", stream=out, interval=0) as bar:
        for _ in range(4):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[1].startswith("model: 50% 2 of 4 tensors")
    assert lines[-1].startswith("model: 100% 4 of 4 tensors")


def test_bar_on_a_terminal_and_nothing_when_off(monkeypatch):
    monkeypatch.delenv("PROGRESS", raising=False)
    out = Tty()
    with progress.Bar(500, "f.bin", "B", stream=out) as bar:
        bar.update(500)
    assert "100%" in out.getvalue() and "500/500" in out.getvalue() and "\r" in out.getvalue()
    out = Tty()
    with progress.Bar(500, "f.bin", "B", stream=out, enabled=False) as bar:
        bar.update(500)
    assert out.getvalue() == ""


# ----------------------------------------------------------------------------- download-preprocessed
def test_download_preprocessed_progress(server, tmp_path):  # noqa: F811
    cmd = [sys.executable, "-m", "utils.c4", "download-preprocessed", "--base-url", server.base]
    runs = {}
    for name, extra, env in (
        ("bar", [], {"PROGRESS": "1"}),
        ("lines", [], {}),
        ("flag", ["--no-progress"], {}),
        ("env", [], {"PROGRESS": "0"}),
    ):
        dst = tmp_path / name
        # Bytes, not text: text mode would turn tqdm's carriage returns into newlines.
        r = subprocess.run([*cmd, "--dst", str(dst), *extra], capture_output=True, env=env_with(**env))
        assert r.returncode == 0, r.stderr
        runs[name] = (r.stderr.decode(), tree_bytes(dst))
    size = len(DATASET_FILES[BIG])
    bar = [line for line in runs["bar"][0].split("\r") if line.startswith(BIG)]
    assert "100%" in bar[-1] and "0.98M/0.98M" in bar[-1]  # 1,024,000 bytes in MiB
    assert f"{BIG}: 100% {size:,} of {size:,} bytes" in runs["lines"][0]
    assert "\r" not in runs["lines"][0]
    assert runs["flag"][0] == "" and runs["env"][0] == ""
    assert runs["bar"][1] == runs["lines"][1] == runs["flag"][1] == runs["env"][1]
    assert runs["flag"][1][BIG] == DATASET_FILES[BIG]


# ----------------------------------------------------------------------------- download, compress, consolidate
def make_c4(folder: Path, train=8, valid=2, docs=40):
    folder.mkdir(parents=True)
    for split, count in (("train", train), ("validation", valid)):
        for i in range(count):
            lines = "".join(json.dumps({"text": f"{split} {i} {j}"}) + "\n" for j in range(docs))
            (folder / c4.shard_name(split, i, count)).write_bytes(gzip.compress(lines.encode(), mtime=0))
    return folder


def test_download_progress_counts_the_listed_bytes(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PROGRESS", raising=False)
    remote = make_c4(tmp_path / "remote")
    names = sorted(p.name for p in remote.iterdir())
    total = sum((remote / n).stat().st_size for n in names)
    download.download(download.LocalSource(remote), tmp_path / "on", names, workers=2, progress=True)
    err = capsys.readouterr().err
    assert f"{len(names)} shards: 100% {total:,} of {total:,} bytes" in err
    download.download(download.LocalSource(remote), tmp_path / "off", names, workers=2, progress=False)
    assert capsys.readouterr().err == ""
    assert tree_bytes(tmp_path / "on") == tree_bytes(tmp_path / "off")


@pytest.mark.parametrize("workers", [1, 2])
def test_consolidate_progress(tmp_path, capsys, monkeypatch, workers):
    monkeypatch.delenv("PROGRESS", raising=False)
    src = make_c4(tmp_path / "src")
    train_bytes = sum(p.stat().st_size for p in src.glob("c4-train.*"))
    c4.consolidate(src, tmp_path / "on", n_validation=50, n_groups=4, workers=workers, progress=True)
    err = capsys.readouterr().err
    assert f"train groups: 100% {train_bytes:,} of {train_bytes:,} bytes" in err and "320 documents" in err
    assert f"{c4.validation_name(50)}: 100% 50 of 50 documents" in err
    c4.consolidate(src, tmp_path / "off", n_validation=50, n_groups=4, workers=workers, progress=False)
    assert capsys.readouterr().err == ""
    on, off = tree_bytes(tmp_path / "on"), tree_bytes(tmp_path / "off")
    on.pop("manifest.json"), off.pop("manifest.json")  # it names its own folder
    assert on == off and len(on) == 5


def test_compress_progress(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PROGRESS", raising=False)
    for name in ("on", "off"):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"{i}.json").write_text('{"text": "x"}\n' * (100 + i))
    total = sum(p.stat().st_size for p in (tmp_path / "on").iterdir())
    c4.compress(tmp_path / "on", workers=2, progress=True)
    assert f"compress: 100% {total:,} of {total:,} bytes" in capsys.readouterr().err
    c4.compress(tmp_path / "off", workers=2, progress=False)
    assert capsys.readouterr().err == ""
    assert tree_bytes(tmp_path / "on") == tree_bytes(tmp_path / "off")


# ----------------------------------------------------------------------------- corpus, tokenize, subset
def test_corpus_tokenize_subset_progress(tmp_path, monkeypatch):
    monkeypatch.delenv("PROGRESS", raising=False)
    shards = corpus.write_corpus(tmp_path / "raw", seed=4, train_shards=2, valid_shards=1, docs_per_shard=120)
    tok_dir = tokenizer.train_bpe(shards[:1], tmp_path / "tok", vocab_size=512)
    size = shards[0].stat().st_size
    results = {}
    for name, env, extra in (("bar", {"PROGRESS": "1"}, []), ("lines", {}, []), ("off", {}, ["--no-progress"])):
        run = {}
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "utils.corpus",
                "--dst",
                str(tmp_path / name / "raw"),
                "--seed",
                "4",
                "--train-shards",
                "2",
                "--valid-shards",
                "1",
                "--docs-per-shard",
                "120",
                "--workers",
                "2",
                *extra,
            ],
            capture_output=True,
            text=True,
            env=env_with(**env),
            cwd=REPO,
        )
        assert r.returncode == 0, r.stderr
        run["corpus"] = r.stderr
        prefix = tmp_path / name / "tok"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "utils.tokenize",
                "--input",
                str(shards[0]),
                "--output-prefix",
                str(prefix),
                "--tokenizer",
                str(tok_dir),
                "--workers",
                "1",
                *extra,
            ],
            capture_output=True,
            text=True,
            env=env_with(**env),
            cwd=REPO,
        )
        assert r.returncode == 0, r.stderr
        run["tokenize"] = r.stderr
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "utils.subset",
                "--input",
                str(prefix),
                "--output-prefix",
                str(tmp_path / name / "cut"),
                "--tokens",
                "100",
                *extra,
            ],
            capture_output=True,
            text=True,
            env=env_with(**env),
            cwd=REPO,
        )
        assert r.returncode == 0, r.stderr
        run["subset"] = r.stderr
        run["files"] = tree_bytes(tmp_path / name)
        results[name] = run
    manifest = json.loads((tmp_path / "off" / "tok_text_document.manifest.json").read_text())
    cut_bytes = (tmp_path / "off" / "cut_text_document.bin").stat().st_size
    bar, lines = results["bar"], results["lines"]
    assert "100%" in bar["corpus"] and "3/3" in bar["corpus"]
    assert "corpus: 100% 3 of 3 shards" in lines["corpus"]
    assert "100%" in bar["tokenize"] and f"{manifest['tokens']:,} tokens" in bar["tokenize"]
    assert (
        f"{shards[0].name}: 100% {size:,} of {size:,} bytes" in lines["tokenize"]
        and f"{manifest['documents']:,} documents, {manifest['tokens']:,} tokens" in lines["tokenize"]
    )
    scaled = tqdm.format_sizeof(cut_bytes, divisor=1024)  # as the bar shows bytes, e.g. 2.13k
    assert "100%" in bar["subset"] and f"{scaled}/{scaled}" in bar["subset"]
    assert f"cut_text_document.bin: 100% {cut_bytes:,} of {cut_bytes:,} bytes" in lines["subset"]
    assert results["off"]["corpus"] == results["off"]["tokenize"] == results["off"]["subset"] == ""
    for run in (bar, lines):
        # The manifests name their own paths; every other byte is the same whichever the mode.
        got = {k: v for k, v in run["files"].items() if not k.endswith("manifest.json")}
        assert got == {k: v for k, v in results["off"]["files"].items() if not k.endswith("manifest.json")}
    assert shards[0].read_bytes() == results["off"]["files"]["raw/" + shards[0].name]


# ----------------------------------------------------------------------------- convert
def test_convert_progress_counts_tensors(tmp_path, capsys, monkeypatch):
    from tests.test_convert import hf_model, small_cfg
    from utils import convert

    monkeypatch.delenv("PROGRESS", raising=False)
    cfg = small_cfg()
    hf_model(cfg).save_pretrained(tmp_path / "hf")
    n = len(convert.read_hf_arch(tmp_path / "hf").hf_shapes())
    convert.hf_to_nemo(tmp_path / "hf", tmp_path / "nemo", log=lambda s: None, progress=True)
    assert f"reading: 100% {n} of {n} tensors" in capsys.readouterr().err
    convert.nemo_to_hf(tmp_path / "nemo", tmp_path / "on", log=lambda s: None, progress=True)
    assert f"writing: 100% {n} of {n} tensors" in capsys.readouterr().err
    convert.nemo_to_hf(tmp_path / "nemo", tmp_path / "off", log=lambda s: None, progress=False)
    assert capsys.readouterr().err == ""
    assert tree_bytes(tmp_path / "on") == tree_bytes(tmp_path / "off")


# ----------------------------------------------------------------------------- the index build messages
def test_index_build_is_announced_and_a_cached_one_reused(smoke_data, tmp_path):
    from benchmark.data import build_eval_dataset, load_tokenizer_info
    from tests.helpers import smoke_config

    cfg = smoke_config(smoke_data, tmp_path, {})
    prefix, tok_dir = str(Path(cfg.data.data_dir) / cfg.data.valid_file), cfg.data.tokenizer
    tok = load_tokenizer_info(tok_dir)
    cache = str(tmp_path / "cache")
    said: list[str] = []
    import benchmark.data as data_mod

    real = data_mod.announced_build

    def spy(*a, **kw):
        return real(*a, **kw, say=said.append)

    data_mod.announced_build = spy
    megatron_logger = logging.getLogger("megatron.core.datasets.gpt_dataset")
    level = megatron_logger.level
    try:
        ds = build_eval_dataset(prefix, seq_length=64, num_samples=40, seed=1, tokenizer=tok, cache_dir=cache)
        assert said[0] == "[data] building the eval index for 40 samples ..."
        files = sorted(os.listdir(cache))
        where = f"{cache}/{ds.unique_description_hash}-GPTDataset-valid-*"
        assert said[1].startswith("[data] eval index for 40 samples built in ") and said[1].endswith(
            f" s, cached at {where}"
        )
        assert len(said) == 2 and any(f.startswith(ds.unique_description_hash) for f in files)
        said.clear()
        build_eval_dataset(prefix, seq_length=64, num_samples=40, seed=1, tokenizer=tok, cache_dir=cache)
        assert said == [f"[data] reusing the cached eval index at {where}"]
        assert sorted(os.listdir(cache)) == files
    finally:
        data_mod.announced_build = real
    # Watching leaves Megatron-Core's logger as it was.
    assert megatron_logger.level == level and not megatron_logger.filters
