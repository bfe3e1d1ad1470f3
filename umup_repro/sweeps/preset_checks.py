"""Checks of a preset that the JSON schema cannot make, run when it is loaded, before any job:
names that must refer to something (a transfer axis or HP naming a config key, a figure naming a
figure function, a figure listing sweeps the preset has) and grid sizes that must be finite.

Without them such a preset trains every cell and then fails (or silently drops a figure) at the
aggregation or plotting step. torch and matplotlib are not imported: the DAG loads presets often.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from umup_repro.core.config import HP_DEFAULTS, flatten_config, resolve_config
from umup_repro.core.figure_catalog import PLOTTED  # the figures a preset may name

SEARCH_COLUMNS = ("search.kind", "search.index", "search.axis", "search.stage", "search.group")
# Columns aggregate derives from the config (not config keys): Fig. 2's setting (umup_repro/results/stability.py).
DERIVED_COLUMNS = ("setting",)
MAX_AXIS_VALUES = 10_000  # one grid axis; a paper-sized grid has about 20
MAX_CELLS = 100_000  # runs a preset expands to, before duplicates merge (the paper preset: 5,015 cells)
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # a sweep name, matched whole (no trailing newline)


def table_columns() -> set[str]:
    """The columns a sweep's table has that a transfer spec may name: every flattened config key
    (hp.* of every parametrization) and the search columns."""
    keys = set(flatten_config(resolve_config({}))) | set(SEARCH_COLUMNS) | set(DERIVED_COLUMNS)
    return keys | {f"hp.{name}" for hps in HP_DEFAULTS.values() for name in hps}


def check_log2_range(key: str, spec: Any) -> None:
    """A `{log2_range: [start, stop, step]}` whose values are finite floats and not too many."""
    values = spec.get("log2_range") if isinstance(spec, Mapping) else None
    if not (
        isinstance(values, list)
        and len(values) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    ):
        raise ValueError(f"{key}: log2_range needs three finite numbers [start, stop, step] (got {values!r})")
    start, stop, step = values
    if step <= 0 or stop < start:
        raise ValueError(f"{key}: log2_range needs start <= stop and step > 0 (got {values})")
    if max(abs(start), abs(stop)) > 1000:  # 2.0**1024 overflows a float
        raise ValueError(f"{key}: log2_range exponents must lie within ±1000 (got {values})")
    if (stop - start) / step + 1 > MAX_AXIS_VALUES:
        raise ValueError(f"{key}: log2_range gives more than {MAX_AXIS_VALUES} values (got {values})")


def _axis_size(spec: Any) -> int:
    """Values of an axis (a list, a checked log2_range, or one value)."""
    if isinstance(spec, list):
        return len(spec)
    if isinstance(spec, Mapping) and "log2_range" in spec:
        start, stop, step = spec["log2_range"]
        return int(math.floor((stop - start) / step + 1e-9)) + 1
    return 1


def _block_runs(block: Mapping[str, Any], seeds: int) -> int:
    """Runs a block expands to (grid points × the search in each × seeds), before duplicates merge."""
    runs = math.prod(_axis_size(spec) for spec in (block.get("grid") or {}).values())
    if "independent" in block:
        runs *= 1 + sum(_axis_size(spec) for spec in (block["independent"] or {}).values())
    elif "random" in block:
        runs *= int((block["random"] or {}).get("n", 1))
    elif "staged" in block:
        staged = block["staged"] or {}
        runs *= 1 + sum(_axis_size(spec) for part in ("lr", "hp") for spec in (staged.get(part) or {}).values())
    return runs * int(block.get("seeds", seeds))


def _axis_values(preset: Mapping[str, Any], sweep: Mapping[str, Any], key: str) -> list:
    """Every value a sweep gives config key `key` (its blocks' set, grid, independent and staged
    axes, else the defaults'), for checking a transfer proxy."""
    values: list = []

    def add(spec: Any) -> None:
        if isinstance(spec, Mapping) and "log2_range" in spec:
            start, _, step = spec["log2_range"]
            values.extend(2.0 ** (start + i * step) for i in range(_axis_size(spec)))
        else:
            values.extend(spec if isinstance(spec, list) else [spec])

    for block in sweep.get("blocks") or []:
        parts = [{**(sweep.get("set") or {}), **(block.get("set") or {})}, block.get("grid"), block.get("independent")]
        parts += [(block.get("staged") or {}).get(p) for p in ("lr", "hp")]
        for part in parts:
            if isinstance(part, Mapping) and key in part:
                add(part[key])
    if not values:
        try:
            values.append(flatten_config(resolve_config(preset.get("defaults") or {})).get(key))
        except ValueError:
            pass  # a bad default is reported when the sweep expands
    return values


def _same_value(a: Any, b: Any) -> bool:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return math.isclose(a, b, rel_tol=1e-12) if numbers else a == b


def _check_extend(name: str, sweep: Mapping[str, Any], where: str) -> None:
    """An extended sweep is plain grids (a search decides its own points) along a config key."""
    searched = [
        b for b, block in enumerate(sweep.get("blocks") or []) if set(block) & {"independent", "random", "staged"}
    ]
    if searched:
        raise ValueError(
            f"{where}: sweeps.{name}.extend: block {searched[0]} has a search (independent, random or"
            " staged); extend applies to sweeps of plain grids only"
        )
    axis = sweep["extend"].get("axis")
    if axis not in table_columns() or axis in SEARCH_COLUMNS + DERIVED_COLUMNS:
        raise ValueError(
            f"{where}: sweeps.{name}.extend.axis: {axis!r} is not a config key (e.g. train.lr, hp.alpha_res)"
        )


def check_preset(preset: Mapping[str, Any], where: str) -> None:
    """Raise ValueError naming the preset, the sweep or figure and the field."""
    sweeps = preset.get("sweeps") or {}
    for name in sweeps:
        if not (isinstance(name, str) and NAME.fullmatch(name)):
            raise ValueError(f"{where}: sweeps: {name!r} is not a sweep name (a letter, then letters, digits or _)")
    columns = None
    for name, sweep in sweeps.items():
        transfer = sweep.get("transfer") if isinstance(sweep, Mapping) else None
        if not isinstance(transfer, Mapping):
            continue
        columns = columns if columns is not None else table_columns()
        named = [("axis", transfer.get("axis")), ("hp", transfer.get("hp", "train.lr"))]
        named += [("group", g) for g in transfer.get("group", [])]
        for field, key in named:
            if key not in columns:
                raise ValueError(
                    f"{where}: sweeps.{name}.transfer.{field}: {key!r} is not a config key or search"
                    " column (e.g. model.width, train.lr, hp.alpha_res, search.axis)"
                )
    for name, sweep in sweeps.items():
        if isinstance(sweep, Mapping) and isinstance(sweep.get("extend"), Mapping):
            _check_extend(name, sweep, where)
    for figure, listed in (preset.get("figures") or {}).items():
        if figure not in PLOTTED:
            raise ValueError(f"{where}: figures.{figure}: no such figure; allowed: {', '.join(PLOTTED)}")
        missing = [s for s in (listed or []) if s not in sweeps]
        if missing:
            raise ValueError(
                f"{where}: figures.{figure}: sweep {missing[0]!r} is not in the preset; its sweeps: {', '.join(sweeps)}"
            )
    total = 0
    for name, sweep in sweeps.items():
        for b, block in enumerate(sweep.get("blocks", []) if isinstance(sweep, Mapping) else []):
            staged = (block.get("staged") or {}) if isinstance(block, Mapping) else {}
            parts = [(part, block.get(part)) for part in ("grid", "independent") if isinstance(block, Mapping)]
            parts += [(f"staged.{stage}", staged.get(stage)) for stage in ("lr", "hp") if isinstance(staged, Mapping)]
            for part, axes in parts:
                for key, spec in (axes or {}).items() if isinstance(axes, Mapping) else ():
                    if isinstance(spec, Mapping) and "log2_range" in spec:
                        check_log2_range(f"{where}: sweep {name}, block {b}, {part}.{key}", spec)
                    elif isinstance(spec, list) and len(spec) > MAX_AXIS_VALUES:
                        raise ValueError(
                            f"{where}: sweep {name}, block {b}, {part}.{key}: more than"
                            f" {MAX_AXIS_VALUES} values ({len(spec)})"
                        )
            if isinstance(block, Mapping):
                total += _block_runs(block, int(sweep.get("seeds", 1)))
            if total > MAX_CELLS:
                raise ValueError(
                    f"{where}: sweep {name}, block {b}: the preset expands to more than {MAX_CELLS}"
                    " runs (grid axes × searches × seeds); split it or shrink its grids"
                )
            space = (block.get("random") or {}).get("space") or {} if isinstance(block, Mapping) else {}
            for key, spec in space.items() if isinstance(space, Mapping) else ():
                bounds = spec.get("log2_uniform") if isinstance(spec, Mapping) else None
                if bounds is not None and not (
                    isinstance(bounds, list)
                    and len(bounds) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= 1000 for v in bounds)
                ):
                    raise ValueError(
                        f"{where}: sweep {name}, block {b}, random.space.{key}: log2_uniform needs two"
                        f" exponents within ±1000 (got {bounds!r})"
                    )
    for name, sweep in sweeps.items():  # after the bounds: the axes are safe to expand
        transfer = sweep.get("transfer") if isinstance(sweep, Mapping) else None
        if not (isinstance(transfer, Mapping) and "proxy" in transfer):
            continue
        if not transfer["axis"].startswith("search.") and transfer["axis"] != "setting":
            values = _axis_values(preset, sweep, transfer["axis"])
            if not any(_same_value(transfer["proxy"], v) for v in values):
                shown = ", ".join(list(dict.fromkeys(map(str, values)))[:12])
                raise ValueError(
                    f"{where}: sweeps.{name}.transfer.proxy: {transfer['proxy']!r} is not a value of"
                    f" the axis {transfer['axis']} in the sweep (its values: {shown})"
                )
