"""Sweeps as data: a preset's named sweeps expand into cells with ids hashed from their configs.

A preset (`config/presets/<name>.yaml`) holds `defaults` (a partial cell config every sweep starts
from), `sweeps` and a `figures` map. A sweep is a list of blocks; each block sets constants
(`set`), crosses named axes (`grid`) and, inside every grid point, optionally runs one search:

- `independent`: one-at-a-time around the block's base point (each listed key varied alone,
  the others at the base; the base point itself comes first), as in the paper's independent search;
- `random`: `n` points drawn with a fixed `seed` from a `space` of distributions;
- `staged`: the paper's staged independent search (umup_repro/sweeps/search_stage.py): stage `lr` sweeps one
  key, stage `hp` each listed key alone at stage `lr`'s best value, stage `combined` one run at
  every key's best value. Later stages need earlier results (`decisions`), so without them only
  stage `lr` expands; the workflow adds the rest through a Snakemake checkpoint.

`extend: {axis, max, half_steps}` on a sweep of plain grids follows the optimum: a checkpoint adds
grid points beyond edge optima pass by pass (umup_repro/sweeps/extend.py, `decisions["extend"]`).

`seeds: N` on a sweep or block repeats every point N times, `train.seed` = its value + 0…N−1
(replicate 0 is the unseeded cell itself, so it is shared with other sweeps).

Axis values are a list or `{log2_range: [start, stop, step]}` (2^start … 2^stop inclusive);
random distributions are `{log2_uniform: [lo, hi]}` (exponents of 2), `{uniform: [lo, hi]}` or
`{choice: [...]}`. Keys are dotted config keys (`model.width`, `train.lr`, `hp.alpha_res`).

A cell's id is `config_hash` of its fully resolved config, so the same config always gets the same
id and any change (including a changed default) gives a new one: stale run folders are simply
never asked for again.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from umup_repro.core.compute import flops_per_token
from umup_repro.core.config import (
    ConfigError,
    RunConfig,
    config_hash,
    config_to_dict,
    flatten_config,
    resolve_config,
    set_dotted,
)
from umup_repro.sweeps.preset_checks import SEARCH_COLUMNS
from umup_repro.sweeps.presets import PresetError, load_preset

# Cluster resources of one cell unless the preset or the sweep overrides them.
DEFAULT_RESOURCES = {"gpus": 1, "cpus_per_task": 8, "mem_mb": 32000}


@dataclass(frozen=True)
class Cell:
    """One training run of a sweep."""

    sweep: str
    id: str
    config: RunConfig
    search_kind: str  # grid | independent | random
    search_index: int  # order within the sweep (the order a search would run them in)
    search_axis: str = ""  # independent search: the varied key, or "base"
    resources: Mapping[str, Any] = field(default_factory=dict)
    search_stage: str = ""  # staged search: lr | hp | combined
    search_group: str = ""  # staged search: "<block>.<grid point>", the unit a stage decides for
    alias: bool = False  # a table row only: a staged `combined` run whose config an earlier stage ran

    @property
    def config_dict(self) -> dict:
        return config_to_dict(self.config)

    @property
    def config_json(self) -> str:
        return json.dumps(self.config_dict, sort_keys=True, separators=(",", ":"))

    @property
    def tokens(self) -> int:
        t = self.config.train
        return t.steps * t.batch_size * self.config.model.seq_len

    @property
    def flops(self) -> float:
        """Training FLOPs ≈ 6·params·tokens (+ attention), the compute a run needs."""
        return flops_per_token(self.config) * self.tokens

    def search_columns(self) -> dict:
        """The cell's `search.*` columns, named as the preset checks know them (SEARCH_COLUMNS)."""
        values = (self.search_kind, self.search_index, self.search_axis, self.search_stage, self.search_group)
        return dict(zip(SEARCH_COLUMNS, values, strict=True))


# --------------------------------------------------------------------------------------------
# expansion


def axis_values(key: str, spec: Any) -> list:
    """A grid axis: a list, or {log2_range: [start, stop, step]} (2^start … 2^stop)."""
    if isinstance(spec, list):
        if not spec:
            raise PresetError(f"{key}: empty list of values")
        return spec
    if isinstance(spec, dict) and set(spec) == {"log2_range"}:
        start, stop, step = spec["log2_range"]
        if step <= 0 or stop < start:
            raise PresetError(f"{key}: log2_range needs start <= stop and step > 0 (got {spec['log2_range']})")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        return [2.0 ** (start + i * step) for i in range(n)]
    return [spec]  # a single value


def sample(key: str, spec: Mapping[str, Any], rng: np.random.Generator) -> Any:
    """One draw of a random-search distribution."""
    ((kind, args),) = spec.items()
    if kind == "log2_uniform":
        return float(2.0 ** rng.uniform(*args))
    if kind == "uniform":
        return float(rng.uniform(*args))
    if kind == "choice":
        return args[int(rng.integers(len(args)))]
    raise PresetError(f"{key}: unknown distribution {kind!r}; allowed: log2_uniform, uniform, choice")


def _points(
    block: Mapping[str, Any], b: int = 0, decisions: Mapping[str, Any] | None = None
) -> Iterator[tuple[dict, str, str, str, str]]:
    """(overrides, search kind, search axis, stage, group) for every run of one block, in search order."""
    grid = block.get("grid", {})
    keys = list(grid)
    for g, combo in enumerate(itertools.product(*(axis_values(k, grid[k]) for k in keys))):
        base = {**block.get("set", {}), **dict(zip(keys, combo))}
        if "independent" in block:
            yield base, "independent", "base", "", ""
            for key, spec in block["independent"].items():
                for value in axis_values(key, spec):
                    yield {**base, key: value}, "independent", key, "", ""
        elif "random" in block:
            r = block["random"]
            rng = np.random.default_rng(r["seed"])
            for _ in range(r["n"]):
                draw = {k: sample(k, spec, rng) for k, spec in r["space"].items()}
                yield {**base, **draw}, "random", "", "", ""
        elif "staged" in block:
            yield from _staged_points(block["staged"], base, f"{b}.{g}", decisions or {})
        else:
            yield base, "grid", "", "", ""


def _staged_points(
    staged: Mapping[str, Any], base: dict, group: str, decisions: Mapping[str, Any]
) -> Iterator[tuple[dict, str, str, str, str]]:
    """Stage `lr` always; stage `hp` once stage `lr` is decided; `combined` once `hp` is."""
    ((lr_key, lr_spec),) = staged["lr"].items()
    for value in axis_values(lr_key, lr_spec):
        yield {**base, lr_key: value}, "staged", lr_key, "lr", group
    best_lr = decisions.get("lr", {}).get(group)
    if best_lr is None:
        return
    for key, spec in staged["hp"].items():
        for value in axis_values(key, spec):
            yield {**base, **best_lr, key: value}, "staged", key, "hp", group
    best_hp = decisions.get("hp", {}).get(group)
    if best_hp is not None:
        yield {**base, **best_lr, **best_hp}, "staged", "combined", "combined", group


def _replicates(overrides: dict, raw: dict, seeds: int) -> Iterator[dict]:
    """The point itself, then seeds − 1 copies with train.seed + 1, + 2, …"""
    yield overrides
    seed0 = int(overrides.get("train.seed", (raw.get("train") or {}).get("seed", 0)))
    for i in range(1, seeds):
        yield {**overrides, "train.seed": seed0 + i}


def sweep_runs(
    name: str,
    spec: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    decisions: Mapping[str, Any] | None = None,
) -> Iterator[tuple[int, dict, tuple[str, str, str, str], RunConfig]]:
    """(block, point overrides, (kind, axis, stage, group), resolved config) of every run, in
    search order: each block's points and replicates, then the points grid extensions added
    (`decisions["extend"]`: [{block, set}], umup_repro/sweeps/extend.py), which are plain grid points."""
    for b, block in enumerate(spec["blocks"]):
        merged = {**block, "set": {**spec.get("set", {}), **block.get("set", {})}}
        for point, kind, axis, stage, group in _points(merged, b, decisions):
            yield from _resolved(name, b, point, (kind, axis, stage, group), defaults, spec, block)
    for added in (decisions or {}).get("extend", []):
        b = added["block"]
        if not 0 <= b < len(spec["blocks"]):  # a decision from another version of the preset
            raise PresetError(
                f"sweep {name}: a grid extension names block {b}; delete its results/search/{name}/extend-*.json"
            )
        yield from _resolved(name, b, dict(added["set"]), ("grid", "", "", ""), defaults, spec, spec["blocks"][b])


def _resolved(name, b, point, search, defaults, spec, block):
    """A point's replicates with their resolved configs; PresetError naming sweep and block."""
    seeds = int(block.get("seeds", spec.get("seeds", 1)))
    for overrides in _replicates(point, defaults or {}, seeds):
        raw = json.loads(json.dumps(defaults or {}))
        for key, value in overrides.items():
            set_dotted(raw, key, value)
        try:
            config = resolve_config(raw)
        except ConfigError as err:
            raise PresetError(f"sweep {name}, block {b}: {err}") from None
        yield b, point, search, config


def expand_sweep(
    name: str,
    spec: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    resources: Mapping[str, Any] | None = None,
    decisions: Mapping[str, Any] | None = None,
) -> list[Cell]:
    """The cells of one sweep, in search order; a config reached twice is one cell.

    `decisions` ({stage: {group: {key: best value}}}, umup_repro.sweeps.search_stage) unlock the later stages
    of staged blocks; `decisions["extend"]` adds extended grids' points. A `combined` run whose config an
    earlier stage already ran is appended as an alias (same id, `alias=True`): a table row, never a second job.
    """
    cells: dict[str, Cell] = {}
    aliases: list[Cell] = []
    res = {**DEFAULT_RESOURCES, **(resources or {}), **spec.get("resources", {})}
    for _b, _point, (kind, axis, stage, group), config in sweep_runs(name, spec, defaults, decisions):
        cid = config_hash(config)
        if cid not in cells:
            cells[cid] = Cell(name, cid, config, kind, len(cells), axis, res, stage, group)
        elif stage == "combined":
            aliases.append(Cell(name, cid, config, kind, -1, axis, res, stage, group, alias=True))
    # aliases last, numbered on after every cell, so `search.index` stays unique within the sweep
    return list(cells.values()) + [replace(a, search_index=len(cells) + i) for i, a in enumerate(aliases)]


def expand_preset(
    config: Mapping[str, Any] | str,
    sweeps: list[str] | None = None,
    decisions: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, list[Cell]]:
    """{sweep: cells} for a loaded preset (see `load_preset`) or a preset name; `decisions`
    ({sweep: {stage: {group: best}}}) unlock staged searches' later stages."""
    if isinstance(config, str) or "sweeps" not in config:
        config = load_preset(config)
    names = list(config["sweeps"]) if sweeps is None else sweeps
    unknown = [s for s in names if s not in config["sweeps"]]
    if unknown:
        raise PresetError(f"sweep: unknown sweep {unknown[0]!r}; allowed: {', '.join(config['sweeps'])}")
    return {
        s: expand_sweep(
            s, config["sweeps"][s], config.get("defaults", {}), config.get("resources", {}), (decisions or {}).get(s)
        )
        for s in names
    }


def varied_keys(cells: list[Cell]) -> list[str]:
    """The flattened config keys whose value differs between the cells (what a listing shows)."""
    flats = [flatten_config(c.config) for c in cells]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if len({json.dumps(f.get(k)) for f in flats}) > 1]
