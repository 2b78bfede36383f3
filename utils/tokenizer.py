"""Tokenizers for the data pipeline: fetch the Llama 3.1 tokenizer, or train a small BPE one.

Run:
  python -m utils.tokenizer download --dst DIR [--repo meta-llama/Llama-3.1-8B] [--revision REV]
  python -m utils.tokenizer train-bpe --dst DIR [--vocab-size 2048] FILE.json[.gz] ...

`download` fetches only the tokenizer files of the gated Llama 3.1 repository (accept its licence
on the Hugging Face hub first). The token comes from the HF_TOKEN environment variable or from
`hf auth login`; it is passed to huggingface_hub and never printed.

`train-bpe` trains a byte-level BPE in the Llama 3 style (same pre-tokenizer regex, byte-level
alphabet, `<|begin_of_text|>`/`<|end_of_text|>` special tokens, BOS added by the post-processor
like the released Llama 3.1 tokenizer.json) on the `text` of C4-format JSON-lines files. The
embedded default dataset uses it so that the whole pipeline runs offline.

Both write a Hugging Face tokenizer directory that `transformers.AutoTokenizer.from_pretrained`
loads and that `utils.tokenize` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from benchmark.tokenizer import load_fast_tokenizer
from utils.errors import command, positive_int
from utils.fileio import DataError, atomic_output, iter_raw_lines

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
LLAMA31_REPO = "meta-llama/Llama-3.1-8B"
# What a tokenizer directory needs; the rest of the repository (weights) is never fetched.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
LLAMA31_VOCAB = 128_256

# The Llama 3 pre-tokenizer split: contractions, letter runs with one leading non-letter, digit
# groups of at most three, punctuation runs, newlines, and whitespace.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


# ----------------------------------------------------------------------------- loading
# (load_fast_tokenizer lives in benchmark/tokenizer.py: the benchmark checks its inputs with it)


def eos_id(tokenizer_dir: str | os.PathLike, tok=None) -> int:
    """The end-of-text id of a tokenizer directory: the `eos_token` of tokenizer_config.json,
    else Llama 3's `<|end_of_text|>`. Raises DataError when neither is in the vocabulary.
    `tok`: the directory's already loaded `tokenizers.Tokenizer`, to save loading it again."""
    d = Path(tokenizer_dir)
    tok = tok or load_fast_tokenizer(d)
    name = EOS
    try:
        cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
        eos = cfg.get("eos_token")
        # Older configs store special tokens as {"content": ...} objects.
        name = eos.get("content") if isinstance(eos, dict) else (eos or EOS)
    except (OSError, ValueError):
        pass
    i = tok.token_to_id(name)
    if i is None:
        raise DataError(f"{d}: eos token {name!r} is not in the vocabulary; set eos_token in tokenizer_config.json")
    return i


# ----------------------------------------------------------------------------- training
def iter_texts(files: Iterable[str | os.PathLike], max_docs: int | None = None) -> Iterator[str]:
    """The `text` of every JSON line of `files`, in order, at most `max_docs` of them."""
    n = 0
    for f in files:
        for lineno, raw in enumerate(iter_raw_lines(f), 1):
            if max_docs is not None and n >= max_docs:
                return
            try:
                yield json.loads(raw)["text"]
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{f}:{lineno}: not a JSON object with a 'text' field ({e})") from None
            n += 1


def train_bpe(
    files: Iterable[str | os.PathLike],
    dst_dir: str | os.PathLike,
    vocab_size: int = 2048,
    max_docs: int | None = None,
) -> Path:
    """Train a Llama 3 style byte-level BPE on the `text` of JSON-lines `files`; save it to `dst_dir`.

    The vocabulary has exactly `vocab_size` ids (a multiple of 128): the learned BPE tokens, then
    `<|begin_of_text|>` and `<|end_of_text|>`, then reserved special tokens if the corpus ran out of
    merges, as Llama 3 fills its last ids. Returns `dst_dir`. Training is deterministic for the
    same input.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size % 128 or vocab_size < 512:
        raise DataError(f"vocab_size={vocab_size}: use a multiple of 128, at least 512 (e.g. 2048)")
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # Leave room for the two special tokens that follow the learned ids.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    files = list(files)
    seen = 0

    def texts() -> Iterator[str]:
        nonlocal seen
        for text in iter_texts(files, max_docs):
            seen += bool(text)
            yield text

    tok.train_from_iterator(texts(), trainer=trainer)
    if seen == 0:
        # With no text BPE learns no merge at all: the result would be a byte-level tokenizer
        # padded with reserved ids, useless for the data and easy to miss.
        raise DataError(
            f"{', '.join(map(str, files[:3]))}{' ...' if len(files) > 3 else ''}: no document with a "
            "non-empty 'text' to train on (the files are empty, or --max-docs is 0); give C4-format "
            "JSON-lines files with text"
        )
    n_learned = tok.get_vocab_size()
    specials = [BOS, EOS] + [f"<|reserved_special_token_{i}|>" for i in range(vocab_size - n_learned - 2)]
    tok.add_special_tokens(specials)
    bos_id = tok.token_to_id(BOS)
    # Like the released Llama 3.1 tokenizer: transformers' encode() prepends BOS. The data
    # pipeline encodes without the post-processor, so the dataset holds no BOS (see utils.tokenize).
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    if tok.get_vocab_size() != vocab_size:
        raise DataError(f"BPE training produced {tok.get_vocab_size()} ids, expected {vocab_size}")
    save_tokenizer_dir(tok, dst_dir)
    return Path(dst_dir)


def save_tokenizer_dir(tok, dst_dir: str | os.PathLike, model_max_length: int = 131072) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json for a Llama 3 style
    `tokenizers.Tokenizer`, each atomically. The config mirrors the fields of Llama 3.1's."""
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    added = {
        str(t_id): {
            "content": t.content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t_id, t in sorted(tok.get_added_tokens_decoder().items())
    }
    config = {
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    with atomic_output(dst / "tokenizer.json") as tmp:
        tok.save(str(tmp))
    with atomic_output(dst / "tokenizer_config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    with atomic_output(dst / "special_tokens_map.json") as tmp:
        tmp.write_text(json.dumps({"bos_token": BOS, "eos_token": EOS}, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- download
def download(
    dst_dir: str | os.PathLike,
    repo_id: str = LLAMA31_REPO,
    revision: str | None = None,
    token: str | None = None,
    snapshot_download: Callable | None = None,
) -> Path:
    """Fetch the tokenizer files of `repo_id` into `dst_dir` and check that they load.

    `token`: a Hugging Face token; None uses HF_TOKEN or the saved login. `snapshot_download`
    defaults to huggingface_hub's (tests pass a stand-in). Raises DataError with the fix on the
    usual failures (licence not accepted, not logged in, no network).
    """
    if snapshot_download is None:
        from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf_errors

    dst = Path(dst_dir)
    token = token or os.environ.get("HF_TOKEN") or None
    page = f"https://huggingface.co/{repo_id}"
    try:
        snapshot_download(
            repo_id=repo_id,
            revision=revision,
            allow_patterns=list(TOKENIZER_FILES),
            local_dir=str(dst),
            token=token,
        )
    except hf_errors.HFValidationError as e:
        raise DataError(
            f"--repo {repo_id!r} is not a Hugging Face repository id ({e}); give OWNER/NAME, e.g. {LLAMA31_REPO}"
        ) from None
    except hf_errors.GatedRepoError:
        raise DataError(
            f"{repo_id} is gated: accept its licence at {page}, then log in with `hf auth login` "
            "or export HF_TOKEN with a token of that account"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise DataError(
            f"{repo_id}: repository not found or not visible to this account; check the name, "
            f"accept the licence at {page} and log in (`hf auth login` or HF_TOKEN)"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise DataError(f"{repo_id}: revision {revision!r} not found") from None
    except hf_errors.HfHubHTTPError as e:
        status = getattr(e.response, "status_code", "?")
        raise DataError(
            f"the Hugging Face hub refused the download of {repo_id} (HTTP {status}); check your "
            f"access at {page} and your login (`hf auth login` or HF_TOKEN)"
        ) from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, OSError) as e:
        raise DataError(
            f"could not reach the Hugging Face hub for {repo_id} ({type(e).__name__}); check the "
            "network (and HF_HUB_OFFLINE), or copy tokenizer.json and tokenizer_config.json "
            f"from a machine that has them into {dst}"
        ) from None
    missing = [f for f in ("tokenizer.json", "tokenizer_config.json") if not (dst / f).is_file()]
    if missing:
        raise DataError(f"{repo_id}: the download left no {', '.join(missing)} in {dst}")
    tok = load_fast_tokenizer(dst)
    if repo_id == LLAMA31_REPO and tok.get_vocab_size() != LLAMA31_VOCAB:
        raise DataError(f"{dst}: expected {LLAMA31_VOCAB} ids for Llama 3.1, found {tok.get_vocab_size()}")
    return dst


# ----------------------------------------------------------------------------- CLI
@command
def main(argv: list[str] | None = None) -> int:
    """python -m utils.tokenizer {download,train-bpe} ...: see the module docstring."""
    p = argparse.ArgumentParser(
        prog="python -m utils.tokenizer",
        description="Fetch the Llama 3.1 tokenizer, or train a small Llama 3 style BPE.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "download",
        help="fetch the tokenizer files of a (gated) Hugging Face repository",
        description="Fetch only the tokenizer files (tokenizer.json, tokenizer_config.json, "
        "special_tokens_map.json) of a Hugging Face model repository. Token: HF_TOKEN or "
        "`hf auth login`; it is never printed.",
    )
    d.add_argument("--dst", required=True, type=Path, help="output tokenizer directory")
    d.add_argument("--repo", default=LLAMA31_REPO, help=f"model repository (default {LLAMA31_REPO})")
    d.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    t = sub.add_parser(
        "train-bpe",
        help="train a Llama 3 style byte-level BPE on C4-format files",
        description="Train a byte-level BPE with Llama 3's pre-tokenizer and special tokens on the "
        "'text' of JSON-lines files (.json or .json.gz).",
    )
    t.add_argument("files", nargs="+", type=Path, help="C4-format JSON-lines files")
    t.add_argument("--dst", required=True, type=Path, help="output tokenizer directory")
    t.add_argument("--vocab-size", type=int, default=2048, help="total ids, a multiple of 128 (default 2048)")
    t.add_argument("--max-docs", type=positive_int, default=None, help="train on the first N documents only")
    a = p.parse_args(argv)
    try:
        if a.command == "download":
            out = download(a.dst, a.repo, a.revision)
            print(f"tokenizer of {a.repo} saved to {out}")
        else:
            out = train_bpe(a.files, a.dst, a.vocab_size, a.max_docs)
            print(f"BPE tokenizer ({a.vocab_size} ids) saved to {out}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
