"""One cell, one Lightning run: metrics, per-tensor RMS, checkpoints, resume, divergence.

`run_cell(config, out_dir)` trains one resolved config into a run folder (DESIGN.md):

    config.yaml    the resolved config, written before training starts
    metrics.csv    step, tokens, train_loss, val_loss, lr
    rms.csv        step, tensor, kind, rms   (kind: weight, activation, grad)
    checkpoints/   last.ckpt while the run is incomplete (removed at the end unless kept)
    summary.json   written last, atomically: its presence means the run is complete

Conventions. "Step t" is the state after t optimizer updates. Row t of metrics.csv holds the
training loss of batch t at that state (before update t), `tokens` = t·batch·seq_len (the tokens
the weights have been trained on), `lr` = η·schedule(t) (the global LR update t uses; each tensor's
LR is that times its factor) and `val_loss` at that state where evaluated: every `log.val_every`
steps, at step 0 and after the last step (row `train.steps`, which has no training loss). RMS rows
at step t (every `log.rms_every` steps from 0, and at the last step `train.steps - 1`, so end-of-training
RMS is always measured) are the weights at state t and the activations and
(unclipped) gradients of batch t.

Why it is exactly resumable: the batch of step t is `train_batch(seed, step=t)` whatever happened
before (the loader starts at the restored global step, and each batch carries its step, checked
against the trainer's); all logged rows live in the module's state and are saved in the checkpoint
with the model, optimizer, schedule and loop state; files on disk are rewritten from that state,
write-then-rename, so each is always whole. A SIGKILLed run rerun with the same command continues
from its last checkpoint and ends with the same bytes in metrics.csv as an uninterrupted run (on
CPU, fp32). SIGTERM, SIGUSR1 and SIGUSR2 save a checkpoint at the end of the current step and
exit with 128 + the signal number, without a summary, so a requeued job resumes.

Divergence: a training loss that is NaN, infinite or above `train.diverge_loss` ends the run: the
rows so far and a summary with `diverged: true` are written and the exit code is 0, so a sweep
goes on. Rerunning a complete run (summary present, same config) does nothing; a different config
in the same folder is an error.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import yaml

from umup_repro.atomic import write_text
from umup_repro.config import RunConfig, TrainConfig, config_hash, config_to_dict

if TYPE_CHECKING:  # torch and Lightning are imported where needed: a no-op rerun stays fast
    import numpy as np
    import torch

METRICS_COLUMNS = ("step", "tokens", "train_loss", "val_loss", "lr")
RMS_COLUMNS = ("step", "tensor", "kind", "rms")
CHECKPOINT = Path("checkpoints") / "last.ckpt"
STOP_SIGNALS = tuple(s for s in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, s))
STATE_KEY = "umup_repro"  # our entry in the Lightning checkpoint

# Dense bf16 tensor-core peak FLOP/s by GPU name (substring match), for MFU. FP8 runs are reported
# against the bf16 peak too, so their MFU compares directly with bf16 runs'.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12,
                   "RTX 4090": 165e12, "RTX 3090": 71e12}


class CellError(RuntimeError):
    """A cell that cannot start: its data is missing, or its run folder holds another config.
    Raised before anything is trained or written; the message says what to fix."""


class RunFolderError(CellError):
    """The run folder holds another config (or something that is not a run)."""


# --------------------------------------------------------------------------------------------
# Schedule, files, provenance


def lr_multiplier(step: int, t: TrainConfig) -> float:
    """Schedule factor at step `step`: linear warmup to 1 over `warmup` steps (step 0 gets
    1/warmup), then cosine from 1 to `final_lr_frac` at `steps`, or constant 1."""
    if step < t.warmup:
        return (step + 1) / t.warmup
    if t.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - t.warmup) / max(1, t.steps - t.warmup))
    return t.final_lr_frac + (1.0 - t.final_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _fmt(x: Optional[float]) -> str:
    return "" if x is None else repr(float(x))


def metrics_csv(metrics: dict[int, dict]) -> str:
    lines = [",".join(METRICS_COLUMNS)]
    for step in sorted(metrics):
        r = metrics[step]
        lines.append(f"{step},{r['tokens']},{_fmt(r['train_loss'])},{_fmt(r['val_loss'])},{_fmt(r['lr'])}")
    return "\n".join(lines) + "\n"


def rms_csv(rows: list) -> str:
    lines = [",".join(RMS_COLUMNS)] + [f"{s},{name},{kind},{_fmt(v)}" for s, name, kind, v in rows]
    return "\n".join(lines) + "\n"


def flatten_config(config: RunConfig) -> dict[str, Any]:
    """`{"model.width": 256, "train.lr": 2.0, "hp.alpha_res": 1.0, "parametrization": "umup", ...}`."""
    flat: dict[str, Any] = {}
    for key, value in config_to_dict(config).items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat


def git_commit() -> tuple[str, Optional[bool]]:
    """(commit of the source tree this package runs from, whether it has uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return commit or "unknown", bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("umup-repro", "torch", "lightning", "numpy", "pydantic", "tokenizers", "datasets"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def describe_device(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def peak_flops(device: torch.device) -> Optional[float]:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def _finite_or_none(x: Optional[float]) -> Optional[float]:
    return x if x is not None and math.isfinite(x) else None


# --------------------------------------------------------------------------------------------
# Data


class StepBatches:
    """Training batches by global step: iterating yields `(t, train_batch(seed, step=t))` for t
    from the trainer's current global step (read when iteration starts, i.e. after a restore) to
    `train.steps - 1`. Stateless (`state_dict` is empty), so Lightning treats it as resumable: the
    restored global step is the whole loader state."""

    def __init__(self, tokens: np.ndarray, config: RunConfig, start: Callable[[], int]):
        self.tokens, self.config, self.start = tokens, config, start

    def __len__(self) -> int:
        return self.config.train.steps

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        from umup_repro.data import train_batch

        t, m = self.config.train, self.config.model
        for step in range(self.start(), t.steps):
            yield step, train_batch(self.tokens, seed=t.seed, step=step, batch_size=t.batch_size, seq_len=m.seq_len)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# --------------------------------------------------------------------------------------------
# The LightningModule (built lazily so that `import umup_repro.train` does not import Lightning)


def _module_class():
    import lightning as L
    import torch

    from umup_repro.model import build_model
    from umup_repro.optim import build_optimizer
    from umup_repro.rms import record_activations, rms_rows, weight_rms

    class CellModule(L.LightningModule):
        """The model of one cell, its optimizer and schedule, and everything the run logs.

        All logged rows are module state (saved in checkpoints), so a resumed run's files equal an
        uninterrupted run's."""

        def __init__(self, config: RunConfig, val_batches: Sequence[torch.Tensor], *,
                     folder: Optional[Path] = None, progress: str = "none", log_every: int = 0):
            super().__init__()
            self.config = config
            self.model = build_model(config)  # from the RNG state seeded by the caller
            self._val_cpu = list(val_batches)
            self._val_dev: Optional[list[torch.Tensor]] = None
            self.folder, self.progress, self.log_every = folder, progress, log_every
            self.tokens_per_step = config.train.batch_size * config.model.seq_len
            # logged state (checkpointed)
            self.metrics: dict[int, dict] = {}
            self.rms: list[tuple] = []
            self.diverged: Optional[str] = None
            self.train_seconds = 0.0  # time in training steps (validation and checkpoints excluded)
            self.timed_tokens = 0
            self.wall_before = 0.0  # wall seconds of earlier attempts, up to their last checkpoint
            self.attempts = 1
            # per process
            self.started = time.perf_counter()
            self.stop_signal: Optional[int] = None
            self._acts: Optional[dict] = None
            self._mark: Optional[float] = None
            self._last_print: Optional[tuple[float, int]] = None

        # ---- optimisation ----------------------------------------------------------------
        def configure_optimizers(self):
            optimizer = build_optimizer(self.model, self.config)
            t = self.config.train
            # LambdaLR multiplies each group's initial lr (η·factor); weight decay is untouched.
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, t))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

        def _row(self, step: int) -> dict:
            if step not in self.metrics:
                self.metrics[step] = {"tokens": step * self.tokens_per_step, "train_loss": None, "val_loss": None,
                                      "lr": self.config.train.lr * lr_multiplier(step, self.config.train)}
            return self.metrics[step]

        def training_step(self, batch, batch_idx):
            step, ids = batch
            t = self.global_step
            if int(step) != t:
                raise RuntimeError(f"data out of step: got the batch of step {int(step)} at global step {t}")
            if t % self.config.log.rms_every == 0 or t == self.config.train.steps - 1:
                with record_activations(self.model) as acts:
                    loss = self.model.loss(ids)
                self._acts = dict(acts)
            else:
                loss = self.model.loss(ids)
            value = float(loss.detach().float())
            self._row(t)["train_loss"] = value
            bound = self.config.train.diverge_loss
            if not math.isfinite(value) or value > bound:
                self.diverged = (f"train loss {value} at step {t}" if not math.isfinite(value)
                                 else f"train loss {value:.4g} above train.diverge_loss={bound:g} at step {t}")
                if self._acts is not None:  # the weights and activations that diverged; no gradients
                    self.rms += [(t, n, "weight", v) for n, v in weight_rms(self.model).items()]
                    self.rms += [(t, n, "activation", v) for n, v in self._acts.items()]
                    self._acts = None
                self.trainer.should_stop = True
                return None  # no backward, no update
            if self.progress == "bar":
                self.log("loss", value, prog_bar=True, logger=False, on_step=True, on_epoch=False)
            return loss

        def on_before_optimizer_step(self, optimizer) -> None:
            # Gradients here are before clipping; weights are still those of state t.
            if self._acts is not None and not self.diverged:
                t = self.global_step
                self.rms += [(t, r["tensor"], r["kind"], r["rms"]) for r in rms_rows(self._acts, self.model)]
            self._acts = None

        # ---- validation --------------------------------------------------------------------
        @torch.no_grad()
        def validate(self, step: int, to_bar: bool = True) -> float:
            if self._val_dev is None:
                self._val_dev = [b.to(self.device) for b in self._val_cpu]
            was_training = self.model.training
            self.model.eval()
            bf16 = self.config.train.precision == "bf16-mixed"
            ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with ctx:
                losses = [self.model.loss(b).float() for b in self._val_dev]
            self.model.train(was_training)
            value = float(torch.stack(losses).mean())
            self._row(step)["val_loss"] = value
            if self.progress == "bar" and to_bar:  # (Lightning refuses self.log in on_train_start)
                self.log("val", value, prog_bar=True, logger=False, on_step=True, on_epoch=False)
            return value

        # ---- the step boundary: validation, progress, checkpoints, signals ------------------
        def on_train_start(self) -> None:
            if self.global_step == 0 and self._row(0)["val_loss"] is None:
                self.validate(0, to_bar=False)
            self._mark = time.perf_counter()
            self._last_print = (self._mark, self.global_step)

        def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
            now = time.perf_counter()
            if self._mark is not None:
                self.train_seconds += now - self._mark
                self.timed_tokens += self.tokens_per_step
            if self.diverged:
                return
            g, log, steps = self.global_step, self.config.log, self.config.train.steps
            if g % log.val_every == 0 or g == steps:
                self.validate(g)
            if self.progress == "lines" and (g % self.log_every == 0 or g == steps):
                self.print_line(g)
            if self.stop_signal is not None:
                self.save_checkpoint()
                self.trainer.should_stop = True
            elif g % self.config.train.checkpoint_every == 0 and g < steps:
                self.save_checkpoint()
            self._mark = time.perf_counter()

        def print_line(self, g: int) -> None:
            now = time.perf_counter()
            t0, g0 = self._last_print or (self.started, 0)
            rate = (g - g0) * self.tokens_per_step / max(now - t0, 1e-9)
            self._last_print = (now, g)
            row = self.metrics.get(g - 1, {})
            val = next((self.metrics[s]["val_loss"] for s in sorted(self.metrics, reverse=True)
                        if self.metrics[s]["val_loss"] is not None), None)
            loss = row.get("train_loss")
            parts = [f"step {g}/{self.config.train.steps}", f"loss {loss:.4f}" if loss is not None else "loss -",
                     f"val {val:.4f}" if val is not None else "val -", f"lr {row.get('lr', 0.0):.3g}",
                     f"tok/s {rate:.0f}"]
            print(" ".join(parts), flush=True)

        # ---- checkpoints ---------------------------------------------------------------------
        def save_checkpoint(self) -> None:
            """Checkpoint (model, optimizer, schedule, loops, our rows) and the files, atomically."""
            if self.folder is None:
                return
            self.write_files()  # first: once a checkpoint exists, so do the files
            path = self.folder / CHECKPOINT
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            try:
                self.trainer.save_checkpoint(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

        def write_files(self) -> None:
            write_text(self.folder / "metrics.csv", metrics_csv(self.metrics))
            write_text(self.folder / "rms.csv", rms_csv(self.rms))

        def wall_seconds(self) -> float:
            return self.wall_before + (time.perf_counter() - self.started)

        def on_save_checkpoint(self, checkpoint: dict) -> None:
            checkpoint[STATE_KEY] = {
                "metrics": {int(k): dict(v) for k, v in self.metrics.items()},
                "rms": [list(r) for r in self.rms],
                "train_seconds": self.train_seconds,
                "timed_tokens": self.timed_tokens,
                "wall_seconds": self.wall_seconds(),
                "attempts": self.attempts,
                "config_hash": config_hash(self.config),
            }

        def on_load_checkpoint(self, checkpoint: dict) -> None:
            state = checkpoint[STATE_KEY]
            if state["config_hash"] != config_hash(self.config):
                raise RunFolderError("checkpoint was written by another config")
            self.metrics = {int(k): dict(v) for k, v in state["metrics"].items()}
            self.rms = [tuple(r) for r in state["rms"]]
            self.train_seconds = state["train_seconds"]
            self.timed_tokens = state["timed_tokens"]
            self.wall_before = state["wall_seconds"]
            self.attempts = state["attempts"] + 1

    return CellModule


# --------------------------------------------------------------------------------------------
# Running one cell


def copy_run(config: RunConfig, src: str | Path, out: str | Path, *, sweep: Optional[str] = None) -> int:
    """Reuse a complete run of the same cell from another sweep's folder (a cell shared by two
    sweeps is trained once). The config must resolve to the same cell; summary.json goes last."""
    src, out = Path(src), Path(out)
    resolved = config_to_dict(config)
    if folder_state(src, resolved) != "complete":
        raise CellError(f"--copy-from {src}: not a complete run of cell {config_hash(config)}")
    if folder_state(out, resolved) == "complete":
        print(f"cell {config_hash(config)}: already complete in {out}; nothing to do", flush=True)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "metrics.csv", "rms.csv"):
        if (src / name).exists():
            write_text(out / name, (src / name).read_text(encoding="utf-8"))
    summary = json.loads((src / "summary.json").read_text(encoding="utf-8"))
    summary.update(sweep=sweep if sweep is not None else out.resolve().parent.name, copied_from=str(src))
    write_text(out / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
    print(f"cell {config_hash(config)}: copied the complete run from {src}", flush=True)
    return 0


def folder_state(out: Path, resolved: dict) -> str:
    """"complete" (summary present, same config), "resume" (same config, incomplete) or "new".
    Raises RunFolderError when the folder holds another config."""
    cfg = out / "config.yaml"
    if cfg.exists():
        existing = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        if existing != resolved:
            diff = sorted(k for k in set(_flat(existing)) | set(_flat(resolved))
                          if _flat(existing).get(k) != _flat(resolved).get(k))
            raise RunFolderError(
                f"run folder {out} holds a different config (differs in: {', '.join(diff[:8]) or 'layout'});"
                " choose another --out or delete the folder")
        return "complete" if (out / "summary.json").exists() else "resume"
    if (out / "summary.json").exists():
        raise RunFolderError(f"run folder {out} has a summary.json but no config.yaml; not a run folder of this tool")
    return "new"


def _flat(d: Any, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _progress_mode(progress: str) -> str:
    if progress == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    if progress not in ("bar", "lines", "none"):
        raise ValueError(f"progress must be auto, bar, lines or none (got {progress!r})")
    return progress


@contextlib.contextmanager
def _stop_signals(module) -> Iterator[None]:
    """SIGTERM/SIGUSR1/SIGUSR2 ask for a checkpoint at the end of the current step, then a stop.
    (Lightning adds its own SIGTERM handler on top of this one and calls it too.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, _frame):
        module.stop_signal = signum

    for name in STOP_SIGNALS:
        sig = getattr(signal, name)
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")  # divergence
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 vs torch 2.13 deprecation


def build_trainer(config: RunConfig, *, progress: str, callbacks: Sequence = ()):
    """The Trainer of one cell: CPU or one accelerator, chosen automatically."""
    import lightning as L
    import torch
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    plugins = []
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))  # requeueing is the scheduler's job
    callbacks = list(callbacks)
    if progress == "bar":
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks.append(TQDMProgressBar())
    cpu = not torch.cuda.is_available()
    t = config.train
    return L.Trainer(
        accelerator="auto",
        devices=1,
        precision="32-true" if t.precision == "32" else "bf16-mixed",
        max_steps=t.steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,  # ours: after validation, in the run folder, atomically
        enable_model_summary=False,
        enable_progress_bar=progress == "bar",
        num_sanity_val_steps=0,
        gradient_clip_val=t.grad_clip,
        gradient_clip_algorithm="norm",
        deterministic=True if cpu else "warn",  # GPU: flash-attention backward has no deterministic kernel
        use_distributed_sampler=False,
        callbacks=callbacks,
        plugins=plugins or None,
        default_root_dir=None,
    )


def run_cell(config: RunConfig, out_dir: str | Path, *, sweep: Optional[str] = None, progress: str = "auto",
             log_every: Optional[int] = None, keep_checkpoints: bool = False, callbacks: Sequence = (),
             tokens: Optional[dict] = None) -> int:
    """Train one cell into `out_dir`; returns the exit code (0: complete or diverged;
    128 + signum: stopped by a signal after saving a checkpoint). Raises CellError (missing data,
    a folder holding another config or in use by another process) before anything is trained.
    `callbacks` are extra Lightning callbacks (the benchmark's timer); `tokens` pre-loaded arrays."""
    started = time.perf_counter()
    out = Path(out_dir)
    resolved = config_to_dict(config)
    cell = config_hash(config)
    state = folder_state(out, resolved)
    if state == "complete":
        print(f"cell {cell}: already complete in {out}; nothing to do", flush=True)
        return 0
    try:
        from umup_repro.data import DataUnavailableError, token_arrays, validation_batches

        if tokens is None:
            tokens = token_arrays(config)
        m, t = config.model, config.train
        for split in ("train", "validation"):
            if len(tokens[split]) < m.seq_len + 2:
                raise ValueError(f"data: the {split} split has {len(tokens[split])} tokens, fewer than"
                                 f" model.seq_len + 2 = {m.seq_len + 2}")
        val = validation_batches(tokens["validation"], batch_size=t.batch_size, seq_len=m.seq_len,
                                 n_batches=config.data.val_batches)
    except (DataUnavailableError, ValueError, OSError) as err:
        raise CellError(f"data ({config.data.corpus}): {err}") from err

    out.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise CellError(f"run folder {out} is in use by another process") from None
    try:
        return _train_locked(config, out, state, tokens, val, cell=cell, started=started, sweep=sweep,
                             progress=progress, log_every=log_every, keep_checkpoints=keep_checkpoints,
                             callbacks=callbacks)
    finally:
        lock.release()


def _train_locked(config: RunConfig, out: Path, state: str, tokens: dict, val: list, *, cell: str,
                  started: float, sweep, progress, log_every, keep_checkpoints, callbacks) -> int:
    if state == "new" or not (out / "config.yaml").exists():
        write_text(out / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    elif (out / "summary.json").exists():  # completed by another process meanwhile
        return 0
    m, t = config.model, config.train
    ckpt = out / CHECKPOINT
    for stale in ckpt.parent.glob(".*.tmp-*") if ckpt.parent.exists() else ():
        stale.unlink(missing_ok=True)

    import lightning as L

    _quiet_lightning()
    mode = _progress_mode(progress)
    log_every = log_every or max(1, t.steps // 10)
    L.seed_everything(t.seed, workers=True, verbose=False)
    module = _module_class()(config, val, folder=out, progress=mode, log_every=log_every)
    module.started = started
    loader = StepBatches(tokens["train"], config, start=lambda: module.global_step)
    trainer = build_trainer(config, progress=mode, callbacks=callbacks)
    resume = ckpt if ckpt.exists() else None
    if mode != "none":
        what = f"resuming from {resume}" if resume else "starting"
        print(f"cell {cell} ({config.parametrization}, width {m.width}, depth {m.depth}, {t.steps} steps,"
              f" {describe_device(trainer.strategy.root_device)}): {what} -> {out}", flush=True)

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    with _stop_signals(module):
        try:
            trainer.fit(module, train_dataloaders=loader, ckpt_path=resume, weights_only=False)
        except SIGTERMException:
            module.stop_signal = module.stop_signal or signal.SIGTERM
    if module.stop_signal is not None and not module.diverged and module.global_step < t.steps:
        print(f"cell {cell}: stopped by signal {module.stop_signal} at step {module.global_step};"
              f" checkpoint in {ckpt}", file=sys.stderr, flush=True)
        return 128 + int(module.stop_signal)
    if not module.diverged and module.global_step < t.steps:
        raise RuntimeError(f"training stopped at step {module.global_step} of {t.steps} for no known reason")

    module.write_files()
    summary = make_summary(config, module, trainer.strategy.root_device, out, sweep=sweep)
    write_text(out / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
    if not keep_checkpoints:
        shutil.rmtree(out / CHECKPOINT.parent, ignore_errors=True)
    if mode != "none":
        status = f"DIVERGED ({module.diverged})" if module.diverged else "done"
        print(f"cell {cell}: {status}; final train loss {summary['final_train_loss']}, val loss"
              f" {summary['final_val_loss']}, {summary['wall_seconds']:.1f} s, {summary['tokens_per_second']:.0f}"
              f" tok/s", flush=True)
    return 0


def make_summary(config: RunConfig, module, device: torch.device, out: Path, *, sweep: Optional[str]) -> dict:
    from umup_repro.model import count_parameters, flops_per_token

    metrics = module.metrics
    trained = [s for s in sorted(metrics) if metrics[s]["train_loss"] is not None]
    validated = [s for s in sorted(metrics) if metrics[s]["val_loss"] is not None]
    steps_done = module.global_step if not module.diverged else (trained[-1] if trained else 0)
    tps = module.timed_tokens / module.train_seconds if module.train_seconds > 0 else 0.0
    fpt = flops_per_token(config)
    peak = peak_flops(device) if config.train.precision == "bf16-mixed" else None  # bf16 peak
    commit, dirty = git_commit()
    summary = {
        "cell": config_hash(config),
        "sweep": sweep if sweep is not None else out.resolve().parent.name,
        "final_train_loss": _finite_or_none(metrics[trained[-1]]["train_loss"]) if trained else None,
        "final_val_loss": _finite_or_none(metrics[validated[-1]]["val_loss"]) if validated else None,
        "final_val_step": validated[-1] if validated else None,
        "diverged": bool(module.diverged),
        "diverged_reason": module.diverged,
        "steps_done": int(steps_done),
        "tokens": int(steps_done) * module.tokens_per_step,
        "wall_seconds": round(module.wall_seconds(), 3),
        "train_seconds": round(module.train_seconds, 3),
        "tokens_per_second": round(tps, 1),
        "flops_per_token": fpt,
        "mfu": round(tps * fpt / peak, 4) if peak else None,
        "parameters": count_parameters(module.model),
        "attempts": module.attempts,
        "device": describe_device(device),
        "hostname": socket.gethostname(),
        "versions": package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "config_hash": config_hash(config),
    }
    summary.update(flatten_config(config))
    return summary


# --------------------------------------------------------------------------------------------
# `umup-repro train`


def load_config(path: str | Path, sets: Sequence[str] = ()) -> RunConfig:
    """Read a YAML (or JSON) config, `-` for stdin, and apply `--set key=value` overrides
    (values parsed as YAML)."""
    from umup_repro.config import ConfigError, resolve_config

    p = Path(path)
    if str(path) != "-" and not p.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(sys.stdin.read() if str(path) == "-" else p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    overrides = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return resolve_config(raw if raw is not None else {}, **overrides)


def main(args) -> int:
    from umup_repro.config import ConfigError

    try:
        config = load_config(args.config, args.set or [])
        if args.cell and config_hash(config) != args.cell:
            raise ConfigError(f"--cell {args.cell}: the config resolves to cell {config_hash(config)}; the"
                              " workflow and this package disagree on the config (stale DAG or changed defaults?)")
        out = Path(args.out) if args.out else Path("results") / "runs" / "adhoc" / config_hash(config)
        if args.copy_from:
            return copy_run(config, args.copy_from, out, sweep=args.sweep)
        return run_cell(config, out, sweep=args.sweep, progress=args.progress, log_every=args.log_every,
                        keep_checkpoints=args.keep_checkpoints)
    except (ConfigError, CellError) as err:
        print(f"umup-repro train: error: {err}", file=sys.stderr, flush=True)
        return 2
