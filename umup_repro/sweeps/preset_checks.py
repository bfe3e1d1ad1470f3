"""Checks of a preset that the JSON schema cannot make, run when it is loaded, before any job:
names that must refer to something (a transfer axis or HP naming a config key, a figure naming a
figure function, a figure listing sweeps the preset has) and grid sizes that must be finite.

Without them such a preset trains every cell and then fails (or silently drops a figure) at the
aggregation or plotting step. torch and matplotlib are not imported: the DAG loads presets often.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from umup_repro.core.config import HP_DEFAULTS, flatten_config, resolve_config
from umup_repro.core.figure_catalog import PLOTTED  # the figures a preset may name

SEARCH_COLUMNS = ("search.kind", "search.index", "search.axis", "search.stage", "search.group")
# Columns aggregate derives from the config (not config keys): Fig. 2's setting (umup_repro/results/stability.py).
DERIVED_COLUMNS = ("setting",)
MAX_AXIS_VALUES = 10_000  # one grid axis; a paper-sized grid has about 20


def table_columns() -> set[str]:
    """The columns a sweep's table has that a transfer spec may name: every flattened config key
    (hp.* of every parametrization) and the search columns."""
    keys = set(flatten_config(resolve_config({}))) | set(SEARCH_COLUMNS) | set(DERIVED_COLUMNS)
    return keys | {f"hp.{name}" for hps in HP_DEFAULTS.values() for name in hps}


def check_log2_range(key: str, spec: Any) -> None:
    """A `{log2_range: [start, stop, step]}` whose values are finite floats and not too many."""
    values = spec.get("log2_range") if isinstance(spec, Mapping) else None
    if not (isinstance(values, list) and len(values) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
        raise ValueError(f"{key}: log2_range needs three finite numbers [start, stop, step] (got {values!r})")
    start, stop, step = values
    if step <= 0 or stop < start:
        raise ValueError(f"{key}: log2_range needs start <= stop and step > 0 (got {values})")
    if max(abs(start), abs(stop)) > 1000:  # 2.0**1024 overflows a float
        raise ValueError(f"{key}: log2_range exponents must lie within ±1000 (got {values})")
    if (stop - start) / step + 1 > MAX_AXIS_VALUES:
        raise ValueError(f"{key}: log2_range gives more than {MAX_AXIS_VALUES} values (got {values})")


def check_preset(preset: Mapping[str, Any], where: str) -> None:
    """Raise ValueError naming the preset, the sweep or figure and the field."""
    sweeps = preset.get("sweeps") or {}
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
                raise ValueError(f"{where}: sweeps.{name}.transfer.{field}: {key!r} is not a config key or search"
                                 " column (e.g. model.width, train.lr, hp.alpha_res, search.axis)")
    for figure, listed in (preset.get("figures") or {}).items():
        if figure not in PLOTTED:
            raise ValueError(f"{where}: figures.{figure}: no such figure; allowed: {', '.join(PLOTTED)}")
        missing = [s for s in (listed or []) if s not in sweeps]
        if missing:
            raise ValueError(f"{where}: figures.{figure}: sweep {missing[0]!r} is not in the preset;"
                             f" its sweeps: {', '.join(sweeps)}")
    for name, sweep in sweeps.items():
        for b, block in enumerate(sweep.get("blocks", []) if isinstance(sweep, Mapping) else []):
            for part in ("grid", "independent"):
                for key, spec in (block.get(part) or {}).items() if isinstance(block, Mapping) else ():
                    if isinstance(spec, Mapping) and "log2_range" in spec:
                        check_log2_range(f"{where}: sweep {name}, block {b}, {part}.{key}", spec)
            space = (block.get("random") or {}).get("space") or {} if isinstance(block, Mapping) else {}
            for key, spec in space.items() if isinstance(space, Mapping) else ():
                bounds = spec.get("log2_uniform") if isinstance(spec, Mapping) else None
                if bounds is not None and not (isinstance(bounds, list) and len(bounds) == 2 and all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= 1000 for v in bounds)):
                    raise ValueError(f"{where}: sweep {name}, block {b}, random.space.{key}: log2_uniform needs two"
                                     f" exponents within ±1000 (got {bounds!r})")
