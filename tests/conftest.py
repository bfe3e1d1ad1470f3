"""Shared test set-up: an offline token cache reused across the session (and across local runs)."""

import os
import tempfile
from pathlib import Path

import pytest

# Tests never touch the network, and share one token cache unless the caller chose one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("UMUP_CACHE", str(Path(tempfile.gettempdir()) / "umup-repro-test-cache"))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def real_batch():
    """A batch of real text from the default offline corpus: (batch, seq_len + 1) tokens."""
    from umup_repro import data
    from umup_repro.config import resolve_config

    def make(batch_size=8, seq_len=128, step=0, seed=0, vocab_size=4096):
        config = resolve_config({"model": {"seq_len": seq_len, "vocab_size": vocab_size}})
        tokens = data.token_arrays(config)["train"]
        return data.train_batch(tokens, seed=seed, step=step, batch_size=batch_size, seq_len=seq_len)

    return make
