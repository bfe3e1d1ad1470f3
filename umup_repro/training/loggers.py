"""Optional experiment loggers (TensorBoard, Weights & Biases) for people who live there.

Off by default and never needed for the run folder's own files: the run folder stays the record.
Chosen per run by `umup-repro train --logger NAME` (repeatable) or `$UMUP_LOGGERS`
(comma-separated; what the workflow sets from the preset's top-level `loggers:` list). A chosen
logger whose package is missing is an error that says what to install, before training starts.
Lightning-free at import (the callback that feeds the loggers is umup_repro/training/logger_callback.py):
run_cell checks the choice before its folder's lock, where a refused or no-op run must stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

KNOWN = ("tensorboard", "wandb")


class LoggerError(ValueError):
    """An unknown logger, or a known one whose package is not installed."""


def chosen(names: Sequence[str] | None = None) -> list[str]:
    """The loggers asked for: `names` if given, else $UMUP_LOGGERS; checked against KNOWN."""
    if not names:
        names = [n for n in os.environ.get("UMUP_LOGGERS", "").split(",") if n.strip()]
    names = list(dict.fromkeys(n.strip().lower() for n in names))
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise LoggerError(f"unknown logger(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    return names


def build_loggers(names: Sequence[str], out: Path, cell: str) -> list:
    """Lightning loggers writing under the run folder (TensorBoard: out/tensorboard; W&B: a run
    named after the cell, project $WANDB_PROJECT or umup-repro)."""
    loggers: list[Logger] = []
    for name in names:
        try:
            if name == "tensorboard":
                from lightning.pytorch.loggers import TensorBoardLogger

                loggers.append(TensorBoardLogger(save_dir=str(out), name="tensorboard", version=""))
            elif name == "wandb":
                from lightning.pytorch.loggers import WandbLogger

                loggers.append(
                    WandbLogger(project=os.environ.get("WANDB_PROJECT", "umup-repro"), name=cell, save_dir=str(out))
                )
        except ModuleNotFoundError as err:  # Lightning's loggers need their own packages
            package = "tensorboard" if name == "tensorboard" else "wandb"
            raise LoggerError(f"logger {name}: {err}; install it with `pip install {package}`") from None
    return loggers
