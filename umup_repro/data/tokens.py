"""The token cache: each split of the corpus as one memory-mapped array, documents joined by EOT.

Built once per (corpus, split, tokenizer, dtype, max_tokens) into `tokens/` of the cache, keyed by
a hash of those facts (computed from the config alone); afterwards only mapped, and checked before
use (`_checked`): its length against the sidecar's token count on every load, its content against
the sidecar's SHA-256 whenever the file is new or changed (size, mtime, inode: then recorded as
verified), its largest id against `model.vocab_size`. A cache entry that fails is refused, named.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from umup_repro.core.atomic import atomic_path, write_text
from umup_repro.core.config import RunConfig
from umup_repro.data.cache import BUILD_COUNTS, FORMAT_VERSION, build_once, cache_dir, cache_key, say
from umup_repro.data.corpora import SPLITS, DataUnavailableError, corpus_identity, documents
from umup_repro.data.tokenizer import eot_id, get_tokenizer, tokenizer_identity

ENCODE_CHUNK_CHARS = 2_000_000  # text per `encode_batch` call (bounds memory, keeps threads busy)


def token_arrays(config: RunConfig) -> dict[str, np.ndarray]:
    """{"train", "validation"}: the corpus as 1-D memory-mapped token arrays, documents joined by EOT.

    Built once per (corpus, split, tokenizer) into the cache; afterwards only mapped.
    `data.max_tokens` caps each split (streamed corpora stop reading there).
    """
    arrays = {}
    for split in SPLITS:
        path = build_once(token_path(config, split), functools.partial(_build_tokens, config, split))
        arrays[split] = _checked(path, config)
    return arrays


def _checked(path: Path, config: RunConfig) -> np.ndarray:
    """The mapped token array at `path`, verified against its sidecar (see the module docstring);
    DataUnavailableError naming the file otherwise."""
    dtype, sidecar = token_dtype(config), path.with_suffix(".json")
    fix = f"delete {path} and {sidecar.name}: the next run rebuilds them"
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        expected = int(info["tokens"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataUnavailableError(
            f"token cache {sidecar}: missing or unreadable ({err.__class__.__name__}); {fix}"
        ) from None
    size = path.stat().st_size
    if size != expected * dtype.itemsize:
        raise DataUnavailableError(
            f"token cache {path}: {size} bytes, but its {sidecar.name} gives {expected}"
            f" tokens = {expected * dtype.itemsize} bytes (cut short?); {fix}"
        )
    tokens = np.memmap(path, dtype=dtype, mode="r")
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    if info.get("verified") != stamp:  # new, or changed since it was last verified
        digest = _sha256(path)
        if info.get("sha256") not in (None, digest):  # (entries built before hashes have none: recorded now)
            raise DataUnavailableError(
                f"token cache {path}: its content does not match the SHA-256 in"
                f" {sidecar.name} (changed after it was built); {fix}"
            )
        info.update(sha256=digest, max_id=int(tokens.max()) if len(tokens) else 0, verified=stamp)
        try:
            write_text(sidecar, json.dumps(info, indent=1))
        except OSError:  # a read-only shared cache: verified again next time
            pass
    if int(info["max_id"]) >= config.model.vocab_size:
        raise DataUnavailableError(
            f"token cache {path}: holds token id {info['max_id']}, outside model.vocab_size"
            f" = {config.model.vocab_size}; {fix}"
        )
    return tokens


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def token_info(config: RunConfig) -> dict[str, dict[str, Any]]:
    """The sidecar facts (tokens, documents, build seconds) of each split's cached token array."""
    return {split: json.loads(token_path(config, split).with_suffix(".json").read_text()) for split in SPLITS}


def token_path(config: RunConfig, split: str) -> Path:
    """Where the token array of one split lives: `tokens/<corpus>-<split>-<hash>.bin` (+ `.json`)."""
    spec = {
        "format": FORMAT_VERSION,
        "corpus": corpus_identity(config.data, split),
        "tokenizer": tokenizer_identity(config),
        "dtype": token_dtype(config).name,
        "max_tokens": config.data.max_tokens,
    }
    return cache_dir() / "tokens" / f"{config.data.corpus}-{split}-{cache_key(spec)}.bin"


def token_dtype(config: RunConfig) -> np.dtype:
    return np.dtype(np.uint16 if config.model.vocab_size <= 65535 else np.uint32)


def _build_tokens(config: RunConfig, split: str, path: Path) -> None:
    start = time.perf_counter()
    tokenizer = get_tokenizer(config)
    eot = eot_id(tokenizer)
    dtype = token_dtype(config)
    budget = config.data.max_tokens
    docs = documents(config.data, split)
    n_tokens = n_docs = max_id = 0
    digest = hashlib.sha256()
    say(f"tokenizing {config.data.corpus} ({split}) into the token cache; once, then memory-mapped: {path.name}")
    last_said = time.perf_counter()
    with atomic_path(path) as tmp:  # the .bin is published last: its presence means the entry is complete
        with open(tmp, "wb") as f:
            for chunk in _chunks(docs, ENCODE_CHUNK_CHARS):
                ids: list[int] = []
                for enc in tokenizer.encode_batch(chunk, add_special_tokens=False):
                    ids.extend(enc.ids)
                    ids.append(eot)
                if budget is not None:
                    ids = ids[: budget - n_tokens]
                array = np.asarray(ids, dtype=dtype)
                f.write(array.tobytes())  # (tofile's short write has no errno)
                digest.update(array.tobytes())
                max_id = max(max_id, int(array.max()) if len(array) else 0)
                n_tokens += len(ids)
                n_docs += len(chunk)
                if time.perf_counter() - last_said > 10:
                    last_said = time.perf_counter()
                    say(
                        f"  {split}: {n_docs} documents, {n_tokens / 1e6:.1f}M tokens so far"
                        f" ({last_said - start:.0f} s)"
                    )
                if budget is not None and n_tokens >= budget:
                    break
            f.flush()
            os.fsync(f.fileno())
        if n_tokens == 0:
            raise DataUnavailableError(f"corpus {config.data.corpus!r}: split {split!r} has no text")
        info = {
            "corpus": corpus_identity(config.data, split),
            "tokenizer": tokenizer_identity(config),
            "tokens": n_tokens,
            "documents": n_docs,
            "dtype": dtype.name,
            "sha256": digest.hexdigest(),  # checked before use (`_checked`)
            "max_id": max_id,
            "build_seconds": round(time.perf_counter() - start, 3),
        }
        write_text(path.with_suffix(".json"), json.dumps(info, indent=1))
    say(f"{split}: {n_tokens / 1e6:.2f}M tokens from {n_docs} documents in {time.perf_counter() - start:.1f} s")
    BUILD_COUNTS["tokenize"] += 1


def _chunks(docs: Iterable[str], max_chars: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for doc in docs:
        chunk.append(doc)
        size += len(doc)
        if size >= max_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
