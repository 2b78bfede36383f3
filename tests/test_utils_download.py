"""utils.download / `python -m utils.c4 download|compress`: resume, missing-shard reports, sources."""

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from utils import c4, download
from utils.fileio import DataError

REPO = Path(__file__).resolve().parent.parent
NAMES = [c4.shard_name("train", i, 4) for i in range(4)] + [c4.shard_name("validation", 0, 1)]


def make_remote(folder, names=NAMES):
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        (folder / n).write_bytes(gzip.compress(f'{{"text": "doc {i}"}}\n'.encode() * (50 + i), mtime=0))
    return folder


class FlakySource(download.LocalSource):
    """A local folder whose transfers stop partway: `broken` files arrive truncated."""

    def __init__(self, folder, broken=()):
        super().__init__(folder)
        self.broken = set(broken)
        self.fetched: list[list[str]] = []

    def fetch(self, names, into, workers, done=lambda n: None, show=False):
        self.fetched.append(sorted(names))
        for n in names:
            data = (self.folder / n).read_bytes()
            (into / n).write_bytes(data[: len(data) // 2] if n in self.broken else data)
            if n not in self.broken:
                done(n)
        if self.broken & set(names):
            raise DataError("connection reset")


def test_resume_fetches_only_missing_or_incomplete(tmp_path):
    remote = make_remote(tmp_path / "remote")
    src = FlakySource(remote, broken={NAMES[1], NAMES[3]})
    logs = []
    with pytest.raises(DataError) as e:
        download.download(src, tmp_path / "c4", NAMES, log=logs.append)
    assert f"2 of 5 shards are missing or incomplete in {tmp_path / 'c4'}: {NAMES[1]}, {NAMES[3]}" in str(e.value)
    assert "run the same command again" in str(e.value)
    assert any("connection reset" in line for line in logs)
    # Only complete shards are under their final names.
    assert sorted(p.name for p in (tmp_path / "c4").iterdir() if p.is_file()) == sorted([NAMES[0], NAMES[2], NAMES[4]])
    # A local copy that is too short (interrupted some other way) is fetched again too.
    (tmp_path / "c4" / NAMES[4]).write_bytes(b"short")
    src.broken = set()
    paths = download.download(src, tmp_path / "c4", NAMES, log=logs.append)
    assert src.fetched[-1] == sorted([NAMES[1], NAMES[3], NAMES[4]])
    for p in paths:
        assert p.read_bytes() == (remote / p.name).read_bytes()
    assert not (tmp_path / "c4" / download.INCOMING).exists()
    # A third run has nothing to do.
    download.download(src, tmp_path / "c4", NAMES, log=logs.append)
    assert len(src.fetched) == 2 and logs[-2].startswith("5 of 5 shards already here; fetching 0")


def test_source_lacking_shards_is_named(tmp_path):
    remote = make_remote(tmp_path / "remote", NAMES[:3])
    with pytest.raises(DataError, match=f"lacks 2 of the 5 shards: {NAMES[3]}, {NAMES[4]}"):
        download.download(download.LocalSource(remote), tmp_path / "c4", NAMES)


def test_expected_names_are_c4_en():
    names = download.expected_names()
    assert len(names) == 1032
    assert names[0] == "c4-train.00000-of-01024.json.gz" and names[1023] == "c4-train.01023-of-01024.json.gz"
    assert names[-1] == "c4-validation.00007-of-00008.json.gz"


def test_hf_source_lists_en_and_downloads_into_place(tmp_path):
    remote = make_remote(tmp_path / "remote")

    class Entry:
        def __init__(self, path, size):
            self.path, self.size = path, size

    class FakeApi:
        def list_repo_tree(self, repo_id, path_in_repo, repo_type, revision, token):
            assert (repo_id, path_in_repo, repo_type) == ("allenai/c4", "en", "dataset")
            return [Entry(f"en/{p.name}", p.stat().st_size) for p in remote.iterdir()]

    calls = []

    def fake_hf_hub_download(repo_id, filename, repo_type, revision, local_dir, token):
        calls.append(filename)
        out = Path(local_dir) / filename
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(remote / Path(filename).name, out)
        return str(out)

    src = download.HFSource(api=FakeApi(), hf_hub_download=fake_hf_hub_download)
    download.download(src, tmp_path / "c4", NAMES, workers=2, log=lambda s: None)
    assert sorted(calls) == sorted(f"en/{n}" for n in NAMES)
    assert all((tmp_path / "c4" / n).read_bytes() == (remote / n).read_bytes() for n in NAMES)
    assert not (tmp_path / "c4" / download.INCOMING).exists()


class FakeRclone:
    """rclone_python's interface, backed by a folder."""

    def __init__(self, remotes, folder, installed=True):
        self.remotes, self.folder, self.installed = remotes, folder, installed
        self.copies = []

    def is_installed(self):
        return self.installed

    def get_remotes(self):
        return [f"{r}:" for r in self.remotes]

    def ls(self, path, max_depth=None, files_only=False):
        return [{"Name": p.name, "Size": p.stat().st_size} for p in self.folder.iterdir()]

    def copy(self, src, dst, show_progress=True, args=None):
        listed = Path(args[args.index("--files-from-raw") + 1]).read_text().split()
        self.copies.append(listed)
        for n in listed:
            shutil.copyfile(self.folder / n, Path(dst) / n)


def test_rclone_source_errors_and_copy(tmp_path):
    remote = make_remote(tmp_path / "remote")
    with pytest.raises(DataError, match="expected REMOTE:PATH"):
        download.RcloneSource("no-colon", rclone=FakeRclone([], remote))
    with pytest.raises(DataError, match="apt-get install rclone"):
        download.RcloneSource("r:c4", rclone=FakeRclone(["r"], remote, installed=False)).list_sizes()
    with pytest.raises(DataError, match=r"no remote named 'r' \(configured: other\)"):
        download.RcloneSource("r:c4", rclone=FakeRclone(["other"], remote)).list_sizes()
    fake = FakeRclone(["r"], remote)
    (tmp_path / "c4").mkdir()
    shutil.copyfile(remote / NAMES[2], tmp_path / "c4" / NAMES[2])
    download.download(download.RcloneSource("r:c4", rclone=fake), tmp_path / "c4", NAMES, log=lambda s: None)
    assert fake.copies == [[n for n in NAMES if n != NAMES[2]]]


@pytest.mark.skipif(shutil.which("rclone") is None, reason="Debian's rclone binary is not installed")
def test_rclone_binary_with_a_local_remote(tmp_path):
    remote = make_remote(tmp_path / "remote")
    conf = tmp_path / "rclone.conf"
    conf.write_text("[mirror]\ntype = local\n")
    env = {**os.environ, "RCLONE_CONFIG": str(conf), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "utils.c4", "download", "--dst", str(tmp_path / "c4"), "--source", "rclone"]
    cmd += ["--remote", f"mirror:{remote}", "--only", "validation"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    # The listing lacks the real C4's 8 validation shards: named, no traceback.
    assert r.returncode == 2 and "lacks 8 of the 8 shards" in r.stderr and "Traceback" not in r.stderr
    fake_names = [c4.shard_name("validation", i, 8) for i in range(8)]
    make_remote(remote, fake_names)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert all((tmp_path / "c4" / n).read_bytes() == (remote / n).read_bytes() for n in fake_names)


def test_cli_local_source_and_argument_errors(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "utils.c4", "download", "--dst", str(tmp_path / "c4")]
    r = subprocess.run([*base, "--source", "local"], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 2 and "--source local needs --from DIR" in r.stderr
    r = subprocess.run(
        [*base, "--source", "local", "--from", str(tmp_path / "none")], capture_output=True, text=True, env=env
    )
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "source folder not found" in r.stderr


def test_compress_is_atomic_deterministic_and_resumable(tmp_path):
    for i in range(3):
        (tmp_path / f"c4-train.{i:05d}-of-00003.json").write_text(f'{{"text": "doc {i}"}}\n' * 1000)
    (tmp_path / "notes.txt").write_text("left alone")
    expected = {f"c4-train.{i:05d}-of-00003.json.gz": f'{{"text": "doc {i}"}}\n' * 1000 for i in range(3)}
    # An interrupted earlier run: a stale temporary of a dead process and a finished .gz whose
    # .json was not deleted yet.
    (tmp_path / ".c4-train.00001-of-00003.json.gz.tmp-999999999").write_bytes(b"partial")
    assert c4.main(["compress", str(tmp_path), "--workers", "2"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*expected, "notes.txt"])
    for name, text in expected.items():
        assert gzip.decompress((tmp_path / name).read_bytes()).decode() == text
    first = (tmp_path / "c4-train.00000-of-00003.json.gz").read_bytes()
    (tmp_path / "again.json").write_text('{"text": "doc 0"}\n' * 1000)
    c4.compress(tmp_path)
    assert (tmp_path / "again.json.gz").read_bytes() == first  # same content, same bytes
    assert c4.main(["compress", str(tmp_path / "nothing")]) == 2
