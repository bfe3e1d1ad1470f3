"""Run folders → tables: one row per cell, long tables of curves, and the transfer summary.

Only the cells the grid expands to are read, by id, so a run folder left by an older config (a
different id) never enters a table. Every table is written atomically.

- `results/tables/<sweep>.csv`: `cell, sweep, search.*`, the flattened config, the summary metrics;
- `results/tables/metrics/<sweep>.csv`: `cell` + each run's metrics.csv (long);
- `results/tables/rms/<sweep>.csv`: `cell` + each run's rms.csv (long);
- `results/tables/transfer_summary.csv`: per sweep, group and axis value the optimal LR (or HP), its
  drift from the proxy's optimum in log2 units, and the transfer regret; the fitted optimum with
  its interval and censoring (umup_repro/results/optimum.py), and the drift's interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from umup_repro.core.atomic import write_text
from umup_repro.results.optimum import Optimum, drift_interval, locate
from umup_repro.results.replicates import add_replicate_columns, optimum_share, stats
from umup_repro.results.replicates import by_value as replicate_losses
from umup_repro.results.seed_noise import tables_noise
from umup_repro.results.stability import with_setting
from umup_repro.sweeps.grid import Cell
from umup_repro.sweeps.preset_checks import DERIVED_COLUMNS
from umup_repro.training.run_format import ReadBackError, check_tables, plain_lines, read_summary
from umup_repro.training.run_schema import RowsError, check_rows

LOSS = "final_val_loss"
LONG_TABLES = {"metrics": "metrics.csv", "rms": "rms.csv"}
TRANSFER_COLUMNS = [
    "sweep",
    "group",
    "setting",
    "axis",
    "axis_value",
    "proxy_value",
    "hp",
    "opt_value",
    "opt_log2",
    "drift_log2",
    "best_loss",
    "loss_at_proxy_opt",
    "regret",
    "runs",
    "diverged",
    "best_loss_se",
    "seeds_n",
    "optimum_share",
    "opt_fit_log2",
    "opt_lo_log2",
    "opt_hi_log2",
    "censored",
    "drift_fit_log2",
    "drift_lo_log2",
    "drift_hi_log2",
    "interval_from",
]


class MissingRunsError(RuntimeError):
    """Some of a sweep's cells have no summary.json yet."""


class MixedCodeError(RuntimeError):
    """A sweep's runs were made by code that differs in what changes results."""


def check_one_code_version(sweep: str, summaries: Mapping[str, Mapping], runs: Path) -> None:
    """Raise MixedCodeError if the runs' `code_fingerprint`s differ (a run without one, made
    before fingerprints, counts as its own version), naming the cells to rerun: those not made by
    the code installed now, else all but the largest group."""
    from umup_repro.training.code_fingerprint import code_fingerprint

    groups: dict[str, list[str]] = {}
    for cell, summary in summaries.items():
        groups.setdefault(summary.get("code_fingerprint") or "none (older run)", []).append(cell)
    if len(groups) < 2:
        return
    current = code_fingerprint()
    keep = current if current in groups else max(groups, key=lambda k: len(groups[k]))
    stale = sorted(c for k, cells in groups.items() if k != keep for c in cells)
    described = "; ".join(
        f"{k}: {len(v)} cells ({', '.join(sorted(v)[:4])}{', ...' if len(v) > 4 else ''})"
        for k, v in sorted(groups.items())
    )
    folders = " ".join(str(runs / sweep / c) for c in stale)
    raise MixedCodeError(
        f"sweep {sweep}: its runs were made by {len(groups)} code versions (code_fingerprint {described});"
        f" the code installed now is {current}. Refusing to put them into one table. Rerun the"
        f" {len(stale)} cells not made by {keep}: {', '.join(stale)}: delete their run folders and run"
        f" the workflow again (rm -r {folders} && snakemake --cores all), or rerun the whole sweep."
    )


def run_dir(runs: Path, cell: Cell) -> Path:
    return Path(runs) / cell.sweep / cell.id


def summary_row(cell: Cell, summary: Mapping) -> dict:
    """One table row: identity, search position, flattened config, metrics (nested values as JSON)."""
    row = {"cell": cell.id, "sweep": cell.sweep, **cell.search_columns()}
    for key, value in summary.items():
        if key in ("cell", "sweep", "config_hash"):
            continue
        row[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
    return row


def _prefixed(text: str, prefix: str) -> tuple[str, str]:
    """(header, the lines after it each led by `prefix` and ended by "\n"), as splitlines() splits."""
    if not plain_lines(text):
        lines = text.splitlines()
        return lines[0], "".join(prefix + line + "\n" for line in lines[1:])
    first = text.find("\n")
    if first < 0 or first == len(text) - 1:
        return (text if first < 0 else text[:first]), ""
    body = text[first + 1 : len(text) - text.endswith("\n")]  # (slices: each copy of 95 kB counts 5000 times)
    return text[:first], prefix + body.replace("\n", "\n" + prefix) + "\n"


def _long_table(runs: Iterable[tuple[Cell, Path, str]]) -> str:
    """Concatenate the runs' CSVs (cell, path, text) with a leading `cell` column (text, no
    parsing, no list of lines: 5000 runs in seconds)."""
    parts: list[str] = []
    header = None
    for cell, path, text in runs:
        first, rows = _prefixed(text, f"{cell.id},")  # checked by check_tables
        if header is None:
            header = first
            parts.append(f"cell,{header}\n")
        elif first != header:
            raise ValueError(f"{path}: header {first!r} differs from {header!r}")
        parts.append(rows)
    return "".join(parts) if header is not None else "cell\n"


def aggregate_sweep(cells: list[Cell], runs: str | Path, tables: str | Path) -> pd.DataFrame:
    """Write the sweep's three tables; raise MissingRunsError if any cell is not complete."""
    runs, tables = Path(runs), Path(tables)
    sweep = cells[0].sweep
    folders = {c.id: run_dir(runs, c) for c in cells}
    missing = [c.id for c in cells if not (folders[c.id] / "summary.json").is_file()]
    if missing:
        raise MissingRunsError(
            f"sweep {sweep}: {len(missing)} of {len(cells)} cells have no summary.json"
            f" under {runs / sweep} (first: {', '.join(missing[:3])})"
        )
    rows, summaries, texts = [], {}, {kind: [] for kind in LONG_TABLES}
    for c in cells:  # each run read back and checked: summary of this cell, one metrics row per step
        summary = read_summary(folders[c.id] / "summary.json", c.id)
        read = check_tables(folders[c.id], summary)  # each file read once
        if not c.alias:
            for kind, filename in LONG_TABLES.items():
                texts[kind].append((c, folders[c.id] / filename, read[filename]))
        summaries[c.id] = summary
        if summary["diverged"]:  # (summaries written before diverged runs had no final loss)
            summary = {**summary, LOSS: None}
        rows.append(summary_row(c, summary))
    check_one_code_version(sweep, summaries, runs)
    table = add_replicate_columns(pd.DataFrame(rows), cells)
    long = {}
    for kind, filename in LONG_TABLES.items():
        long[kind] = _long_table(texts.pop(kind))
        # every row typed, finite unless its run diverged (umup_repro/training/run_schema.py), before any is written
        try:
            check_rows(
                long[kind],
                filename,
                diverged=lambda c: summaries[c]["diverged"],
                file_of=lambda c, f=filename: folders[c] / f,
            )
        except RowsError as err:
            raise ReadBackError(f"{err}; delete that run folder and rerun the cell") from None
    for kind, text in long.items():
        write_text(tables / kind / f"{sweep}.csv", text)
    write_text(tables / f"{sweep}.csv", table.to_csv(index=False))
    return table


# --------------------------------------------------------------------------------------------
# transfer summary


def _numeric(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return x


def _optimum(rows: pd.DataFrame, hp: str) -> tuple[float | None, float]:
    """(HP value with the lowest mean loss over its seed replicates, that loss) among values none
    of whose replicates diverged."""
    means = {_numeric(v): stats(x)[0] for v, x in replicate_losses(rows, hp).items()}
    ok = {v: m for v, m in means.items() if math.isfinite(m)}
    if not ok:
        return None, math.nan
    best = min(ok, key=ok.get)
    return best, float(ok[best])


def _loss_at(rows: pd.DataFrame, hp: str, value) -> float:
    """Mean loss of the runs at `value` of the HP (inf if one diverged, NaN if there is none)."""
    groups = {_numeric(v): x for v, x in replicate_losses(rows, hp).items()}
    return stats(groups[value])[0] if value in groups else math.nan


def _log2(x) -> float:
    return math.log2(x) if isinstance(x, float) and x > 0 else math.nan


def _sureness(rows: pd.DataFrame, hp: str, opt) -> dict:
    """The optimum's standard error, replicates and bootstrap share (umup_repro/results/replicates.py)."""
    groups = {_numeric(v): x for v, x in replicate_losses(rows, hp).items()}
    _, se, n = stats(groups[opt]) if opt in groups else (math.nan, math.nan, 0)
    return {"best_loss_se": se, "seeds_n": n, "optimum_share": optimum_share(groups, opt)}


def _fitted(rows: pd.DataFrame, hp: str, sigma: float) -> Optimum:
    """The line's fitted optimum in log2 units (NaN for a non-numeric or non-positive HP)."""
    groups = {_numeric(v): x for v, x in replicate_losses(rows, hp).items()}
    if not groups or not all(isinstance(v, float) and v > 0 for v in groups):
        return Optimum(math.nan, math.nan, math.nan, "", "")
    return locate([math.log2(v) for v in groups], list(groups.values()), sigma)


def _hp_slices(table: pd.DataFrame, hp: str) -> Iterable[tuple[str, pd.DataFrame]]:
    """(HP name, rows sweeping it). For hp == 'search.axis': each varied key plus the base rows."""
    if hp != "search.axis":
        yield hp, table
        return
    for key in [k for k in table["search.axis"].dropna().unique() if k != "base"]:
        yield key, table[table["search.axis"].isin([key, "base"])]


def transfer_summary(
    table: pd.DataFrame, sweep: str, spec: Mapping, sigma: float = math.nan, noise: str = ""
) -> pd.DataFrame:
    """Per group (parametrization, ...), HP and axis value: the optimum, its drift, the regret.

    A group key `setting` (Fig. 2's settings) goes to its own column, empty for other sweeps.

    Drift is log2(optimum at the value) − log2(optimum at the proxy value); regret is the loss of
    the run that uses the proxy's optimum at the target value minus the best loss there (inf if
    that run diverged). `opt_value`/`drift_log2` are grid argmins; `opt_fit_log2` is the fitted
    vertex with its 95% interval (`sigma`: one run's seed noise, used where a line has too few
    replicates to bootstrap; `noise` names where it was measured), `censored` lower/upper for an
    optimum on a grid edge (a bound), and the drift between fitted optima with its interval, open
    on the side a censored optimum leaves unbounded.
    """
    axis, hp = spec["axis"], spec.get("hp", "train.lr")
    group_keys = list(spec.get("group", ["parametrization"]))
    if "setting" in group_keys:  # Fig. 2's settings, read off the config (umup_repro/results/stability.py)
        table = with_setting(table)
    rows = []
    for group, g in table.groupby(group_keys, sort=True, dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        named = dict(zip(group_keys, group))
        setting = named.pop("setting", "")
        label = "/".join(str(v) for v in named.values())
        for hp_name, h in _hp_slices(g, hp):
            values = sorted(h[axis].map(_numeric).unique())
            proxy = _numeric(spec.get("proxy", values[0]))
            by_value = {v: h[h[axis].map(_numeric) == v] for v in values}
            if proxy not in by_value:
                continue
            proxy_opt, _ = _optimum(by_value[proxy], hp_name)
            proxy_fit = _fitted(by_value[proxy], hp_name, sigma)
            for v in values:
                opt, best = _optimum(by_value[v], hp_name)
                fit = _fitted(by_value[v], hp_name, sigma)
                d_lo, d_hi = drift_interval(fit, proxy_fit)
                source = fit.interval_from + (f" ({noise})" if fit.interval_from.startswith("seed noise") else "")
                at_proxy = _loss_at(by_value[v], hp_name, proxy_opt) if proxy_opt is not None else math.nan
                rows.append(
                    {
                        "sweep": sweep,
                        "group": label,
                        "setting": setting,
                        "axis": axis,
                        "axis_value": v,
                        "proxy_value": proxy,
                        "hp": hp_name,
                        "opt_value": opt,
                        "opt_log2": _log2(opt),
                        "drift_log2": _log2(opt) - _log2(proxy_opt),
                        "best_loss": best,
                        "loss_at_proxy_opt": at_proxy,
                        "regret": at_proxy - best,
                        "runs": len(by_value[v]),
                        "diverged": int(by_value[v]["diverged"].astype(bool).sum()),
                        **_sureness(by_value[v], hp_name, opt),
                        "opt_fit_log2": fit.log2,
                        "opt_lo_log2": fit.lo,
                        "opt_hi_log2": fit.hi,
                        "censored": fit.censored,
                        "drift_fit_log2": fit.log2 - proxy_fit.log2,
                        "drift_lo_log2": d_lo,
                        "drift_hi_log2": d_hi,
                        "interval_from": source,
                    }
                )
    if not rows and len(table) and "proxy" in spec:  # (preset checks refuse such a proxy when loaded)
        from umup_repro.core.errors import UserError

        raise UserError(
            f"sweep {sweep}: transfer.proxy {spec['proxy']!r} is not a value of {axis} in its table"
            f" (values: {', '.join(map(str, sorted(table[axis].map(_numeric).unique())[:12]))})"
        )
    return pd.DataFrame(rows, columns=TRANSFER_COLUMNS)


def write_transfer_summary(
    tables: str | Path, specs: Mapping[str, Mapping], out: str | Path, noise_sweeps: Iterable[str] = ()
) -> pd.DataFrame:
    """transfer_summary.csv over every sweep with a `transfer` spec whose table exists; the seed
    noise for the optima's intervals is pooled over those tables and `noise_sweeps`' (seed_noise.tables_noise)."""
    frames, read = [], {}
    for sweep, spec in specs.items():
        path = Path(tables) / f"{sweep}.csv"
        if not path.is_file():
            raise MissingRunsError(
                f"{path}: the table of sweep {sweep} is missing; aggregate the sweep first"
                f" (umup-repro aggregate --sweep {sweep} --tables {tables})"
            )
        try:
            table = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise MissingRunsError(
                f"{path}: not a readable table ({' '.join(str(err).split())[:160]});"
                f" aggregate the sweep again (umup-repro aggregate --sweep {sweep})"
            ) from None
        needed = [spec["axis"], LOSS, "diverged", *spec.get("group", ["parametrization"])]
        needed += [spec.get("hp", "train.lr")]
        # a derived group key (Fig. 2's `setting`) is computed from the config columns, not read
        lacking = [c for c in needed if c not in table.columns and c not in DERIVED_COLUMNS]
        if lacking:
            raise MissingRunsError(
                f"{path}: no column {lacking[0]!r} (damaged, or written by another version);"
                f" aggregate the sweep again (umup-repro aggregate --sweep {sweep})"
            )
        read[sweep] = table
    sigma, noise = tables_noise(Path(tables), noise_sweeps, read)
    for sweep, spec in specs.items():
        frames.append(transfer_summary(read[sweep], sweep, spec, sigma, noise))
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TRANSFER_COLUMNS)
    write_text(out, result.to_csv(index=False))
    return result


# --------------------------------------------------------------------------------------------
# `umup-repro aggregate`


def main(args) -> int:
    import sys

    from umup_repro.core.config import ConfigError
    from umup_repro.sweeps.extend import sweep_decisions
    from umup_repro.sweeps.grid import expand_preset
    from umup_repro.sweeps.presets import PresetError, default_preset, load_preset

    try:
        config = load_preset(args.preset or default_preset())
        unknown = [s for s in args.sweep or [] if s not in config["sweeps"]]
        if unknown:
            raise PresetError(
                f"--sweep {unknown[0]}: no such sweep in preset {config['preset']};"
                f" its sweeps: {', '.join(config['sweeps'])}"
            )
        if args.transfer_summary:
            names = args.sweep or list(config["sweeps"])
            specs = {s: config["sweeps"][s]["transfer"] for s in names if "transfer" in config["sweeps"][s]}
            # the named sweeps without a transfer spec are read for their seed noise only
            noise = [s for s in names if s not in specs]
            result = write_transfer_summary(args.tables, specs, args.transfer_summary, noise)
            print(f"{args.transfer_summary}: {len(result)} rows from {len(specs)} sweeps")
            return 0
        names = args.sweep or list(config["sweeps"])
        Path(args.tables).mkdir(parents=True, exist_ok=True)  # an unwritable --tables fails before any reading
        search_dir = getattr(args, "search_dir", "results/search")
        decisions = {s: sweep_decisions(search_dir, s, config["sweeps"][s]) for s in names}  # later stages, passes
        for sweep, cells in expand_preset(config, names, decisions).items():
            table = aggregate_sweep(cells, args.runs, args.tables)
            print(
                f"{Path(args.tables) / (sweep + '.csv')}: {len(table)} cells,"
                f" {int(table['diverged'].astype(bool).sum())} diverged"
            )
    except (PresetError, ConfigError, MissingRunsError, ReadBackError, MixedCodeError) as err:
        print(f"umup-repro aggregate: error: {err}", file=sys.stderr)
        return 2
    return 0
