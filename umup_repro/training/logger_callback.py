"""The Lightning callback that feeds the optional experiment loggers (umup_repro/training/loggers.py)
the rows metrics.csv gets. Its own module because it needs Lightning at import, and the loggers'
choice is checked before Lightning is loaded."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback


class MetricsToLoggers(Callback):
    """Sends each finished step's row (train loss, val loss, lr: what metrics.csv gets) to the
    trainer's loggers."""

    def __init__(self) -> None:
        self.sent = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # rows before the current step are final; the current one once it has its train loss
        self._send(trainer, pl_module, below=trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        self._send(trainer, pl_module)
        for logger in trainer.loggers:
            logger.finalize("success")

    def _send(self, trainer, pl_module, below: float = float("inf")) -> None:
        """Log the rows after the last one sent and before step `below`."""
        for step in sorted(s for s in pl_module.metrics if self.sent < s < below):
            row = {k: v for k, v in pl_module.metrics[step].items() if v is not None and k != "tokens"}
            for logger in trainer.loggers:
                logger.log_metrics(row, step=step)
            self.sent = step
