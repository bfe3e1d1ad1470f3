"""The code checks the house relies on, run as tests so the README's one test command runs them:
ruff's lint and format (settings in pyproject.toml) and mypy on the packages it is configured for
(`[tool.mypy] files`). The import layers are checked in tests/test_layers.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / cmd[0]), *cmd[1:]], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_lint_is_clean():
    done = run("ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-4000:]


def test_ruff_format_is_clean():
    done = run("ruff", "format", "--check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-4000:]


def test_mypy_is_clean_on_the_typed_packages():
    done = run("mypy", "--no-incremental")
    assert done.returncode == 0, done.stdout[-4000:]
