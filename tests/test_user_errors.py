"""Issue 27, exit codes: a user error of any command is exit 2 with a one-line message naming the
field or file and no traceback; a full disk says *no space* and names the file; Ctrl-C is 130
(`train` checkpoints first and resumes). Real `umup-repro` processes, nothing trained but the
SIGINT and full-disk runs (TINY shapes).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_hostile import ENV, TINY, cfg  # noqa: F401 (cfg: the fixture)

UMUP = [sys.executable, "-m", "umup_repro.cli"]


def umup(
    *args: str, cwd: Path | None = None, stdin: bytes | None = None, env: dict | None = None, preexec_fn=None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*UMUP, *map(str, args)],
        input=stdin,
        capture_output=True,
        env=env or ENV,
        cwd=cwd,
        timeout=300,
        preexec_fn=preexec_fn,
    )


def assert_user_error(proc: subprocess.CompletedProcess, *named: str) -> str:
    """Exit 2, no traceback, the error on one line naming each of `named`."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("umup-repro")]
    assert lines, err
    for name in named:
        assert name in lines[-1], (name, err)
    return err


def test_train_refusals_of_bad_data_name_the_file(cfg, tmp_path):
    not_tok = tmp_path / "tok.json"
    not_tok.write_text('{"not": "a tokenizer"}')
    assert_user_error(
        umup("train", cfg, "--set", f"data.tokenizer={not_tok}", "--out", tmp_path / "r1", "--progress", "none"),
        str(not_tok),
        "not a tokenizer",
    )
    no_text = tmp_path / "c.jsonl"
    no_text.write_text('{"body": "hello world"}\n')
    assert_user_error(
        umup(
            "train",
            cfg,
            "--set",
            "data.corpus=text_files",
            "--set",
            f"data.files=[{no_text}]",
            "--out",
            tmp_path / "r2",
            "--progress",
            "none",
        ),
        str(no_text),
        "text",
    )
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"\xff\xfe caf\xe9\n\nmore text\n")
    assert_user_error(
        umup(
            "train",
            cfg,
            "--set",
            "data.corpus=text_files",
            "--set",
            f"data.files=[{latin}]",
            "--out",
            tmp_path / "r3",
            "--progress",
            "none",
        ),
        str(latin),
        "UTF-8",
    )
    assert not any((tmp_path / r).exists() for r in ("r1", "r2", "r3"))


@pytest.mark.parametrize("stdin", [b"\xff\xfe\x00\x01binary", b"model:\x00 {width: 32}\n"])
def test_binary_config_on_stdin_is_refused(tmp_path, stdin):
    assert_user_error(umup("train", "-", "--out", tmp_path / "r", "--progress", "none", stdin=stdin), "stdin")


def test_a_path_component_too_long_is_refused(cfg, tmp_path):
    assert_user_error(umup("train", cfg, "--out", tmp_path / ("a" * 300), "--progress", "none"), "a" * 300)


def test_aggregate_refusals(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_user_error(
        umup("aggregate", "--preset", "smoke", "--tables", blocker / "tables", "--runs", tmp_path), str(blocker)
    )
    assert_user_error(
        umup("aggregate", "--preset", "smoke", "--sweep", "nosuch", "--transfer-summary", tmp_path / "t.csv"), "nosuch"
    )
    assert_user_error(
        umup(
            "aggregate",
            "--preset",
            "smoke",
            "--sweep",
            "lr_width",
            "--tables",
            tmp_path / "none",
            "--transfer-summary",
            tmp_path / "t.csv",
        ),
        "lr_width.csv",
    )
    decision = tmp_path / "search" / "search_staged" / "lr.json"
    decision.parent.mkdir(parents=True)
    for damaged in ("garbage", '{"groups": [1, 2]}', '{"other": 1}'):
        decision.write_text(damaged)
        assert_user_error(
            umup(
                "aggregate",
                "--preset",
                "tiny",
                "--sweep",
                "search_staged",
                "--search-dir",
                tmp_path / "search",
                "--runs",
                tmp_path,
            ),
            str(decision),
        )
    assert not (tmp_path / "t.csv").exists()


def test_plot_refusals_exit_2(tmp_path):
    (tmp_path / "outdir").mkdir()
    assert_user_error(
        umup("plot", "transfer_width", "--out", tmp_path / "outdir", "--tables", tmp_path), "--out", "folder"
    )
    assert_user_error(umup("plot", "no_such_figure", "--tables", tmp_path), "no_such_figure")


def test_cells_and_coord_check_refusals(tmp_path):
    assert_user_error(umup("cells", "--preset", "smoke", "--utilisation", "0"), "--utilisation")
    listed = tmp_path / "summary.json"
    listed.write_text("[1, 2]")
    assert_user_error(umup("cells", "--preset", "smoke", "--measured", listed), str(listed), "list")
    assert_user_error(
        umup("coord-check", "--parametrization", "umup", "--widths", "64,abc", "--out", tmp_path), "--widths", "abc"
    )


def _file_size_limit(limit: int):
    def set_limit():  # writes past `limit` bytes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


def test_a_full_disk_during_a_run_names_the_file(cfg, tmp_path):
    out = tmp_path / "run"
    proc = umup("train", cfg, "--out", out, "--progress", "none", preexec_fn=_file_size_limit(60_000))
    assert_user_error(proc, "no space", str(out / "checkpoints" / "last.ckpt"))
    assert not list((out / "checkpoints").glob(".*tmp*"))  # no half-written checkpoint left
    again = umup("train", cfg, "--out", out, "--progress", "none")  # space again: the run completes
    assert again.returncode == 0, again.stderr.decode()


def test_a_full_disk_during_a_cache_build_names_the_file(cfg, tmp_path):
    env = {**ENV, "UMUP_CACHE": str(tmp_path / "cache")}
    proc = umup(
        "train", cfg, "--out", tmp_path / "run", "--progress", "none", env=env, preexec_fn=_file_size_limit(200_000)
    )
    err = assert_user_error(proc, "no space", str(tmp_path / "cache" / "tokens"))
    assert ".bin" in err.splitlines()[-1]
    assert not list((tmp_path / "cache" / "tokens").glob("*.bin"))  # no entry that looks complete


def test_ctrl_c_checkpoints_exits_130_and_resumes(cfg, tmp_path):
    """SIGINT to `train` mid-run: a checkpoint, exit 130, a one-line message; the rerun resumes
    and ends with the same metrics as an uninterrupted run."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert umup("train", cfg, "--out", ref, "--progress", "none").returncode == 0
    slow = tmp_path / "slow.yaml"
    slow.write_text(json.dumps({**TINY, "train": {**TINY["train"], "steps": 400, "checkpoint_every": 1}}))
    proc = subprocess.Popen(
        [*UMUP, "train", slow, "--out", out, "--progress", "lines", "--log-every", "1"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "SIGINT" in stderr and "resume" in stderr
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "summary.json").exists()
    resumed = umup("train", slow, "--out", out, "--progress", "lines")
    assert resumed.returncode == 0 and b"resuming from" in resumed.stdout, resumed.stderr.decode()


def test_ctrl_c_in_other_commands_exits_130_with_a_message(tmp_path):
    """Ctrl-C while a command computes: `bench` prints its first line once torch is imported and then
    computes for tens of seconds, so the signal lands in the computation."""
    proc = subprocess.Popen(
        [*UMUP, "bench"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        # as from a terminal: a job started in the background (CI's runner can be one) inherits
        # SIGINT ignored, and Python then installs no KeyboardInterrupt handler at all
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    first = proc.stdout.readline()
    assert first.startswith("umup-repro bench:"), first
    time.sleep(1)  # into the timed forward+backward passes
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted (SIGINT)" in stderr


def test_os_errors_outside_paths_stay_bugs():
    from umup_repro.core.errors import user_error_message

    assert user_error_message(OSError(5, "Input/output error")) is None  # EIO: not the user's
    assert "no space" in user_error_message(OSError(28, "No space left on device", "f.csv"))
    assert user_error_message(KeyError("x")) is None
    assert os.strerror(36) in user_error_message(OSError(36, os.strerror(36), "p"))


def test_damaged_tables_and_bad_options_are_named(cfg, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    for sweep in ("lr_width", "hp_pairs"):
        (tables / f"{sweep}.csv").write_bytes(b'cell,x\n"unclosed\n')
    assert_user_error(
        umup(
            "aggregate",
            "--preset",
            "smoke",
            "--sweep",
            "lr_width",
            "--tables",
            tables,
            "--transfer-summary",
            tmp_path / "t.csv",
        ),
        str(tables / "lr_width.csv"),
    )
    assert_user_error(
        umup(
            "transfer-error",
            "--preset",
            "smoke",
            "--sweep",
            "hp_pairs",
            "--tables",
            tables,
            "--out",
            tmp_path / "te.csv",
        ),
        str(tables / "hp_pairs.csv"),
    )
    (tables / "transfer_summary.csv").write_bytes(b'cell,x\n"unclosed\n')
    assert_user_error(umup("claims", "--tables", tables, "--out", tmp_path / "c.csv"), "transfer_summary.csv")
    assert_user_error(umup("train", cfg, "--out", tmp_path / "r", "--log", tmp_path, "--progress", "none"), "--log")
    assert_user_error(umup("bench-data", "--batches", "-1"), "--batches")
    assert not (tmp_path / "r").exists()


def test_tables_without_the_columns_read_are_named(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "lr_width.csv").write_text("cell,x\n1,2\n")
    assert_user_error(
        umup(
            "aggregate",
            "--preset",
            "smoke",
            "--sweep",
            "lr_width",
            "--tables",
            tables,
            "--transfer-summary",
            tmp_path / "t.csv",
        ),
        str(tables / "lr_width.csv"),
        "model.width",
    )
    assert_user_error(
        umup("plot", "transfer_width", "--tables", tables, "--sweeps", "lr_width", "--out", tmp_path / "f.pdf"),
        "column",
    )
