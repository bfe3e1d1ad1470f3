"""Compute budgets and cluster requests of cells (umup_repro/sweeps/budget.py, grid's estimate, the
`large`/`scale` presets, the SLURM request of distributed cells). Torch-free and fast."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from umup_repro.core.compute import flops_per_token
from umup_repro.core.config import config_hash, flatten_config, resolve_config
from umup_repro.slurm.submit import submitit_parameters
from umup_repro.sweeps import budget, grid, presets
from umup_repro.training.distributed import srun_prefix

CELL = {"model": {"width": 1024, "depth": 8}, "train": {"steps": 1000, "batch_size": 64}}
H100 = {**budget.DEFAULT_COMPUTE, "gpu_peak_flops": budget.H100_SXM_PEAKS["bf16"]}


def seconds(**sets) -> float:
    config = resolve_config(CELL, **sets)
    return budget.gpu_seconds(config, 10**9, H100)


def test_the_estimate_follows_each_cells_precision():
    fp32, tf32, bf16 = (seconds(**{"train.precision": p}) for p in ("32", "tf32", "bf16-mixed"))
    # the ratios of H100 SXM's dense peaks (Lightning's table): 989.4 / 66.9 and 989.4 / 494.7
    assert fp32 / bf16 == pytest.approx(989.4 / 66.9) and tf32 / bf16 == pytest.approx(2.0)
    selective = seconds(parametrization="umup_fp8", **{"train.precision": "bf16-mixed"})
    all_hidden = seconds(
        parametrization="umup_fp8", **{"train.precision": "bf16-mixed", "model.fp8_scheme": "all_hidden"}
    )
    assert all_hidden < selective < bf16  # more FLOPs at the FP8 peak, never all of them (readout, attention)
    config = resolve_config(CELL, parametrization="umup_fp8")
    block = 6 * 8 * (4 * 1024**2 + 3 * 1024 * 4096)  # block linears' FLOPs per token
    assert budget.fp8_flops_fraction(config) * flops_per_token(config) == pytest.approx(block * 11 / 16)


def test_a_measured_run_calibrates_the_utilisation(tmp_path):
    config = resolve_config(CELL, **{"train.precision": "bf16-mixed", "distributed.devices": 2})
    tps = 0.25 * budget.H100_SXM_PEAKS["bf16"] * 2 / flops_per_token(config)  # 25% of peak on 2 GPUs
    summary = {"cell": config_hash(config), "tokens_per_second": tps, "device": "test", **flatten_config(config)}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    fraction, how = budget.measured_utilisation(tmp_path, H100)
    assert fraction == pytest.approx(0.25) and "2 device(s)" in how
    out = subprocess.run(
        [sys.executable, "-m", "umup_repro.cli", "cells", "--preset", "smoke", "--measured", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "25.0% of peak, calibrated from" in out.stdout, out.stderr


def test_large_presets_list_nodes_gpus_and_tokens():
    out = subprocess.run(
        [sys.executable, "-m", "umup_repro.cli", "cells", "--preset", "large"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    total = out.stdout.strip().splitlines()[-1].split()
    assert total[:4] == ["total", "9", "8", "2.7T"]  # 9 cells, up to 8 nodes, 3 x 3 x 300B tokens
    for preset, sizes in (("large", {2048, 3200, 4096}), ("scale", {768, 1024})):
        cells = grid.expand_preset(presets.load_preset(preset))["large_scale"]
        assert {c.config.model.width for c in cells} == sizes
        assert {c.config.parametrization for c in cells} == {"sp", "umup", "umup_fp8"}
        assert all(c.config.train.precision == "bf16-mixed" and c.config.data.corpus == "slimpajama" for c in cells)
        assert all(c.resources["gpus"] == c.config.distributed.devices == 8 for c in cells)


def test_distributed_cells_ask_slurm_for_a_task_per_device():
    params = submitit_parameters({"gpus": 8, "nodes": 2, "tasks_per_node": 8}, job_name="x")
    assert params["nodes"] == 2 and params["ntasks_per_node"] == 8 and params["gpus_per_node"] == 8
    assert params["srun_args"] == ["--nodes=1", "--ntasks=1"]  # the job's own step: one task
    assert "srun_args" not in submitit_parameters({"gpus": 1}, job_name="x")
    config = resolve_config(CELL, **{"distributed.nodes": 2, "distributed.devices": 8})
    assert "srun --nodes=2 --ntasks=16 --ntasks-per-node=8" in srun_prefix(config)
    assert srun_prefix(resolve_config(CELL)) == ""
