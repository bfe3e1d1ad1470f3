"""The Lightning Trainer of one cell: its settings (precision, determinism, strategy, no
Lightning checkpoints of its own), the progress shown, Lightning's chatter quieted, and stop
signals turned into a checkpoint at the end of the current step. `umup_repro.training.train` builds
one per cell; Lightning is imported only when it does.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from umup_repro.core.config import RunConfig

STOP_SIGNALS = tuple(s for s in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2") if hasattr(signal, s))


def progress_mode(progress: str) -> str:
    if progress == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    if progress not in ("bar", "lines", "none"):
        raise ValueError(f"progress must be auto, bar, lines or none (got {progress!r})")
    return progress


@contextlib.contextmanager
def stop_signals(module) -> Iterator[None]:
    """SIGTERM/SIGINT/SIGUSR1/SIGUSR2 ask for a checkpoint at the end of the current step, then a stop.
    (Lightning adds its own SIGTERM handler on top of this one and calls it too.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, _frame):
        module.stop_signal = signum
        if signum == signal.SIGINT:  # a second Ctrl-C stops at once, without the checkpoint
            signal.signal(signal.SIGINT, signal.SIG_DFL)

    for name in STOP_SIGNALS:
        sig = getattr(signal, name)
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def quiet_lightning() -> None:
    for name in (
        "lightning.pytorch",
        "lightning.fabric",
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")  # divergence
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 vs torch 2.13 deprecation
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")  # loggers get every row
    # a local run on a machine that has `srun` is not a mistake (SLURM jobs run us through sbatch)
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used.*")


def build_trainer(config: RunConfig, *, progress: str, callbacks: Sequence = (), loggers: Sequence = ()):
    """The Trainer of one cell: CPU or accelerators, chosen automatically; one process per device
    (distributed.devices per node, distributed.nodes nodes); `loggers`: optional Lightning loggers
    (umup_repro/training/loggers.py), fed the metrics.csv rows."""
    import lightning as L
    import torch
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from umup_repro.training.distributed import build_strategy

    plugins: list[Any] = []
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))  # requeueing is the scheduler's job
    callbacks = list(callbacks)
    if loggers:
        from umup_repro.training.logger_callback import MetricsToLoggers

        callbacks.append(MetricsToLoggers())
    if progress == "bar":
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks.append(TQDMProgressBar())
    cpu = not torch.cuda.is_available()
    t = config.train
    torch.set_float32_matmul_precision("high" if t.precision == "tf32" else "highest")  # TF32 tensor cores or not
    return L.Trainer(
        accelerator="auto",
        devices=config.distributed.devices,
        num_nodes=config.distributed.nodes,
        strategy=build_strategy(config),
        accumulate_grad_batches=config.distributed.accumulate,
        precision="bf16-mixed" if t.precision == "bf16-mixed" else "32-true",
        max_steps=t.steps,
        max_epochs=-1,
        logger=list(loggers) or False,
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
