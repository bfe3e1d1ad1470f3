"""The user error every command turns into exit 2 with its one-line message (umup_repro/cli.py):
for refusals that no more specific class (ConfigError, CellError, ReadBackError, ...) names."""


class UserError(ValueError):
    """Bad input from the user: the message names the option, field or file and the fix."""


NO_SPACE = {"ENOSPC", "EDQUOT", "EFBIG"}  # a full disk, a quota, a file-size limit
# OSErrors about a path the user gave (missing, unwritable, too long, a folder where a file goes)
USER_OS_ERRORS = NO_SPACE | {"ENOENT", "EACCES", "EPERM", "EROFS", "ENAMETOOLONG", "EISDIR", "ENOTDIR",
                             "EEXIST", "ENOTEMPTY", "ELOOP"}


def os_error_message(err: OSError) -> str | None:
    """"FILE: what went wrong" for an OSError about a path (a full disk says *no space*), None
    for any other OSError (a bug, shown with its traceback)."""
    import errno

    name = errno.errorcode.get(err.errno or 0)
    if name not in USER_OS_ERRORS:
        return None
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None) or "a file"
    if name in NO_SPACE:
        return f"{where}: no space left to write it ({err.strerror}); free some space and rerun"
    return f"{where}: {err.strerror}"
