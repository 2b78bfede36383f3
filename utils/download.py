"""Download C4 en 3.0.1 (1,024 train + 8 validation shards), resumably, from one of three sources.

Used by `python -m utils.c4 download` (see utils/c4.py for the command line):
- `hf`: the Hugging Face hub dataset `allenai/c4`, files `en/c4-*.json.gz`, through huggingface_hub
  (a token from HF_TOKEN or `hf auth login` is used if present; C4 itself is not gated);
- `rclone`: a remote the user configured with `rclone config` (Debian's rclone binary, driven
  through rclone-python), given as REMOTE:PATH to the folder holding the shards; this code never
  sees or prints the remote's credentials;
- `local`: a folder (a mounted share or a mirror) holding the shards.

Every run lists the source (names and sizes), fetches only the shards that are missing here or
whose size differs (an interrupted transfer), into a hidden `.incoming/` folder, and moves each
one into place only once its size matches the listing. It ends by checking that all 1,032 shards
are present with the listed sizes and names every one that is not.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from utils.fileio import DataError
from utils.progress import Bar, mode

HF_REPO = "allenai/c4"
HF_SUBDIR = "en"
INCOMING = ".incoming"
C4_TRAIN_SHARDS = 1024
C4_VALID_SHARDS = 8


def shard_name(split: str, index: int, count: int) -> str:
    """C4's shard file name, e.g. c4-train.00003-of-01024.json.gz."""
    return f"c4-{split}.{index:05d}-of-{count:05d}.json.gz"


def expected_names(train: int = C4_TRAIN_SHARDS, valid: int = C4_VALID_SHARDS) -> list[str]:
    """The shard names of C4 en: train first, then validation, in index order."""
    return [shard_name("train", i, train) for i in range(train)] + [
        shard_name("validation", i, valid) for i in range(valid)
    ]


class Source:
    """Where shards come from. `list_sizes` maps shard names to byte sizes; `fetch` copies the
    given shards into a folder (a failure may leave partial files there; the caller checks sizes)
    and calls `done(name)` as each one arrives, which moves the progress bar. A source that shows
    its own progress sets `own_progress` and is told by `show` whether to."""

    description = "source"
    own_progress = False

    def list_sizes(self) -> dict[str, int]:
        raise NotImplementedError

    def fetch(
        self,
        names: list[str],
        into: Path,
        workers: int,
        done: Callable[[str], None] = lambda n: None,
        show: bool = False,
    ) -> None:
        raise NotImplementedError


class LocalSource(Source):
    """A folder holding the shards (a shared file system, a mirror, a test fixture)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.description = f"folder {self.folder}"

    def list_sizes(self) -> dict[str, int]:
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: source folder not found")
        return {p.name: p.stat().st_size for p in self.folder.iterdir() if p.is_file()}

    def fetch(
        self,
        names: list[str],
        into: Path,
        workers: int,
        done: Callable[[str], None] = lambda n: None,
        show: bool = False,
    ) -> None:
        def one(name: str) -> None:
            shutil.copyfile(self.folder / name, into / name)
            done(name)

        with ThreadPoolExecutor(max(1, workers)) as ex:
            list(ex.map(one, names))


class HFSource(Source):
    """The `en/` shards of the Hugging Face dataset allenai/c4."""

    def __init__(self, repo_id: str = HF_REPO, revision: str | None = None, api=None, hf_hub_download=None):
        self.repo_id, self.revision = repo_id, revision
        self.description = f"Hugging Face dataset {repo_id}"
        self._api, self._download = api, hf_hub_download

    def _token(self) -> str | None:
        return os.environ.get("HF_TOKEN") or None

    def list_sizes(self) -> dict[str, int]:
        from huggingface_hub import HfApi
        from huggingface_hub import errors as hf_errors

        api = self._api or HfApi()
        try:
            entries = api.list_repo_tree(
                self.repo_id, path_in_repo=HF_SUBDIR, repo_type="dataset", revision=self.revision, token=self._token()
            )
            return {
                Path(e.path).name: e.size for e in entries if getattr(e, "size", None) is not None and "/" in e.path
            }
        except hf_errors.HfHubHTTPError as e:
            status = getattr(getattr(e, "response", None), "status_code", "?")
            raise DataError(f"the Hugging Face hub refused to list {self.repo_id} (HTTP {status})") from None
        except Exception as e:  # connection errors come from the HTTP client, in several classes
            raise DataError(
                f"could not list {self.repo_id} on the Hugging Face hub ({type(e).__name__}); check the "
                "network, or use --source rclone/local"
            ) from None

    def fetch(
        self,
        names: list[str],
        into: Path,
        workers: int,
        done: Callable[[str], None] = lambda n: None,
        show: bool = False,
    ) -> None:
        if self._download is None:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.utils import disable_progress_bars

            # One bar over all shards (ours) instead of one per file from the hub's client.
            disable_progress_bars()
        else:
            hf_hub_download = self._download

        def one(name: str) -> None:
            # huggingface_hub resumes its own partial download (kept under into/.cache).
            path = hf_hub_download(
                self.repo_id,
                f"{HF_SUBDIR}/{name}",
                repo_type="dataset",
                revision=self.revision,
                local_dir=str(into),
                token=self._token(),
            )
            os.replace(path, into / name)
            done(name)

        with ThreadPoolExecutor(max(1, workers)) as ex:
            list(ex.map(one, names))
        with contextlib.suppress(OSError):
            (into / HF_SUBDIR).rmdir()  # emptied by the moves above


class RcloneSource(Source):
    """REMOTE:PATH of an rclone remote the user configured (`rclone config`)."""

    # One `rclone copy` moves every shard, so only rclone itself can show their progress.
    own_progress = True

    def __init__(self, remote: str, rclone=None):
        if ":" not in remote:
            raise DataError(f"--remote {remote!r}: expected REMOTE:PATH, e.g. mlc-training:path/to/c4/en")
        self.remote = remote
        self.description = f"rclone remote {remote.split(':', 1)[0]}"
        if rclone is None:
            from rclone_python import rclone
        self.rclone = rclone

    def _check(self) -> None:
        if not self.rclone.is_installed():
            raise DataError("the rclone binary is not installed: `apt-get install rclone`, then `rclone config`")
        name = self.remote.split(":", 1)[0]
        remotes = [r.rstrip(":") for r in self.rclone.get_remotes()]
        if name not in remotes:
            raise DataError(
                f"rclone has no remote named {name!r} (configured: {', '.join(remotes) or 'none'}); "
                "create it with `rclone config` as the dataset's instructions say"
            )

    def list_sizes(self) -> dict[str, int]:
        self._check()
        try:
            entries = self.rclone.ls(self.remote, max_depth=1, files_only=True)
        except Exception as e:
            raise DataError(f"rclone could not list {self.remote}: {_first_line(e)}") from None
        return {e["Name"]: int(e["Size"]) for e in entries}

    def fetch(
        self,
        names: list[str],
        into: Path,
        workers: int,
        done: Callable[[str], None] = lambda n: None,
        show: bool = False,
    ) -> None:
        self._check()
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("".join(n + "\n" for n in names))
        try:
            args = ["--files-from-raw", shlex.quote(f.name), "--transfers", str(max(1, workers))]
            self.rclone.copy(self.remote, str(into), show_progress=show, args=args)
        except Exception as e:
            raise DataError(f"rclone copy from {self.remote} failed: {_first_line(e)}; run again to resume") from None
        finally:
            os.unlink(f.name)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def download(
    source: Source,
    dst: str | os.PathLike,
    names: Iterable[str] | None = None,
    workers: int = 8,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> list[Path]:
    """Make `dst` hold every shard in `names` (default: all of C4 en) with the source's sizes.

    Fetches only what is missing or has the wrong size; returns the shard paths. Raises DataError
    naming every shard the source lacks, or that is still missing or incomplete at the end.
    `progress`: one bar on stderr over the bytes to fetch (the listed sizes), moved as each shard
    arrives; an rclone source shows rclone's own progress instead.
    """
    dst = Path(dst)
    names = list(names) if names is not None else expected_names()
    sizes = source.list_sizes()
    absent = [n for n in names if n not in sizes]
    if absent:
        raise DataError(f"{source.description} lacks {len(absent)} of the {len(names)} shards: {', '.join(absent)}")
    dst.mkdir(parents=True, exist_ok=True)

    def complete(name: str) -> bool:
        p = dst / name
        return p.is_file() and p.stat().st_size == sizes[name]

    todo = [n for n in names if not complete(n)]
    log(f"{len(names) - len(todo)} of {len(names)} shards already here; fetching {len(todo)} from {source.description}")
    incoming = dst / INCOMING
    if todo:
        incoming.mkdir(exist_ok=True)
        # Partial leftovers from an interrupted run: a file of the wrong size is fetched again.
        for n in todo:
            p = incoming / n
            if p.exists() and p.stat().st_size != sizes[n]:
                p.unlink()
        error = None
        fetch = [n for n in todo if not (incoming / n).exists()]
        own = source.own_progress
        bar = Bar(sum(sizes[n] for n in fetch), f"{len(fetch)} shards", "B", enabled=progress and not own)
        lock = threading.Lock()

        def arrived(name: str) -> None:
            with lock:  # sources fetch on several threads
                bar.update(sizes[name])

        try:
            source.fetch(fetch, incoming, workers, done=arrived, show=progress and own and mode(True) != "off")
        except DataError as e:
            error = e  # keep what did arrive; the final check names what is missing
        finally:
            bar.close()
        for n in todo:
            p = incoming / n
            if p.is_file() and p.stat().st_size == sizes[n]:
                os.replace(p, dst / n)
        if error is not None:
            log(f"warning: {error}")
    missing = [n for n in names if not complete(n)]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(names)} shards are missing or incomplete in {dst}: {', '.join(missing)}; "
            "run the same command again to fetch only these"
        )
    if incoming.is_dir() and not any(p for p in incoming.iterdir() if p.name != ".cache"):
        shutil.rmtree(incoming, ignore_errors=True)
    log(f"all {len(names)} shards present in {dst}")
    return [dst / n for n in names]
