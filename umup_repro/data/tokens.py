"""The token cache: each split of the corpus as one memory-mapped array, documents joined by EOT.

Built once per (corpus, split, tokenizer, dtype, max_tokens) into `tokens/` of the cache, keyed by
a hash of those facts (computed from the config alone); afterwards only mapped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from umup_repro.atomic import atomic_path, write_text
from umup_repro.config import RunConfig
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
        path = build_once(token_path(config, split), lambda p, split=split: _build_tokens(config, split, p))
        arrays[split] = np.memmap(path, dtype=token_dtype(config), mode="r")
    return arrays


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
    n_tokens = n_docs = 0
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
                f.write(np.asarray(ids, dtype=dtype).tobytes())  # (tofile's short write has no errno)
                n_tokens += len(ids)
                n_docs += len(chunk)
                if time.perf_counter() - last_said > 10:
                    last_said = time.perf_counter()
                    say(f"  {split}: {n_docs} documents, {n_tokens / 1e6:.1f}M tokens so far"
                        f" ({last_said - start:.0f} s)")
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
