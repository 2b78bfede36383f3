"""Loading a Hugging Face tokenizer directory's fast tokenizer, for the benchmark's input checks
and for the data tools (utils/tokenizer.py, utils/tokenize.py), which import it from here.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from benchmark.errors import DataError


def load_fast_tokenizer(tokenizer_dir: str | os.PathLike):
    """The `tokenizers.Tokenizer` of a Hugging Face tokenizer directory.

    Raises DataError naming the directory and the fix when it is not one.
    """
    d = Path(tokenizer_dir)
    hint = (
        "pass a Hugging Face tokenizer directory (one with tokenizer.json): "
        "`python -m utils.tokenizer download --dst DIR` fetches Llama 3.1's, "
        "`python -m utils.tokenizer train-bpe` trains a small one"
    )
    if not d.is_dir():
        raise DataError(f"{d}: tokenizer directory not found; {hint}")
    f = d / "tokenizer.json"
    if not f.is_file():
        raise DataError(f"{d}: not a tokenizer directory (no tokenizer.json); {hint}")
    st = f.stat()
    try:
        return _load_cached(str(f.resolve()), st.st_mtime_ns, st.st_size)
    except Exception as e:  # the Rust loader raises a bare Exception on malformed files
        raise DataError(f"{f}: cannot be loaded as a Hugging Face tokenizer ({e}); {hint}") from None


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int):
    """Loading Llama 3's tokenizer.json takes most of a second; a process that tokenizes several
    files with it loads it once. The key includes the file's time stamp and size, so a changed
    file is loaded again. Encoding does not modify the object, so sharing it is safe."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)
