"""One cell, one Lightning run (umup_repro.training.train, lightning_module, run_folder): run folder contract,
determinism, kill/resume, signals, divergence, bad configs, reruns.

Runs go through the real command (`python -m umup_repro.cli train`) in subprocesses with one
thread (bit-identical results need the same thread count; one thread is also fastest on a loaded
2-core machine). Models are tiny: width 64, depth 2, seq_len 64, batch 4.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from umup_repro.core.config import config_hash, config_to_dict, resolve_config
from umup_repro.model.optim import lr_multiplier
from umup_repro.training.run_format import METRICS_COLUMNS, RMS_COLUMNS
from umup_repro.training.trainer import progress_mode

STEPS, EVERY, BATCH, SEQ = 60, 10, 4, 64
TINY = {
    "parametrization": "umup",
    "model": {"width": 64, "depth": 2, "seq_len": SEQ},
    "train": {"steps": STEPS, "batch_size": BATCH, "warmup": 5, "checkpoint_every": EVERY},
    "log": {"rms_every": EVERY, "val_every": EVERY},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SUMMARY_KEYS = {  # docs/design.md, "Run folder"
    "cell",
    "sweep",
    "final_train_loss",
    "final_val_loss",
    "diverged",
    "steps_done",
    "wall_seconds",
    "tokens_per_second",
    "device",
    "versions",
    "git_commit",
    "code_fingerprint",
    "config_hash",
    "hostname",
    "diverged_reason",
}


def train_cmd(config_path: Path, out: Path, *sets: str) -> list[str]:
    cmd = [sys.executable, "-m", "umup_repro.cli", "train", str(config_path), "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def run(config_path: Path, out: Path, *sets: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(config_path, out, *sets), env=ENV, capture_output=True, text=True, timeout=timeout)


def start(config_path: Path, out: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(train_cmd(config_path, out), env=ENV, stdout=f, stderr=subprocess.STDOUT)


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def last_metrics_step(folder: Path) -> int:
    try:
        return int(pd.read_csv(folder / "metrics.csv")["step"].max())
    except (FileNotFoundError, pd.errors.EmptyDataError, ValueError):
        return -1


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def reference(cfg_file, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One uninterrupted run, the reference for every comparison."""
    out = tmp_path_factory.mktemp("runs") / "sweepname" / "ref"
    proc = run(cfg_file, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_run_folder_matches_the_contract(reference):
    out, proc = reference
    config = resolve_config(TINY)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "config.yaml",
        "metrics.csv",
        "parametrization.csv",
        "rms.csv",
        "summary.json",
    ]  # checkpoints removed at the end
    assert yaml.safe_load((out / "config.yaml").read_text()) == config_to_dict(config)

    metrics = pd.read_csv(out / "metrics.csv")
    assert tuple(metrics.columns) == METRICS_COLUMNS
    assert metrics["step"].tolist() == list(range(STEPS + 1))
    assert (metrics["tokens"] == metrics["step"] * BATCH * SEQ).all()
    assert metrics["train_loss"].iloc[:STEPS].notna().all() and math.isnan(metrics["train_loss"].iloc[STEPS])
    val_steps = metrics.loc[metrics["val_loss"].notna(), "step"].tolist()
    assert val_steps == list(range(0, STEPS + 1, EVERY))
    expected_lr = [config.train.lr * lr_multiplier(s, config.train) for s in range(STEPS + 1)]
    assert metrics["lr"].tolist() == pytest.approx(expected_lr, rel=1e-12)
    assert metrics["train_loss"].iloc[0] == pytest.approx(math.log(4096), abs=1.0)  # ~uniform at init

    rms = pd.read_csv(out / "rms.csv")
    assert tuple(rms.columns) == RMS_COLUMNS
    assert set(rms["kind"]) == {"weight", "activation", "grad"}
    # every EVERY steps, and the last step: end-of-training RMS (rms_end) is always measured
    assert sorted(rms["step"].unique()) == sorted(set(range(0, STEPS, EVERY)) | {STEPS - 1})
    assert rms["rms"].notna().all() and (rms["rms"] > 0).all()
    from umup_repro.model.decoder import build_model

    params = {name for name, _ in build_model(config).named_parameters()}
    for kind in ("weight", "grad"):
        assert set(rms.loc[(rms.kind == kind) & (rms.step == 0), "tensor"]) == params
    acts = set(rms.loc[(rms.kind == "activation") & (rms.step == 0), "tensor"])
    for i in range(2):
        for name in (
            "attn_in",
            "attn.q_proj",
            "attn.k_proj",
            "attn.v_proj",
            "attn.core",
            "attn.out_proj",
            "attn_resid",
            "ffn_in",
            "ffn.up_proj",
            "ffn.gate_proj",
            "ffn.act",
            "ffn.down_proj",
            "ffn_resid",
        ):
            assert f"blocks.{i}.{name}" in acts
    assert {"embedding", "final_norm", "readout"} <= acts

    text = (out / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert SUMMARY_KEYS <= set(summary)
    assert summary["cell"] == summary["config_hash"] == config_hash(config)
    assert summary["sweep"] == "sweepname"  # the run folder's parent by default
    assert summary["diverged"] is False and summary["diverged_reason"] is None
    assert summary["steps_done"] == STEPS and summary["tokens"] == STEPS * BATCH * SEQ
    assert summary["final_train_loss"] == metrics["train_loss"].iloc[STEPS - 1]
    assert summary["final_val_loss"] == metrics["val_loss"].iloc[STEPS]
    assert summary["final_val_loss"] < metrics["val_loss"].iloc[0]  # it learned something
    assert summary["tokens_per_second"] > 0 and summary["wall_seconds"] > 0
    assert {"torch", "lightning", "python", "umup-repro"} <= set(summary["versions"])
    assert summary["git_commit"]
    for key, value in {
        "model.width": 64,
        "train.steps": STEPS,
        "train.lr": config.train.lr,
        "hp.alpha_res": 1.0,
        "parametrization": "umup",
        "log.rms_every": EVERY,
    }.items():
        assert summary[key] == value


def test_cpu_chosen_automatically_and_plain_progress_lines(reference):
    out, proc = reference
    summary = json.loads((out / "summary.json").read_text())
    import torch

    if not torch.cuda.is_available():
        assert summary["device"].startswith("cpu")
    # not a TTY: no progress bar, plain periodic lines
    assert "step 6/60 loss " in proc.stdout and " val " in proc.stdout and " tok/s " in proc.stdout
    assert "it/s" not in proc.stdout + proc.stderr


def test_progress_mode_follows_the_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress_mode("auto") == "bar"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress_mode("auto") == "lines"


def test_same_config_twice_is_byte_identical(reference, cfg_file, tmp_path):
    out, _ = reference
    proc = run(cfg_file, tmp_path / "again")
    assert proc.returncode == 0, proc.stderr
    for name in ("metrics.csv", "rms.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name


def test_kill_and_signals_resume_exactly(reference, cfg_file, tmp_path):
    """SIGKILL after the first checkpoint; rerun resumes; SIGTERM that run after its next
    checkpoint (it saves and exits 143); rerun completes: the same bytes as the uninterrupted run."""
    ref, _ = reference
    out = tmp_path / "killed"
    ckpt = out / "checkpoints" / "last.ckpt"

    proc = start(cfg_file, out, tmp_path / "1.log")
    wait_for(ckpt.exists, proc, "the first checkpoint")
    proc.kill()
    proc.wait()
    assert not (out / "summary.json").exists(), "the run completed before it could be killed"
    assert ckpt.exists() and 0 <= last_metrics_step(out) < STEPS

    proc = start(cfg_file, out, tmp_path / "2.log")
    wait_for(lambda: last_metrics_step(out) >= 2 * EVERY, proc, "the second checkpoint")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, (tmp_path / "2.log").read_text()
    log = (tmp_path / "2.log").read_text()
    assert "resuming from" in log and "stopped by signal" in log
    assert not (out / "summary.json").exists() and ckpt.exists()

    proc = run(cfg_file, out)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from" in proc.stdout
    for name in ("metrics.csv", "rms.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attempts"] == 3 and summary["steps_done"] == STEPS
    assert summary["final_train_loss"] == json.loads((ref / "summary.json").read_text())["final_train_loss"]


def test_absurd_lr_is_recorded_as_diverged(cfg_file, tmp_path):
    out = tmp_path / "diverged"
    proc = run(cfg_file, out, "train.lr=1e6")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged"] is True and "step" in summary["diverged_reason"]
    assert summary["steps_done"] < STEPS
    metrics = pd.read_csv(out / "metrics.csv")
    last = metrics["train_loss"].dropna().iloc[-1]
    assert not math.isfinite(last) or last > resolve_config(TINY).train.diverge_loss
    assert not (out / "checkpoints").exists()
    # a diverged run is complete: rerunning does nothing
    again = run(cfg_file, out, "train.lr=1e6")
    assert again.returncode == 0 and "already complete" in again.stdout


def test_rerun_is_a_noop_and_another_config_is_refused(reference, cfg_file):
    out, _ = reference
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    started = time.perf_counter()
    proc = run(cfg_file, out)
    assert proc.returncode == 0 and "already complete" in proc.stdout
    assert time.perf_counter() - started < 15
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    proc = run(cfg_file, out, "train.lr=0.5")
    assert proc.returncode == 2
    assert str(out) in proc.stderr and "train.lr" in proc.stderr


@pytest.mark.parametrize(
    "sets, field",
    [
        (["model.widht=128"], "model.widht"),  # unknown key
        (["train.steps=many"], "train.steps"),  # wrong type
        (["data.corpus=text_files", "data.files=[/no/such/corpus.txt]"], "data.files"),  # missing corpus
    ],
)
def test_bad_config_fails_before_training_with_the_field_named(cfg_file, tmp_path, sets, field):
    out = tmp_path / "bad"
    proc = run(cfg_file, out, *sets)
    assert proc.returncode == 2
    assert field in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_bf16_mixed_runs_on_cpu(cfg_file, tmp_path):
    out = tmp_path / "bf16"
    proc = run(cfg_file, out, "train.precision=bf16-mixed", "train.steps=4", "log.val_every=2")
    assert proc.returncode == 0, proc.stderr
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["train_loss"].iloc[:4].notna().all() and metrics["val_loss"].notna().sum() == 3


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_schedule_shape(schedule):
    t = resolve_config({"train": {"steps": 100, "warmup": 10, "schedule": schedule, "final_lr_frac": 0.1}}).train
    f = [lr_multiplier(s, t) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:11]))
    if schedule == "cosine":
        assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[100] == pytest.approx(0.1)
    else:
        assert f[10:] == [1.0] * 91
