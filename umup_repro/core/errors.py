"""User errors: what `umup-repro` (umup_repro/cli.py, `main`) turns into exit 2 with a one-line
message and no traceback, and `train --log`'s appended log. `UserError` is for refusals that no
more specific class (ConfigError, CellError, ReadBackError, ...) names."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class UserError(ValueError):
    """Bad input from the user: the message names the option, field or file and the fix."""


NO_SPACE = {"ENOSPC", "EDQUOT", "EFBIG"}  # a full disk, a quota, a file-size limit
# OSErrors about a path the user gave (missing, unwritable, too long, a folder where a file goes)
USER_OS_ERRORS = NO_SPACE | {
    "ENOENT",
    "EACCES",
    "EPERM",
    "EROFS",
    "ENAMETOOLONG",
    "EISDIR",
    "ENOTDIR",
    "EEXIST",
    "ENOTEMPTY",
    "ELOOP",
}


def os_error_message(err: OSError) -> str | None:
    """ "FILE: what went wrong" for an OSError about a path (a full disk says *no space*), None
    for any other OSError (a bug, shown with its traceback)."""
    import errno

    name = errno.errorcode.get(err.errno or 0)
    if name not in USER_OS_ERRORS:
        return None
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None) or "a file"
    if name in NO_SPACE:
        return f"{where}: no space left to write it ({err.strerror}); free some space and rerun"
    return f"{where}: {err.strerror}"


# User errors (README, "Exit codes"): exit 2 with one message naming the field, file or folder, and
# no traceback. Recognised by class name, so that recognising them imports nothing.
USER_ERRORS = frozenset(
    {
        "umup_repro.core.errors.UserError",
        "umup_repro.core.config.ConfigError",
        "umup_repro.sweeps.presets.PresetError",
        "umup_repro.training.run_format.CellError",
        "umup_repro.training.run_format.ReadBackError",
        "umup_repro.training.loggers.LoggerError",
        "umup_repro.results.aggregate.MissingRunsError",
        "umup_repro.results.aggregate.MixedCodeError",
        "umup_repro.data.corpora.DataUnavailableError",
        "yaml.error.YAMLError",
    }
)


class UserExit(SystemExit):
    """Exit 2 after a message was printed; str() is the message (SystemExit(text) would exit 1)."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def user_error_message(err: BaseException) -> str | None:
    """The one-line message of a user error, or None for a bug (which keeps its traceback)."""
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(err).__mro__}
    if names & USER_ERRORS:
        return str(err)
    return os_error_message(err) if isinstance(err, OSError) else None


class _Tee:
    """A text stream that writes to the console stream and to a log file."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name: str):  # isatty, fileno, encoding, ...: the console's
        return getattr(self.stream, name)


@contextlib.contextmanager
def appended_log(path: str | None, command: str) -> Iterator[None]:
    """With `--log FILE`: this process's output also goes to FILE, opened to append (O_APPEND:
    two processes' lines can interleave, never overwrite each other), after a header line."""
    if not path:
        yield
        return
    import os
    import time
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", buffering=1) as log:
        log.write(f"== {command}, pid {os.getpid()}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = streams
