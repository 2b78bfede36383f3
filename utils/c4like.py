"""A C4-format corpus of real English text with C4-like document lengths, to time tokenizers on.

Run: python -m utils.c4like --dst /tmp/c4like/c4like-en.json.gz [--docs 30000] --tokenizer TOKDIR
     (or --chars-per-token X instead of --tokenizer) [--seed 1234] [--workers N]
     [--text-dir DIR ...] [--python-dir DIR ...] [--man-dir DIR ...]

utils.corpus's grammar has about 1,100 word forms: a byte-level BPE meets the same few hundred
words again and again, which flatters any tokenizer's speed. This corpus is made of English prose
found on the machine instead, so the encoder sees a real vocabulary:
- man pages (`--man-dir`, default /usr/share/man when `groff` is installed), rendered to text;
- text files under `--text-dir` (default /usr/share/doc, /usr/share/common-licenses,
  /usr/share/info), gzip'd ones included, HTML with its tags removed;
- docstrings of the Python files under `--python-dir` (default the standard library and, when
  installed, the transformers and torch packages).
Naming any of the three options replaces all the defaults with only the folders named.

Each source is cut into paragraphs at blank lines, and a paragraph is kept only if it reads like
the prose that C4's filters keep: at least 5 words, ending in terminal punctuation, no curly
braces, mostly letters and mostly plain words (not code or tables). Repeated paragraphs are kept
once. A document is a run of consecutive paragraphs of one source, continued in another source
when that one runs out; its length is drawn in tokens from a log-normal (median 400, sigma 0.85,
clipped to 40..8000 tokens), close to C4 en's long-tailed length distribution, and turned into
characters with the chars/token ratio of the tokenizer on a sample of the paragraphs (or the
ratio given). Records are `{"text","timestamp","url"}` as in C4, with made-up URLs and April 2019
timestamps. The text depends on what the machine has installed: build the file once and time every
tool on that same file. The same sources and seed give the same bytes (gzip header time 0).
"""

from __future__ import annotations

import argparse
import ast
import bisect
import gzip
import html
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
from multiprocessing import Pool
from pathlib import Path

from utils.errors import command
from utils.fileio import DataError, atomic_output

# Document length in tokens: log-normal around C4 en's median, with its long tail, clipped.
MEDIAN_TOKENS, SIGMA, MIN_TOKENS, MAX_TOKENS = 400, 0.85, 40, 8000
# Files that hold code, markup for machines or binary data rather than prose.
SKIP_SUFFIXES = (
    ".png",
    ".gif",
    ".jpg",
    ".jpeg",
    ".svg",
    ".ico",
    ".css",
    ".js",
    ".c",
    ".h",
    ".cc",
    ".py",
    ".pl",
    ".sh",
    ".awk",
    ".cocci",
    ".xml",
    ".json",
    ".yaml",
    ".yml",
    ".pem",
    ".pdf",
    ".ps",
)
MAX_FILE_BYTES = 8_000_000
_SPACE = re.compile(r"\s+")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_TERMINAL = (".", "!", "?", '"', "'", "\u201d")
_PLAIN_WORD = re.compile(r"\(?[A-Za-z][a-z'\-]*[,.;:!?)\"']*")
_TAG = re.compile(r"<[^>]+>")
_SCRIPT = re.compile(r"(?is)<(script|style)[^>]*>.*?</\1>")
_BLOCK_TAG = re.compile(r"(?i)</?(p|div|br|li|ul|ol|h\d|pre|tr|table|dd|dt|blockquote)\b[^>]*>")
_DOMAIN_WORDS = (
    "amber birch brook canyon cedar clover coast cobalt delta ember fern harbor hollow iron "
    "juniper lantern maple meadow north orchard pine prairie quarry ridge river sage summit "
    "timber valley willow"
).split()


def paragraphs(text: str) -> list[str]:
    """The blank-line separated blocks of text, each on one line with its whitespace collapsed."""
    out = []
    for block in _BLANK_LINE.split(text):
        para = _SPACE.sub(" ", block).strip()
        if para:
            out.append(para)
    return out


def is_prose(para: str) -> bool:
    """C4-like paragraph filter: enough words, a sentence end, no code, mostly letters and words."""
    words = para.split(" ")
    if len(words) < 5 or len(para) > 20_000 or not para.endswith(_TERMINAL):
        return False
    lowered = para.lower()
    if "{" in para or "}" in para or "lorem ipsum" in lowered or "javascript" in lowered:
        return False
    if para.startswith((">>>", "...", "$ ", "# ")):  # shell and interpreter sessions
        return False
    visible = [c for c in para if not c.isspace()]
    if sum(c.isalpha() for c in visible) < 0.72 * len(visible):
        return False
    return sum(1 for w in words if _PLAIN_WORD.fullmatch(w)) >= 0.6 * len(words)


def prose(text: str) -> list[str]:
    return [p for p in paragraphs(text) if is_prose(p)]


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return ""
    if b"\0" in data[:4096]:  # binary
        return ""
    text = data.decode("utf-8", "replace")
    if re.search(r"\.html?(\.gz)?$", path.name, re.IGNORECASE):
        text = _BLOCK_TAG.sub("\n\n", _SCRIPT.sub(" ", text))
        text = html.unescape(_TAG.sub(" ", text))
    if "/info/" in path.as_posix():
        text = text.replace("\x1f", "\n\n")  # GNU info node separators
    return text


def _files(root: Path):
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            yield Path(folder) / name


def text_sources(roots: list[Path]) -> list[tuple[str, list[str]]]:
    out = []
    for root in roots:
        for path in _files(root):
            lower = path.name.lower()
            if lower.endswith(SKIP_SUFFIXES) or lower.removesuffix(".gz").endswith(SKIP_SUFFIXES):
                continue
            if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
                continue
            paras = prose(_read_text(path))
            if paras:
                out.append((str(path), paras))
    return out


def python_sources(roots: list[Path]) -> list[tuple[str, list[str]]]:
    """Docstrings of modules, classes and functions; test folders are skipped (their prose is thin)."""
    out = []
    for root in roots:
        for path in _files(root):
            if path.suffix != ".py" or {"test", "tests"} & set(path.relative_to(root).parts[:-1]):
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
            except (SyntaxError, ValueError):
                continue
            paras = []
            for node in ast.walk(tree):
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    doc = ast.get_docstring(node)
                    if doc:
                        paras += prose(doc)
            if paras:
                out.append((str(path), paras))
    return out


def _render_man(path: str) -> tuple[str, list[str]]:
    """One man page as text through groff (long lines, no hyphenation, no overstrike)."""
    try:
        page = gzip.decompress(Path(path).read_bytes()) if path.endswith(".gz") else Path(path).read_bytes()
        text = subprocess.run(
            ["groff", "-man", "-Tutf8", "-rHY=0", "-dAD=l", "-rLL=3000n", "-P-cbou"],
            input=page,
            capture_output=True,
            timeout=60,
        ).stdout.decode("utf-8", "replace")
    except (OSError, EOFError, subprocess.SubprocessError):
        return path, []
    return path, prose(text)


def man_sources(roots: list[Path], workers: int) -> list[tuple[str, list[str]]]:
    pages = [
        str(p)
        for root in roots
        for p in _files(root)
        if re.fullmatch(r"man[1-8]", p.parent.name) and not p.is_symlink()
    ]
    if not pages:
        return []
    if shutil.which("groff") is None:
        raise DataError("--man-dir: man pages need `groff` to render them; install it or leave out --man-dir")
    with Pool(workers) as pool:
        return [(p, paras) for p, paras in pool.imap(_render_man, pages, chunksize=16) if paras]


def default_folders() -> dict[str, list[Path]]:
    site = Path(sysconfig.get_paths()["purelib"])
    return {
        "man": [Path("/usr/share/man")] if shutil.which("groff") else [],
        "text": [Path(p) for p in ("/usr/share/doc", "/usr/share/common-licenses", "/usr/share/info")],
        "python": [Path(os.__file__).parent] + [site / pkg for pkg in ("transformers", "torch")],
    }


def collect(folders: dict[str, list[Path]], workers: int) -> list[tuple[str, list[str]]]:
    """Every source's kept paragraphs, sorted by path, each paragraph only at its first occurrence."""
    sources = man_sources([p for p in folders["man"] if p.is_dir()], workers)
    sources += text_sources([p for p in folders["text"] if p.is_dir()])
    sources += python_sources([p for p in folders["python"] if p.is_dir()])
    seen: set[str] = set()
    out = []
    for path, paras in sorted(sources):
        fresh = [p for p in paras if not (p in seen or seen.add(p))]
        if fresh:
            out.append((path, fresh))
    return out


def chars_per_token(sources: list[tuple[str, list[str]]], tokenizer_dir: Path, rng: random.Random) -> float:
    from tokenizers import Tokenizer

    tok_file = tokenizer_dir / "tokenizer.json"
    if not tok_file.is_file():
        raise DataError(
            f"--tokenizer {tokenizer_dir}: no tokenizer.json there; give a Hugging Face "
            "tokenizer folder or --chars-per-token"
        )
    tok = Tokenizer.from_file(str(tok_file))
    sample = [p for _, paras in rng.sample(sources, min(400, len(sources))) for p in paras[:20]]
    tokens = sum(len(e.ids) for e in tok.encode_batch(sample, add_special_tokens=False))
    return sum(len(p) for p in sample) / max(tokens, 1)


def _url(rng: random.Random, first: str) -> str:
    slug = "-".join(re.findall(r"[a-z]+", first[:80].lower())[:6]) or "page"
    tld = rng.choice(["com"] * 6 + ["org", "net", "co.uk", "info"])
    host = f"www.{rng.choice(_DOMAIN_WORDS)}{rng.choice(_DOMAIN_WORDS)}.{tld}"
    return f"https://{host}/{rng.choice(['blog', 'news', 'articles', 'p', 'docs', '2018', '2019'])}/{slug}"


def _timestamp(rng: random.Random) -> str:
    return (
        f"2019-04-{rng.randint(18, 26):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
    )


def documents(sources: list[tuple[str, list[str]]], n_docs: int, cpt: float, rng: random.Random):
    """n_docs texts of log-normal token length, each a run of consecutive paragraphs."""
    # A source is picked with a chance in proportion to its text, so that one long manual and one
    # short README do not weigh the same.
    cumulative, total = [], 0
    for _, paras in sources:
        total += sum(len(p) for p in paras)
        cumulative.append(total)

    def pick() -> int:
        return min(bisect.bisect_right(cumulative, rng.random() * total), len(sources) - 1)

    for _ in range(n_docs):
        tokens = min(MAX_TOKENS, max(MIN_TOKENS, rng.lognormvariate(math.log(MEDIAN_TOKENS), SIGMA)))
        target = int(tokens * cpt)
        src = pick()
        pos = rng.randrange(len(sources[src][1]))
        parts, size = [], 0
        while size < target:
            paras = sources[src][1]
            if pos >= len(paras):
                src, pos = pick(), 0
                continue
            para = paras[pos]
            if size and size + len(para) > 1.3 * target:
                # An overlong last paragraph is cut at a sentence end, or left out.
                head = para[: target - size]
                end = max(head.rfind(". "), head.rfind("? "), head.rfind("! "))
                if end > 40:
                    parts.append(head[: end + 1])
                break
            parts.append(para)
            size += len(para) + 1
            pos += 1
        yield "\n".join(parts)


def write_corpus(
    dst: Path,
    n_docs: int,
    seed: int,
    folders: dict[str, list[Path]],
    *,
    tokenizer: Path | None = None,
    cpt: float | None = None,
    workers: int = 1,
) -> dict:
    """Write dst (gzip'd JSON lines); return what went in: sources, paragraphs, chars/token, chars."""
    rng = random.Random(seed)
    sources = collect(folders, workers)
    if not sources:
        named = ", ".join(str(p) for kind in ("man", "text", "python") for p in folders[kind]) or "none"
        raise DataError(
            f"no English prose found in the source folders ({named}); name folders with text "
            "with --text-dir, --python-dir or --man-dir"
        )
    if cpt is None:
        cpt = chars_per_token(sources, tokenizer, rng)
    chars = 0
    with (
        atomic_output(dst) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz,
    ):
        for text in documents(sources, n_docs, cpt, rng):
            chars += len(text)
            record = {"text": text, "timestamp": _timestamp(rng), "url": _url(rng, text)}
            gz.write((json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))
    return {
        "sources": len(sources),
        "paragraphs": sum(len(p) for _, p in sources),
        "unique_chars": sum(len(x) + 1 for _, p in sources for x in p),
        "chars_per_token": cpt,
        "chars": chars,
    }


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text}: must be a positive number")
    return value


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m utils.c4like",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--dst", required=True, type=Path, help="output file, C4 format (.json.gz)")
    p.add_argument("--docs", type=_positive_int, default=30000, help="documents (default %(default)s)")
    p.add_argument("--seed", type=int, default=1234, help="same sources and seed, same bytes (default 1234)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--tokenizer", type=Path, help="Hugging Face tokenizer folder that sizes documents in tokens")
    size.add_argument("--chars-per-token", type=_positive_float, help="size documents with this ratio instead")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="processes rendering man pages (default: all cores)",
    )
    p.add_argument("--text-dir", type=Path, action="append", help="folder of text files (repeatable)")
    p.add_argument("--python-dir", type=Path, action="append", help="folder of Python files (repeatable)")
    p.add_argument("--man-dir", type=Path, action="append", help="folder with man1..man8 (repeatable)")
    a = p.parse_args(argv)
    folders = default_folders()
    if a.text_dir or a.python_dir or a.man_dir:
        folders = {"man": a.man_dir or [], "text": a.text_dir or [], "python": a.python_dir or []}
    if not a.dst.name.endswith(".json.gz"):
        p.error(f"--dst {a.dst}: name it *.json.gz, the C4 file format")
    try:
        info = write_corpus(
            a.dst, a.docs, a.seed, folders, tokenizer=a.tokenizer, cpt=a.chars_per_token, workers=a.workers
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {a.docs} documents, {info['chars'] / 1e6:.1f} MB of text, to {a.dst} "
        f"({info['sources']} sources, {info['paragraphs']} unique paragraphs, "
        f"{info['unique_chars'] / 1e6:.1f} MB; {info['chars_per_token']:.3f} chars/token)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
