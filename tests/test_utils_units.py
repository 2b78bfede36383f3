"""utils.units: the units of work cover every line of a file once, with its line number, whatever
the gzip members, unit sizes and text-shipping limit; and utils.tokenize with several workers that
read their units themselves writes the same bytes as one process."""

import gzip
import json
import random
from pathlib import Path

import pytest

from utils import corpus, tokenizer
from utils.fileio import DataError, text_stream
from utils.tokenize import output_paths, tokenize_file
from utils.units import RangeUnit, TextUnit, plan_units, unit_blocks


def make_lines(rng: random.Random, n: int) -> list[bytes]:
    words = ["alpha", "beta", "gamma", "delta", "naïve", "東京", "x" * 50]
    return [
        (json.dumps({"text": " ".join(rng.choices(words, k=rng.randint(1, 60)))}, ensure_ascii=False) + "\n").encode()
        for _ in range(n)
    ]


def write_members(path: Path, pieces: list[bytes], padding: bool = False) -> bytes:
    """A gzip file of one member per piece (zero bytes between members when `padding`); returns
    its text."""
    with open(path, "wb") as f:
        for p in pieces:
            f.write(gzip.compress(p, mtime=0))
            if padding:
                f.write(b"\x00" * 7)
    return b"".join(pieces)


def cut_members(rng: random.Random, text: bytes, n: int, mid_line: bool) -> list[bytes]:
    """`text` in n members (some empty); with `mid_line`, boundaries may fall inside lines."""
    if mid_line:
        cuts = sorted(rng.randrange(len(text)) for _ in range(n - 1))
    else:
        ends = [i + 1 for i, b in enumerate(text) if b == 0x0A]
        cuts = sorted(rng.choice(ends) for _ in range(n - 1))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def unit_blocks_of(path: Path, unit, block: int) -> list[tuple[int, bytes]]:
    """A unit's text as a worker encodes it: (first line number, whole lines) blocks."""
    if isinstance(unit, TextUnit):
        return [(unit.first_line, unit.block)]
    blocks = list(unit_blocks(path, unit, block))
    for _, b in blocks[:-1]:
        assert b.endswith(b"\n")  # every block but the unit's last holds whole lines
    return blocks


def check_cover(path: Path, text: bytes, units: list, block: int) -> None:
    """Units hold the file's text once, in order, cut after newlines, with true line numbers."""
    got = b""
    for u in units:
        assert not got or got.endswith(b"\n")
        assert u.first_line == got.count(b"\n") + 1
        blocks = unit_blocks_of(path, u, block)
        assert blocks, u
        for first, b in blocks:
            assert b and first == got.count(b"\n") + 1
            got += b
    assert got == text


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mid_line", [False, True])
def test_units_cover_every_line_once(tmp_path, seed, mid_line):
    rng = random.Random(seed)
    lines = make_lines(rng, 300)
    if seed % 2:
        lines[-1] = lines[-1].rstrip(b"\n")  # the last line without its newline
    text = b"".join(lines)
    path = tmp_path / "in.json.gz"
    write_members(path, cut_members(rng, text, rng.choice([1, 3, 40]), mid_line), padding=seed == 3)
    sizes = [(1, 1, 1 << 30), (2000, 500, 1 << 30), (5000, 700, 6000), (3000, 300, 0), (10**9, 300, 1 << 30)]
    for unit_bytes, block, max_skip in sizes:
        units = list(plan_units(path, unit_bytes, block, max_skip))
        check_cover(path, text, units, block)
        kinds = {type(u) for u in units}
        if max_skip == 0:
            # Shipping begins after the first unit; a member start with nothing pending goes back to ranges.
            assert isinstance(units[0], RangeUnit) and TextUnit in kinds
    shipped = list(plan_units(path, 5000, 700, ranges=False))
    assert {type(u) for u in shipped} == {TextUnit}
    check_cover(path, text, shipped, 700)


def test_plain_file_units_seek(tmp_path):
    text = b"".join(make_lines(random.Random(7), 200))
    path = tmp_path / "in.json"
    path.write_bytes(text)
    units = list(plan_units(path, 3000, 1000))
    assert len(units) > 5 and all(isinstance(u, RangeUnit) and u.start == 0 for u in units)
    check_cover(path, text, units, 1000)


def test_units_restart_at_member_starts(tmp_path):
    """A range unit's text is counted from the nearest member start, so a worker inflates at most
    one member's worth in front of its unit."""
    rng = random.Random(3)
    pieces = [b"".join(make_lines(rng, 50)) for _ in range(6)]
    path = tmp_path / "in.json.gz"
    write_members(path, pieces)
    units = list(plan_units(path, 1000, 1000))
    starts = sorted({u.start for u in units})
    assert len(starts) == 6
    assert max(u.lo for u in units) < max(map(len, pieces))


def test_text_stream_limits_each_step(tmp_path):
    """A highly compressible member comes out in bounded steps and complete."""
    from utils import fileio

    text = b'{"text": "aaaa"}\n' * 1_500_000  # 25 MB of text, ~50 kB compressed
    path = tmp_path / "big.json.gz"
    write_members(path, [text, b'{"text": "b"}\n'])
    with open(path, "rb") as f:
        pieces = [d for m, d in text_stream(f, True) if m is None]
    assert max(map(len, pieces)) <= fileio.TEXT_STEP and len(pieces) >= 3
    assert b"".join(pieces) == text + b'{"text": "b"}\n'


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_gzip_names_the_file(tmp_path, damage):
    rng = random.Random(5)
    text = b"".join(make_lines(rng, 400))
    path = tmp_path / "in.json.gz"
    write_members(path, cut_members(rng, text, 3, False))
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) - 20]
    else:
        raw[len(raw) // 2 : len(raw) // 2 + 40] = b"\xff" * 40
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"in\.json\.gz: the gzip stream is truncated or corrupt after line \d+"):
        list(plan_units(path, 1000, 1000))


def test_unit_past_the_end_of_a_changed_file(tmp_path):
    path = tmp_path / "in.json.gz"
    text = write_members(path, [b"".join(make_lines(random.Random(1), 30))])
    with pytest.raises(DataError, match="changed while it was read"):
        list(unit_blocks(path, RangeUnit(1, 0, 0, len(text) + 10, 0), 1000))


# ----------------------------------------------------------------------------- whole tool
@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("units")
    shards = corpus.write_corpus(root / "c4", seed=5, train_shards=2, valid_shards=1, docs_per_shard=40)
    return tokenizer.train_bpe(shards, root / "tok", vocab_size=512)


def outputs(prefix: Path) -> dict[str, bytes]:
    return {p.suffix: p.read_bytes() for p in output_paths(prefix)[:2]}


@pytest.mark.parametrize("max_skip", [1 << 30, 4000])
def test_workers_write_what_one_process_writes(tok, tmp_path, max_skip):
    """Several members, lines across member boundaries, bad lines (counted with --skip-bad): the
    same .bin/.idx and the same skipped line numbers as one process."""
    rng = random.Random(11)
    lines = make_lines(rng, 500)
    bad = {17: b"{not json\n", 233: b'{"url": "no text"}\n', 234: b'{"text": ""}\n', 480: b"\xff\xfe\n"}
    for i, b in bad.items():
        lines[i - 1] = b
    path = tmp_path / "in.json.gz"
    write_members(path, cut_members(rng, b"".join(lines), 12, True))
    one = tokenize_file(path, tmp_path / "one", tok, skip_bad=True)
    many = tokenize_file(
        path, tmp_path / "many", tok, workers=2, skip_bad=True, chunk_bytes=900, unit_bytes=2500, max_skip=max_skip
    )
    assert outputs(tmp_path / "many") == outputs(tmp_path / "one")
    assert [s["line"] for s in many["skipped"]] == [s["line"] for s in one["skipped"]] == sorted(bad)
    assert many["documents"] == one["documents"] == 500 - len(bad)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no part files left


def test_bad_line_in_a_later_unit_is_named_and_nothing_is_left(tok, tmp_path):
    rng = random.Random(12)
    lines = make_lines(rng, 300)
    lines[270] = b'{"text": 5}\n'
    path = tmp_path / "in.json.gz"
    write_members(path, cut_members(rng, b"".join(lines), 5, False))
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"in\.json\.gz:271: 'text' is a int"):
        tokenize_file(path, out / "x", tok, workers=2, unit_bytes=2000)
    assert list(out.iterdir()) == []
