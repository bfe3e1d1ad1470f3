"""Compute budgets of cells: the time a cell needs at its own precision's peak, calibratable by
a measured run.

A cell's FLOPs (`core.compute.flops_per_token` × tokens) run at the dense peak of the precision its
matmuls use: fp32 ('32'), TF32 ('tf32'), BF16 ('bf16-mixed'); FP8 cells run the FLOPs of the
matmuls their scheme casts at the FP8 peak and the rest at the BF16 peak. Peaks default to one
H100 SXM's dense ones (Lightning's `lightning.fabric.utilities.throughput` table; FP8 = its int8
figure, NVIDIA's H100 datasheet gives the same 1979 TFLOP/s); a preset's `compute.peak_flops`
overrides them and `compute.gpu_peak_flops` (the BF16 peak) rescales them all. The achieved
fraction of peak is `compute.utilisation`, or is calibrated from a measured run's summary.json
(`umup-repro cells --measured`). Torch-free, so planning a DAG stays fast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from umup_repro.core.compute import H100_SXM_PEAKS, flops_per_token
from umup_repro.core.config import RunConfig, resolve_config

if TYPE_CHECKING:
    from umup_repro.sweeps.grid import Cell

# Compute estimate: dense BF16 peak of one H100 SXM and the utilisation we assume for proxy runs.
DEFAULT_COMPUTE = {
    "gpu_name": "H100",
    "gpu_peak_flops": H100_SXM_PEAKS["bf16"],
    "utilisation": 0.3,
    "min_runtime_min": 10,
    "runtime_safety": 3.0,
}
# A CPU preset's estimate, per trained cell: a fixed start-up (the job, the cell server's fork, data,
# checkpoints), a per-step overhead (Python, Lightning, logging) and its FLOPs at a rate per core.
# Least squares on the 145 trained jobs of a `tiny` run from a fresh clone at 931895b, with the cell
# server (Snakemake's benchmark files; README "What a cell costs"): 0.57 s + 23 ms/step + FLOPs /
# 50 GFLOP/s; residual 4.6 s rms per job, 3,457 job-seconds in all (13.5 s, 34 ms, 42 GFLOP/s and
# 6,479 job-seconds before the cell server).
CPU_STARTUP_SECONDS = 0.57
CPU_SECONDS_PER_STEP = 0.023
CPU_FLOPS_PER_CORE = 50e9
PRECISION_PEAK = {"32": "fp32", "tf32": "tf32", "bf16-mixed": "bf16"}


def peaks(compute: Mapping[str, Any]) -> dict[str, float]:
    """Dense peak FLOP/s of one GPU per precision for a preset's `compute` settings."""
    scale = float(compute.get("gpu_peak_flops", H100_SXM_PEAKS["bf16"])) / H100_SXM_PEAKS["bf16"]
    return {**{k: v * scale for k, v in H100_SXM_PEAKS.items()}, **compute.get("peak_flops", {})}


def fp8_flops_fraction(config: RunConfig) -> float:
    """The share of a cell's training FLOPs in FP8 matmuls (0 without FP8): q, k, v and FFN
    up/gate under the paper's `selective` scheme, every block matmul under `all_hidden`;
    attention scores and the readout stay in BF16."""
    if not config.uses_fp8:
        return 0.0
    m = config.model
    cast = 3 * m.width**2 + 2 * m.width * m.ffn_width
    if config.model.fp8_scheme == "all_hidden":
        cast += m.width**2 + m.width * m.ffn_width
    return 6 * m.depth * cast / flops_per_token(config)


def effective_peak(config: RunConfig, compute: Mapping[str, Any]) -> float:
    """FLOP/s of one GPU at full use for this cell's precision mix (harmonic: time adds up)."""
    p = peaks(compute)
    if config.uses_fp8 and config.train.precision == "bf16-mixed":
        f = fp8_flops_fraction(config)
        return 1.0 / (f / p["fp8"] + (1 - f) / p["bf16"])
    return p[PRECISION_PEAK[config.train.precision]]


def gpu_seconds(config: RunConfig, tokens: int, compute: Mapping[str, Any]) -> float:
    """GPU-seconds (summed over the cell's GPUs) to train `tokens` tokens at the utilisation."""
    return flops_per_token(config) * tokens / (effective_peak(config, compute) * float(compute["utilisation"]))


def measured_utilisation(path: str | Path, compute: Mapping[str, Any]) -> tuple[float, str]:
    """(fraction of peak, how) from a measured run: its summary.json (or run folder), tokens/s
    over its own GPUs against its precision's peak on the preset's GPU."""
    p = Path(path)
    summary = json.loads(((p / "summary.json") if p.is_dir() else p).read_text(encoding="utf-8"))
    if not isinstance(summary, dict):
        raise ValueError(f"not a summary (a JSON {type(summary).__name__}, not an object)")
    config = resolve_config(json.loads(json.dumps(_unflatten(summary))))
    gpus = config.distributed.world_size
    achieved = float(summary["tokens_per_second"]) * flops_per_token(config) / gpus
    fraction = achieved / effective_peak(config, compute)
    how = (
        f"{summary['tokens_per_second']:.0f} tok/s of cell {summary['cell']} on {gpus} device(s)"
        f" ({summary.get('device', '?')})"
    )
    return fraction, how


def _unflatten(summary: Mapping[str, Any]) -> dict:
    """The cell config from a summary's flattened `section.key` columns."""
    out: dict = {}
    for key, value in summary.items():
        section, dot, leaf = key.partition(".")
        if key == "parametrization":
            out[key] = value
        elif dot and section in RunConfig.model_fields:
            out.setdefault(section, {})[leaf] = value
    return out


def runtime_minutes(cell: Cell, compute: Mapping[str, Any] | None = None) -> int:
    """The time limit to ask the scheduler for: the FLOPs at the cell's precision's peak
    and the stated utilisation, over its GPUs, with margin."""
    c = {**DEFAULT_COMPUTE, **(compute or {})}
    gpus = max(int(cell.resources.get("gpus", 1)), 1) * cell.config.distributed.nodes
    seconds = gpu_seconds(cell.config, cell.tokens, c) / gpus
    return int(max(c["min_runtime_min"], math.ceil(seconds * c["runtime_safety"] / 60)))


def gpu_hours(cells: list[Cell], compute: Mapping[str, Any] | None = None) -> float:
    c = {**DEFAULT_COMPUTE, **(compute or {})}
    return sum(gpu_seconds(cell.config, cell.tokens, c) for cell in cells) / 3600


def summary_rows(expanded: Mapping[str, list[Cell]], compute: Mapping[str, Any] | None = None) -> list[dict]:
    """Per sweep: cells, tokens, FLOPs and GPU-hours at the stated utilisation."""
    rows = []
    for sweep, cells in expanded.items():
        rows.append(
            {
                "sweep": sweep,
                "cells": len(cells),
                "tokens": sum(c.tokens for c in cells),
                "nodes": max(c.config.distributed.nodes for c in cells),
                "flops": sum(c.flops for c in cells),
                "gpu_hours": gpu_hours(cells, compute),
            }
        )
    return rows
