"""Atomic outputs: write a temp file beside the target, then rename it onto the target.

A reader (or a kill at any moment) sees the old file or the new one, never half of one; a failed
write leaves no temp file behind. Temp names are `.<name>.tmp-<pid>-<random>` so a builder can
find and remove those a killed job left.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:  # a full disk while writing: name the file it was to become
        if err.errno is not None and err.filename in (None, str(tmp)):
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file another library wrote (a checkpoint) to disk, before it is renamed onto its target."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_call(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) on a temp file next to `path`, then rename it onto `path`."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_table(df, path: str | os.PathLike) -> Path:
    """Write `df` as CSV atomically (a killed job leaves the old file or none, never half)."""
    return atomic_call(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))
