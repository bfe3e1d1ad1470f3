"""The run folder's format (its files, the columns of metrics.csv and rms.csv, the checkpoint's
place and our key in it) and the checks of what is read back from it, before anything trusts it.

A file can be damaged after it was written whole (a disk error, a user's edit, a copy cut short,
a file deleted by hand), so a reader verifies before use: a summary must parse and belong to the
folder's cell (`cell` and `config_hash`), metrics.csv must hold one row per step the summary says
was run, rms.csv must exist, every number be a number and finite (umup_repro/training/run_schema.py), and a
checkpoint must load safely and belong to the cell. Each failure is a
`ReadBackError` whose message names the file and the fix. torch is imported only to check a
checkpoint.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from umup_repro.training.run_schema import summary_problem

METRICS_COLUMNS = ("step", "tokens", "train_loss", "val_loss", "lr")
RMS_COLUMNS = ("step", "tensor", "kind", "rms")
CHECKPOINT = Path("checkpoints") / "last.ckpt"


class CellError(RuntimeError):
    """A cell that cannot start: its data is missing, or its run folder holds another config.
    Raised before anything is trained or written; the message says what to fix."""


class RunFolderError(CellError):
    """The run folder holds another config (or something that is not a run)."""


STATE_KEY = "umup_repro"  # our entry in the Lightning checkpoint
RUN_FILES = {"config.yaml", "metrics.csv", "rms.csv", "summary.json", ".lock", CHECKPOINT.parts[0]}


class ReadBackError(ValueError):
    """A run folder's file that is unreadable, incomplete or another cell's."""


def read_summary(path: Path, cell: str) -> dict[str, Any]:
    """summary.json of cell `cell`, checked: valid JSON, an object, its `cell` and `config_hash`
    equal to the cell id, and the fields the tables need."""
    fix = f"delete {path} (or its run folder) and rerun the cell"
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReadBackError(f"{path}: not a readable summary ({err}); {fix}") from None
    if not isinstance(summary, dict):
        raise ReadBackError(f"{path}: not a summary (a JSON {type(summary).__name__}, not an object); {fix}")
    for key in ("cell", "config_hash"):
        if summary.get(key) != cell:
            raise ReadBackError(f"{path}: its {key} is {summary.get(key)!r}, not the folder's cell {cell}; {fix}")
    steps = summary.get("steps_done")
    if (
        not isinstance(steps, int)
        or isinstance(steps, bool)
        or steps < 0
        or not isinstance(summary.get("diverged"), bool)
    ):
        raise ReadBackError(f"{path}: steps_done or diverged missing or invalid; {fix}")
    problem = summary_problem(summary)  # every number a number, losses finite (umup_repro/training/run_schema.py)
    if problem is not None:
        raise ReadBackError(f"{path}: {problem}; {fix}")
    return summary


# str.splitlines' line ends besides "\n" (and \x85, \u2028, \u2029, which ASCII text cannot hold)
_OTHER_LINE_ENDS = "\r\x0b\x0c\x1c\x1d\x1e"


def plain_lines(text: str) -> bool:
    """Whether `text` ends its lines with "\n" only (as a run writes): then splitting at "\n" is
    splitlines(), and a 100,000-line file needs no list of its lines (issue 25: aggregating 5000
    runs read and split each file twice). `isascii` is O(1) for a str."""
    return text.isascii() and not any(end in text for end in _OTHER_LINE_ENDS)


def header_and_rows(text: str) -> tuple[str | None, int]:
    """(first line or None, number of lines after it), as `text.splitlines()` counts them."""
    if not plain_lines(text):
        lines = text.splitlines()
        return (lines[0] if lines else None), max(len(lines) - 1, 0)
    if not text:
        return None, 0
    end = text.find("\n")  # (not split: that copies the rest of the text)
    return text[:end] if end >= 0 else text, text.count("\n") - text.endswith("\n")


def check_tables(folder: Path, summary: dict[str, Any]) -> dict[str, str]:
    """metrics.csv has the header and exactly steps_done + 1 rows (steps 0 … steps_done); rms.csv
    exists with its header and at least one row. Returns {file name: its text} (read once)."""
    folder = Path(folder)
    fix = f"delete {folder / 'summary.json'} (or the run folder) and rerun the cell"
    expected = {"metrics.csv": (METRICS_COLUMNS, summary["steps_done"] + 1), "rms.csv": (RMS_COLUMNS, None)}
    texts = {}
    for name, (columns, rows) in expected.items():
        path = folder / name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ReadBackError(f"{path}: missing or unreadable ({err.__class__.__name__}); {fix}") from None
        header, found = header_and_rows(text)
        if header is None or header != ",".join(columns):
            raise ReadBackError(f"{path}: header is not {','.join(columns)}; {fix}")
        if rows is not None and found != rows:
            raise ReadBackError(
                f"{path}: {found} rows, but the summary's steps_done = {summary['steps_done']}"
                f" needs {rows} (truncated?); {fix}"
            )
        if rows is None and found < 1:
            raise ReadBackError(f"{path}: no rows; {fix}")
        texts[name] = text
    return texts


def check_rows_of(folder: Path, summary: dict[str, Any]) -> None:
    """Every row of metrics.csv and rms.csv typed and finite (NaN and inf only in a diverged run):
    umup_repro/training/run_schema.py; ReadBackError naming file, line and field. (aggregate checks its long
    tables the same way, a sweep at a time.)"""
    from umup_repro.training.run_schema import RowsError, check_rows

    folder = Path(folder)
    for name in ("metrics.csv", "rms.csv"):
        path = folder / name
        try:
            check_rows(
                path.read_text(encoding="utf-8"),
                name,
                diverged=lambda _: summary["diverged"],
                file_of=lambda _: path,  # noqa: B023 (called before the loop moves on)
            )
        except RowsError as err:
            raise ReadBackError(
                f"{err}; delete {folder / 'summary.json'} (or the run folder) and rerun the cell"
            ) from None


def checkpoint_problem(path: Path, cell: str) -> str | None:
    """Why the checkpoint at `path` cannot be resumed from (None if it can): it must load and
    hold our state for cell `cell`, the model weights and the optimizer state.

    It is loaded with `weights_only=True`: tensors, containers and plain values only, never an
    arbitrary Python object, so a file replaced by a pickle that runs code is refused unrun (a
    checkpoint of ours holds nothing else; Lightning reloads it the same way, train.py)."""
    import torch

    try:
        with warnings.catch_warnings():  # (torch warns about pickle protocols before refusing them)
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means "unusable"
        text = " ".join(str(err).split())
        if "Weights only load failed" in text:
            found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
            what = f"the Python object {found.group(1)}" if found else "Python objects beyond tensors"
            return (
                f"it does not load safely: it holds {what}, which no checkpoint of this tool holds"
                " (not unpickled; kept for inspection)"
            )
        return f"it does not load ({err.__class__.__name__}: {text[:120]})"
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get(STATE_KEY), dict):
        return "it is not a checkpoint of this tool"
    if ckpt[STATE_KEY].get("config_hash") != cell:
        return f"it belongs to cell {ckpt[STATE_KEY].get('config_hash')!r}, not {cell}"
    if not ckpt.get("state_dict") or not ckpt.get("optimizer_states") or "loops" not in ckpt:
        return "it lacks the model, optimizer or loop state"
    return None
