"""utils.r2 / `python -m utils.c4 download-preprocessed` against a local server in R2's layout.

The server (127.0.0.1, no network) serves BASE/NAME.uri (the folder URL), BASE/NAME.md5 (the
listing) and the files under that folder, with HTTP Range, and can cut a transfer, ignore Range,
or answer like a Cloudflare Access login would.
"""

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections import namedtuple
from pathlib import Path

import pytest

from utils import r2
from utils.fileio import DataError

REPO = Path(__file__).resolve().parent.parent
DATASET_FILES = {
    "LICENSE.txt": b"licence text\n",
    "NOTICE.txt": b"notice\n",
    "c4-train.en_6_text_document.bin": bytes(range(256)) * 4000,  # 1,024,000 bytes
    "c4-train.en_6_text_document.idx": b"MMIDIDX\x00\x00" + bytes(1000),
    "c4-validation-91205-samples.en_text_document.bin": bytes(reversed(range(256))) * 300,
    "c4-validation-91205-samples.en_text_document.idx": b"MMIDIDX\x00\x00" + bytes(100),
}
TOKENIZER_FILES = {
    "tokenizer.json": b'{"model": {}}',
    "tokenizer_config.json": b"{}",
    "special_tokens_map.json": b"{}",
    "config.json": b"{}",
    "model-00001-of-00004.safetensors": b"weights" * 100,
    "model.safetensors.index.json": b"{}",
    "original/consolidated.00.pth": b"weights" * 100,
    "original/tokenizer.model": b"tok",
}
BIG = "c4-train.en_6_text_document.bin"


class Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    state: dict

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        st = self.state
        st["requests"].append((self.path, self.headers.get("Range")))
        if st.get("token") and self.headers.get("cf-access-token") != st["token"]:
            self.send_response(302)
            self.send_header("Location", "https://mlcommons.cloudflareaccess.com/cdn-cgi/access/login")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and not st.get("ignore_range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = st["cut"].pop(path.name, None)
        # A cut connection: the headers promise the whole body, only the first bytes arrive.
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that stops reading (a refused file, a disk-space error) resets the connection.
        if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            super().handle_error(request, client_address)


Server = namedtuple("Server", "base root state")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def publish(root: Path, port: int, name: str, files: dict, listing_md5: dict | None = None, dot: bool = False):
    """Lay a data set out as R2 does: metadata/NAME.uri, metadata/NAME.md5, datasets/NAME/<files>."""
    folder = root / "datasets" / name
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (root / "metadata").mkdir(exist_ok=True)
    (root / "metadata" / f"{name}.uri").write_text(f"http://127.0.0.1:{port}/datasets/{name}\n")
    sums = {rel: md5(data) for rel, data in files.items()} | (listing_md5 or {})
    lines = [f"{h}  {'./' if dot else ''}{rel}\n" for rel, h in sums.items()]
    (root / "metadata" / f"{name}.md5").write_text("".join(lines))


@pytest.fixture
def server(tmp_path):
    state = {"requests": [], "cut": {}}
    root = tmp_path / "bucket"
    root.mkdir()
    handler = type("H", (Handler,), {"root": root, "state": state})
    httpd = QuietServer(("127.0.0.1", 0), handler)
    port = httpd.server_address[1]
    publish(root, port, r2.PREPROCESSED_DATASET, DATASET_FILES)
    publish(root, port, r2.TOKENIZER_DATASET, TOKENIZER_FILES, dot=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["port"] = port
    yield Server(f"http://127.0.0.1:{port}/metadata", root, state)
    httpd.shutdown()
    httpd.server_close()


def get(server, dst, **kw):
    logs = []
    kw.setdefault("client", r2.Client(token=""))
    paths = r2.download_preprocessed(dst, base_url=server.base, progress=False, log=logs.append, **kw)
    return paths, logs


def data_requests(server):
    return [(p, rng) for p, rng in server.state["requests"] if p.startswith("/datasets/")]


def test_download_then_rerun_skips_verified_files(server, tmp_path):
    dst, tok = tmp_path / "pre", tmp_path / "tok"
    paths, _ = get(server, dst, tokenizer_dst=tok)
    for name, data in DATASET_FILES.items():
        assert (dst / name).read_bytes() == data
    # The tokenizer without the model weights its data set also holds; ./ prefixes stripped.
    assert sorted(str(p.relative_to(tok)) for p in paths if tok in p.parents) == [
        "config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert not (tok / "original").exists() and not list(tok.glob("*.safetensors"))
    # The listing is kept beside the files (md5sum -c works there), no partial file is left.
    listing = (dst / f"{r2.PREPROCESSED_DATASET}.md5").read_text()
    assert f"{md5(DATASET_FILES[BIG])}  {BIG}" in listing
    assert not list(dst.glob(".*.partial")) and not list(tok.glob(".*.partial"))
    assert len(data_requests(server)) == len(DATASET_FILES) + 4

    server.state["requests"].clear()
    _, logs = get(server, dst, tokenizer_dst=tok)
    assert data_requests(server) == []  # only the .uri and .md5 of each data set were read
    assert sum("complete, skipped" in line for line in logs) == len(DATASET_FILES) + 4


def test_cut_download_resumes_with_range(server, tmp_path):
    dst = tmp_path / "pre"
    server.state["cut"][BIG] = 300_000
    with pytest.raises(DataError, match=rf"download of {BIG} was cut at 300,000 of 1,024,000 bytes .*run the same"):
        get(server, dst, retries=0)
    assert (dst / f".{BIG}.partial").stat().st_size == 300_000
    assert not (dst / BIG).exists()  # nothing incomplete under a final name
    server.state["requests"].clear()
    get(server, dst, retries=0)
    assert (dst / BIG).read_bytes() == DATASET_FILES[BIG]
    assert (f"/datasets/{r2.PREPROCESSED_DATASET}/{BIG}", "bytes=300000-") in data_requests(server)
    assert not (dst / f".{BIG}.partial").exists()


def test_cut_download_resumes_within_the_run(server, tmp_path):
    dst = tmp_path / "pre"
    server.state["cut"][BIG] = 123_457
    _, logs = get(server, dst, retries=2)
    assert (dst / BIG).read_bytes() == DATASET_FILES[BIG]
    assert any(f"{BIG}: cut at 123,457 bytes" in line and "resuming (1/2)" in line for line in logs)
    ranges = [rng for p, rng in data_requests(server) if p.endswith(BIG)]
    assert ranges == [None, "bytes=123457-"]


def test_server_that_ignores_range_restarts_the_file(server, tmp_path):
    dst = tmp_path / "pre"
    dst.mkdir()
    (dst / f".{BIG}.partial").write_bytes(b"\xff" * 5000)  # leftover bytes that are wrong
    server.state["ignore_range"] = True
    get(server, dst)
    assert (dst / BIG).read_bytes() == DATASET_FILES[BIG]


def test_whole_partial_file_is_only_checked(server, tmp_path):
    dst = tmp_path / "pre"
    dst.mkdir()
    (dst / f".{BIG}.partial").write_bytes(DATASET_FILES[BIG])  # cut just before the rename
    get(server, dst)
    assert (dst / BIG).read_bytes() == DATASET_FILES[BIG]
    assert (f"/datasets/{r2.PREPROCESSED_DATASET}/{BIG}", "bytes=1024000-") in data_requests(server)


def test_md5_mismatch_is_an_error_and_keeps_nothing(server, tmp_path):
    publish(server.root, server.state["port"], r2.PREPROCESSED_DATASET, DATASET_FILES, {BIG: "0" * 32})
    dst = tmp_path / "pre"
    with pytest.raises(DataError, match=rf"{BIG}: md5 {md5(DATASET_FILES[BIG])} does not match the listing's 0{{32}}"):
        get(server, dst)
    assert not (dst / BIG).exists() and not (dst / f".{BIG}.partial").exists()


def test_changed_file_is_checked_again_and_refetched(server, tmp_path):
    dst = tmp_path / "pre"
    get(server, dst)
    (dst / BIG).write_bytes(b"damaged")
    server.state["requests"].clear()
    _, logs = get(server, dst)
    assert (dst / BIG).read_bytes() == DATASET_FILES[BIG]
    assert any("md5 differs from the listing; fetching it again" in line for line in logs)
    assert [p for p, _ in data_requests(server)] == [f"/datasets/{r2.PREPROCESSED_DATASET}/{BIG}"]


def test_404_names_the_url(server, tmp_path):
    (server.root / "datasets" / r2.PREPROCESSED_DATASET / "NOTICE.txt").unlink()
    with pytest.raises(DataError, match=r"/NOTICE.txt was not found \(HTTP 404\)"):
        get(server, tmp_path / "pre")
    with pytest.raises(DataError, match=r"/metadata/nope/llama-3-1-8b-preprocessed-c4-dataset.uri was not found"):
        r2.download_preprocessed(tmp_path / "x", base_url=server.base + "/nope", progress=False, log=lambda s: None)


def test_access_login_redirect_is_reported_and_the_token_is_sent(server, tmp_path):
    server.state["token"] = "secret-token"
    with pytest.raises(DataError, match=r"asks for a Cloudflare Access login \(HTTP 302\).*export CF_ACCESS_TOKEN"):
        get(server, tmp_path / "pre")
    assert not (tmp_path / "pre").exists()
    get(server, tmp_path / "pre", client=r2.Client(token="secret-token"))
    assert (tmp_path / "pre" / BIG).read_bytes() == DATASET_FILES[BIG]


@pytest.mark.parametrize(
    "text, message",
    [
        ("not a listing\n", "line 1 is not '<md5>  <path>'"),
        (f"{'a' * 32}  ../../etc/passwd\n", "line 1 names an unsafe path '../../etc/passwd'"),
        (f"{'a' * 32}  /abs\n", "unsafe path '/abs'"),
        ("\n\n", "lists no files"),
    ],
)
def test_bad_listing_is_named(text, message):
    with pytest.raises(DataError, match=message):
        r2.parse_listing(text, "BASE/x.md5")


def test_too_little_free_space_is_reported_before_writing(server, tmp_path, monkeypatch):
    real = r2.shutil.disk_usage
    monkeypatch.setattr(r2.shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))
    with pytest.raises(DataError, match=r"GiB free, .* needs .* GiB more: free space, then run again"):
        get(server, tmp_path / "pre")


def test_destination_that_is_a_file(server, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="exists and is not a folder"):
        get(server, tmp_path / "f")


def test_command_line_errors_without_traceback(server, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CF_ACCESS_TOKEN", None)
    cmd = [sys.executable, "-m", "utils.c4", "download-preprocessed", "--dst", str(tmp_path / "pre"), "--no-progress"]
    r = subprocess.run([*cmd, "--base-url", server.base + "/missing"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "error: " in r.stderr and "HTTP 404" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [*cmd, "--base-url", server.base, "--tokenizer-dst", str(tmp_path / "tok")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "pre" / BIG).read_bytes() == DATASET_FILES[BIG]
    assert (tmp_path / "tok" / "tokenizer.json").read_bytes() == TOKENIZER_FILES["tokenizer.json"]
    assert "all 6 files present and verified" in r.stdout


def test_default_base_url_is_the_official_metadata_folder():
    # The reference README's URLs: BASE/llama-3-1-8b-preprocessed-c4-dataset.uri and the tokenizer's.
    assert r2.DEFAULT_BASE_URL == "https://training.mlcommons-storage.org/metadata"
    assert (r2.PREPROCESSED_DATASET, r2.TOKENIZER_DATASET) == (
        "llama-3-1-8b-preprocessed-c4-dataset",
        "llama-3-1-8b-tokenizer",
    )
