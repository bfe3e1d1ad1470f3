"""The package's layers hold (import-linter's contracts in pyproject.toml), and the check would
notice an upward import or a cycle: the same contracts run over a copy of the package into which
one bad import was written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_MODULE_LINES = 400  # the house rule (DEVELOPERS' guide): a module holds one job


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_layers_hold():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "broken"),
    [
        # the model imports a figure module: upward
        (
            "model/ops.py",
            "import umup_repro.figures.style",
            "umup_repro.model is not allowed to import umup_repro.figures",
        ),
        # the run-folder format imports the run folder's lifecycle, which imports it: a cycle in one stage
        (
            "training/run_format.py",
            "import umup_repro.training.run_folder",
            "No cycles are allowed in umup_repro.training",
        ),
    ],
)
def test_an_upward_import_or_a_cycle_breaks_a_contract(tmp_path, module, bad_import, broken):
    shutil.copytree(REPO / "umup_repro", tmp_path / "umup_repro", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "umup_repro" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{bad_import}  # a deliberate bad import\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert broken in done.stdout, done.stdout


def test_no_module_is_over_400_lines():
    sizes = {
        p.relative_to(REPO): len(p.read_text(encoding="utf-8").splitlines())
        for p in (REPO / "umup_repro").rglob("*.py")
    }
    assert max(sizes.values()) <= MAX_MODULE_LINES, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
