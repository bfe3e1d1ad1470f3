"""`umup-repro cells`: what a preset expands to, before running: cells, tokens, FLOPs and the
compute they need (GPU-hours at each cell's precision, or CPU core-hours for a CPU preset)."""

from __future__ import annotations

import sys

from umup_repro.core.config import ConfigError, flatten_config
from umup_repro.sweeps import budget
from umup_repro.sweeps.budget import (
    CPU_FLOPS_PER_CORE,
    CPU_SECONDS_PER_STEP,
    CPU_STARTUP_SECONDS,
    DEFAULT_COMPUTE,
    summary_rows,
)
from umup_repro.sweeps.grid import expand_preset, varied_keys
from umup_repro.sweeps.presets import PresetError, default_preset, load_preset


def _si(x: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _print_cpu_estimate(config, expanded, rows, args) -> int:
    """`cells` for a preset whose cells run on CPUs: CPU core-hours, not GPU-hours. A cell shared by
    several sweeps trains once (the others copy it), so the total counts it once."""
    compute = config.get("compute") or {}
    rate = float(compute.get("cpu_flops_per_core", CPU_FLOPS_PER_CORE))
    startup = float(compute.get("cpu_startup_seconds", CPU_STARTUP_SECONDS))
    per_step = float(compute.get("cpu_seconds_per_step", CPU_SECONDS_PER_STEP))

    def core_hours(cells) -> float:
        return sum(startup + per_step * c.config.train.steps + c.flops / rate for c in cells) / 3600

    total = sum(r["cells"] for r in rows)
    print(
        f"preset {config['preset']}: {total} cells in {len(rows)} sweeps, on CPUs (resources.gpus 0);"
        f" CPU core-hours at {startup:g} s start-up per cell + {per_step * 1e3:g} ms per step + FLOPs at"
        f" {_si(rate)}FLOP/s per core (fitted to a measured tiny run)"
    )
    print(f"{'sweep':<22}{'cells':>7}{'tokens':>10}{'FLOPs':>10}{'core-h':>10}")
    for r in rows:
        print(
            f"{r['sweep']:<22}{r['cells']:>7}{_si(r['tokens']):>10}{_si(r['flops']):>10}"
            f"{core_hours(expanded[r['sweep']]):>10.3g}"
        )
    trained = {c.id: c for cells in expanded.values() for c in cells if not c.alias}
    once = list(trained.values())
    hours = core_hours(once)
    print(
        f"{'trained once':<22}{len(once):>7}{_si(sum(c.tokens for c in once)):>10}"
        f"{_si(sum(c.flops for c in once)):>10}{hours:>10.3g}"
    )
    print(
        f"training ≈ {hours * 60 / 2:.0f} min on 2 cores, one cell per core (figures, analyses and a"
        f" staged search's later stages not included)"
    )
    if args.list:
        _print_cells(expanded)
    return 0


def main(args) -> int:
    try:
        config = load_preset(args.preset or default_preset())
        expanded = expand_preset(config, args.sweep)
    except (PresetError, ConfigError) as err:
        print(f"umup-repro cells: error: {err}", file=sys.stderr)
        return 2
    compute = {**DEFAULT_COMPUTE, **config.get("compute", {})}
    if args.utilisation is not None:
        compute["utilisation"] = args.utilisation
    how = f"{compute['utilisation']:.0%} of each cell's precision's peak"
    if getattr(args, "measured", None):
        try:
            compute["utilisation"], measured = budget.measured_utilisation(args.measured, compute)
        except (OSError, KeyError, ValueError, ConfigError) as err:
            print(f"umup-repro cells: error: --measured {args.measured}: {err}", file=sys.stderr)
            return 2
        how = f"{compute['utilisation']:.1%} of peak, calibrated from {measured}"
    rows = summary_rows(expanded, compute)
    gpu_question = args.utilisation is not None or getattr(args, "measured", None)
    if int((config.get("resources") or {}).get("gpus", 1) or 0) == 0 and not gpu_question:  # a CPU preset
        return _print_cpu_estimate(config, expanded, rows, args)  # (asked about GPUs: GPU-hours below)
    p = budget.peaks(compute)
    print(
        f"preset {config['preset']}: {sum(r['cells'] for r in rows)} cells in {len(rows)} sweeps;"
        f" GPU-hours on {compute['gpu_name']} at {how} (peaks fp32 {_si(p['fp32'])}, tf32 {_si(p['tf32'])},"
        f" bf16 {_si(p['bf16'])}, fp8 {_si(p['fp8'])}FLOP/s)"
    )
    print(f"{'sweep':<22}{'cells':>7}{'nodes':>7}{'tokens':>10}{'FLOPs':>10}{'GPU-h':>10}")
    for r in rows:
        print(
            f"{r['sweep']:<22}{r['cells']:>7}{r['nodes']:>7}{_si(r['tokens']):>10}{_si(r['flops']):>10}"
            f"{r['gpu_hours']:>10.3g}"
        )
    print(
        f"{'total':<22}{sum(r['cells'] for r in rows):>7}{max(r['nodes'] for r in rows):>7}"
        f"{_si(sum(r['tokens'] for r in rows)):>10}{_si(sum(r['flops'] for r in rows)):>10}"
        f"{sum(r['gpu_hours'] for r in rows):>10.3g}"
    )
    if args.list:
        _print_cells(expanded)
    return 0


def _print_cells(expanded) -> None:
    """`cells --list`: one line per cell, its id and the keys that vary within its parametrization."""
    for sweep, cells in expanded.items():
        keys = {
            p: varied_keys([c for c in cells if c.config.parametrization == p])
            for p in {c.config.parametrization for c in cells}
        }
        print(f"\n{sweep}:")
        for c in cells:
            flat = flatten_config(c.config)
            shown = " ".join(f"{k}={flat[k]}" for k in ["parametrization", *keys[c.config.parametrization]])
            print(f"  {c.id}  {c.search_kind}{':' + c.search_axis if c.search_axis else ''}  {shown}")
