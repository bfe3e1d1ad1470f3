"""Issue 27, things lost and messages: a job refused because its cell is in use never erases the
running job's log; "holds a different config" names the real difference first; a warmup that
reaches past the run is warned about. Real `umup-repro train` processes (TINY).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from test_hostile import ENV, TINY, cfg  # noqa: F401 (cfg: the fixture)

UMUP = [sys.executable, "-m", "umup_repro.cli"]


def test_a_job_refused_because_the_cell_is_in_use_keeps_the_running_jobs_log(cfg, tmp_path):
    """The rule's command (workflow/rules/sweeps.smk): a second job on a running cell is refused
    (exit 2); both attempts are in the attempts log, the running one's lines intact."""
    slow = tmp_path / "slow.yaml"
    slow.write_text(json.dumps({**TINY, "train": {**TINY["train"], "steps": 300, "checkpoint_every": 5}}))
    out, log = tmp_path / "run", tmp_path / "logs" / "cell.attempts.log"
    cmd = [*UMUP, "train", str(slow), "--out", str(out), "--progress", "lines", "--log-every", "1", "--log", str(log)]
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.2)
    second = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "in use" in second.stderr, second.stderr
    first_output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, first_output
    text = log.read_text()
    assert text.count("== umup-repro train, pid") == 2
    assert f"pid {first.pid}," in text
    assert "in use by another process" in text
    for line in first_output.splitlines():  # every line the running job printed is in the log, whole
        assert line in text, line
    assert "done; final train loss" in text


def test_a_different_config_names_parametrization_first_not_its_hp_defaults(tmp_path):
    out = tmp_path / "run"
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(TINY))
    b.write_text(yaml.safe_dump({**TINY, "parametrization": "sp"}))
    from umup_repro.core.config import config_to_dict, resolve_config

    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(resolve_config(TINY)), sort_keys=False))
    proc = subprocess.run(
        [*UMUP, "train", str(b), "--out", str(out), "--progress", "none"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "differs in: parametrization (folder 'umup', asked 'sp')" in line
    assert "hp.alpha_res" not in line and "follow from the parametrization" in line
    proc = subprocess.run(
        [
            *UMUP,
            "train",
            str(a),
            "--out",
            str(out),
            "--progress",
            "none",
            "--set",
            "model.width=64",
            "--set",
            "train.lr=0.5",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "model.width (folder 32, asked 64)" in line
    assert line.index("model.width") < line.index("train.lr")


def test_warmup_not_below_steps_is_warned_about(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "steps": 2, "warmup": 5}}))
    proc = subprocess.run(
        [*UMUP, "train", str(config), "--out", str(tmp_path / "r"), "--progress", "none"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: train.warmup = 5 >= train.steps = 2" in proc.stderr


def test_presets_keep_warmup_below_steps():
    from umup_repro.sweeps.grid import expand_preset

    for preset in ("smoke", "tiny", "paper", "large", "scale", "large_smoke"):
        for cells in expand_preset(preset).values():
            assert all(c.config.train.warmup < c.config.train.steps for c in cells), preset


def test_rule_passes_an_attempts_log():
    rule = (Path(__file__).resolve().parents[1] / "workflow" / "rules" / "sweeps.smk").read_text()
    assert "--log results/logs/train/{wildcards.sweep}/{wildcards.cell}.attempts.log" in rule
