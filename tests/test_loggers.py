"""Optional experiment loggers: off by default, a clear error when a chosen one is not installed,
and with TensorBoard installed the metrics.csv rows reach its event file."""

import numpy as np
import pytest

from umup_repro.core.config import resolve_config
from umup_repro.training.loggers import LoggerError, chosen
from umup_repro.training.run_format import CellError
from umup_repro.training.train import run_cell

VOCAB = 128


def tiny(tmp_path, **kwargs):
    config = resolve_config(
        {
            "model": {"width": 32, "depth": 1, "vocab_size": VOCAB, "seq_len": 16, "head_dim": 16},
            "train": {"steps": 3, "batch_size": 2, "warmup": 1},
            "data": {"val_batches": 1},
            "log": {"rms_every": 10, "val_every": 2},
        }
    )
    rng = np.random.default_rng(0)
    tokens = {s: rng.integers(0, VOCAB, 2000).astype(np.int32) for s in ("train", "validation")}
    return run_cell(config, tmp_path / "run", progress="none", tokens=tokens, **kwargs)


def test_off_by_default_and_chosen_by_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("UMUP_LOGGERS", raising=False)
    assert chosen() == []
    assert tiny(tmp_path) == 0
    assert not (tmp_path / "run" / "tensorboard").exists()
    monkeypatch.setenv("UMUP_LOGGERS", "tensorboard, wandb")
    assert chosen() == ["tensorboard", "wandb"]
    with pytest.raises(LoggerError, match="unknown logger.*mlflow"):
        chosen(["mlflow"])


def test_a_missing_package_is_named_before_training(tmp_path):
    try:
        import wandb  # noqa: F401

        pytest.skip("wandb is installed here")
    except ImportError:
        pass
    with pytest.raises(CellError, match="pip install wandb"):
        tiny(tmp_path, loggers=["wandb"])
    assert not (tmp_path / "run" / "summary.json").exists()


def test_tensorboard_gets_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert tiny(tmp_path, loggers=["tensorboard"]) == 0
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    train = [(e.step, e.value) for e in events.Scalars("train_loss")]
    import pandas as pd

    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    metrics = rows.dropna(subset=["train_loss"])
    assert [s for s, _ in train] == list(metrics["step"])
    assert [v for _, v in train] == pytest.approx(list(metrics["train_loss"]), rel=1e-6)  # float32 in the event file
    val = rows.dropna(subset=["val_loss"])
    assert [e.step for e in events.Scalars("val_loss")] == list(val["step"])
    assert (tmp_path / "run" / "summary.json").exists()
