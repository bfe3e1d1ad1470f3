"""The README's set-up commands stay true: CI runs the test command exactly as written, and the
one-cell command trains a cell as written."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The first three bash blocks: install + main job, one training cell, install + tests."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [" ".join(line.strip() for line in block.splitlines() if line.strip()) for block in blocks[:3]]


def test_ci_runs_the_readme_test_command():
    install_and_test = readme_commands()[2]
    assert "pytest" in install_and_test
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install_and_test in ci_lines


def test_main_command_targets_this_repository():
    install_and_main = readme_commands()[0]
    assert install_and_main.startswith("pip install torch==2.13.0 -e .")
    assert "snakemake" in install_and_main and (ROOT / "Snakefile").exists()
    # the executor plugin is installed by the same command, from this repository
    assert "./plugins/submitit" in install_and_main and (ROOT / "plugins/submitit/pyproject.toml").exists()


def test_one_cell_command_runs_as_written(tmp_path):
    """The README's one-cell command, verbatim, in a fresh folder: it leaves a complete run folder."""
    command = readme_commands()[1]
    assert command.split("|")[-1].strip().startswith("umup-repro train")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = re.search(r"--out (\S+)", command).group(1)
    summary = json.loads((tmp_path / out / "summary.json").read_text())
    assert summary["steps_done"] == 20 and summary["model.width"] == 64


def test_the_readme_stays_short():
    """The README is the front door (what it is, quick start, three uses, headline results, a
    guided tour, links); everything else lives in docs/, one link away."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into a docs/ page and link it"
