"""`umup-repro bench-cell`: where one cell's wall time goes, start-up included (issue 25).

The cell runs in a fresh process, started as the workflow starts one (`OMP_NUM_THREADS` =
`threads_per_cell`, `train -` with `--progress lines`), with a preset's defaults at u-μP, the given
width and each `--steps`. Both processes read one clock (CLOCK_MONOTONIC, system-wide): the parent
stamps the start and the end of the child, the child its first line and each import, and it times
each phase by wrapping the training code's functions (and Lightning's hooks, as a callback). A
phase's time excludes the phases nested in it, so the parts are disjoint and, with what no part
claims ("other"), add up to the wall time the parent measured. The token cache is built first, in
the parent, so "data" is a cache hit, as for every cell but a sweep's first.
"""

from __future__ import annotations

import time

T_ENTRY = time.monotonic()  # the child's first stamp: before any import below

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

# the parts, in the order printed (a phase nested in another is charged to the inner one)
PARTS = (
    "interpreter start",
    "import torch",
    "import lightning",
    "import umup_repro",
    "config",
    "data (token cache, validation batches)",
    "run folder (state, config.yaml)",
    "model build",
    "parametrization.csv",
    "Trainer set-up",
    "fit set-up and teardown",
    "training steps",
    "RMS probes (rows)",
    "validation, step 0",
    "validation, every val_every",
    "validation, final",
    "progress lines",
    "checkpoints",
    "metrics.csv / rms.csv",
    "summary",
    "garbage collection",
    "interpreter exit",
    "other",
)


class Ledger:
    """Exclusive times per part: a phase that starts inside another is taken out of the outer one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._open: list[tuple[str, float, float]] = []  # (part, start, time charged to nested parts)

    def begin(self, part: str) -> None:
        self._open.append((part, time.monotonic(), 0.0))

    def end(self, part: str) -> None:
        name, start, nested = self._open.pop()
        assert name == part, f"phases not nested: {name} closed as {part}"
        elapsed = time.monotonic() - start
        self.seconds[part] = self.seconds.get(part, 0.0) + elapsed - nested
        self.counts[part] = self.counts.get(part, 0) + 1
        if self._open:
            outer, ostart, onested = self._open[-1]
            self._open[-1] = (outer, ostart, onested + elapsed)

    def wrap(self, owner, attr: str, part: str | Callable[..., str]) -> None:
        """Replace `owner.attr` with a version charged to `part` (a name, or a function of the call's arguments)."""
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            name = part(*args, **kwargs) if callable(part) else part
            self.begin(name)
            try:
                return inner(*args, **kwargs)
            finally:
                self.end(name)

        setattr(owner, attr, timed)


def cell_config(preset: str, width: int, steps: int | None, parametrization: str = "umup") -> dict:
    """A preset's default cell at `parametrization`, `width` and `steps` (None: the preset's), the rest the preset's."""
    from umup_repro.sweeps.presets import load_preset

    raw = json.loads(json.dumps(load_preset(preset).get("defaults") or {}))
    raw["parametrization"] = parametrization
    raw.setdefault("model", {})["width"] = width
    if steps is not None:
        raw.setdefault("train", {})["steps"] = steps
    return raw


# --------------------------------------------------------------------------------------------
# The child: one cell, timed


def _child(config_path: str, out: str, report: str) -> int:
    stamps = {"entry": T_ENTRY}
    import torch  # noqa: F401

    stamps["torch"] = time.monotonic()
    import lightning as L

    stamps["lightning"] = time.monotonic()
    from umup_repro.model import parametrization_table
    from umup_repro.training import lightning_module, run_folder, train

    stamps["umup_repro"] = time.monotonic()
    ledger = Ledger()
    ledger.wrap(train, "load_config", "config")
    ledger.wrap(train, "_load_data", "data (token cache, validation batches)")
    for name in ("check_out", "folder_state", "prepare"):
        ledger.wrap(run_folder, name, "run folder (state, config.yaml)")
    ledger.wrap(lightning_module, "build_model", "model build")
    ledger.wrap(parametrization_table, "parametrization_csv", "parametrization.csv")
    ledger.wrap(train, "build_trainer", "Trainer set-up")
    ledger.wrap(L.Trainer, "fit", "fit set-up and teardown")
    ledger.wrap(lightning_module, "rms_rows", "RMS probes (rows)")
    module = lightning_module.CellModule

    def validation_part(self, step, *args, **kwargs):
        if step == 0:
            return "validation, step 0"
        return "validation, final" if step == self.config.train.steps else "validation, every val_every"

    ledger.wrap(module, "validate", validation_part)
    ledger.wrap(module, "print_line", "progress lines")
    ledger.wrap(module, "save_checkpoint", "checkpoints")
    ledger.wrap(run_folder, "remove_checkpoints", "checkpoints")
    ledger.wrap(module, "write_files", "metrics.csv / rms.csv")
    ledger.wrap(run_folder, "make_summary", "summary")
    ledger.wrap(run_folder, "write_summary", "summary")

    def collecting(phase: str, info: dict) -> None:  # the cyclic GC's passes, wherever they fall
        (ledger.begin if phase == "start" else ledger.end)("garbage collection")

    gc.callbacks.append(collecting)

    class Steps(L.Callback):  # the training loop, from before step 0's validation to after the last step
        def on_train_start(self, trainer, pl_module):
            ledger.begin("training steps")

        def on_train_end(self, trainer, pl_module):
            ledger.end("training steps")

    original = train.run_cell

    def run_cell(*args, callbacks=(), **kwargs):
        return original(*args, callbacks=[*callbacks, Steps()], **kwargs)

    train.run_cell = run_cell
    args = argparse.Namespace(
        config=config_path, set=[], cell=None, out=out, copy_from=None, sweep="bench", progress="lines"
    )
    args.log_every, args.keep_checkpoints, args.logger = None, False, None
    code = train.main(args)
    gc.callbacks.remove(collecting)
    stamps["end"] = time.monotonic()
    gc.freeze()  # as the `umup-repro` command does before its process exits (cli._quick_exit)
    Path(report).write_text(
        json.dumps({"code": code, "stamps": stamps, "seconds": ledger.seconds, "counts": ledger.counts}),
        encoding="utf-8",
    )
    return code


# --------------------------------------------------------------------------------------------
# The parent: start the child, put the parts together


def breakdown(raw: dict, *, threads: int = 1) -> dict:
    """Run the cell `raw` in a fresh process; returns {"wall": s, "parts": {part: s}, "counts", "steps"},
    the parts adding up to the wall time."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        config, report = Path(tmp) / "cell.yaml", Path(tmp) / "report.json"
        config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        cmd = [
            sys.executable,
            "-m",
            "umup_repro.bench.bench_cell",
            "--child",
            str(config),
            str(Path(tmp) / "cell"),
            str(report),
        ]
        start = time.monotonic()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.monotonic() - start
        if proc.returncode != 0 or not report.exists():
            raise RuntimeError(f"bench-cell: the cell's process failed ({proc.returncode}): {proc.stderr[-2000:]}")
        child = json.loads(report.read_text(encoding="utf-8"))
    s = child["stamps"]
    parts = {
        "interpreter start": s["entry"] - start,
        "import torch": s["torch"] - s["entry"],
        "import lightning": s["lightning"] - s["torch"],
        "import umup_repro": s["umup_repro"] - s["lightning"],
        **child["seconds"],
        "interpreter exit": start + wall - s["end"],
    }
    parts["other"] = wall - sum(parts.values())
    return {"wall": wall, "parts": parts, "counts": child["counts"], "steps": raw["train"]["steps"]}


def print_breakdown(result: dict) -> None:
    wall, parts, counts = result["wall"], result["parts"], result["counts"]
    print(f"cell of {result['steps']} steps: {wall:.2f} s wall")
    for part in PARTS:
        if part not in parts:
            continue
        n = counts.get(part)
        times = f"  ({n}x)" if n and n > 1 else ""
        print(f"  {part:40s} {parts[part]:8.3f} s {100 * parts[part] / wall:6.1f} %{times}")
    print(f"  {'total':40s} {sum(parts.values()):8.3f} s")
    loop = sum(parts.get(p, 0.0) for p in LOOP_PARTS)
    if result["steps"]:
        per_step = 1e3 * loop / result["steps"]
        print(f"  per step, training loop with its probes, validation and checkpoints: {per_step:.1f} ms")


# what a step of the training loop costs, its periodic work included (not step 0's validation)
LOOP_PARTS = (
    "training steps",
    "RMS probes (rows)",
    "validation, every val_every",
    "progress lines",
    "checkpoints",
)


def add_parser(sub, positive: Callable[[str], int]) -> None:
    """The `bench-cell` command's options (`positive`: the CLI's type of a count of at least 1)."""
    p = sub.add_parser("bench-cell", help="where one cell's wall time goes: start-up, set-up, steps, probes, files")
    p.add_argument("--preset", default="tiny", help="preset whose default cell is run (default: tiny)")
    p.add_argument("--parametrization", default="umup", help="the cell's parametrization (default: umup)")
    p.add_argument("--width", type=positive, default=64, help="the cell's model width (default: 64)")
    p.add_argument("--steps", type=positive, nargs="+", default=[1, 500], help="train.steps of each cell run")
    p.add_argument(
        "--batched",
        type=positive,
        default=0,
        metavar="N",
        help="also N 1-step cells through one warm cell server (batch_cells), as the DAG runs them",
    )
    p.set_defaults(func=main)


def batched(preset: str, width: int, parametrization: str, n: int, threads: int) -> None:
    """N 1-step cells (seeds 0..N-1), each a `umup-repro train -` process as a train_cell job
    starts it, all handed to one fresh cell server: each cell's wall, its training (the summary's
    `train_seconds`: the steps, validation excluded) and the fixed cost, wall − training. The first
    cell also pays for starting the server (its imports), so the median is over the others. (A
    PYTHONHASHSEED of its own makes the server this benchmark's: cell_server.server_key.)"""
    import statistics

    from umup_repro.training.cell_server import SERVER_ENV

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), SERVER_ENV: str(n), "PYTHONHASHSEED": str(os.getpid())}
    fixed = []
    print(f"\n{n} one-step cells through one cell server ({SERVER_ENV}={n}; a fresh server: first cell starts it)")
    print(f"  {'cell':>4}  {'wall s':>7}  {'training s':>10}  {'fixed s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(n):
            raw = cell_config(preset, width, 1, parametrization)
            raw.setdefault("train", {})["seed"] = seed
            out = Path(tmp) / f"cell{seed}"
            started = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "umup_repro.cli", "train", "-", "--out", str(out), "--progress", "lines"],
                input=json.dumps(raw), env=env, capture_output=True, text=True,
            )  # fmt: skip
            wall = time.monotonic() - started
            if proc.returncode != 0:
                raise RuntimeError(f"cell {seed} failed ({proc.returncode}): {proc.stderr[-2000:]}")
            training = json.loads((out / "summary.json").read_text())["train_seconds"]
            print(f"  {seed:>4}  {wall:7.2f}  {training:10.3f}  {wall - training:7.2f}", flush=True)
            fixed.append(wall - training)
    rest = fixed[1:] or fixed
    print(f"  fixed cost per cell in a batch: median {statistics.median(rest):.2f} s (cells 1-{n - 1}),"
          f" max {max(rest):.2f} s; the first cell {fixed[0]:.2f} s (server start)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    from umup_repro.core.config import resolve_config
    from umup_repro.data import token_arrays

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default corpus is offline
    from umup_repro.sweeps.presets import load_preset

    threads = int(load_preset(args.preset).get("threads_per_cell", 1))
    steps = [int(s) for s in args.steps]
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(
        f"umup-repro bench-cell: preset {args.preset}, {args.parametrization} width {args.width},"
        f" OMP_NUM_THREADS={threads}{load}"
    )
    token_arrays(resolve_config(cell_config(args.preset, args.width, steps[0], args.parametrization)))  # cache built
    for n in steps:
        print_breakdown(breakdown(cell_config(args.preset, args.width, n, args.parametrization), threads=threads))
    if args.batched:
        batched(args.preset, args.width, args.parametrization, args.batched, threads)
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    sys.exit(_child(*sys.argv[2:5]))
