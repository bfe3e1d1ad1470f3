"""Issue 27, tables: summaries and metrics/RMS rows are validated by type and finiteness
(umup_repro/training/run_schema.py) before they enter a table; a damaged file is refused naming file and
field. Real `umup-repro aggregate` / `train --copy-from` processes on written run folders.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from run_folders import write_run_folder
from test_hostile import ENV, PRESET_BASE, TINY

from umup_repro.core.config import config_to_dict, flatten_config
from umup_repro.sweeps.grid import expand_sweep

UMUP = [sys.executable, "-m", "umup_repro.cli"]


@pytest.fixture
def sweep(tmp_path):
    """A preset of 6 cells (2 widths × 3 LRs) and a complete run folder for each; the loss is lowest
    at LR 0.5."""
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({**PRESET_BASE, "defaults": TINY, "figures": {}}))
    cells = expand_sweep("lr", PRESET_BASE["sweeps"]["lr"], TINY)
    for c in cells:
        loss = 3.0 + abs(c.config.train.lr - 0.5)
        folder = tmp_path / "runs" / "lr" / c.id
        write_run_folder(folder, c.id, steps_done=4, loss=loss, sweep="lr", **flatten_config(c.config))
        (folder / "config.yaml").write_text(yaml.safe_dump(config_to_dict(c.config), sort_keys=False))
    return {"preset": preset, "cells": cells, "runs": tmp_path / "runs", "tables": tmp_path / "tables"}


def aggregate(s, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *UMUP,
            "aggregate",
            "--preset",
            str(s["preset"]),
            "--runs",
            str(s["runs"]),
            "--tables",
            str(s["tables"]),
            *map(str, extra),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )


def refused(proc, *named):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    for name in named:
        assert name in line, (name, proc.stderr)


def folder(s, i: int) -> Path:
    return s["runs"] / "lr" / s["cells"][i].id


def edit_summary(s, i, **fields):
    path = folder(s, i) / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_intact_runs_aggregate(sweep):
    proc = aggregate(sweep)
    assert proc.returncode == 0, proc.stderr
    assert (sweep["tables"] / "lr.csv").exists() and (sweep["tables"] / "metrics" / "lr.csv").exists()


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"final_val_loss": "abc"}, "final_val_loss"),
        ({"final_val_loss": float("nan")}, "final_val_loss"),  # json writes NaN
        ({"final_val_loss": float("inf")}, "final_val_loss"),
        ({"final_train_loss": True}, "final_train_loss"),
        ({"tokens": -5}, "tokens"),
        ({"wall_seconds": "1h"}, "wall_seconds"),
    ],
)
def test_a_summary_with_a_bad_number_is_refused_and_no_table_written(sweep, fields, named):
    edit_summary(sweep, 2, **fields)
    refused(aggregate(sweep), str(folder(sweep, 2) / "summary.json"), named)
    assert not (sweep["tables"] / "lr.csv").exists()


def test_a_string_loss_cannot_move_a_transfer_optimum(sweep):
    """The hostile case: "abc" sorted as a loss changed the optimum; now nothing is written."""
    edit_summary(sweep, 0, final_val_loss="abc")
    refused(aggregate(sweep), "final_val_loss")
    refused(aggregate(sweep, "--transfer-summary", sweep["tables"] / "t.csv"), "lr.csv")  # no table yet
    assert not (sweep["tables"] / "t.csv").exists()


@pytest.mark.parametrize(
    "file, old, new, named",
    [
        ("metrics.csv", ",3.25,", ",abc,", "train_loss is not a number"),
        ("metrics.csv", ",3.25,", ",nan,", "train_loss is not finite"),
        ("metrics.csv", ",3.25,", ",-inf,", "train_loss is not finite"),
        ("metrics.csv", ",0.1\n", ",\n", "lr is missing"),
        ("metrics.csv", "\n1,32,", "\n1,-32,", "tokens is not a non-negative integer"),
        ("rms.csv", ",1.0\n", ",x\n", "rms is not a number"),
        ("rms.csv", ",1.0\n", ",NaN\n", "rms is not finite"),
    ],
)
def test_bad_rows_of_a_run_not_diverged_are_refused_naming_file_line_field(sweep, file, old, new, named):
    path = folder(sweep, 3) / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    refused(aggregate(sweep), str(path), "line 2" if file == "rms.csv" or new != "\n1,-32," else "line 3", named)
    assert not (sweep["tables"] / "metrics" / "lr.csv").exists()


def test_non_finite_rows_of_a_diverged_run_are_kept(sweep):
    edit_summary(sweep, 4, diverged=True, final_val_loss=None)
    path = folder(sweep, 4) / "metrics.csv"
    path.write_text(path.read_text().replace(",3.0,", ",nan,", 1))
    proc = aggregate(sweep)
    assert proc.returncode == 0, proc.stderr
    assert "1 diverged" in proc.stdout


def test_copy_from_a_run_with_bad_rows_is_refused(sweep, tmp_path):
    src = folder(sweep, 0)
    (src / "metrics.csv").write_text((src / "metrics.csv").read_text().replace(",3.25,", ",nan,", 1))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(sweep["cells"][0].config_dict))
    proc = subprocess.run(
        [*UMUP, "train", str(config), "--out", str(tmp_path / "copy"), "--copy-from", str(src)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    refused(proc, str(src / "metrics.csv"), "train_loss")
    assert not (tmp_path / "copy" / "summary.json").exists()


def test_a_proxy_off_the_axis_is_refused_before_a_transfer_summary(sweep):
    preset = yaml.safe_load(sweep["preset"].read_text())
    preset["sweeps"]["lr"]["transfer"]["proxy"] = 48
    sweep["preset"].write_text(yaml.safe_dump(preset))
    refused(aggregate(sweep, "--transfer-summary", sweep["tables"] / "t.csv"), "transfer.proxy", "48")
