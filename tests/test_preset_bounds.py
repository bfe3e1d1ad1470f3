"""Issue 27, presets and YAML: a key given twice is refused by the one YAML loader (presets,
configs, run folders), sweep names are matched whole, seeds, random draws, staged axes and a
preset's total runs are bounded, a transfer proxy must be on its axis. Real `umup-repro`
processes (`cells`, `train`), nothing trained.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_hostile import ENV, TINY

from umup_repro.core import safe_yaml

UMUP = [sys.executable, "-m", "umup_repro.cli"]
HEAD = """\
resources: {gpus: 0, cpus_per_task: 1, mem_mb: 2000}
defaults:
  model: {width: 32, depth: 1, head_dim: 16, seq_len: 32}
  train: {steps: 20, batch_size: 4, warmup: 2}
figures: {}
sweeps:
"""
GOOD = (
    "  a:\n    transfer: {axis: model.width, proxy: 32}\n    blocks:\n"
    "      - grid: {model.width: [32, 64], train.lr: [0.5, 2.0]}\n"
)


def cells(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + body)
    return subprocess.run([*UMUP, "cells", "--preset", str(path)], capture_output=True, text=True, env=ENV, timeout=120)


def refused(proc: subprocess.CompletedProcess, *named: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("umup-repro cells: error:"), proc.stderr
    for name in named:
        assert name in line, (name, proc.stderr)


def test_the_good_preset_is_accepted(tmp_path):
    proc = cells(tmp_path, GOOD)
    assert proc.returncode == 0, proc.stderr
    assert "4 cells" in proc.stdout


def test_a_sweep_given_twice_is_refused_naming_key_and_lines(tmp_path):
    refused(cells(tmp_path, GOOD + GOOD), "duplicate key 'a'", "line 11", "line 7")


def test_duplicate_keys_are_refused_at_every_level(tmp_path):
    refused(
        cells(tmp_path, GOOD.replace("train.lr: [0.5, 2.0]", "train.lr: [0.5], train.lr: [2.0]")),
        "duplicate key 'train.lr'",
    )
    refused(
        cells(tmp_path, GOOD.replace("    blocks:", "    transfer: {axis: model.depth}\n    blocks:")),
        "duplicate key 'transfer'",
    )


def test_yaml_merge_keys_may_still_be_overridden():
    assert safe_yaml.load("base: &b {x: 1, y: 2}\nc: {<<: *b, x: 3}\n")["c"] == {"x": 3, "y": 2}
    with pytest.raises(safe_yaml.DuplicateKeyError, match="'x' on line 1"):
        safe_yaml.load("{x: 1, x: 2}")
    assert safe_yaml.load("{1: a, '1': b}") == {1: "a", "1": "b"}  # different keys


def test_train_config_and_run_folder_config_with_a_key_twice_are_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(TINY) + "parametrization: sp\n")
    proc = subprocess.run(
        [*UMUP, "train", str(config), "--out", str(tmp_path / "r"), "--progress", "none"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert proc.returncode == 2 and "duplicate key 'parametrization'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()
    folder = tmp_path / "folder"
    folder.mkdir()
    from umup_repro.core.config import config_to_dict, resolve_config

    (folder / "config.yaml").write_text(
        yaml.safe_dump(config_to_dict(resolve_config(TINY)), sort_keys=False) + "parametrization: sp\n"
    )
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(TINY))
    proc = subprocess.run(
        [*UMUP, "train", str(good), "--out", str(folder), "--progress", "none"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "config.yaml" in proc.stderr and "duplicate key 'parametrization'" in proc.stderr


@pytest.mark.parametrize(
    "body, named",
    [
        (GOOD.replace("    blocks:", "    seeds: 20000\n    blocks:"), "seeds"),
        ("  a:\n    blocks:\n      - random: {n: 20000, seed: 0, space: {train.lr: {log2_uniform: [-4, 2]}}}\n", "n"),
        (
            "  a:\n    blocks:\n      - grid: {train.lr: {log2_range: [0, 999, 0.1]},"
            " hp.alpha_res: {log2_range: [0, 999, 0.1]}}\n",
            "more than 100000 runs",
        ),
        (
            "  a:\n    blocks:\n      - grid: {train.lr: {log2_range: [-5, 5, 0.01]},"
            " hp.alpha_res: {log2_range: [-5, 5, 0.01]}}\n",
            "more than 100000 runs",
        ),
        (
            "  a:\n    blocks:\n      - staged: {lr: {train.lr: {log2_range: [0, 5000, 1]}},"
            " hp: {hp.alpha_res: [1.0]}}\n",
            "staged.lr.train.lr",
        ),
        (
            "  a:\n    blocks:\n      - staged: {lr: {train.lr: [1.0]},"
            " hp: {hp.alpha_res: {log2_range: [0, 1, 0.00001]}}}\n",
            "staged.hp.hp.alpha_res",
        ),
    ],
)
def test_sizes_are_bounded(tmp_path, body, named):
    refused(cells(tmp_path, body), named)


def test_a_sweep_name_with_a_trailing_newline_is_refused(tmp_path):
    refused(cells(tmp_path, GOOD.replace("  a:\n", '  "a\\n":\n', 1)), "'a\\n'", "not a sweep name")
    refused(cells(tmp_path, GOOD.replace("  a:\n", '  "a b":\n', 1)), "'a b'")  # (the schema's pattern)


@pytest.mark.parametrize("proxy", ["48", "abc", "64.5"])
def test_a_transfer_proxy_off_its_axis_is_refused_when_loaded(tmp_path, proxy):
    refused(cells(tmp_path, GOOD.replace("proxy: 32", f"proxy: {proxy}")), "transfer.proxy", "32, 64")


def test_proxies_on_a_log2_axis_or_from_set_are_accepted(tmp_path):
    body = (
        "  a:\n    transfer: {axis: train.lr, hp: model.width, proxy: 0.5}\n    blocks:\n"
        "      - grid: {train.lr: {log2_range: [-1, 1, 1]}, model.width: [32]}\n"
        "  b:\n    transfer: {axis: model.width, proxy: 64}\n    blocks:\n"
        "      - {set: {model.width: 64}, grid: {train.lr: [0.5]}}\n"
    )
    proc = cells(tmp_path, body)
    assert proc.returncode == 0, proc.stderr


def test_transfer_summary_refuses_a_proxy_its_table_lacks():
    from umup_repro.core.errors import UserError
    from umup_repro.results.aggregate import transfer_summary

    table = pd.DataFrame(
        {
            "model.width": [32, 32, 64, 64],
            "train.lr": [0.5, 2.0, 0.5, 2.0],
            "final_val_loss": [3.0, 2.0, 3.0, 2.5],
            "diverged": [False] * 4,
            "parametrization": ["umup"] * 4,
            "train.seed": [0] * 4,
        }
    )
    with pytest.raises(UserError, match="transfer.proxy 48 is not a value of model.width"):
        transfer_summary(table, "a", {"axis": "model.width", "proxy": 48})
