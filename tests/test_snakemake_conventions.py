"""Snakemake's own conventions hold: `snakemake --lint` is clean, the rules' conda environment pins
what pyproject.toml pins, and `snakemake --report` shows every figure with its caption (from the
figure catalog)."""

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
    """Every figure `plot` knows, every analysis figure and the scorecard has a caption for the
    report, and the catalog is where the captions live (no second copy under workflow/report/)."""
    from umup_repro.cli import build_parser
    from umup_repro.core.figure_catalog import ANALYSIS_FIGURES, FIGURES, PLOTTED

    plot = next(a for a in build_parser()._subparsers._group_actions[0].choices["plot"]._actions if a.dest == "name")
    names = set(plot.choices) | set(ANALYSIS_FIGURES) | {"claims"}
    assert len(names) >= 16 and not names - set(FIGURES), names - set(FIGURES)
    assert all(isinstance(f.caption, str) and len(f.caption) > 30 for f in FIGURES.values())
    assert set(PLOTTED) <= set(FIGURES)
    assert not list((ROOT / "workflow/report").glob("*.y*ml")), "captions belong in umup_repro/core/figure_catalog.py"
    rules = "".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk"))
    assert 'caption=figure_catalog.caption(' in rules and "captions.yaml" not in rules


def test_report_has_every_figure_with_its_caption(smoke_local, tmp_path):
    """The session's smoke run, reported: each built figure is in the report with its caption."""
    import html
    import json
    import shutil

    root = tmp_path / "wf"
    shutil.copytree(smoke_local["root"], root, symlinks=True)
    snakemake(root, "--report", "report.html", "--config", "preset=smoke")
    text = html.unescape((root / "report.html").read_text(encoding="utf-8"))
    from umup_repro.core.figure_catalog import caption

    captions = {name: caption(name) for name in (p.stem for p in (root / "figures").glob("*.png"))}
    figures = sorted(p.stem for p in (root / "figures").glob("*.png"))
    assert figures, "the smoke run built no figure"
    missing = [f for f in figures if f"{f}.png" not in text]
    assert not missing, f"figures not in the report: {missing}"
    # the caption is in the report's results JSON (raw, or with non-ASCII characters escaped)
    no_caption = [f for f in figures if captions[f][:60] not in text and json.dumps(captions[f])[1:61] not in text]
    assert not no_caption, f"figures without their caption in the report: {no_caption}"
