"""Benchmark of the DAG's fixed costs: a dry run of a big preset, and aggregating many run folders.

Targets (issue 25; issue 5's were 20 s and 30 s): each ≤ 10 s on 2 cores. Measured on 2 shared
cores (load 2.5-3.5): 5000 run folders aggregated in 8.9-10.0 s (was 15.4-17.2 s; 7 s of CPU);
the `paper` preset's dry run (5,053 jobs) in 15-23 s wall, 11-15 s of CPU (was 13-17.5 s), still
above target: Snakemake's own cost for 5,053 jobs without per-job functions (a trivial Snakefile)
is 6.5-7 s of CPU, expanding the preset's 5,015 cells at parse time about 1.5 s, and the rest is
Snakemake's per-call overhead of train_cell's remaining per-job functions and the DAG's 16,000
summary edges (all, aggregate and figure rules).
The run folders are generated with paper-sized files (metrics and per-tensor RMS every 512 of
8192 steps at depth 4), so the numbers measure our reading and writing, not training.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from umup_repro.core.config import flatten_config
from umup_repro.sweeps.grid import expand_preset, expand_sweep


def dry_run(preset: str, workdir: str | Path = ".") -> tuple[float, int]:
    """(seconds, jobs) of `snakemake -n --config preset=PRESET` in the workflow directory."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--config", f"preset={preset}"],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"dry run failed:\n{proc.stderr[-3000:]}")
    m = re.search(r"^total\s+(\d+)$", proc.stdout, re.M)
    return seconds, int(m.group(1)) if m else 0


def fake_run_folder(folder: Path, cell, steps: int = 8192, every: int = 512, tensors: int = 40) -> None:
    """A run folder with the files and sizes a paper-preset run writes."""
    folder.mkdir(parents=True, exist_ok=True)
    points = range(0, steps + 1, every)
    (folder / "metrics.csv").write_text(
        "step,tokens,train_loss,val_loss,lr\n"
        + "".join(
            f"{s},{s * 16384},{3 + 5 * math.exp(-s / 2000):.6f},{3.1 + 5 * math.exp(-s / 2000):.6f},0.001\n"
            for s in points
        )
    )
    (folder / "rms.csv").write_text(
        "step,tensor,kind,rms\n"
        + "".join(
            f"{s},blocks.{t // 10}.t{t % 10},{k},{1 + 0.01 * t:.6f}\n"
            for s in points
            for t in range(tensors)
            for k in ("weight", "activation", "grad")
        )
    )
    # steps_done = rows - 1, as the aggregation checks (a real run has a metrics row per step).
    summary = {
        "cell": cell.id,
        "config_hash": cell.id,
        "sweep": cell.sweep,
        "final_train_loss": 3.0,
        "final_val_loss": 3.1,
        "diverged": False,
        "steps_done": len(points) - 1,
        "wall_seconds": 3600.0,
        "tokens_per_second": 1e5,
        "device": "NVIDIA H100",
        "versions": {"torch": "2.13.0"},
        "git_commit": "0" * 40,
        **flatten_config(cell.config),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))


def aggregate_benchmark(n_cells: int = 5000) -> dict:
    from umup_repro.results.aggregate import aggregate_sweep

    side = int(math.ceil(math.sqrt(n_cells)))
    spec = {"blocks": [{"grid": {"train.lr": [2.0 ** (-i / 8) for i in range(side)], "train.seed": list(range(side))}}]}
    t0 = time.perf_counter()
    cells = expand_sweep("bench", spec)[:n_cells]
    expand_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        runs, tables = Path(tmp) / "runs", Path(tmp) / "tables"
        for c in cells:
            fake_run_folder(runs / "bench" / c.id, c)
        t0 = time.perf_counter()
        table = aggregate_sweep(cells, runs, tables)
        seconds = time.perf_counter() - t0
        sizes = {p.relative_to(tables).as_posix(): p.stat().st_size for p in tables.rglob("*.csv")}
    return {"cells": len(table), "expand_seconds": expand_s, "aggregate_seconds": seconds, "table_bytes": sizes}


def main(args) -> int:
    if not args.skip_dry_run:
        cells = sum(len(c) for c in expand_preset(args.preset).values())
        seconds, jobs = dry_run(args.preset)
        print(f"dry run of preset {args.preset}: {seconds:.1f} s for {jobs} jobs ({cells} cells); target <= 10 s")
    result = aggregate_benchmark(args.cells)
    print(
        f"aggregate {result['cells']} run folders: {result['aggregate_seconds']:.1f} s (expanding the grid:"
        f" {result['expand_seconds']:.1f} s); target <= 10 s"
    )
    for name, size in sorted(result["table_bytes"].items()):
        print(f"  {name}: {size / 1e6:.1f} MB")
    return 0
