"""Snakemake's own conventions hold: `snakemake --lint` is clean, the rules' conda environment pins
what pyproject.toml pins, and `snakemake --report` shows every figure with its caption."""

import tomllib
from pathlib import Path

import yaml

from workflow_run import snakemake

ROOT = Path(__file__).resolve().parents[1]


def test_lint_is_clean():
    out = snakemake(ROOT, "--lint", timeout=600)
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr


def test_rule_environment_pins_equal_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "workflow/envs/umup-repro.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == project["dependencies"]
    assert f"python{project['requires-python']}" in env["dependencies"]


def test_every_figure_has_a_caption():
    """Every figure `plot` knows and every analysis figure has a caption for the report."""
    import re

    from umup_repro.cli import _figure_names

    captions = yaml.safe_load((ROOT / "workflow/report/captions.yaml").read_text())
    analyses = re.search(r"ANALYSIS_FIGURES = \[(.*?)\]", (ROOT / "workflow/rules/analyses.smk").read_text())
    names = set(_figure_names()) | set(re.findall(r'"(\w+)"', analyses.group(1)))
    assert len(names) >= 16 and not names - set(captions), names - set(captions)
    assert all(isinstance(c, str) and len(c) > 30 for c in captions.values())


def test_report_has_every_figure_with_its_caption(smoke_local, tmp_path):
    """The session's smoke run, reported: each built figure is in the report with its caption."""
    import html
    import json
    import shutil

    root = tmp_path / "wf"
    shutil.copytree(smoke_local["root"], root, symlinks=True)
    snakemake(root, "--report", "report.html", "--config", "preset=smoke")
    text = html.unescape((root / "report.html").read_text(encoding="utf-8"))
    captions = yaml.safe_load((ROOT / "workflow/report/captions.yaml").read_text())
    figures = sorted(p.stem for p in (root / "figures").glob("*.png"))
    assert figures, "the smoke run built no figure"
    missing = [f for f in figures if f"{f}.png" not in text]
    assert not missing, f"figures not in the report: {missing}"
    # the caption is in the report's results JSON (raw, or with non-ASCII characters escaped)
    no_caption = [f for f in figures if captions[f][:60] not in text and json.dumps(captions[f])[1:61] not in text]
    assert not no_caption, f"figures without their caption in the report: {no_caption}"
