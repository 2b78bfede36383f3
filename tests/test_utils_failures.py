"""Interrupted runs: a killed or failing tokenization or consolidation leaves no file under a final
name, and running it again gives files byte-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from utils import c4, corpus, tokenizer
from utils.tokenize import tokenize_file

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fail")
    shards = corpus.write_corpus(root / "c4", seed=11, train_shards=16, valid_shards=2, docs_per_shard=60)
    tok = tokenizer.train_bpe(shards[:2], root / "tok", vocab_size=512)
    return root, tok


def killed_midway(script: str, cwd: Path) -> None:
    """Run `script` in a fresh Python process (its own session) that SIGKILLs itself midway;
    then end whatever it left behind (its worker processes), by process group."""
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    _, err = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, err.decode()
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_tokenization_leaves_nothing_and_rerun_is_identical(data, tmp_path, workers):
    root, tok = data
    src = tmp_path / "in.json.gz"
    c4.consolidate(root / "c4", tmp_path / "m", n_validation=5)
    src = tmp_path / "m" / "c4-train.en_3.json.gz"
    reference = tokenize_file(src, tmp_path / "ref" / "x", tok)
    out = tmp_path / "out"
    killed_midway(
        f"""
        import os, signal
        import benchmark.indexed as ix
        from utils.tokenize import tokenize_file
        calls = []
        original = ix.IndexedWriter.add
        def add(self, tokens, lengths):
            original(self, tokens, lengths)
            calls.append(1)
            if len(calls) == 3:  # some chunks are on disk, under the temporary name
                os.kill(os.getpid(), signal.SIGKILL)
        ix.IndexedWriter.add = add
        tokenize_file({str(src)!r}, {str(out / "x")!r}, {str(tok)!r}, workers={workers}, chunk_bytes=2000)
        """,
        tmp_path,
    )
    left = sorted(p.name for p in out.iterdir())
    assert left and all(name.startswith(".") and ".tmp-" in name for name in left)  # only temporaries
    again = tokenize_file(src, out / "x", tok, workers=workers)
    assert sorted(p.name for p in out.iterdir()) == [
        "x_text_document.bin",
        "x_text_document.idx",
        "x_text_document.manifest.json",
    ]  # the dead run's temporaries were cleared
    for suffix in ("bin", "idx"):
        assert (out / f"x_text_document.{suffix}").read_bytes() == (
            tmp_path / "ref" / f"x_text_document.{suffix}"
        ).read_bytes()
    assert again["outputs"] == reference["outputs"]


def test_failing_tokenization_cleans_up_and_keeps_previous_outputs(data, tmp_path, monkeypatch):
    root, tok = data
    src = root / "c4" / c4.shard_name("train", 0, 16)
    first = tokenize_file(src, tmp_path / "x", tok)
    before = files(tmp_path)
    import benchmark.indexed as ix

    original = ix.IndexedWriter.add

    def failing(self, tokens, lengths):
        original(self, tokens, lengths)
        raise OSError("No space left on device")

    monkeypatch.setattr(ix.IndexedWriter, "add", failing)
    with pytest.raises(OSError, match="No space left"):
        tokenize_file(src, tmp_path / "x", tok, append_eod=True, chunk_bytes=2000)
    assert files(tmp_path) == before  # the complete earlier outputs are untouched, no temporaries
    monkeypatch.setattr(ix.IndexedWriter, "add", original)
    assert tokenize_file(src, tmp_path / "x", tok, force=True)["outputs"] == first["outputs"]


def test_killed_consolidation_keeps_finished_groups_and_rerun_is_identical(data, tmp_path):
    root, _ = data
    reference = c4.consolidate(root / "c4", tmp_path / "ref", n_validation=50)
    dst = tmp_path / "m"
    killed_midway(
        f"""
        import os, signal
        import utils.c4 as c4
        seen = []
        original = c4.count_lines_gz_bytes
        def counting(chunks, name):
            n = original(chunks, name)
            seen.append(name)
            if len(seen) == 7:  # group 3 is half written under its temporary name
                os.kill(os.getpid(), signal.SIGKILL)
            return n
        c4.count_lines_gz_bytes = counting
        c4.consolidate({str(root / "c4")!r}, {str(dst)!r}, n_validation=50)
        """,
        tmp_path,
    )
    names = sorted(p.name for p in dst.iterdir())
    finished = [f"c4-train.en_{k}.json.gz" for k in range(3)]
    assert [n for n in names if not n.startswith(".")] == [*finished, "manifest.json"]
    assert [n for n in names if n.startswith(".")] and all(".tmp-" in n for n in names if n.startswith("."))
    manifest = json.loads((dst / "manifest.json").read_text())
    assert sorted(manifest["outputs"]) == finished  # the manifest describes only finished files
    logs = []
    again = c4.consolidate(root / "c4", dst, n_validation=50, log=logs.append)
    assert sum("up to date" in line for line in logs) == 3
    assert files(dst) == files(tmp_path / "ref") | {"manifest.json": (dst / "manifest.json").read_bytes()}
    assert again["outputs"] == reference["outputs"]
    assert not [p for p in dst.iterdir() if p.name.startswith(".")]
