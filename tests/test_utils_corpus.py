"""utils.corpus: the synthetic C4-format corpus is deterministic, C4-shaped and grammatical."""

import gzip
import json
import re

from utils import corpus


def _texts(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    a = corpus.write_corpus(tmp_path / "a", seed=7, train_shards=2, valid_shards=1, docs_per_shard=20)
    b = corpus.write_corpus(tmp_path / "b", seed=7, train_shards=2, valid_shards=1, docs_per_shard=20, workers=2)
    c = corpus.write_corpus(tmp_path / "c", seed=8, train_shards=2, valid_shards=1, docs_per_shard=20)
    assert [p.name for p in a] == [
        "c4-train.00000-of-00002.json.gz",
        "c4-train.00001-of-00002.json.gz",
        "c4-validation.00000-of-00001.json.gz",
    ]
    for pa, pb, pc in zip(a, b, c, strict=True):
        assert pa.read_bytes() == pb.read_bytes()  # the worker count does not change the bytes
        assert pa.read_bytes() != pc.read_bytes()
    # Shards of one corpus differ from each other (each has its own random stream).
    assert a[0].read_bytes() != a[1].read_bytes()
    # No temporaries left behind.
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in a)


def test_records_are_c4_shaped_and_lengths_vary(tmp_path):
    (path,) = corpus.write_corpus(tmp_path, seed=1, train_shards=1, valid_shards=1, docs_per_shard=300)[:1]
    recs = _texts(path)
    assert len(recs) == 300
    assert all(list(r) == ["text", "timestamp", "url"] for r in recs)
    assert all(re.fullmatch(r"2019-04-\d\dT\d\d:\d\d:\d\dZ", r["timestamp"]) for r in recs)
    assert all(r["url"].startswith("https://") for r in recs)
    words = [len(r["text"].split()) for r in recs]
    assert min(words) < 60 and max(words) > 300  # tens to hundreds of words
    assert all(w >= 20 for w in words)
    # The header carries no time or name, so the same content always compresses the same.
    raw = path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0" and raw[3] & 0x08 == 0


def test_grammar_agreement_and_document_structure(tmp_path):
    (path,) = corpus.write_corpus(tmp_path, seed=3, train_shards=1, valid_shards=1, docs_per_shard=200)[:1]
    vocab = set()
    for rec in _texts(path):
        text = rec["text"]
        vocab.update(re.findall(r"[A-Za-z]+", text.lower()))
        # a/an agree with the next word.
        assert not re.search(r"\b[Aa] [aeiou]", text)
        assert not re.search(r"\b[Aa]n [^aeiou]", text)
        # Singular demonstratives never take a plural verb.
        assert not re.search(r"\b(this|that) \w+ (are|were)\b", text)
        # The opening names the main character and the home place, which the closing repeats;
        # the pronouns follow the character all through the document (long-range structure).
        opening = text.split(".")[0]
        name, place = opening.split()[0], opening.split()[-1]
        assert text.rstrip(".").endswith(place) and text.count(place) >= 2
        words = set(re.findall(r"[a-z]+", text.lower()))
        if name in corpus.FEMALE_NAMES:
            assert not words & {"he", "his"}
        else:
            assert name in corpus.MALE_NAMES and not words & {"she", "her"}
        # One narrating tense per document.
        if " was " in opening:
            assert " is " not in text and " are " not in text
        else:
            assert " was " not in text and " were " not in text
    assert 400 <= len(vocab) <= 1500


def test_word_forms():
    assert [corpus.plural(w) for w in ("farmer", "compass", "berry", "wolf", "sheep", "day")] == [
        "farmers",
        "compasses",
        "berries",
        "wolves",
        "sheep",
        "days",
    ]
    assert [corpus.third_person(v) for v in ("fix", "carry", "play", "watch")] == [
        "fixes",
        "carries",
        "plays",
        "watches",
    ]
    assert [corpus.past(v) for v in ("bake", "carry", "sell", "chop", "plant")] == [
        "baked",
        "carried",
        "sold",
        "chopped",
        "planted",
    ]
