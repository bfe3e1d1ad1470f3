"""Shared test set-up: an offline token cache reused across the session (and across local runs)."""

import os
import tempfile
import time
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
    from umup_repro.core.config import resolve_config

    def make(batch_size=8, seq_len=128, step=0, seed=0, vocab_size=4096):
        config = resolve_config({"model": {"seq_len": seq_len, "vocab_size": vocab_size}})
        tokens = data.token_arrays(config)["train"]
        return data.train_batch(tokens, seed=seed, step=step, batch_size=batch_size, seq_len=seq_len)

    return make


@pytest.fixture(scope="session")
def smoke_local(tmp_path_factory):
    """The `smoke` preset run end to end with local jobs on 2 cores, in a scratch copy of the
    workflow. Read-only for tests: the DAG tests that change files work on a copy of it, and the
    SLURM tests compare a cluster run against it."""
    from workflow_run import snakemake, workflow_copy

    root = workflow_copy(tmp_path_factory.mktemp("smoke"))
    dry = snakemake(root, "-n", "figures/transfer_width.pdf", "--config", "preset=smoke")
    started = time.perf_counter()
    run = snakemake(root, "--cores", "2", "--config", "preset=smoke")
    seconds = time.perf_counter() - started
    print(f"smoke preset end to end: {seconds:.0f} s")
    return {"root": root, "dry": dry.stdout + dry.stderr, "run": run, "seconds": seconds}
