"""Distributed cells on GPUs (skipped without two CUDA devices): FSDP, which Lightning refuses on
CPU, trains like DDP and like one GPU, and a killed FSDP run resumes from its gathered checkpoint.

Same tiny cell as tests/test_distributed.py, fp32. Tolerance 1e-3 as there; on GPUs the runs
also differ by non-deterministic kernels (attention backward), ~1e-5 in the loss over 12 steps.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch
from test_distributed import cfg, losses, one, run, start, two  # noqa: F401 (fixtures)
from test_train import wait_for

pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
FSDP = ("distributed.devices=2", "distributed.strategy=fsdp")


def test_fsdp_trains_like_ddp_and_one_gpu(cfg, one, two, tmp_path):
    out = tmp_path / "fsdp"
    run(cfg, out, *FSDP)
    for ref in (one, two):
        for column in ("train_loss", "val_loss"):
            diff = (losses(ref)[column] - losses(out)[column]).abs().max()
            assert diff < 1e-3, (ref.name, column, diff)


def test_killed_fsdp_run_resumes(cfg, tmp_path):
    full = tmp_path / "full"
    run(cfg, full, *FSDP)
    out = tmp_path / "killed"
    proc = start(cfg, out, tmp_path / "1.log", *FSDP)
    wait_for((out / "checkpoints" / "last.ckpt").exists, proc, "the first checkpoint", timeout=240)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the run completed before it could be killed"
    run(cfg, out, *FSDP)
    diff = (losses(full)["train_loss"] - losses(out)["train_loss"]).abs().max()
    assert diff < 1e-3, diff
