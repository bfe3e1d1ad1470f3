"""The LightningModule of one cell (`CellModule`) and its training batches (`StepBatches`).

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
write-then-rename, so each is always whole.

Importing this module imports Lightning and torch: umup_repro.training.train imports it only when a cell
is actually trained, so a no-op rerun stays fast.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from umup_repro.core.atomic import atomic_path, fsync_file
from umup_repro.core.config import RunConfig, config_hash
from umup_repro.data import train_batch
from umup_repro.model.decoder import build_model, count_parameters
from umup_repro.model.optim import build_optimizer, build_scheduler, lr_multiplier
from umup_repro.model.rms import record_activations, rms_rows, weight_rms
from umup_repro.training.distributed import full_parameters
from umup_repro.training.run_folder import write_rows
from umup_repro.training.run_format import CHECKPOINT, STATE_KEY, RunFolderError


def _unwrapped(name: str) -> str:
    """A tensor's name without the FSDP wrappers' path parts (same rows with and without FSDP)."""
    return name.replace("_fsdp_wrapped_module.", "")


class StepBatches:
    """Training batches by global step: iterating yields `(t, k, rows)` for t from the trainer's
    current global step (read when iteration starts, i.e. after a restore) to `train.steps - 1`
    and k over the `distributed.accumulate` micro-batches, `rows` being this rank's k-th slice of
    `train_batch(seed, step=t)`: N processes see the same tokens as one. Stateless (`state_dict`
    is empty), so Lightning treats it as resumable: the restored global step is the whole loader
    state."""

    def __init__(
        self, tokens: np.ndarray, config: RunConfig, start: Callable[[], int], rank: Callable[[], int] = lambda: 0
    ):
        # data.train_tokens (TP-V's setting): windows from the split's first N tokens only, so data repeats
        self.tokens = tokens[: config.data.train_tokens] if config.data.train_tokens else tokens
        self.config, self.start, self.rank = config, start, rank

    def __len__(self) -> int:
        return self.config.train.steps * self.config.distributed.accumulate

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        t, m, d = self.config.train, self.config.model, self.config.distributed
        micro = self.config.micro_batch
        first = self.rank() * micro * d.accumulate
        for step in range(self.start(), t.steps):
            batch = train_batch(self.tokens, seed=t.seed, step=step, batch_size=t.batch_size, seq_len=m.seq_len)
            for k in range(d.accumulate):
                yield step, k, batch[first + k * micro : first + (k + 1) * micro]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class CellModule(L.LightningModule):
    """The model of one cell, its optimizer and schedule, and everything the run logs.

    All logged rows are module state (saved in checkpoints), so a resumed run's files equal an
    uninterrupted run's."""

    def __init__(
        self,
        config: RunConfig,
        val_batches: Sequence[torch.Tensor],
        *,
        folder: Path | None = None,
        progress: str = "none",
        log_every: int = 0,
    ):
        super().__init__()
        self.config = config
        self.model = build_model(config)  # from the RNG state seeded by the caller
        self.n_parameters = count_parameters(self.model)  # before any sharding
        self._val_cpu = list(val_batches)
        self._val_dev: list[torch.Tensor] | None = None
        self.folder, self.progress, self.log_every = folder, progress, log_every
        self.tokens_per_step = config.train.batch_size * config.model.seq_len
        # logged state (checkpointed)
        self.metrics: dict[int, dict] = {}
        self.rms: list[tuple] = []
        self.diverged: str | None = None
        self.train_seconds = 0.0  # time in training steps (validation and checkpoints excluded)
        self.timed_tokens = 0
        self.wall_before = 0.0  # wall seconds of earlier attempts, up to their last checkpoint
        self.attempts = 1
        # per process
        self.started = time.perf_counter()
        self.stop_signal: int | None = None
        self._acts: dict | None = None
        self._mark: float | None = None
        self._last_print: tuple[float, int] | None = None

    # ---- optimisation ----------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.config)
        scheduler = build_scheduler(optimizer, self.config)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _row(self, step: int) -> dict:
        if step not in self.metrics:
            eta = self.config.train.lr
            assert eta is not None, "a resolved config (resolve_config fills train.lr)"
            self.metrics[step] = {
                "tokens": step * self.tokens_per_step,
                "train_loss": None,
                "val_loss": None,
                "lr": eta * lr_multiplier(step, self.config.train),
            }
        return self.metrics[step]

    def _mean_over_ranks(self, x: torch.Tensor) -> float:
        if self.trainer.world_size > 1:
            x = self.trainer.strategy.reduce(x.detach().float(), reduce_op="mean")
        return float(x.detach().float())

    def training_step(self, batch, batch_idx):
        step, micro, ids = batch
        t = self.global_step
        if int(step) != t:
            raise RuntimeError(f"data out of step: got the batch of step {int(step)} at global step {t}")
        if self.diverged:  # the rest of a diverged step's micro-batches
            return None
        if int(micro) == 0 and (t % self.config.log.rms_every == 0 or t == self.config.train.steps - 1):
            with record_activations(self.model) as acts:  # RMS of rank 0's first micro-batch
                loss = self.model.loss(ids)
            self._acts = dict(acts)
        else:
            loss = self.model.loss(ids)
        value = self._mean_over_ranks(loss)  # every rank sees the same value and decides alike
        accumulate = self.config.distributed.accumulate
        row = self._row(t)
        row["train_loss"] = value if accumulate == 1 or int(micro) == 0 else row["train_loss"] + value
        if int(micro) == accumulate - 1 and accumulate > 1:
            row["train_loss"] /= accumulate
        bound = self.config.train.diverge_loss
        if not math.isfinite(value) or value > bound:
            self.diverged = (
                f"train loss {value} at step {t}"
                if not math.isfinite(value)
                else f"train loss {value:.4g} above train.diverge_loss={bound:g} at step {t}"
            )
            if self._acts is not None:  # the weights and activations that diverged; no gradients
                with full_parameters(self.trainer):
                    self.rms += [(t, _unwrapped(n), "weight", v) for n, v in weight_rms(self.model).items()]
                self.rms += [(t, n, "activation", v) for n, v in self._acts.items()]
                self._acts = None
            self.trainer.should_stop = True
            return None  # no backward, no update
        if self.progress == "bar":
            self.log("loss", value, prog_bar=True, logger=False, on_step=True, on_epoch=False)
        return loss

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """An LR so large that Adam's step overflows float32 (train.lr: 1e38) diverges the run at
        this step, recorded as such, instead of crashing it."""
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        except RuntimeError as err:
            if "overflow" not in str(err) or self.diverged:
                raise
            self.diverged = f"optimizer step overflowed at step {self.global_step} ({err}; train.lr too large)"
            self.trainer.should_stop = True

    def on_before_optimizer_step(self, optimizer) -> None:
        # Gradients here are before clipping; weights are still those of state t.
        if self._acts is not None and not self.diverged:
            t = self.global_step
            with full_parameters(self.trainer):
                rows = rms_rows(self._acts, self.model)
            self.rms += [(t, _unwrapped(r["tensor"]), r["kind"], r["rms"]) for r in rows]
        self._acts = None

    # ---- validation --------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, step: int, to_bar: bool = True) -> float:
        if self._val_dev is None:
            self._val_dev = [c.to(self.device) for b in self._val_cpu for c in b.split(self.config.micro_batch)]
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

    def _stop_requested(self) -> bool:
        """A stop signal seen by any rank stops every rank at the same step (the checkpoint is
        collective), with the highest signal number any rank saw."""
        if self.trainer.world_size > 1:
            mine = torch.tensor([int(self.stop_signal or 0)], device=self.device)
            seen = int(self.trainer.strategy.reduce(mine, reduce_op="max"))
            if seen:
                self.stop_signal = seen
        return self.stop_signal is not None

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if int(batch[1]) != self.config.distributed.accumulate - 1:  # inside a step's accumulation
            return
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
        if self._stop_requested():
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
        val = next(
            (
                self.metrics[s]["val_loss"]
                for s in sorted(self.metrics, reverse=True)
                if self.metrics[s]["val_loss"] is not None
            ),
            None,
        )
        loss = row.get("train_loss")
        parts = [
            f"step {g}/{self.config.train.steps}",
            f"loss {loss:.4f}" if loss is not None else "loss -",
            f"val {val:.4f}" if val is not None else "val -",
            f"lr {row.get('lr', 0.0):.3g}",
            f"tok/s {rate:.0f}",
        ]
        print(" ".join(parts), flush=True)

    # ---- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Checkpoint (model, optimizer, schedule, loops, our rows) and the files, atomically."""
        if self.folder is None:
            return
        if not self.trainer.is_global_zero:  # collective: every rank takes part, rank 0 writes
            self.trainer.save_checkpoint(self.folder / CHECKPOINT)
            return
        self.write_files()  # first: once a checkpoint exists, so do the files
        with atomic_path(self.folder / CHECKPOINT) as tmp:
            self.trainer.save_checkpoint(tmp)
            fsync_file(tmp)  # on disk before the rename, like every other atomic write

    def write_files(self) -> None:
        assert self.folder is not None, "only rank 0 (which holds the run folder) writes files"
        write_rows(self.folder, self.metrics, self.rms)

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
