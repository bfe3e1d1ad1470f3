"""A complete run folder as train.py leaves it, written without training: the files aggregate and
the resume checks read back (umup_repro/training/run_format.py): summary.json naming its cell, metrics.csv
with one row per step done (steps 0 … steps_done), and an rms.csv. Shared by the tests that need
finished cells cheaply (search, hostile input, code provenance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_run_folder(
    out,
    cell: str,
    *,
    steps_done: int = 0,
    loss: float | None = 3.0,
    diverged: bool = False,
    lr: float = 0.1,
    **summary: Any,
) -> dict[str, Any]:
    """Write the three files of a finished cell `cell` into `out` and return the summary written.
    `summary` adds fields (the flattened config, `sweep`, `code_fingerprint`, …)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "cell": cell,
        "config_hash": cell,
        "steps_done": steps_done,
        "diverged": diverged,
        "final_val_loss": None if diverged else loss,
        "final_train_loss": loss,
        **summary,
    }
    (out / "metrics.csv").write_text(
        "step,tokens,train_loss,val_loss,lr\n" + "".join(f"{s},{s * 32},{loss},,{lr}\n" for s in range(steps_done + 1))
    )
    (out / "rms.csv").write_text("step,tensor,kind,rms\n0,embedding,weight,1.0\n")
    (out / "summary.json").write_text(json.dumps(written))
    return written
