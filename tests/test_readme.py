"""The README's two set-up commands stay true: CI runs the test command exactly as written."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line.strip() for block in blocks[:2] for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    install_and_main, install_and_test = readme_commands()[:2]
    assert "pytest" in install_and_test
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install_and_test in ci_lines


def test_main_command_targets_this_repository():
    install_and_main = readme_commands()[0]
    assert install_and_main.startswith("pip install torch==2.13.0 -e .")
    assert "snakemake" in install_and_main and (ROOT / "Snakefile").exists()
