"""The staged independent search (paper Fig. 1a): decide each stage from the finished runs.

A block `staged: {lr: {train.lr: GRID}, hp: {KEY: GRID, ...}}` (umup_repro/sweeps/grid.py) runs:

1. stage `lr`: the LR grid, every other HP at its default;
2. stage `hp`: at stage `lr`'s best LR, each listed HP alone over its grid;
3. stage `combined`: one run at the best LR and every HP at its stage-`hp` best value.

The rule that picks a best value (`choose`): the lowest mean final validation loss over the
value's seed replicates; a value any replicate of which diverged (or has no loss) is out; exact
ties go to the value closest to the default in log2 (then the smaller one). If every value is
out, the default stays. In stage `hp` the default value of each HP is a candidate too: it is
stage `lr`'s best run, so a combined run is never worse by choice than that run.

Stage decisions are files, `results/search/<sweep>/<stage>.json` ({"groups": {group: {key:
value}}, "candidates": [...]}), written by `umup-repro search-stage` as a Snakemake checkpoint,
so the DAG grows stage by stage (`snakemake -n` shows stage `lr` first).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from umup_repro.core.atomic import write_text
from umup_repro.core.config import flatten_config, resolve_config
from umup_repro.sweeps.grid import Cell, expand_sweep
from umup_repro.sweeps.presets import PresetError, default_preset, load_preset
from umup_repro.training.run_format import ReadBackError, read_summary

STAGES = ("lr", "hp")  # the stages that are decided (combined is the last run, decided by nothing)
SEARCH_DIR = "results/search"
LOSS = "final_val_loss"


def decision_path(search_dir: str | Path, sweep: str, stage: str) -> Path:
    return Path(search_dir) / sweep / f"{stage}.json"


def is_staged(spec: Mapping[str, Any]) -> bool:
    return any("staged" in block for block in spec["blocks"])


def load_decisions(search_dir: str | Path, sweep: str) -> dict[str, dict[str, dict]]:
    """{stage: {group: {key: best value}}} for the stages decided so far (in order: no gaps)."""
    out: dict[str, dict[str, dict]] = {}
    for stage in STAGES:
        path = decision_path(search_dir, sweep, stage)
        if not path.is_file():
            break
        out[stage] = _read_decision(path)
    return out


def _read_decision(path: Path) -> dict[str, dict]:
    """A decision file's `groups` ({group: {key: best value}}), checked; ReadBackError naming the
    file otherwise (a damaged decision would silently steer the later stages)."""
    fix = f"delete {path} and rerun the workflow (the stage is decided again from its runs)"
    try:
        groups = json.loads(path.read_text(encoding="utf-8"))["groups"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ReadBackError(f"{path}: not a readable stage decision ({err.__class__.__name__}: {err}); {fix}") from None
    if not (
        isinstance(groups, dict)
        and all(
            isinstance(g, str) and isinstance(best, dict) and all(isinstance(k, str) for k in best)
            for g, best in groups.items()
        )
    ):
        raise ReadBackError(f"{path}: its groups are not {{group: {{key: best value}}}}; {fix}")
    return groups


def _log2_distance(value: Any, default: Any) -> float:
    try:
        return abs(math.log2(float(value)) - math.log2(float(default)))
    except (TypeError, ValueError):
        return 0.0 if value == default else math.inf


def choose(candidates: Mapping[Any, list[float | None]], default: Any) -> tuple[Any, dict]:
    """(best value, {value: mean loss}) by the rule in the module docstring.

    `candidates` maps a value to its replicates' losses; None or a non-finite loss is a diverged run.
    """
    means = {}
    for value, losses in candidates.items():
        ok = [x for x in losses if x is not None and math.isfinite(x)]
        means[value] = sum(ok) / len(ok) if ok and len(ok) == len(losses) else math.inf
    finite = {v: m for v, m in means.items() if math.isfinite(m)}
    if not finite:
        return default, means
    best = min(finite.values())
    tied = [v for v, m in finite.items() if m == best]
    return min(tied, key=lambda v: (_log2_distance(v, default), float(v) if isinstance(v, (int, float)) else 0)), means


def _loss(summary: Mapping) -> float | None:
    if summary.get("diverged") or summary.get(LOSS) is None:
        return None
    return float(summary[LOSS])


def run_loss(runs: str | Path, sweep: str, cid: str, missing: str) -> float | None:
    """A finished cell's final loss (None: diverged) from its checked summary (its cell, types,
    finite losses); PresetError ending in `missing` when the cell has not finished. The decisions of
    a staged search and of a grid extension read their cells this one way."""
    path = Path(runs) / sweep / cid / "summary.json"
    if not path.is_file():
        raise PresetError(f"sweep {sweep}: cell {cid} {missing}")
    return _loss(read_summary(path, cid))


def _default_of(cell: Cell, key: str) -> Any:
    """The value `key` takes in the cell's config when the search does not set it."""
    d = cell.config_dict
    section, _, name = key.rpartition(".")
    (d.get(section, {}) if section else d).pop(name, None)
    return flatten_config(resolve_config(d)).get(key)


def decide(
    cells: list[Cell], stage: str, losses: Mapping[str, float | None], best_lr: Mapping[str, dict] | None = None
) -> tuple[dict[str, dict], list[dict]]:
    """({group: {key: best value}}, candidate rows) for `stage` from the sweep's cells so far.

    `losses`: cell id → final loss (None: diverged); `best_lr`: stage `lr`'s decision (for stage
    `hp`). The default of a key (tie-break, fallback)
    is its value when the search leaves it unset; stage `hp` counts stage `lr`'s best runs as
    each key's default-value candidate.
    """
    groups: dict[str, dict] = {}
    rows: list[dict] = []
    by_group: dict[str, list[Cell]] = {}
    for c in cells:
        if c.search_stage and not c.alias:
            by_group.setdefault(c.search_group, []).append(c)
    for group, members in by_group.items():
        lr_cells = [c for c in members if c.search_stage == "lr"]
        lr_key = lr_cells[0].search_axis
        if stage == "lr":
            keyed = {lr_key: lr_cells}
            default_of = {lr_key: _default_of(lr_cells[0], lr_key)}
        else:
            lr_value = (best_lr or {})[group][lr_key]
            base = [c for c in lr_cells if flatten_config(c.config)[lr_key] == lr_value]
            keys = list(dict.fromkeys(c.search_axis for c in members if c.search_stage == "hp"))
            keyed = {k: [c for c in members if c.search_stage == "hp" and c.search_axis == k] + base for k in keys}
            default_of = {k: flatten_config(base[0].config).get(k) for k in keys}
        chosen = {}
        for key, pool in keyed.items():
            candidates: dict[Any, list] = {}
            for c in pool:
                candidates.setdefault(flatten_config(c.config)[key], []).append(losses[c.id])
            best, means = choose(candidates, default_of[key])
            chosen[key] = best
            rows += [
                {
                    "stage": stage,
                    "group": group,
                    "key": key,
                    "value": v,
                    "mean_loss": m if math.isfinite(m) else None,
                    "diverged": not math.isfinite(m),
                    "n": len(candidates[v]),
                    "chosen": v == best,
                }
                for v, m in means.items()
            ]
        groups[group] = chosen
    return groups, rows


def write_stage(
    config: Mapping[str, Any],
    sweep: str,
    stage: str,
    runs: str | Path,
    search_dir: str | Path,
    out: str | Path | None = None,
) -> dict:
    """Decide `stage` of every staged block of `sweep` from its finished runs; write the file."""
    if sweep not in config["sweeps"]:
        raise PresetError(f"--sweep {sweep}: no such sweep; the preset's sweeps: {', '.join(config['sweeps'])}")
    spec = config["sweeps"][sweep]
    if not is_staged(spec):
        staged = [s for s, v in config["sweeps"].items() if is_staged(v)]
        raise PresetError(
            f"--sweep {sweep}: not a staged search (no `staged` block); staged sweeps: {', '.join(staged) or 'none'}"
        )
    decisions = load_decisions(search_dir, sweep)
    decisions = {s: decisions[s] for s in STAGES[: STAGES.index(stage)] if s in decisions}
    if len(decisions) < STAGES.index(stage):
        raise PresetError(f"sweep {sweep}: stage {stage} needs the earlier stages decided first")
    cells = expand_sweep(sweep, spec, config.get("defaults", {}), config.get("resources", {}), decisions)
    staged = [c for c in cells if c.search_stage in (("lr",) if stage == "lr" else ("lr", "hp")) and not c.alias]
    losses = {}
    for c in staged:
        losses[c.id] = run_loss(runs, sweep, c.id, f"(stage {c.search_stage}) has no summary.json yet")
    groups, rows = decide(staged, stage, losses, decisions.get("lr"))
    result = {"sweep": sweep, "stage": stage, "groups": groups, "candidates": rows}
    write_text(out or decision_path(search_dir, sweep, stage), json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def main(args) -> int:
    """`umup-repro search-stage`: what the Snakemake checkpoint `search_stage` runs."""
    try:
        config = load_preset(args.preset or default_preset())
        result = write_stage(config, args.sweep, args.stage, args.runs, args.search_dir, args.out)
    except PresetError as err:
        print(f"umup-repro search-stage: error: {err}", file=sys.stderr)
        return 2
    for group, chosen in result["groups"].items():
        print(f"{args.sweep} group {group} stage {args.stage}: " + ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return 0
