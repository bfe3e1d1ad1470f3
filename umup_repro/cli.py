"""The `umup-repro` command: thin argument parsing; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from umup_repro.core.errors import UserExit, appended_log, user_error_message


def _command(module: str):
    """`umup_repro.<module>.main`, imported when the command runs: the CLI starts without torch."""

    def run(args: argparse.Namespace) -> int:
        from importlib import import_module

        return import_module(f"umup_repro.{module}").main(args)

    return run


def _cell_server(args: argparse.Namespace) -> int:
    from pathlib import Path

    from umup_repro.training.cell_server import serve

    serve(Path(args.socket), args.max_cells, args.idle, run=main)
    return 0


def _analysis(args: argparse.Namespace) -> int:
    import time
    from importlib import import_module

    started = time.perf_counter()
    print(f"analysis {args.name}: computing (tens of seconds on a CPU) -> {args.table}, {args.figure}", flush=True)
    code = import_module(f"umup_repro.analyses.{args.name}").main(args)
    print(f"analysis {args.name}: done in {time.perf_counter() - started:.0f} s", flush=True)
    return code


def _widths(text: str) -> str:
    """--widths: comma-separated positive integers (argparse names the option otherwise, exit 2)."""
    for w in (w.strip() for w in text.split(",") if w.strip()):
        if not w.isdigit() or int(w) < 1:
            raise argparse.ArgumentTypeError(f"{w!r} is not a positive integer (widths: e.g. 64,128,256)")
    return text


def _positive(text: str) -> int:
    """A count of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _fraction(text: str) -> float:
    """--utilisation: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1] (a fraction of peak, e.g. 0.3)")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default after its help text (options without help get it too)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            action.default not in (None, False, [], argparse.SUPPRESS)
            and "%(default)" not in text
            and "default" not in text
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    from umup_repro import __version__
    from umup_repro.core.figure_catalog import ANALYSES, PLOTTED
    from umup_repro.core.parametrizations import names as parametrization_names

    parser = argparse.ArgumentParser(prog="umup-repro", description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: _add_parser(*a, formatter_class=_HelpFormatter, **k)

    p = sub.add_parser("train", help="train one cell into a run folder (resumes; a complete run is a no-op)")
    p.add_argument("config", help="YAML cell config (partial: defaults fill the rest); - reads it from stdin")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. model.width=128 (repeatable; value parsed as YAML)",
    )
    p.add_argument("--out", default=None, help="run folder (default: results/runs/adhoc/<cell>)")
    p.add_argument("--sweep", default=None, help="sweep name for the summary (default: the run folder's parent)")
    p.add_argument(
        "--progress",
        default="auto",
        choices=["auto", "bar", "lines", "none"],
        help="auto: Lightning's bar on a terminal, plain lines otherwise",
    )
    p.add_argument("--log-every", type=int, default=None, help="steps between plain progress lines (default: steps/10)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints/ after the run completes")
    p.add_argument(
        "--logger",
        action="append",
        choices=["tensorboard", "wandb"],
        default=None,
        help="also send the metrics to TensorBoard (RUN/tensorboard/) or W&B (repeatable;"
        " default: $UMUP_LOGGERS, else none; needs `pip install tensorboard` or `wandb`)",
    )
    p.add_argument("--cell", default=None, help="expected cell id: refuse to train if the config hashes otherwise")
    p.add_argument(
        "--copy-from",
        default=None,
        metavar="DIR",
        help="copy a complete run of the same cell from DIR instead of training (cells shared by sweeps)",
    )
    p.add_argument(
        "--log",
        default=None,
        metavar="FILE",
        help="also append this run's output to FILE, each attempt headed by its pid and time; never"
        " truncated, so a job refused because the cell is in use cannot erase the running job's log",
    )
    p.set_defaults(func=_command("training.train"))

    from umup_repro.training.cell_server import add_parser as add_cell_server  # (stdlib imports only)

    add_cell_server(sub).set_defaults(func=_cell_server)

    p = sub.add_parser("coord-check", help="Tensor Programs V coordinate check across width")
    p.add_argument("--parametrization", required=True, choices=parametrization_names(), help="parametrization to check")
    p.add_argument("--widths", default="64,128,256,512,1024", type=_widths, help="comma-separated widths")
    p.add_argument("--depth", type=int, default=2, help="transformer blocks")
    p.add_argument("--steps", type=int, default=4, help="Adam steps after initialisation")
    p.add_argument("--lr", type=float, default=None, help="global LR (default: a per-parametrization value)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per batch")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", required=True, help="output folder for coord_check.csv and the figure")
    p.set_defaults(func=_command("analyses.coord_check"))

    p = sub.add_parser("bench", help="u-muP vs SP step time; our Lightning run vs a plain loop; GPU throughput")
    p.add_argument("--width", type=int, default=256, help="model width of the CPU comparison")
    p.add_argument("--depth", type=int, default=4, help="transformer blocks")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per batch")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
    p.add_argument("--repeats", type=int, default=10, help="forward+backward passes per parametrization")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per run (0: skip the loop comparison)")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed steps at the start of each run")
    p.add_argument("--rounds", type=int, default=2, help="interleaved Lightning/plain runs")
    p.add_argument("--preset", default="tiny", help="also time a whole default cell of this preset ('none': skip)")
    p.add_argument("--preset-width", type=int, default=64, help="the preset cell's width (default: 64)")
    p.add_argument("--preset-steps", type=int, default=None, help="the preset cell's train.steps (default: its own)")
    p.add_argument(
        "--throughput",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tokens/s and MFU of SP, u-muP and u-muP-FP8 (default: on a GPU only)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="throughput of a torch.compile'd step (default: eager, as training runs)",
    )
    p.add_argument("--gpu-width", type=int, default=1024, help="model width of the throughput runs")
    p.add_argument("--gpu-depth", type=int, default=8, help="transformer blocks of the throughput runs")
    p.add_argument("--gpu-batch-size", type=int, default=16, help="sequences per batch of the throughput runs")
    p.add_argument("--gpu-seq-len", type=int, default=1024, help="tokens per sequence of the throughput runs")
    p.set_defaults(func=_command("bench.bench"))

    p = sub.add_parser("bench-data", help="corpus size, loader batches/s vs one training step (builds the token cache)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. data.corpus=wikitext103 (repeatable)",
    )
    p.add_argument("--batches", type=_positive, default=2000, help="loader batches to time")
    p.add_argument("--steps", type=int, default=5, help="training steps to time")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    p.set_defaults(func=_command("bench.bench_data"))

    p = sub.add_parser("analysis", help="one of the authors' notes as an analysis: table(s) and figure(s)")
    p.add_argument("name", choices=ANALYSES, help="which analysis")
    p.add_argument("--table", required=True, help="main CSV table, e.g. results/tables/NAME.csv")
    p.add_argument("--figure", required=True, help="main figure PDF; the PNG lands next to it")
    p.add_argument(
        "--slopes-table",
        default=None,
        help="instructive_example, embedding_update: log-log slopes (default: TABLE_slopes.csv)",
    )
    p.add_argument("--plateau-table", default=None, help="low_rank: plateau lengths (default: TABLE_plateaus.csv)")
    p.add_argument(
        "--alignment-table", default=None, help="low_rank: direction overlaps (default: TABLE_alignment.csv)"
    )
    p.add_argument("--alignment-figure", default=None, help="low_rank: overlap figure (default: FIGURE_alignment.pdf)")
    p.set_defaults(func=_analysis)

    p = sub.add_parser("cells", help="list a preset's sweeps, cells and compute estimate before anything runs")
    p.add_argument("--preset", default=None, help="preset name or file (default: config/config.yaml's)")
    p.add_argument("--sweep", action="append", default=None, help="only this sweep (repeatable)")
    p.add_argument("--list", action="store_true", help="one line per cell: id and the keys that vary")
    p.add_argument(
        "--utilisation", type=_fraction, default=None, help="assumed GPU utilisation (default: the preset's)"
    )
    p.add_argument(
        "--measured",
        default=None,
        metavar="SUMMARY",
        help="calibrate the utilisation from a measured run (its summary.json or run folder)",
    )
    p.set_defaults(func=_command("sweeps.cells"))

    p = sub.add_parser("aggregate", help="run folders of a sweep -> results/tables/ (what the DAG calls)")
    p.add_argument("--preset", default=None, help="preset name or file (default: config/config.yaml's)")
    p.add_argument("--sweep", action="append", default=None, help="sweep to aggregate (repeatable; default: all)")
    p.add_argument("--runs", default="results/runs", help="folder of run folders")
    p.add_argument("--tables", default="results/tables", help="folder the tables go to")
    p.add_argument(
        "--transfer-summary",
        default=None,
        metavar="CSV",
        help="instead: write the transfer summary of the sweeps' existing tables to CSV",
    )
    p.add_argument(
        "--search-dir", default="results/search", help="staged searches' stage decisions and grid extensions' passes"
    )
    p.set_defaults(func=_command("results.aggregate"))

    p = sub.add_parser("search-stage", help="decide one stage of a staged search from its runs (a DAG checkpoint)")
    p.add_argument("--preset", default=None, help="preset name or file (default: config/config.yaml's)")
    p.add_argument("--sweep", required=True, help="the staged sweep")
    p.add_argument("--stage", required=True, choices=["lr", "hp"], help="the stage to decide")
    p.add_argument("--runs", default="results/runs", help="folder of run folders")
    p.add_argument("--search-dir", default="results/search", help="folder of the stage decisions")
    p.add_argument("--out", default=None, help="decision file (default: SEARCH_DIR/SWEEP/STAGE.json)")
    p.set_defaults(func=_command("sweeps.search_stage"))

    p = sub.add_parser(
        "extend-grid", help="decide one pass of a sweep's grid extension from its runs (a DAG checkpoint)"
    )
    p.add_argument("--preset", default=None, help="preset name or file (default: config/config.yaml's)")
    p.add_argument("--sweep", required=True, help="a sweep with `extend`")
    p.add_argument("--pass", dest="pass_", type=int, required=True, help="the pass to decide (1 … extend.max)")
    p.add_argument("--runs", default="results/runs", help="folder of run folders")
    p.add_argument("--search-dir", default="results/search", help="folder of the pass decisions")
    p.add_argument("--out", default=None, help="decision file (default: SEARCH_DIR/SWEEP/extend-PASS.json)")
    p.set_defaults(func=_command("sweeps.extend"))

    p = sub.add_parser("transfer-error", help="pairwise transfer error (paper Alg. 1) of pair-grid sweeps' tables")
    p.add_argument("--preset", default=None, help="preset name or file (default: config/config.yaml's)")
    p.add_argument("--sweep", action="append", required=True, help="a pair-grid sweep (repeatable)")
    p.add_argument("--tables", default="results/tables", help="folder of the sweep tables")
    p.add_argument("--out", default="results/tables/transfer_error.csv", help="the table to write")
    p.set_defaults(func=_command("results.transfer_error"))

    p = sub.add_parser("bench-dag", help="time a big preset's dry run and aggregating many generated run folders")
    p.add_argument("--preset", default="paper", help="preset to dry-run (default: paper)")
    p.add_argument("--cells", type=int, default=5000, help="run folders to generate and aggregate")
    p.add_argument("--skip-dry-run", action="store_true", help="only the aggregation benchmark")
    p.set_defaults(func=_command("bench.bench_dag"))

    from umup_repro.bench.bench_cell import add_parser as add_bench_cell  # (stdlib imports only)

    add_bench_cell(sub, _positive)

    p = sub.add_parser("plot", help="draw one figure (PDF + PNG) from the aggregated tables")
    p.add_argument("name", choices=PLOTTED, metavar="NAME", help="figure name: " + ", ".join(PLOTTED))
    p.add_argument("--tables", default="results/tables", help="folder of <sweep>.csv, metrics/, rms/")
    p.add_argument(
        "--sweeps",
        nargs="*",
        default=None,
        help="sweeps to read (space or comma separated; default: the figure's usual ones;"
        " coord_check: parametrizations under TABLES/coord_check/)",
    )
    p.add_argument("--out", default=None, help="figure PDF (default figures/NAME.pdf); the PNG lands next to it")
    p.add_argument("--data", default=None, help="also write what the figure plots as CSV")
    p.set_defaults(func=_command("figures.plot"))

    p = sub.add_parser("claims", help="the replication scorecard: each claim of the paper, measured, with a verdict")
    p.add_argument("--tables", default="results/tables", help="folder of the aggregated tables")
    p.add_argument(
        "--inputs",
        nargs="*",
        default=None,
        help="read only these tables (paths; what the Snakemake rule depends on); default: all found",
    )
    p.add_argument("--out", default="results/tables/claims.csv", help="the scorecard table (CSV)")
    p.add_argument("--figure", default=None, help="also draw the scorecard figure (PDF; PNG next to it)")
    p.add_argument("--page", default=None, help="also write the scorecard as a markdown page")
    p.set_defaults(func=_command("figures.claims"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors exit 2 with a one-line message, Ctrl-C 130 (`train` first
    checkpoints on SIGINT as on SIGTERM), anything else is a bug and keeps its traceback. With
    UMUP_CELL_SERVER=N set, `train` runs in a forked child of a warm server instead (cell_server)."""
    from umup_repro.training.cell_server import batch_size

    own = argv is None  # this process's own command line (not a caller's list): see _quick_exit
    argv = sys.argv[1:] if argv is None else list(argv)
    cells = batch_size(os.environ) if argv[:1] == ["train"] else 0
    if cells:
        from umup_repro.training.cell_server import run_in_server

        served = run_in_server(argv, max_cells=cells)
        if served is not None:
            return served
    args = build_parser().parse_args(argv)
    command = f"umup-repro {args.command}"
    log = contextlib.ExitStack()
    try:
        log.enter_context(appended_log(getattr(args, "log", None), command))
    except OSError as err:
        from umup_repro.core.errors import os_error_message

        print(f"{command}: error: --log {os_error_message(err) or err}", file=sys.stderr, flush=True)
        return 2
    with log:
        code = _run(args, command)
    if own:  # about to exit
        _quick_exit()
    return code


def _quick_exit() -> None:
    """Spare the interpreter's last garbage collection over torch's and Lightning's objects: 1.3-1.8 s
    of every `train` process on 2 CPU cores (`umup-repro bench-cell`, "interpreter exit"). Frozen
    objects are only left out of that collection; atexit handlers and stream flushes still run."""
    import gc

    gc.freeze()


def _run(args: argparse.Namespace, command: str) -> int:
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"\n{command}: interrupted (SIGINT)", file=sys.stderr, flush=True)
        return 130
    except SystemExit as err:
        if isinstance(err.code, str):  # a command's own refusal: a user error too
            print(err.code, file=sys.stderr, flush=True)
            raise UserExit(err.code) from None
        raise
    except Exception as err:  # noqa: BLE001 - sorted below: a user error, or a bug re-raised
        message = user_error_message(err)
        if message is None:
            raise
        print(f"{command}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
