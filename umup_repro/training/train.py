"""`umup-repro train`: one cell, one Lightning run, into its run folder.

`run_cell(config, out_dir)` takes the run folder's lock, then checks the folder
(umup_repro/training/run_folder.py), loads the data, builds the Trainer and the CellModule
(umup_repro/training/lightning_module.py) and trains, resuming from the folder's checkpoint if it reads
back (umup_repro/training/run_format.py; an unusable one is moved aside and the cell starts over, with a
warning); the summary, written last, completes the folder.

A SIGKILLed run rerun with the same command continues from its last checkpoint and ends with the
same bytes in metrics.csv as an uninterrupted run (on CPU, fp32). SIGTERM, SIGINT (Ctrl-C), SIGUSR1
and SIGUSR2 save a checkpoint at the end of the current step and exit with 128 + the signal number,
without a summary, so a requeued job resumes.

Divergence: a training loss that is NaN, infinite or above `train.diverge_loss` ends the run: the
rows so far and a summary with `diverged: true` are written and the exit code is 0, so a sweep
goes on. Rerunning a complete run (summary present, same config) does nothing; a different config
in the same folder is an error. Lightning and torch are imported only once a cell is to be
trained: the CLI and a no-op rerun do without them.

A distributed cell (`distributed.*`, umup_repro/training/distributed.py) runs this same function in every
rank's process: rank 0 holds the folder's lock and writes its files and summary, the other ranks
only train (and take part in the collective checkpoints).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from umup_repro.core import safe_yaml
from umup_repro.core.config import RunConfig, config_hash, config_to_dict
from umup_repro.training import run_folder
from umup_repro.training.distributed import global_rank
from umup_repro.training.run_folder import copy_run
from umup_repro.training.run_format import CellError
from umup_repro.training.trainer import build_trainer, progress_mode, quiet_lightning, stop_signals


# SIGINT (Ctrl-C) too: a checkpoint, then exit 130 (Lightning would turn it into exit 1, no checkpoint)
@dataclass(frozen=True)
class RunOptions:
    """How a cell is run, as its caller chose (what is run is its config): see `run_cell`."""

    sweep: str | None = None
    progress: str = "auto"
    log_every: int | None = None
    keep_checkpoints: bool = False
    callbacks: Sequence = ()
    loggers: Sequence[str] = ()


def run_cell(
    config: RunConfig,
    out_dir: str | Path,
    *,
    sweep: str | None = None,
    progress: str = "auto",
    log_every: int | None = None,
    keep_checkpoints: bool = False,
    callbacks: Sequence = (),
    tokens: dict | None = None,
    loggers: Sequence[str] | None = None,
) -> int:
    """Train one cell into `out_dir`; returns the exit code (0: complete or diverged;
    128 + signum: stopped by a signal after saving a checkpoint). Raises CellError (missing data,
    a folder holding another config or in use by another process) before anything is trained.
    `callbacks` are extra Lightning callbacks (the benchmark's timer); `tokens` pre-loaded arrays;
    `loggers` names from umup_repro.training.loggers.KNOWN (default: $UMUP_LOGGERS, else none)."""
    from umup_repro.training.loggers import LoggerError, chosen

    started = time.perf_counter()
    out = Path(out_dir)
    cell = config_hash(config)
    options = RunOptions(
        sweep=sweep, progress=progress, log_every=log_every, keep_checkpoints=keep_checkpoints, callbacks=callbacks
    )
    if global_rank() != 0:  # rank 0 holds the folder (lock, files, summary); the others only train
        if run_folder.folder_state(out, config_to_dict(config)) == "complete":
            return 0
        quiet = replace(options, progress="none", keep_checkpoints=True)
        return _train(config, out, _load_data(config, tokens), quiet, started)
    run_folder.check_out(out)  # before creating anything in a folder that is not ours
    try:
        options = replace(options, loggers=chosen(loggers))
    except LoggerError as err:
        raise CellError(str(err)) from None
    loaded = None
    if not out.exists():  # the data is checked before the folder is created
        loaded = _load_data(config, tokens)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file on the path, a read-only file system, no permission
        raise CellError(f"--out {out}: cannot create the run folder ({err})") from None
    # Everything about the folder is decided under its lock: a second process on the same folder
    # decides nothing from a state the first one is changing (it is refused while the lock is held).
    with run_folder.locked(out):
        state = run_folder.folder_state(out, config_to_dict(config))
        if state == "complete":
            print(f"cell {cell}: already complete in {out}; nothing to do", flush=True)
            return 0
        data = loaded or _load_data(config, tokens)
        try:
            run_folder.prepare(out, config, state)
        except OSError as err:
            raise CellError(f"run folder {out}: cannot write to it ({err})") from None
        try:
            return _train(config, out, data, options, started)
        except MemoryError:
            raise CellError(_OUT_OF_MEMORY.format(cell=cell)) from None
        except RuntimeError as err:  # torch's OutOfMemoryError, CPU allocator failures
            if not _is_out_of_memory(err):
                raise
            raise CellError(_OUT_OF_MEMORY.format(cell=cell) + f" ({str(err).splitlines()[0][:200]})") from None


_OUT_OF_MEMORY = (
    "cell {cell}: out of memory; the model or batch does not fit on this machine: lower model.width,"
    " model.depth, model.vocab_size, model.seq_len or train.batch_size"
)


def _is_out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return (
        type(err).__name__ == "OutOfMemoryError"
        or "out of memory" in text.lower()
        or "can't allocate memory" in text
        or "not enough memory" in text.lower()
    )


def _load_data(config: RunConfig, tokens: dict | None) -> tuple[dict, list]:
    """(token arrays, validation batches); CellError when the data is missing or too short."""
    from umup_repro.data import DataUnavailableError, token_arrays, validation_batches

    try:
        if tokens is None:
            tokens = token_arrays(config)
        m, t = config.model, config.train
        for split in ("train", "validation"):
            if len(tokens[split]) < m.seq_len + 2:
                raise ValueError(
                    f"data: the {split} split has {len(tokens[split])} tokens, fewer than"
                    f" model.seq_len + 2 = {m.seq_len + 2}"
                )
        val = validation_batches(
            tokens["validation"], batch_size=t.batch_size, seq_len=m.seq_len, n_batches=config.data.val_batches
        )
    except (DataUnavailableError, ValueError, OSError) as err:
        from umup_repro.core.errors import os_error_message

        text = (os_error_message(err) if isinstance(err, OSError) else None) or err
        raise CellError(f"data ({config.data.corpus}): {text}") from err
    return tokens, val


def _usable_checkpoint(ckpt: Path, cell: str) -> Path | None:
    """The checkpoint to resume from, or None: an unusable one (truncated, empty, garbage, another
    cell's, one holding objects that are not tensors) is moved aside, unloaded, and kept; the cell
    starts over from scratch, with a warning; a fresh start
    gives the same run (same seed, batches by step)."""
    from umup_repro.training.run_format import checkpoint_problem

    if not ckpt.exists():
        return None
    problem = checkpoint_problem(ckpt, cell)
    if problem is None:
        return ckpt
    aside = ckpt.with_name(f"{ckpt.name}.unusable")
    for n in range(2, 1000):  # an earlier refused checkpoint is kept too
        if not aside.exists():
            break
        aside = ckpt.with_name(f"{ckpt.name}.unusable-{n}")
    ckpt.replace(aside)  # kept (never deleted, also when the run completes): run_folder.remove_checkpoints
    for name in ("metrics.csv", "rms.csv"):  # rows of the lost progress
        (ckpt.parent.parent / name).unlink(missing_ok=True)
    print(
        f"cell {cell}: warning: checkpoint {ckpt} is unusable ({problem}); moved to {aside.name},"
        " starting the cell over from scratch",
        file=sys.stderr,
        flush=True,
    )
    return None


def _checkpoint_if_usable(ckpt: Path, cell: str) -> Path | None:
    """What a rank other than 0 resumes from: the same answer as rank 0's `_usable_checkpoint`,
    without touching the folder (rank 0 moves an unusable checkpoint aside)."""
    from umup_repro.training.run_format import checkpoint_problem

    return ckpt if ckpt.exists() and checkpoint_problem(ckpt, cell) is None else None


def _train(config: RunConfig, out: Path, data: tuple[dict, list], options: RunOptions, started: float) -> int:
    """The run itself, in a prepared folder whose lock this process holds; `data`: (token arrays,
    validation batches) from `_load_data`."""
    import lightning as L
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from umup_repro.core.atomic import write_text
    from umup_repro.model.parametrization_table import parametrization_csv
    from umup_repro.training.lightning_module import CellModule, StepBatches
    from umup_repro.training.provenance import describe_device

    m, t = config.model, config.train
    tokens, val = data
    cell = config_hash(config)
    ckpt = out / run_folder.CHECKPOINT
    quiet_lightning()
    mode = progress_mode(options.progress)
    log_every = options.log_every or max(1, t.steps // 10)
    L.seed_everything(t.seed, workers=True, verbose=False)
    module = CellModule(config, val, folder=out, progress=mode, log_every=log_every)
    module.started = started
    if global_rank() == 0:  # what each weight got (the init draw: a resumed run rebuilds the same one from the seed)
        write_text(out / "parametrization.csv", parametrization_csv(module.model, config))
    from umup_repro.training.loggers import LoggerError, build_loggers

    try:
        experiment_loggers = build_loggers(options.loggers, out, cell) if global_rank() == 0 else []
    except LoggerError as err:
        raise CellError(str(err)) from None
    trainer = build_trainer(config, progress=mode, callbacks=options.callbacks, loggers=experiment_loggers)
    loader = StepBatches(tokens["train"], config, start=lambda: module.global_step, rank=lambda: trainer.global_rank)
    resume = _usable_checkpoint(ckpt, cell) if global_rank() == 0 else _checkpoint_if_usable(ckpt, cell)
    if mode != "none":
        what = f"resuming from {resume}" if resume else "starting"
        print(
            f"cell {cell} ({config.parametrization}, width {m.width}, depth {m.depth}, {t.steps} steps,"
            f" {describe_device(trainer.strategy.root_device)}): {what} -> {out}",
            flush=True,
        )

    with stop_signals(module):
        try:
            # weights_only: tensors and plain values only (verified so above, verify.checkpoint_problem)
            trainer.fit(module, train_dataloaders=loader, ckpt_path=resume, weights_only=True)
        except SIGTERMException:
            module.stop_signal = module.stop_signal or signal.SIGTERM
    if module.stop_signal is not None and not module.diverged and module.global_step < t.steps:
        name = signal.Signals(int(module.stop_signal)).name
        print(
            f"cell {cell}: stopped by signal {module.stop_signal} ({name}) at step {module.global_step};"
            f" checkpoint in {ckpt}; rerun the same command to resume",
            file=sys.stderr,
            flush=True,
        )
        return 128 + int(module.stop_signal)
    if not module.diverged and module.global_step < t.steps:
        raise RuntimeError(f"training stopped at step {module.global_step} of {t.steps} for no known reason")
    if not trainer.is_global_zero:
        return 0

    module.write_files()
    summary = run_folder.make_summary(config, module, trainer.strategy.root_device, out, sweep=options.sweep)
    run_folder.write_summary(out, summary)
    if not options.keep_checkpoints:
        run_folder.remove_checkpoints(out)
    if mode != "none":
        status = f"DIVERGED ({module.diverged})" if module.diverged else "done"
        print(
            f"cell {cell}: {status}; final train loss {summary['final_train_loss']}, val loss"
            f" {summary['final_val_loss']}, {summary['wall_seconds']:.1f} s, {summary['tokens_per_second']:.0f}"
            f" tok/s",
            flush=True,
        )
    return 0


# --------------------------------------------------------------------------------------------
# `umup-repro train`


STDIN_CONFIG_ENV = "UMUP_REPRO_STDIN_CONFIG"


def _stdin_config() -> str:
    """The config text piped to `train -`. Lightning's launcher starts the other ranks of a
    distributed cell by re-running this command, whose stdin the first rank has read: the text
    passes to them in the environment they inherit."""
    from umup_repro.core.config import ConfigError

    if global_rank() == 0 or STDIN_CONFIG_ENV not in os.environ:
        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"config from stdin (train -): not UTF-8 text ({err})") from None
        if "\0" in text:  # (nor could the environment carry it to the other ranks)
            raise ConfigError("config from stdin (train -): holds NUL bytes, binary data rather than YAML")
        os.environ[STDIN_CONFIG_ENV] = text
    return os.environ[STDIN_CONFIG_ENV]


def load_config(path: str | Path, sets: Sequence[str] = ()) -> RunConfig:
    """Read a YAML (or JSON) config, `-` for stdin, and apply `--set key=value` overrides
    (values parsed as YAML)."""
    from umup_repro.core.config import ConfigError, resolve_config
    from umup_repro.core.overrides import parse_sets

    p = Path(path)
    if str(path) != "-" and not p.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = safe_yaml.load(_stdin_config() if str(path) == "-" else p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    return resolve_config(raw if raw is not None else {}, **parse_sets(sets))


def main(args) -> int:
    from umup_repro.core.config import ConfigError
    from umup_repro.training.run_format import ReadBackError

    try:
        config = load_config(args.config, args.set or [])
        if args.cell and config_hash(config) != args.cell:
            raise ConfigError(
                f"--cell {args.cell}: the config resolves to cell {config_hash(config)}; the"
                " workflow and this package disagree on the config (stale DAG or changed defaults?)"
            )
        if config.train.warmup >= config.train.steps:  # allowed (a schedule study may want it), never silent
            print(
                f"umup-repro train: warning: train.warmup = {config.train.warmup} >= train.steps ="
                f" {config.train.steps}: the LR never reaches its peak (set train.warmup below train.steps)",
                file=sys.stderr,
                flush=True,
            )
        out = Path(args.out) if args.out else Path("results") / "runs" / "adhoc" / config_hash(config)
        if args.copy_from:
            return copy_run(config, args.copy_from, out, sweep=args.sweep)
        return run_cell(
            config,
            out,
            sweep=args.sweep,
            progress=args.progress,
            log_every=args.log_every,
            keep_checkpoints=args.keep_checkpoints,
            loggers=getattr(args, "logger", None),
        )
    except (ConfigError, CellError, ReadBackError) as err:
        print(f"umup-repro train: error: {err}", file=sys.stderr, flush=True)
        return 2
