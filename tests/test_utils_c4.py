"""utils.c4 consolidate: grouping, gzip concatenation, validation subset, manifest, errors."""

import gzip
import hashlib
import json

import pytest

from utils import c4
from utils.fileio import DataError


def make_shards(folder, split, count, docs=3, present=None):
    """Shards whose documents name their shard: {"text": "<split> shard i doc j", ...}."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in present if present is not None else range(count):
        lines = [
            json.dumps({"text": f"{split} shard {i} doc {j}", "timestamp": "2019-04-20T00:00:00Z", "url": "u"})
            for j in range(docs)
        ]
        data = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
        (folder / c4.shard_name(split, i, count)).write_bytes(data)


def texts(path):
    with gzip.open(path, "rt") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture
def src(tmp_path):
    make_shards(tmp_path / "c4", "train", 16, docs=3)
    make_shards(tmp_path / "c4", "validation", 2, docs=5)
    return tmp_path / "c4"


def test_groups_hold_the_right_shards_in_order(src, tmp_path):
    m = c4.consolidate(src, tmp_path / "merged", n_validation=7)
    for k in range(8):
        out = tmp_path / "merged" / f"c4-train.en_{k}.json.gz"
        # Group k = shards 2k, 2k+1 (16 shards / 8 groups), documents in order.
        assert texts(out) == [f"train shard {i} doc {j}" for i in (2 * k, 2 * k + 1) for j in range(3)]
        # Byte concatenation of the shard files, readable end to end as one gzip file.
        raw = b"".join((src / c4.shard_name("train", i, 16)).read_bytes() for i in (2 * k, 2 * k + 1))
        assert out.read_bytes() == raw
        entry = m["outputs"][out.name]
        assert [x["name"] for x in entry["inputs"]] == [c4.shard_name("train", i, 16) for i in (2 * k, 2 * k + 1)]
        assert entry["documents"] == 6
        assert entry["bytes"] == len(raw)
        assert entry["sha256"] == hashlib.sha256(raw).hexdigest()


def test_validation_is_the_first_n_lines_in_order(src, tmp_path):
    m = c4.consolidate(src, tmp_path / "merged", n_validation=7)
    out = tmp_path / "merged" / "c4-validation-7-samples.en.json.gz"
    expected = [f"validation shard 0 doc {j}" for j in range(5)] + [
        "validation shard 1 doc 0",
        "validation shard 1 doc 1",
    ]
    assert texts(out) == expected
    entry = m["outputs"][out.name]
    assert entry["documents"] == 7
    assert entry["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    # The subset is deterministic: gzip header without time or name.
    assert out.read_bytes()[4:8] == b"\0\0\0\0"
    with pytest.raises(DataError, match="only 10 documents, fewer than --n-validation 11"):
        c4.consolidate(src, tmp_path / "merged2", n_validation=11)
    assert not (tmp_path / "merged2" / "c4-validation-11-samples.en.json.gz").exists()


def test_real_c4_layout_groups_of_128(tmp_path):
    make_shards(tmp_path / "c4", "train", 1024, docs=1)
    make_shards(tmp_path / "c4", "validation", 8, docs=1)
    m = c4.consolidate(tmp_path / "c4", tmp_path / "merged", n_validation=8)
    en6 = m["outputs"]["c4-train.en_6.json.gz"]
    assert [x["name"] for x in en6["inputs"]][0] == "c4-train.00768-of-01024.json.gz"
    assert [x["name"] for x in en6["inputs"]][-1] == "c4-train.00895-of-01024.json.gz"
    assert len(en6["inputs"]) == 128 and en6["documents"] == 128
    assert sorted(m["outputs"]) == [f"c4-train.en_{k}.json.gz" for k in range(8)] + [
        "c4-validation-8-samples.en.json.gz"
    ]


def test_missing_shards_are_listed_by_name(tmp_path):
    make_shards(tmp_path / "c4", "train", 16, present=[i for i in range(16) if i not in (3, 11)])
    make_shards(tmp_path / "c4", "validation", 2)
    with pytest.raises(DataError) as e:
        c4.consolidate(tmp_path / "c4", tmp_path / "merged", n_validation=2)
    msg = str(e.value)
    assert "2 of 16 c4-train shards missing" in msg
    assert "c4-train.00003-of-00016.json.gz, c4-train.00011-of-00016.json.gz" in msg
    assert not (tmp_path / "merged").exists() or not any((tmp_path / "merged").iterdir())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no c4-train"):
        c4.consolidate(tmp_path / "empty", tmp_path / "m", 1)


def test_truncated_shard_is_named_and_nothing_is_written(src, tmp_path):
    bad = src / c4.shard_name("train", 13, 16)
    bad.write_bytes(bad.read_bytes()[:-12])
    with pytest.raises(DataError, match=r"c4-train\.00013-of-00016\.json\.gz: the gzip stream is truncated"):
        c4.consolidate(src, tmp_path / "merged", n_validation=2)
    names = sorted(p.name for p in (tmp_path / "merged").iterdir())
    # Groups before the damaged one are finished and recorded; nothing else, no temporaries.
    assert names == [f"c4-train.en_{k}.json.gz" for k in range(6)] + ["manifest.json"]


def test_rerun_keeps_current_outputs_and_redoes_changed_ones(src, tmp_path):
    dst = tmp_path / "merged"
    c4.consolidate(src, dst, n_validation=3)
    before = {p.name: p.stat().st_mtime_ns for p in dst.iterdir()}
    make_shards(src, "train", 16, docs=4, present=[5])  # shard 5 changes: group 2 must be redone
    logs = []
    m = c4.consolidate(src, dst, n_validation=3, log=logs.append)
    after = {p.name: p.stat().st_mtime_ns for p in dst.iterdir()}
    changed = sorted(n for n in before if before[n] != after[n])
    assert changed == ["c4-train.en_2.json.gz", "manifest.json"]
    assert m["outputs"]["c4-train.en_2.json.gz"]["documents"] == 7
    assert sum("up to date" in line for line in logs) == 8


def test_cli_errors_without_traceback(tmp_path, capsys):
    assert c4.main(["consolidate", "--src", str(tmp_path / "none"), "--dst", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "folder not found" in err


def test_parallel_groups_give_the_same_files(src, tmp_path):
    one = c4.consolidate(src, tmp_path / "one", n_validation=4)
    two = c4.consolidate(src, tmp_path / "two", n_validation=4, workers=2)
    assert one["outputs"] == two["outputs"]
    for name in one["outputs"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
