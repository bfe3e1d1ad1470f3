"""The exit-code table (docs/training.md, linked from the README) matches every command. The table
is read from that page; every `umup-repro` command the parser knows is run as a real process in a refusing case
and must exit with the table's user-error code, with a message and no traceback. A command added
without a case here fails the test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_hostile import ENV

ROOT = Path(__file__).resolve().parents[1]
UMUP = [sys.executable, "-m", "umup_repro.cli"]

# one refusing case per command: (arguments, a word the message must name)
REFUSING = {
    "train": (["train", "{tmp}/none.yaml"], "none.yaml"),
    "coord-check": (["coord-check", "--parametrization", "umup", "--widths", "64,abc", "--out", "{tmp}"], "--widths"),
    "bench": (["bench", "--width", "0", "--steps", "0", "--repeats", "1"], "model.width"),
    "bench-data": (["bench-data", "--set", "model.width=abc"], "model.width"),
    "analysis": (
        ["analysis", "low_rank", "--table", "{tmp}/t.csv", "--figure", "{tmp}/f.pdf", "--slopes-table", "{tmp}/s.csv"],
        "--slopes-table",
    ),
    "cells": (["cells", "--preset", "nosuch"], "nosuch"),
    "aggregate": (["aggregate", "--preset", "smoke", "--sweep", "nosuch"], "nosuch"),
    "search-stage": (["search-stage", "--preset", "smoke", "--sweep", "nosuch", "--stage", "lr"], "nosuch"),
    "extend-grid": (["extend-grid", "--preset", "smoke", "--sweep", "nosuch", "--pass", "1"], "nosuch"),
    "transfer-error": (
        ["transfer-error", "--preset", "smoke", "--sweep", "hp_pairs", "--tables", "{tmp}", "--out", "{tmp}/te.csv"],
        "hp_pairs.csv",
    ),
    "bench-dag": (["bench-dag", "--preset", "nosuch"], "nosuch"),
    "bench-cell": (["bench-cell", "--preset", "nosuch"], "nosuch"),
    "cell-server": (["cell-server", "{tmp}/nosuchdir/s.sock"], "nosuchdir"),
    "plot": (["plot", "no_such_figure", "--tables", "{tmp}"], "no_such_figure"),
    "claims": (["claims", "--inputs", "{tmp}/missing.csv", "--out", "{tmp}/c.csv"], "missing.csv"),
}


def readme_exit_codes() -> dict[str, str]:
    """{code: meaning} from the exit-code table of docs/training.md."""
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    table = text[text.index("**Exit codes**") :]
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", table.split("\n\n", 2)[1], re.MULTILINE)
    return {code.strip(): meaning for code, meaning in rows if code.strip() not in ("Exit code", "---")}


def test_the_readme_table_has_the_codes_the_cli_uses():
    codes = readme_exit_codes()
    assert set(codes) == {"0", "2", "128 + N", "1"}, codes
    assert "user error" in codes["2"] and "no traceback" in codes["2"]
    assert "130 for SIGINT" in codes["128 + N"] and "143 for SIGTERM" in codes["128 + N"]
    assert "bug" in codes["1"]


def test_every_command_has_a_refusing_case():
    from umup_repro.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == set(REFUSING)


@pytest.mark.parametrize("command", sorted(REFUSING))
def test_each_command_refuses_with_the_user_error_code(command, tmp_path):
    args, named = REFUSING[command]
    user_error = int(next(c for c, m in readme_exit_codes().items() if "user error" in m))
    proc = subprocess.run(
        [*UMUP, *(a.format(tmp=tmp_path) for a in args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == user_error, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().startswith("umup-repro") or "usage:" in proc.stderr, proc.stderr
    assert named in proc.stderr, proc.stderr
