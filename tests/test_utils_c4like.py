"""utils.c4like: real prose only, C4 records, log-normal document lengths, same bytes for the same seed."""

import gzip
import json
import math
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from utils import c4like, corpus

REPO = Path(__file__).resolve().parent.parent
CODE = "for (i = 0; i < n; i++) { total += x[i]; } is how the loop reads."
SHORT = "Too few words here."


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Text files of English-like prose (paragraphs of utils.corpus documents), HTML, code and a
    Python module with a docstring."""
    root = tmp_path_factory.mktemp("src")
    text, py = root / "text", root / "py"
    (text / "sub").mkdir(parents=True)
    py.mkdir()
    rng = random.Random(0)
    for i in range(12):
        paras = [
            s.strip() + "."
            for doc in (corpus.document(rng) for _ in range(25))
            for s in doc.replace("\n", " ").split(".")
            if len(s.split()) >= 6
        ]
        body = "\n\n".join(paras[:400])
        (text / "sub" / f"doc{i}.txt").write_text(f"{CODE}\n\n{SHORT}\n\n{body}\n")
    with gzip.open(text / "notes.txt.gz", "wt") as f:
        f.write("The compressed notes are read after they are decompressed by the builder.\n")
    (text / "page.html").write_text(
        "<html><script>var x = 1;</script><p>The page has a paragraph of words inside <b>its</b> tags.</p></html>"
    )
    (text / "script.sh").write_text("The shell script is skipped because of its suffix.\n")
    (py / "mod.py").write_text('"""The module docstring is a paragraph of plain words.\n\nShort one."""\n')
    return text, py


def _records(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_records_lengths_and_filters(sources, tmp_path):
    text, py = sources
    folders = {"man": [], "text": [text], "python": [py]}
    info = c4like.write_corpus(tmp_path / "c.json.gz", 2000, 1, folders, cpt=4.0)
    recs = _records(tmp_path / "c.json.gz")
    assert len(recs) == 2000
    assert all(list(r) == ["text", "timestamp", "url"] for r in recs)
    assert all(r["url"].startswith("https://www.") and r["timestamp"].startswith("2019-04-") for r in recs)
    assert info["chars"] == sum(len(r["text"]) for r in recs)
    # Code, short lines, scripts and HTML markup are not prose; the HTML's text, the gzip'd file and
    # the docstring are. The pool, since a one-paragraph source is seldom drawn into a document.
    pool = dict(c4like.collect(folders, workers=1))
    assert sorted(Path(p).name for p in pool) == sorted(
        [f"doc{i}.txt" for i in range(12)] + ["notes.txt.gz", "page.html", "mod.py"]
    )
    assert info["sources"] == len(pool)
    assert pool[str(text / "page.html")] == ["The page has a paragraph of words inside its tags."]
    assert pool[str(py / "mod.py")] == ["The module docstring is a paragraph of plain words."]
    assert len(pool[str(text / "notes.txt.gz")]) == 1
    assert all(CODE not in paras and SHORT not in paras for paras in pool.values())
    kept = [p for ps in pool.values() for p in ps]
    assert len(kept) == len(set(kept))  # a paragraph repeated across sources is kept once
    # Every line of a document is a kept paragraph, or the start of one cut at a sentence end.
    kept = set(kept)
    cut = {p for r in recs for p in r["text"].split("\n")} - kept
    assert all(p.endswith((".", "?", "!")) and any(q.startswith(p) for q in kept) for p in cut)
    # Lengths: log-normal in tokens with median 400 and sigma 0.85 at 4 chars per token. A document
    # ends at the first paragraph that reaches its target, so it overshoots by under a paragraph.
    tokens = [len(r["text"]) / 4.0 for r in recs]
    assert 380 < statistics.median(tokens) < 480
    logs = [math.log(t) for t in tokens]
    assert 0.7 < statistics.pstdev(logs) < 0.95
    assert min(tokens) >= 30 and max(tokens) <= 8000 * 1.3
    assert sum(t > 2000 for t in tokens) > 20  # the long tail is there


def test_same_seed_same_bytes(sources, tmp_path):
    text, py = sources
    folders = {"man": [], "text": [text], "python": [py]}
    paths = [tmp_path / f"{name}.json.gz" for name in "abc"]
    for path, seed in zip(paths, (3, 3, 4), strict=True):
        c4like.write_corpus(path, 200, seed, folders, cpt=4.0)
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json.gz", "b.json.gz", "c.json.gz"]


def test_paragraph_filter():
    assert c4like.is_prose("The river runs past the old mill every spring.")
    assert not c4like.is_prose("The river runs past the old mill")  # no sentence end
    assert not c4like.is_prose("x = 1; y = 2; z = 3; w = 4; done.")  # not mostly words
    assert not c4like.is_prose(">>> print('a few words in a session').")
    assert c4like.paragraphs("a  b\nc\n\n \n\nd") == ["a b c", "d"]


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "utils.c4like", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli(sources, tmp_path):
    text, _ = sources
    dst = tmp_path / "out" / "c4like-en.json.gz"
    r = _cli("--dst", str(dst), "--docs", "50", "--chars-per-token", "4.4", "--text-dir", str(text))
    assert r.returncode == 0, r.stderr
    assert "wrote 50 documents" in r.stdout and len(_records(dst)) == 50


@pytest.mark.parametrize(
    "args, message",
    [
        (["--docs", "0", "--chars-per-token", "4"], "--docs: 0: must be at least 1"),
        (["--chars-per-token", "-1"], "--chars-per-token: -1: must be a positive number"),
        ([], "one of the arguments --tokenizer --chars-per-token is required"),
    ],
)
def test_cli_argument_errors(tmp_path, args, message):
    r = _cli("--dst", str(tmp_path / "x.json.gz"), *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_cli_data_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli("--dst", str(tmp_path / "x.json.gz"), "--chars-per-token", "4", "--text-dir", str(empty))
    assert r.returncode == 2 and "no English prose found" in r.stderr and "--text-dir" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.json.gz").exists()
    (empty / "a.txt").write_text("Some words that make up a real sentence.\n")
    r = _cli("--dst", str(tmp_path / "x.json.gz"), "--tokenizer", str(empty), "--text-dir", str(empty))
    assert r.returncode == 2 and "no tokenizer.json there" in r.stderr and "Traceback" not in r.stderr
    r = _cli("--dst", str(tmp_path / "x.json"), "--chars-per-token", "4", "--text-dir", str(empty))
    assert r.returncode == 2 and "name it *.json.gz" in r.stderr
