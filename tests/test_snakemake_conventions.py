"""Snakemake's own conventions hold: `snakemake --lint` is clean, a rule file uses no name defined
only in a file included after it, the rules' conda environment pins what pyproject.toml pins, and
`snakemake --report` shows every figure with its caption (from the figure catalog)."""

import ast
import io
import re
import tokenize
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
    assert "caption=figure_catalog.caption(" in rules and "captions.yaml" not in rules


def _includes(snakefile: Path) -> tuple[str, list[Path]]:
    """The Snakefile's text before its first include, and the included files in order."""
    text = snakefile.read_text()
    found = re.findall(r'^include:\s*"([^"]+)"', text, flags=re.M)
    return text.split("\ninclude:", 1)[0], [snakefile.parent / f for f in found]


def _names(text: str) -> tuple[set[str], set[str]]:
    """(names a Snakemake file defines at its top level, names it uses anywhere), from its
    tokens: assignments, defs, imports and for-loops at column 0; every NAME token used, names
    inside f-strings included. Strings and comments are not names."""
    defined, used = set(), set()
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.STRING and re.match(r"^[rRbB]?[fF]", tok.string):
            used |= {n.id for n in ast.walk(ast.parse(tok.string, mode="eval")) if isinstance(n, ast.Name)}
        if tok.type != tokenize.NAME:
            continue
        used.add(tok.string)
        at_line_start = tok.start[1] == 0
        if at_line_start and tok.string in ("def", "class") and i + 1 < len(tokens):
            defined.add(tokens[i + 1].string)
        elif at_line_start and tok.string in ("import", "from"):
            line = tok.line.split("#")[0]
            imported = line.split(" import ", 1)[1] if " import " in line else line.split("import", 1)[1]
            defined |= {part.split(" as ")[-1].strip(" ()\n") for part in imported.split(",")} - {""}
        elif at_line_start and tok.string == "for":
            line = tok.line.split(" in ", 1)[0]
            defined |= set(re.findall(r"\w+", line[len("for") :]))
        elif (
            at_line_start
            and i + 1 < len(tokens)
            and tokens[i + 1].string in ("=", ":", "+=")
            and not (i + 2 < len(tokens) and tokens[i + 1].string == ":" and tokens[i + 2].type == tokenize.NEWLINE)
        ):
            defined.add(tok.string)
    return defined, used


def test_no_rule_file_uses_a_name_defined_only_after_it():
    """workflow/rules/common.smk comes first and every file uses only what the Snakefile (before
    its includes) and the files included before it define: a later include never has to exist for
    an earlier file's functions to work."""
    head, files = _includes(ROOT / "Snakefile")
    assert [f.name for f in files][0] == "common.smk"
    defined = [_names(head)[0]] + [_names(f.read_text())[0] for f in files]
    late = []
    for i, path in enumerate(files):
        known = set().union(*defined[: i + 2])  # the Snakefile's head, the files before and this one
        later = set().union(*defined[i + 2 :]) if i + 2 < len(defined) else set()
        used = _names(path.read_text())[1]
        late += [f"{path.name}: {name}" for name in sorted((used & later) - known)]
    assert not late, "names used before the file defining them is included:\n" + "\n".join(late)


def test_the_include_order_check_sees_a_late_name():
    """Guard for the check above: a use in an earlier file of a name defined in a later one."""
    early = 'def f(w):\n    return LATE[w] + f"{ALSO_LATE}"\n\nrule a:\n    input: "x"\n'
    late = "LATE = {}\nALSO_LATE = 1\nfor _a, _b in []:\n    pass\n"
    assert _names(late)[0] == {"LATE", "ALSO_LATE", "_a", "_b"}
    assert {"LATE", "ALSO_LATE"} <= _names(early)[1] and "LATE" not in _names(early)[0]
    assert "a" not in _names(early)[0]  # a rule is not a module-level name


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
