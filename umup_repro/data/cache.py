"""The cache folder and its build-once protocol, shared by the trained tokenizer and the token arrays.

Tokenising is the slow part, so it happens once. Entries live under `UMUP_CACHE` (default
`~/.cache/umup-repro`), named by a hash of the config facts that decide their content; the key is
computed from the config alone, so a later run finds the entry without touching `datasets` or the
tokenizer, and works offline once the cache exists. Builders hold a file lock per entry and publish
with write-then-rename: concurrent jobs neither corrupt nor duplicate the work, and a failed build
leaves no half-written file behind.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

FORMAT_VERSION = 1  # bump when the token files or the BPE recipe change: old cache entries are ignored

# What this process built (keys "train_bpe", "tokenize"): a cache hit adds nothing. Tests and the
# benchmark read it to show that a second load does no tokenisation.
BUILD_COUNTS: collections.Counter = collections.Counter()


def cache_dir() -> Path:
    """`UMUP_CACHE`, else the user's cache dir (`$XDG_CACHE_HOME` or `~/.cache`) / umup-repro."""
    if os.environ.get("UMUP_CACHE"):
        return Path(os.environ["UMUP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "umup-repro"


def cache_key(obj: Any) -> str:
    """16 hex digits of the SHA-256 of `obj` as sorted JSON: the hash in every entry's file name."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def build_once(path: Path, build: Callable[[Path], None]) -> Path:
    """`path`, built by `build(path)` unless it exists. Under the entry's lock, so of several
    processes one builds and the others wait and then use its result; `build` must publish `path`
    last and atomically (its presence means the entry is complete)."""
    if path.exists():
        return path
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{path.name}.lock")):
        for stale in path.parent.glob(f".{path.stem}.*.tmp-*"):  # left by a killed builder
            stale.unlink(missing_ok=True)
        if not path.exists():  # another job may have built it while we waited
            build(path)
    return path


def say(message: str) -> None:
    """A progress line for the one-time builds (tokenizer, token cache), on stderr so tables and
    piped output stay clean."""
    import sys

    print(f"[data] {message}", file=sys.stderr, flush=True)
