"""Issue 27, checkpoints: a checkpoint is never unpickled beyond tensors and plain values. A
checkpoints/last.ckpt replaced by a pickle that runs code is refused unrun, named, kept (also once
the run completes), and the cell starts over; real `umup-repro train` processes on TINY shapes.
"""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from test_faults import train_cmd
from test_hostile import ENV, TINY, cfg  # noqa: F401 (cfg: the fixture)

from umup_repro.core.config import config_hash, resolve_config
from umup_repro.training.run_format import checkpoint_problem, read_summary


class _Payload:
    """Unpickling it runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _write_payload(path: Path, marker: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "torch":  # a real torch zip checkpoint with our state key, one entry the payload
        torch.save({"umup_repro": {"config_hash": "x", "payload": _Payload(marker)}, "state_dict": {}}, path)
    else:  # a bare pickle (torch's legacy format); "pickle4": a protocol the restricted unpickler lacks
        protocol = 4 if kind == "pickle4" else 2
        path.write_bytes(pickle.dumps({"umup_repro": _Payload(marker)}, protocol=protocol))


@pytest.mark.parametrize("kind", ["torch", "pickle", "pickle4"])
def test_checkpoint_problem_never_runs_a_payload(tmp_path, kind):
    ckpt, marker = tmp_path / "last.ckpt", tmp_path / "pwned"
    _write_payload(ckpt, marker, kind)
    problem = checkpoint_problem(ckpt, "c")
    assert not marker.exists()
    assert "does not load safely" in problem
    assert kind == "pickle4" or "system" in problem  # the object it holds is named


@pytest.mark.parametrize("kind", ["torch", "pickle"])
def test_train_refuses_a_code_running_checkpoint_names_it_and_keeps_it(cfg, tmp_path, kind):
    """The folder state a kill leaves (config.yaml, a checkpoint) with the checkpoint replaced by a
    payload: the trainer does not run it, names the file, starts over, and the refused file
    survives the run's completion (checkpoints/ is otherwise removed)."""
    out, marker = tmp_path / "run", tmp_path / "pwned"
    first = subprocess.run(train_cmd(cfg, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    (out / "summary.json").unlink()  # incomplete again: it resumes from its checkpoint, if usable
    ckpt = out / "checkpoints" / "last.ckpt"
    _write_payload(ckpt, marker, kind)
    blob = ckpt.read_bytes()
    proc = subprocess.run(train_cmd(cfg, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists(), "the checkpoint's pickle payload ran"
    assert str(ckpt) in proc.stderr and "does not load safely" in proc.stderr and "Traceback" not in proc.stderr
    kept = out / "checkpoints" / "last.ckpt.unusable"
    assert kept.read_bytes() == blob  # kept, unchanged, after the run completed
    assert not ckpt.exists()
    read_summary(out / "summary.json", config_hash(resolve_config(TINY)))


def test_a_second_refused_checkpoint_does_not_replace_the_first(cfg, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    first = subprocess.run(train_cmd(cfg, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    (out / "summary.json").unlink()
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.ckpt.unusable").write_bytes(b"the first refused one")
    _write_payload(out / "checkpoints" / "last.ckpt", marker, "pickle")
    proc = subprocess.run(train_cmd(cfg, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "checkpoints" / "last.ckpt.unusable").read_bytes() == b"the first refused one"
    assert (out / "checkpoints" / "last.ckpt.unusable-2").exists() and not marker.exists()


def test_lightning_resumes_with_weights_only(cfg, tmp_path, monkeypatch):
    """Lightning's own load on resume is restricted too (it unpickles the file a second time): with
    our check bypassed, the payload still does not run (in-process: the check is patched out)."""
    from umup_repro.cli import main as cli_main
    from umup_repro.training import run_format as verify

    out, marker = tmp_path / "run", tmp_path / "pwned"
    first = subprocess.run(train_cmd(cfg, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    (out / "summary.json").unlink()
    _write_payload(out / "checkpoints" / "last.ckpt", marker, "torch")
    monkeypatch.setattr(verify, "checkpoint_problem", lambda path, cell: None)  # as if a file changed after the check
    with pytest.raises(Exception, match="Weights only load failed"):
        cli_main(["train", str(cfg), "--out", str(out), "--progress", "none"])
    assert not marker.exists()
