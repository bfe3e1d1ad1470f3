"""Grids that follow the optimum: a sweep's `extend: {axis, max, half_steps}` adds grid points, pass
by pass, where the first pass's grid could not locate the optimum.

A *line* is the set of a sweep's cells that differ only along `axis` (and in `train.seed`: seed
replicates are averaged). A point's loss is the mean final validation loss over its replicates; a
point any replicate of which diverged (or has no loss) is out, so it is never the best. Pass k
(`decide_pass`) reads every cell known after passes 1 … k−1 and, per line:

- best point at the lowest (highest) axis value: add one point beyond it, one grid step further
  in log2 (the step is the gap between that edge and its neighbour), so a censored optimum gets a
  chance to become interior;
- best point interior, with `half_steps: true`: add the log2 midpoints (the paper's √2 spacing)
  on each side whose gap is the line's widest, once per line (a line holding a half step is not
  refined again: refinement is a local look, not a search).

Passes stop when a pass adds nothing or after `max` passes (so at most `max` points beyond each
edge). Pass decisions are files, `results/search/<sweep>/extend-<k>.json` ({"points": [{block,
set}], "lines": [...]}), written by `umup-repro extend-grid` as a Snakemake checkpoint: the added
points are ordinary grid cells (ids = config hashes) of the block their line came from.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from umup_repro.core.atomic import write_text
from umup_repro.core.config import config_hash, flatten_config
from umup_repro.sweeps.grid import sweep_runs
from umup_repro.sweeps.presets import PresetError, default_preset, load_preset
from umup_repro.sweeps.search_stage import is_staged, load_decisions, run_loss
from umup_repro.training.run_format import ReadBackError


def pass_path(search_dir: str | Path, sweep: str, k: int) -> Path:
    return Path(search_dir) / sweep / f"extend-{k}.json"


def is_extended(spec: Mapping[str, Any]) -> bool:
    return "extend" in spec


def max_passes(spec: Mapping[str, Any]) -> int:
    return int(spec["extend"]["max"]) if is_extended(spec) else 0


def pass_points(path: str | Path) -> list[dict]:
    """The points a pass decision added ([{block, set}]); ReadBackError naming the file if damaged
    (a damaged decision would silently add or drop cells)."""
    fix = f"delete {path} and rerun the workflow (the pass is decided again from its runs)"
    try:
        points = json.loads(Path(path).read_text(encoding="utf-8"))["points"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ReadBackError(f"{path}: not a readable grid extension ({err.__class__.__name__}: {err}); {fix}") from None
    if not (
        isinstance(points, list)
        and all(
            isinstance(p, dict) and isinstance(p.get("block"), int) and isinstance(p.get("set"), dict) for p in points
        )
    ):
        raise ReadBackError(f"{path}: its points are not [{{block, set}}]; {fix}")
    return points


def load_passes(search_dir: str | Path, sweep: str, spec: Mapping[str, Any], upto: int | None = None) -> list[list]:
    """Each decided pass's points, in order, no gaps; after a pass that added nothing, or `max`
    passes, none (a stale later file is never read)."""
    passes: list[list] = []
    last = max_passes(spec) if upto is None else min(upto, max_passes(spec))
    for k in range(1, last + 1):
        path = pass_path(search_dir, sweep, k)
        if not path.is_file():
            break
        passes.append(pass_points(path))
        if not passes[-1]:
            break
    return passes


def sweep_decisions(
    search_dir: str | Path, sweep: str, spec: Mapping[str, Any], upto: int | None = None
) -> dict[str, Any]:
    """What `expand_sweep` needs beyond the preset: stage decisions and extension points on disk."""
    decisions: dict[str, Any] = dict(load_decisions(search_dir, sweep)) if is_staged(spec) else {}
    if is_extended(spec):
        decisions["extend"] = [p for points in load_passes(search_dir, sweep, spec, upto) for p in points]
    return decisions


# --------------------------------------------------------------------------------------------
# the rule


def _mean(losses: list) -> float:
    ok = [x for x in losses if x is not None and math.isfinite(x)]
    return sum(ok) / len(ok) if ok and len(ok) == len(losses) else math.inf


def _step(a: float, b: float) -> float:
    return round(abs(math.log2(b / a)), 9)  # log2 gap, rounded so 2^-k grids give exact steps


def extension(candidates: Mapping[float, list], half_steps: bool = False) -> tuple[list[float], str, Any]:
    """(new axis values, where the best is: lower | upper | interior | none, best value) of one line.

    `candidates` maps an axis value (> 0) to its replicates' losses (None, NaN, inf: diverged).
    """
    values = sorted(candidates)
    means = {v: _mean(candidates[v]) for v in values}
    finite = [v for v in values if math.isfinite(means[v])]
    if len(values) < 2 or not finite:
        return [], "none", None
    best = min(finite, key=lambda v: (means[v], v))
    i = values.index(best)
    integer = all(isinstance(v, int) and not isinstance(v, bool) for v in values)

    def cast(x: float) -> float:
        return int(round(x)) if integer else x

    if i == 0:
        return [cast(best * 2.0 ** -_step(values[0], values[1]))], "lower", best
    if i == len(values) - 1:
        return [cast(best * 2.0 ** _step(values[-2], values[-1]))], "upper", best
    if not half_steps:
        return [], "interior", best
    gaps = [_step(a, b) for a, b in zip(values, values[1:], strict=False)]
    widest = max(gaps)
    added = [cast(best * 2.0 ** (s * gaps[j] / 2)) for s, j in ((-1, i - 1), (1, i)) if gaps[j] >= widest]
    return [v for v in added if v not in candidates], "interior", best


def _key(point: Mapping) -> str:
    return json.dumps(point, sort_keys=True)


def decide_pass(
    runs: list[tuple[int, dict, Mapping]], losses: list, extend: Mapping[str, Any], halves: Sequence[dict] = ()
) -> tuple[list, list]:
    """(points to add [{block, set, half}], line rows) from a sweep's runs (block, point overrides,
    flattened config) and their losses (None: diverged), by the rule in the module docstring;
    `halves`: the half-step points earlier passes added (their lines are refined already)."""
    axis, half = extend["axis"], bool(extend.get("half_steps", False))
    refined = {_key(p["set"]) for p in halves}
    lines: dict[str, dict] = {}
    for (b, point, flat), loss in zip(runs, losses, strict=True):
        if axis not in flat:
            raise PresetError(f"extend.axis: {axis!r} is not a config key of the sweep's cells")
        value = flat[axis]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise PresetError(f"extend.axis: {axis} = {value!r} is not a positive number (a log2 axis)")
        rest = {k: v for k, v in flat.items() if k not in (axis, "train.seed")}
        line = lines.setdefault(_key(rest), {"rest": rest, "candidates": {}, "points": {}, "refined": False})
        line["refined"] |= _key(point) in refined
        line["candidates"].setdefault(value, []).append(loss)
        line["points"].setdefault(value, (b, point))
    keys = [k for k in dict.fromkeys(k for ln in lines.values() for k in ln["rest"])]
    varied = [k for k in keys if len({json.dumps(ln["rest"].get(k)) for ln in lines.values()}) > 1]
    points, rows = [], []
    for line in lines.values():
        added, where, best = extension(line["candidates"], half and not line["refined"])
        if added:
            b, point = line["points"][best]
            points += [{"block": b, "set": {**point, axis: v}, "half": where == "interior"} for v in added]
        rows.append({"line": {k: line["rest"].get(k) for k in varied}, "best": best, "where": where, "added": added})
    return points, rows


def write_pass(
    config: Mapping[str, Any], sweep: str, k: int, runs: str | Path, search_dir: str | Path, out=None
) -> dict:
    """Decide pass `k` of `sweep`'s grid extension from its finished runs; write the file."""
    if sweep not in config["sweeps"]:
        raise PresetError(f"--sweep {sweep}: no such sweep; the preset's sweeps: {', '.join(config['sweeps'])}")
    spec = config["sweeps"][sweep]
    if not is_extended(spec):
        named = [s for s, v in config["sweeps"].items() if is_extended(v)]
        raise PresetError(
            f"--sweep {sweep}: its grids are not extended (no `extend`); extended: {', '.join(named) or 'none'}"
        )
    if not 1 <= k <= max_passes(spec):
        raise PresetError(f"--pass {k}: sweep {sweep} has passes 1 … {max_passes(spec)} (its extend.max)")
    earlier = load_passes(search_dir, sweep, spec, k - 1)
    if len(earlier) < k - 1 or (earlier and not earlier[-1]):
        raise PresetError(f"sweep {sweep}: pass {k} needs pass {k - 1} decided first, with points added")
    decisions = sweep_decisions(search_dir, sweep, spec, k - 1)
    found: dict[str, tuple[int, dict, Mapping]] = {}
    for b, point, _search, cfg in sweep_runs(sweep, spec, config.get("defaults", {}), decisions):
        found.setdefault(config_hash(cfg), (b, point, flatten_config(cfg)))
    losses = [run_loss(runs, sweep, cid, f"has no summary.json yet (pass {k} reads every cell)") for cid in found]
    halves = [p for p in decisions["extend"] if p.get("half")]
    points, rows = decide_pass(list(found.values()), losses, spec["extend"], halves)
    result = {"sweep": sweep, "pass": k, "points": points, "lines": rows}
    write_text(out or pass_path(search_dir, sweep, k), json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def main(args) -> int:
    """`umup-repro extend-grid`: what the Snakemake checkpoint `extend_grid` runs."""
    try:
        config = load_preset(args.preset or default_preset())
        result = write_pass(config, args.sweep, args.pass_, args.runs, args.search_dir, args.out)
    except PresetError as err:
        print(f"umup-repro extend-grid: error: {err}", file=sys.stderr)
        return 2
    for row in result["lines"]:
        print(
            f"{args.sweep} pass {args.pass_} {row['line']}: best {row['best']} ({row['where']}), added {row['added']}"
        )
    return 0
