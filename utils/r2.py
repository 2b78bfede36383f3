"""Fetch a data set published on MLCommons' R2 storage: the official pre-tokenized C4 and tokenizer.

Used by `python -m utils.c4 download-preprocessed` (see utils/c4.py for the command line).

Layout of a published data set NAME, as MLCommons' R2 downloader reads it:
- `BASE/NAME.uri`: a small text file whose body is the URL of the folder holding the files;
- `BASE/NAME.md5`: the file list, one `<md5 hex>  <relative path>` line per file (`md5sum`'s
  format; a leading `./` is allowed);
- `<folder URL>/<relative path>`: each file, served with HTTP Range support.
BASE defaults to the official metadata folder of the MLCommons training data sets.

Each file is written under a hidden `.NAME.partial` in its destination folder, appended to with
an HTTP Range request when a run is cut (up to `retries` times within a run, and by the next run),
checked against the server's total size and the listing's md5, and only then renamed into place.
A verified file is recorded in `.r2-verified.json` (size, mtime, md5), so a rerun skips it
without hashing tens of GB again; a file that changed since is checked again. The listing itself
is kept beside the files as `NAME.md5`, so `md5sum -c NAME.md5` works there too. Each transfer
shows its bytes against the server's size on stderr (utils/progress.py).

The storage may sit behind Cloudflare Access. The bucket answers a request without a login with a
redirect to the login page, which is reported (never followed, so no HTML page ends up in a data
file): log in with `cloudflared access login URL`, then export
`CF_ACCESS_TOKEN=$(cloudflared access token --app=URL)`; the token is sent as the
`cf-access-token` header and never printed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from utils.fileio import BLOCK, DataError, read_json, write_json_atomic
from utils.progress import Bar

# The official metadata folder of the MLCommons training data sets (the reference README's URLs).
DEFAULT_BASE_URL = "https://training.mlcommons-storage.org/metadata"
PREPROCESSED_DATASET = "llama-3-1-8b-preprocessed-c4-dataset"
TOKENIZER_DATASET = "llama-3-1-8b-tokenizer"
VERIFIED = ".r2-verified.json"
TOKEN_ENV = "CF_ACCESS_TOKEN"
TIMEOUT_S = 60

_MD5_LINE = re.compile(r"^([0-9a-fA-F]{32})[ \t]+\*?(.+)$")
_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")


@dataclass(frozen=True)
class Entry:
    """One file of a listing: its path relative to the data set folder and its md5."""

    path: str
    md5: str


def _is_weight_file(path: str) -> bool:
    # The tokenizer data set is the whole Hugging Face model folder: its weights (safetensors and
    # original/ consolidated .pth) are 16 GB that a tokenizer does not need.
    name = path.rsplit("/", 1)[-1]
    return path.startswith("original/") or (name.startswith("model") and ".safetensors" in name)


def tokenizer_files(entries: list[Entry]) -> list[Entry]:
    """The tokenizer data set without the model weights it also holds."""
    return [e for e in entries if not _is_weight_file(e.path)]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects come from the access login; turn them into errors instead of downloading a page."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Client:
    """HTTP GETs with the optional access token, no redirects, errors as DataError."""

    def __init__(self, token: str | None = None, timeout: float = TIMEOUT_S):
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def open(self, url: str, start: int = 0):
        headers = {"User-Agent": "llama31-r2/1", "Accept-Encoding": "identity"}
        if self.token:
            headers["cf-access-token"] = self.token
        if start:
            headers["Range"] = f"bytes={start}-"
        try:
            return self._opener.open(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416:
                return e  # the caller reads Content-Range: the partial file may already be whole
            raise DataError(_http_message(url, e.code, e.headers.get("Location", ""))) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            raise DataError(f"cannot reach {url}: {reason}; check the network or --base-url") from None

    def text(self, url: str) -> str:
        with self.open(url) as r:
            try:
                return r.read().decode("utf-8")
            except (OSError, http.client.HTTPException) as e:
                raise DataError(f"reading {url} failed: {e}; run again") from None
            except UnicodeDecodeError:
                raise DataError(f"{url} is not UTF-8 text: is --base-url the metadata folder?") from None


def _http_message(url: str, code: int, location: str) -> str:
    if code in (301, 302, 303, 307, 308) and "cloudflareaccess" in location:
        return (
            f"{url} asks for a Cloudflare Access login (HTTP {code}): run `cloudflared access login {url}`, "
            f"then `export {TOKEN_ENV}=$(cloudflared access token --app={url})` and run again"
        )
    if code in (301, 302, 303, 307, 308):
        return f"{url} redirects (HTTP {code}) to {location or 'another address'}: give the final URL as --base-url"
    if code in (401, 403):
        return (
            f"{url} refused access (HTTP {code}): set {TOKEN_ENV} to a valid Cloudflare Access token "
            f"(cloudflared access token --app={url})"
        )
    if code == 404:
        return f"{url} was not found (HTTP 404): check --base-url and the data set name"
    return f"{url} failed with HTTP {code}; run again later (finished files are kept)"


def parse_listing(text: str, source: str) -> list[Entry]:
    """The `<md5>  <path>` lines of a listing; bad lines and unsafe paths are named."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = _MD5_LINE.match(line)
        if not m:
            raise DataError(f"{source} line {number} is not '<md5>  <path>': {line[:80]!r}")
        path = m.group(2).strip()
        while path.startswith("./"):
            path = path[2:]
        parts = path.split("/")
        if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
            raise DataError(f"{source} line {number} names an unsafe path {path!r}; refusing to write it")
        entries.append(Entry(path, m.group(1).lower()))
    if not entries:
        raise DataError(f"{source} lists no files")
    return entries


def resolve(base_url: str, dataset: str, client: Client) -> tuple[str, str, list[Entry]]:
    """(folder URL of the files, listing text, listing) of a data set under base_url."""
    base = base_url.rstrip("/")
    folder = client.text(f"{base}/{dataset}.uri").strip()
    parsed = urllib.parse.urlparse(folder)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or any(c.isspace() for c in folder):
        raise DataError(f"{base}/{dataset}.uri does not hold a folder URL (got {folder[:80]!r})")
    listing_url = f"{base}/{dataset}.md5"
    listing = client.text(listing_url)
    return folder.rstrip("/"), listing, parse_listing(listing, listing_url)


def md5_file(path: Path, upto: int | None = None) -> hashlib._Hash:
    h = hashlib.md5()
    left = upto
    with open(path, "rb") as f:
        while left is None or left > 0:
            block = f.read(BLOCK if left is None else min(BLOCK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h


def _total_from(response, start: int) -> tuple[int, int]:
    """(offset the body starts at, total size of the file) from a GET's answer."""
    status = response.status if hasattr(response, "status") else response.code
    if status == 206:
        m = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
        if not m or m.group(1) is None or m.group(3) == "*":
            raise DataError(f"{response.url}: the server sent a partial answer without a usable Content-Range")
        return int(m.group(1)), int(m.group(3))
    if status == 416:
        m = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
        total = int(m.group(3)) if m and m.group(3) != "*" else -1
        return start, total
    length = response.headers.get("Content-Length")
    return 0, int(length) if length is not None and length.isdigit() else -1


def _disk_error(path: Path, e: OSError) -> DataError:
    return DataError(f"cannot write {path}: {e.strerror or e}; free space or fix the folder, then run again to resume")


def fetch_file(
    url: str,
    dst: Path,
    md5: str,
    client: Client,
    *,
    retries: int = 3,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> int:
    """Make dst a complete copy of url whose md5 is `md5`; resumes a `.NAME.partial`. Returns its size."""
    part = dst.with_name(f".{dst.name}.partial")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        handle = open(part, "ab")
    except OSError as e:
        raise _disk_error(part, e) from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DataError(f"another download is writing {part}: wait for it, or stop it first") from None
        # The md5 runs along with the download; a resumed partial file is hashed once first.
        hasher = md5_file(part)
        attempt = 0
        while True:
            have = part.stat().st_size
            try:
                total, hasher = _fetch_rest(url, dst.name, part, handle, have, hasher, client, progress)
                break
            except _Cut as cut:
                attempt += 1
                if attempt > retries:
                    raise DataError(
                        f"download of {dst.name} was cut at {cut.have:,} of {cut.total:,} bytes ({cut.reason}); "
                        f"run the same command again to resume"
                    ) from None
                log(f"{dst.name}: cut at {cut.have:,} bytes ({cut.reason}); resuming ({attempt}/{retries})")
        got = hasher.hexdigest()
        if got != md5:
            part.unlink()
            raise DataError(
                f"{dst.name}: md5 {got} does not match the listing's {md5}; the bad copy was deleted, "
                f"run again to fetch it anew (if it repeats, the server's file or listing is wrong)"
            )
        try:
            os.fsync(handle.fileno())
            os.replace(part, dst)
        except OSError as e:
            raise _disk_error(dst, e) from None
    return total


class _Cut(Exception):
    def __init__(self, have: int, total: int, reason: str):
        super().__init__(reason)
        self.have, self.total, self.reason = have, total, reason


def _fetch_rest(
    url: str, name: str, part: Path, handle, have: int, hasher, client: Client, progress: bool
) -> tuple[int, hashlib._Hash]:
    """Append the bytes of url after `have` to the open partial file and to the hash.

    Returns the total size and the hash (a new one when the file had to start again)."""
    response = client.open(url, start=have)
    with contextlib.closing(response):
        start, total = _total_from(response, have)
        status = response.status if hasattr(response, "status") else response.code
        if status == 416:
            if total == have:
                return total, hasher  # the partial file was already whole: only the checks are left
            handle.truncate(0)  # longer than the file the server has now: start again
            raise _Cut(0, total, "the partial file did not fit the server's file")
        if start != have:
            # The server ignored the Range (HTTP 200): its answer is the whole file.
            handle.truncate(0)
            have = 0
            hasher = hashlib.md5()
        if total >= 0:
            free = shutil.disk_usage(part.parent).free
            if total - have > free:
                raise DataError(
                    f"{part.parent} has {free / 2**30:.1f} GiB free, {url.rsplit('/', 1)[-1]} needs "
                    f"{(total - have) / 2**30:.1f} GiB more: free space, then run again to resume"
                )
        bar = Bar(total if total >= 0 else None, name, "B", initial=have, enabled=progress)
        try:
            while True:
                try:
                    block = response.read(BLOCK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Cut(have, total, f"{type(e).__name__}: {e}") from None
                if not block:
                    break
                try:
                    handle.write(block)
                    handle.flush()
                except OSError as e:
                    raise _disk_error(part, e) from None
                hasher.update(block)
                have += len(block)
                bar.update(len(block))
        finally:
            bar.close()
    if total >= 0 and have != total:
        raise _Cut(have, total, "the connection ended early")
    return (have if total < 0 else total), hasher


def _verified(folder: Path) -> dict:
    path = folder / VERIFIED
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except (DataError, ValueError, OSError):
        return {}  # a damaged record only costs a re-hash
    return data if isinstance(data, dict) else {}


def _still_verified(record: dict, path: Path, md5: str) -> bool:
    if not path.is_file() or record.get("md5") != md5:
        return False
    st = path.stat()
    return record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns


def download_dataset(
    dataset: str,
    dst: str | os.PathLike,
    *,
    base_url: str = DEFAULT_BASE_URL,
    client: Client | None = None,
    select: Callable[[list[Entry]], list[Entry]] | None = None,
    retries: int = 3,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Make dst hold every (selected) file of the data set, each verified by size and md5."""
    client = client or Client()
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise DataError(f"{dst} exists and is not a folder: give a folder as the destination")
    folder_url, listing_text, entries = resolve(base_url, dataset, client)
    chosen = select(entries) if select else entries
    log(f"{dataset}: {len(chosen)} files from {folder_url} into {dst}")
    try:
        dst.mkdir(parents=True, exist_ok=True)
        listing_path = dst / f"{dataset}.md5"
        if not listing_path.is_file() or listing_path.read_text() != listing_text:
            tmp = listing_path.with_name(f".{listing_path.name}.partial")
            tmp.write_text(listing_text)
            os.replace(tmp, listing_path)
    except OSError as e:
        raise _disk_error(dst, e) from None
    records = _verified(dst)
    paths = []
    for entry in chosen:
        path = dst / entry.path
        paths.append(path)
        if _still_verified(records.get(entry.path, {}), path, entry.md5):
            log(f"{entry.path}: complete, skipped")
            continue
        if path.is_file():
            # A file under its final name with no (or an outdated) record: hash it once.
            if md5_file(path).hexdigest() == entry.md5:
                log(f"{entry.path}: present and matches its md5, kept")
                _record(dst, records, entry, path)
                continue
            log(f"{entry.path}: present but its md5 differs from the listing; fetching it again")
        size = fetch_file(
            f"{folder_url}/{urllib.parse.quote(entry.path)}",
            path,
            entry.md5,
            client,
            retries=retries,
            progress=progress,
            log=log,
        )
        _record(dst, records, entry, path)
        log(f"{entry.path}: {size:,} bytes, md5 ok")
    log(f"{dataset}: all {len(chosen)} files present and verified in {dst}")
    return paths


def _record(folder: Path, records: dict, entry: Entry, path: Path) -> None:
    st = path.stat()
    records[entry.path] = {"md5": entry.md5, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        write_json_atomic(folder / VERIFIED, records)
    except OSError as e:
        raise _disk_error(folder / VERIFIED, e) from None


def download_preprocessed(
    dst: str | os.PathLike,
    tokenizer_dst: str | os.PathLike | None = None,
    *,
    base_url: str = DEFAULT_BASE_URL,
    retries: int = 3,
    progress: bool = True,
    log: Callable[[str], None] = print,
    client: Client | None = None,
) -> list[Path]:
    """The official pre-tokenized C4 of the 8B benchmark into dst, and its tokenizer (no weights)."""
    client = client or Client()
    paths = download_dataset(
        PREPROCESSED_DATASET, dst, base_url=base_url, client=client, retries=retries, progress=progress, log=log
    )
    if tokenizer_dst is not None:
        paths += download_dataset(
            TOKENIZER_DATASET,
            tokenizer_dst,
            base_url=base_url,
            client=client,
            select=tokenizer_files,
            retries=retries,
            progress=progress,
            log=log,
        )
    return paths
