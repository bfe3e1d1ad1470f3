"""The run's tokenizer: a byte-level BPE trained once on the corpus and cached, or a hub tokenizer.

A trained BPE is cached under a hash of its recipe and training text (`tokenizer_identity`), so a
later run loads the file instead of training again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from umup_repro.core.atomic import write_text
from umup_repro.core.config import RunConfig
from umup_repro.data.cache import BUILD_COUNTS, FORMAT_VERSION, build_once, cache_dir, cache_key, say
from umup_repro.data.corpora import DataUnavailableError, corpus_identity, documents

EOT = "<|endoftext|>"  # the trained BPE's end-of-text token, appended after every document
EOT_CANDIDATES = (EOT, "</s>", "<|end_of_text|>", "<eos>")  # hub tokenizers: the first one present
BPE_TRAIN_CHARS = 100_000_000  # the BPE learns from at most this much of the training split's text


def get_tokenizer(config: RunConfig) -> Tokenizer:
    """The run's tokenizer: `data.tokenizer: bpe` trains a byte-level BPE of `model.vocab_size`
    tokens on the training split once and caches it; anything else names a hub tokenizer (repo id,
    or a local tokenizer.json / folder holding one)."""
    if config.data.tokenizer == "bpe":
        path = build_once(bpe_path(config), lambda p: _train_bpe(config, p))
        _check_digest(path)
        tokenizer = _tokenizer_file(path)
    else:
        tokenizer = _hub_tokenizer(config.data.tokenizer)
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > config.model.vocab_size:
        raise ValueError(
            f"data.tokenizer {config.data.tokenizer!r} has {size} tokens but model.vocab_size is"
            f" {config.model.vocab_size}; set model.vocab_size to at least {size}"
        )
    return tokenizer


def eot_id(tokenizer: Tokenizer) -> int:
    """The end-of-text token placed between documents."""
    for token in EOT_CANDIDATES:
        i = tokenizer.token_to_id(token)
        if i is not None:
            return i
    raise ValueError(f"tokenizer has no end-of-text token (looked for {', '.join(EOT_CANDIDATES)})")


def tokenizer_identity(config: RunConfig) -> dict[str, Any]:
    """A trained BPE is named by its recipe and training text; a hub tokenizer by its name, a local
    tokenizer file by its path and content."""
    if config.data.tokenizer == "bpe":
        return {
            "bpe": config.model.vocab_size,
            "format": FORMAT_VERSION,
            "train_chars": BPE_TRAIN_CHARS,
            "trained_on": corpus_identity(config.data, "train"),
        }
    p = Path(config.data.tokenizer).expanduser()
    if not p.exists():
        return {"hub": config.data.tokenizer}
    file = p / "tokenizer.json" if p.is_dir() else p
    try:  # a local file is named by its content too: one replaced at the same path gets a new token cache
        content = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
    except OSError:
        content = None  # (loading it fails later, naming the file)
    return {"hub": str(p.resolve()), "sha256": content}


def bpe_path(config: RunConfig) -> Path:
    """Where the trained BPE lives: `tokenizers/bpe<vocab>-<hash>.json`."""
    return cache_dir() / "tokenizers" / f"bpe{config.model.vocab_size}-{cache_key(tokenizer_identity(config))}.json"


def _train_bpe(config: RunConfig, path: Path) -> None:
    """Byte-level BPE (GPT-2 style pre-tokenisation, so no unknown tokens) with one special token,
    EOT. Deterministic: same text and vocab size, same merges."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    vocab = config.model.vocab_size
    if vocab < 257:
        raise ValueError(f"model.vocab_size must be at least 257 for a byte-level BPE (got {vocab})")
    docs = documents(config.data, "train")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOT],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    say(
        f"training a byte-level BPE tokenizer (vocab {vocab}) on up to {BPE_TRAIN_CHARS / 1e6:.0f}M characters"
        f" of {config.data.corpus}; once, then cached: {path.name}"
    )
    start = time.perf_counter()
    tokenizer.train_from_iterator(_first_chars(docs, BPE_TRAIN_CHARS), trainer)
    say(f"tokenizer trained in {time.perf_counter() - start:.1f} s")
    BUILD_COUNTS["train_bpe"] += 1
    text = tokenizer.to_str()
    write_text(_digest_path(path), hashlib.sha256(text.encode("utf-8")).hexdigest() + "\n")  # (published first)
    write_text(path, text)


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _check_digest(path: Path) -> None:
    """A cached BPE must be the file that was trained: its SHA-256 is recorded beside it (an entry
    from before digests gets one now); DataUnavailableError naming the file otherwise."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    recorded = _digest_path(path)
    if not recorded.exists():
        try:
            write_text(recorded, digest + "\n")
        except OSError:  # a read-only shared cache
            pass
        return
    if recorded.read_text(encoding="utf-8").strip() != digest:
        raise DataUnavailableError(
            f"tokenizer cache {path}: its content does not match {recorded.name} (changed"
            f" after it was trained); delete both and rerun: it is trained again"
        )


def _first_chars(docs: Iterable[str], limit: int) -> Iterator[str]:
    seen = 0
    for doc in docs:
        if seen >= limit:
            return
        yield doc[: limit - seen]
        seen += len(doc)


def _hub_tokenizer(name: str) -> Tokenizer:
    p = Path(name).expanduser()
    if p.is_dir():
        p = p / "tokenizer.json"
    if p.is_file():
        return _tokenizer_file(p)
    import huggingface_hub

    try:
        file = huggingface_hub.hf_hub_download(name, "tokenizer.json")
    except Exception as err:  # offline and not cached, unknown repo, gated, ...
        raise DataUnavailableError(
            f"tokenizer {name!r} could not be loaded ({type(err).__name__}: {err}). On a machine with"
            f" network and the same HF_HOME run: hf download {name} tokenizer.json"
            " (or set data.tokenizer to the path of a tokenizer.json)"
        ) from err
    return _tokenizer_file(Path(file))


def _tokenizer_file(path: Path) -> Tokenizer:
    """A tokenizer.json, or DataUnavailableError naming the file."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception for any bad file
        raise DataUnavailableError(
            f"data.tokenizer: {path} is not a tokenizer.json file ({' '.join(str(err).split())[:160]})"
        ) from None
