"""Faults at the boundary of the data and conversion tools: read-only and full destinations, killed
runs and their reruns, empty shards, bad counts, an empty BPE corpus, a malformed repo id, damaged
checkpoints. Every case: exit status 2, no traceback, a message naming the file and the fix, and
nothing left under a final name or as a stale temporary.

Read-only and full disks are real: a small tmpfs mounted read-only, or with a few pages of room
(needs the right to mount, as root in the container; where that is missing a read-only folder
falls back to chmod for a non-root user, and the full-disk cases are skipped, saying so).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.helpers import tmpfs
from utils import c4, corpus, tokenizer

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run_tool(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_named_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one "error: " message and no traceback, holding every needle."""
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    assert "error: " in p.stderr, p.stderr
    for needle in needles:
        assert needle in p.stderr, (needle, p.stderr)
    return p.stderr


def leftovers(folder: Path) -> list[str]:
    """Every name under `folder`, recursively (temporaries are hidden names)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a tmpfs of 16 KiB: writes past a few pages fail with ENOSPC."""
    folder = tmp_path / "full"
    with tmpfs(folder, "size=16k") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here, so no real full disk (ENOSPC cases not run)")
        yield folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    shards = corpus.write_corpus(root / "c4", seed=5, train_shards=8, valid_shards=2, docs_per_shard=80)
    tok = tokenizer.train_bpe(shards[:2], root / "tok", vocab_size=512)
    merged = root / "merged"
    c4.consolidate(root / "c4", merged, n_validation=20, n_groups=2)
    return {"root": root, "c4": root / "c4", "tok": tok, "group": merged / c4.group_name(0)}


def c4_copy(data, tmp_path) -> Path:
    src = tmp_path / "c4"
    shutil.copytree(data["c4"], src)
    return src


# ----------------------------------------------------------------------------- read-only, full disk
def test_tokenize_into_read_only_folder(data, read_only):
    p = run_tool(
        "utils.tokenize",
        "--input",
        data["group"],
        "--output-prefix",
        read_only / "x",
        "--tokenizer",
        data["tok"],
        "--workers",
        1,
        "--no-progress",
    )
    err = assert_named_error(p, f"{read_only / 'x_text_document.bin'}: ", "writable")
    assert ".tmp-" not in err  # the output is named, not its temporary
    assert leftovers(read_only) == []


def test_tokenize_onto_full_disk(data, full_disk):
    p = run_tool(
        "utils.tokenize",
        "--input",
        data["group"],
        "--output-prefix",
        full_disk / "x",
        "--tokenizer",
        data["tok"],
        "--workers",
        1,
        "--no-progress",
    )
    assert_named_error(p, str(full_disk / "x_text_document.bin"), "disk is full", "free space")
    assert leftovers(full_disk) == []


def test_consolidate_into_read_only_folder(data, read_only):
    p = run_tool(
        "utils.c4", "consolidate", "--src", data["c4"], "--dst", read_only / "m", "--groups", 2, "--n-validation", 20
    )
    assert_named_error(p, str(read_only / "m"), "writable")
    assert leftovers(read_only) == []
    p = run_tool(
        "utils.c4", "consolidate", "--src", data["c4"], "--dst", read_only, "--groups", 2, "--n-validation", 20
    )
    err = assert_named_error(p, f"{read_only / c4.group_name(0)}: ", "writable")
    assert ".tmp-" not in err
    assert leftovers(read_only) == []


def test_consolidate_onto_full_disk(data, full_disk):
    p = run_tool(
        "utils.c4", "consolidate", "--src", data["c4"], "--dst", full_disk, "--groups", 2, "--n-validation", 20
    )
    assert_named_error(p, str(full_disk / c4.group_name(0)), "disk is full")
    # Nothing half-written; a manifest is only ever written for finished outputs (none here).
    assert [n for n in leftovers(full_disk) if n.startswith(".") or n.endswith(".gz")] == []


# ----------------------------------------------------------------------------- consolidation inputs
@pytest.mark.parametrize("which", ["train", "validation"])
def test_consolidate_rejects_an_empty_shard(data, tmp_path, which):
    src = c4_copy(data, tmp_path)
    count = 8 if which == "train" else 2
    empty = src / c4.shard_name(which, 1, count)
    empty.write_bytes(b"")
    dst = tmp_path / "m"
    p = run_tool("utils.c4", "consolidate", "--src", src, "--dst", dst, "--groups", 2, "--n-validation", 20)
    assert_named_error(p, empty.name, "empty (0 bytes)", "download them again")
    assert leftovers(dst) == []  # checked before the destination is made


@pytest.mark.parametrize("groups", ["0", "-1", "two"])
def test_consolidate_groups_must_be_positive(data, tmp_path, groups):
    dst = tmp_path / "m"
    p = run_tool("utils.c4", "consolidate", "--src", data["c4"], "--dst", dst, "--groups", groups)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "argument --groups" in p.stderr and "usage:" in p.stderr, p.stderr
    assert leftovers(dst) == []


def test_consolidate_groups_must_divide_the_shards(data, tmp_path):
    dst = tmp_path / "m"
    p = run_tool("utils.c4", "consolidate", "--src", data["c4"], "--dst", dst, "--groups", 3)
    assert_named_error(p, "8 train shards do not split into 3 equal groups")
    assert leftovers(dst) == []


# ----------------------------------------------------------------------------- tokenizer
def test_bpe_on_an_empty_corpus(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    dst = tmp_path / "tok"
    p = run_tool("utils.tokenizer", "train-bpe", empty, "--dst", dst, "--vocab-size", 512)
    assert_named_error(p, str(empty), "no document with a non-empty 'text'")
    assert leftovers(dst) == []
    blank = tmp_path / "blank.json"
    blank.write_text(json.dumps({"text": ""}) + "\n")
    p = run_tool("utils.tokenizer", "train-bpe", blank, "--dst", dst, "--vocab-size", 512)
    assert_named_error(p, str(blank), "no document with a non-empty 'text'")
    assert leftovers(dst) == []
    p = run_tool("utils.tokenizer", "train-bpe", blank, "--dst", dst, "--max-docs", 0)
    assert p.returncode == 2 and "argument --max-docs" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("repo", ["not a repo", "a/b/c", "owner/na..me", "owner/"])
def test_tokenizer_download_malformed_repo_id(tmp_path, repo):
    dst = tmp_path / "tok"
    p = run_tool("utils.tokenizer", "download", "--dst", dst, "--repo", repo)
    assert_named_error(p, f"--repo {repo!r} is not a Hugging Face repository id", "OWNER/NAME")
    assert leftovers(dst) == []


# ----------------------------------------------------------------------------- killed and rerun
def killed_midway(script: str) -> None:
    """Run `script` in its own Python process and session; it SIGKILLs itself midway. Then end
    any worker it left, by its process group."""
    # stderr goes to a file, not a pipe: a helper process of torch's may hold a pipe open after
    # the kill, and reading it to the end would wait for that process.
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, env=ENV, start_new_session=True, stderr=err
        )
        try:
            p.wait(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        err.seek(0)
        assert p.returncode == -signal.SIGKILL, err.read().decode()


def test_killed_consolidation_temporaries_are_removed_by_a_different_rerun(data, tmp_path):
    """Killed while writing the validation subset; the rerun asks for another subset size, so it
    never rebuilds that output: the dead run's temporary must still go."""
    dst = tmp_path / "m"
    killed_midway(f"""
        import os, signal
        import utils.c4 as c4
        from utils.fileio import LineReader
        original = LineReader.__iter__
        def lines(self):
            for i, line in enumerate(original(self)):
                if i == 10:  # the validation subset is half written under its temporary name
                    os.kill(os.getpid(), signal.SIGKILL)
                yield line
        LineReader.__iter__ = lines
        c4.consolidate({str(data["c4"])!r}, {str(dst)!r}, n_validation=20, n_groups=2)
        """)
    stale = [n for n in leftovers(dst) if ".tmp-" in n]
    assert stale and all(n.startswith(".c4-validation-20-samples") for n in stale), leftovers(dst)
    p = run_tool("utils.c4", "consolidate", "--src", data["c4"], "--dst", dst, "--groups", 2, "--n-validation", 30)
    assert p.returncode == 0, p.stderr
    assert leftovers(dst) == sorted([c4.group_name(0), c4.group_name(1), c4.validation_name(30), "manifest.json"])
    assert (dst / c4.group_name(0)).read_bytes() == data["group"].read_bytes()


# ----------------------------------------------------------------------------- conversion
@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    from tests.test_convert import hf_model, small_cfg

    root = tmp_path_factory.mktemp("convert_faults")
    hf_model(small_cfg()).save_pretrained(root / "hf")
    return root / "hf"


def test_convert_into_read_only_folder(hf, read_only):
    p = run_tool("utils.convert", "hf-to-nemo", "--src", hf, "--dst", read_only / "nemo")
    err = assert_named_error(p, f"{read_only / 'nemo'}: the file system is read-only", "writable")
    assert ".tmp-" not in err
    assert leftovers(read_only) == []


def test_convert_onto_full_disk(hf, full_disk):
    p = run_tool("utils.convert", "hf-to-nemo", "--src", hf, "--dst", full_disk / "nemo")
    assert_named_error(p, str(full_disk / "nemo"), "disk is full")
    assert leftovers(full_disk) == []


def _broken_hf(hf: Path, tmp_path: Path, content: bytes) -> Path:
    broken = tmp_path / "hf"
    shutil.copytree(hf, broken)
    (broken / "model.safetensors").write_bytes(content)
    return broken


@pytest.mark.parametrize("case", ["garbage", "truncated_header", "truncated_data", "too_short"])
def test_convert_damaged_safetensors(hf, tmp_path, case):
    good = (hf / "model.safetensors").read_bytes()
    content = {
        "garbage": os.urandom(4096),
        "truncated_header": good[:200],
        "truncated_data": good[: len(good) // 2],
        "too_short": b"\x01\x02",
    }[case]
    broken = _broken_hf(hf, tmp_path, content)
    dst = tmp_path / "nemo"
    p = run_tool("utils.convert", "hf-to-nemo", "--src", broken, "--dst", dst)
    assert_named_error(p, str(broken / "model.safetensors"), "again")
    assert not dst.exists() and not list(tmp_path.glob(".nemo.tmp-*"))


@pytest.fixture(scope="module")
def nemo(hf, tmp_path_factory):
    from utils import convert

    dst = tmp_path_factory.mktemp("nemo_faults") / "nemo"
    convert.hf_to_nemo(hf, dst, log=lambda s: None)
    return dst


def test_convert_truncated_dist_checkpoint(nemo, tmp_path):
    broken = tmp_path / "nemo"
    shutil.copytree(nemo, broken)
    meta = broken / "weights" / ".metadata"
    meta.write_bytes(meta.read_bytes()[: meta.stat().st_size // 2])
    dst = tmp_path / "hf"
    p = run_tool("utils.convert", "nemo-to-hf", "--src", broken, "--dst", dst)
    assert_named_error(p, str(broken / "weights"), "truncated or damaged", "save it again")
    assert not dst.exists() and not list(tmp_path.glob(".hf.tmp-*"))


def test_killed_conversion_staging_is_removed_by_the_rerun(hf, nemo, tmp_path):
    dst = tmp_path / "out"
    killed_midway(f"""
        import os, signal
        from utils import convert
        original = convert.save_nemo_weights
        def save_then_die(*args, **kwargs):
            original(*args, **kwargs)  # the weights are on disk, in the staging folder
            os.kill(os.getpid(), signal.SIGKILL)
        convert.save_nemo_weights = save_then_die
        convert.hf_to_nemo({str(hf)!r}, {str(dst)!r}, log=lambda s: None)
        """)
    stale = [p.name for p in tmp_path.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(".out.tmp-"), stale
    p = run_tool("utils.convert", "hf-to-nemo", "--src", hf, "--dst", dst)
    assert p.returncode == 0, p.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the dead run's staging folder is gone
    assert leftovers(dst) == leftovers(nemo)
    for name in leftovers(nemo):
        if (nemo / name).is_file() and name.endswith(".distcp"):
            assert (dst / name).read_bytes() == (nemo / name).read_bytes(), name
