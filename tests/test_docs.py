"""The documentation a reader is pointed to exists: no file cites a document outside the
repository, every relative Markdown link resolves (file and heading), and every `docs/<name>.md`
mentioned anywhere, with its quoted section (`docs/paper.md, "FP8"`), is there."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The design notes that lived outside the repository before docs/ held them, spelt in pieces so
# this file does not match itself.
OUTSIDE = re.compile(r"\b(?:" + "|".join(("PAPER", "DESIGN", "SLURM", "STYLE")) + r")\.md\b|\.\./" + "shared\\b")
DOC_MENTION = re.compile(r"\bdocs/([\w.-]+\.md)\b(?:, \"([^\"\n]+)\")?")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
SKIP_DIRS = {".git", ".venv", "results", "figures", "__pycache__", ".snakemake", "build", "dist"}


def repo_files() -> list[Path]:
    """Tracked files plus new ones git does not ignore (so a file is checked before its commit)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked sdist)
        paths = [
            p
            for p in ROOT.rglob("*")
            if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)
        ]
    return sorted(p for p in paths if p.is_file())


def repo_texts():
    """(path, text) of every repository file that reads as UTF-8 text (binaries are skipped)."""
    for path in repo_files():
        try:
            yield path, path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def markdown_files() -> list[Path]:
    return [p for p in repo_files() if p.suffix == ".md"]


def without_fences(markdown: str) -> str:
    return re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)


def without_code(markdown: str) -> str:
    """Markdown minus fenced blocks and inline code, where `[a](b)` is not a link."""
    return re.sub(r"`[^`\n]*`", "", without_fences(markdown))


def heading_slugs(markdown: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    slugs: set[str] = set()
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", without_fences(markdown), flags=re.M):
        base = re.sub(r"[^\w\- ]", "", title.replace("`", "").strip().lower()).replace(" ", "-")
        slug, n = base, 0
        while slug in slugs:
            n += 1
            slug = f"{base}-{n}"
        slugs.add(slug)
    return slugs


def headings(markdown: str) -> set[str]:
    return {t.strip() for t in re.findall(r"^#{1,6}\s+(.+?)\s*$", without_fences(markdown), flags=re.M)}


def test_the_design_and_paper_docs_are_in_the_repository():
    for name in ("design.md", "paper.md"):
        assert (ROOT / "docs" / name).is_file(), f"docs/{name} is missing"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/design.md)" in readme and "(docs/paper.md)" in readme, "README must link both docs"


def test_no_file_cites_a_document_outside_the_repository():
    offenders = []
    for path, text in repo_texts():
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not offenders, "cite docs/design.md or docs/paper.md instead:\n" + "\n".join(offenders)


def test_relative_markdown_links_resolve():
    broken = []
    for path in markdown_files():
        for target in LINK.findall(without_code(path.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}: ({target})"
            if not dest.exists() or not dest.is_relative_to(ROOT):
                broken.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in heading_slugs(dest.read_text(encoding="utf-8")):
                broken.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_docs_mentioned_in_any_file_exist_with_their_sections():
    missing = []
    for path, text in repo_texts():
        for name, section in DOC_MENTION.findall(text):
            doc = ROOT / "docs" / name
            if not doc.is_file():
                missing.append(f"{path.relative_to(ROOT)}: docs/{name} does not exist")
            elif section and section not in headings(doc.read_text(encoding="utf-8")):
                missing.append(f"{path.relative_to(ROOT)}: docs/{name} has no section {section!r}")
    assert not missing, "\n".join(missing)


def test_the_link_checker_sees_a_broken_link_and_a_missing_heading():
    """Guard for the checks above: GitHub's slugs as this file computes them."""
    slugs = heading_slugs("# The authors' notes as analyses\n## u-μP\n## Setup\n## Setup\n```\n# not a heading\n```\n")
    assert slugs == {"the-authors-notes-as-analyses", "u-μp", "setup", "setup-1"}
    assert LINK.findall(without_code("see [a](x.md#b), `[c](d)` and ![e](f.png)")) == ["x.md#b", "f.png"]
    assert OUTSIDE.search("see " + "DESIGN" + ".md") and OUTSIDE.search("../" + "shared/x")
    assert not OUTSIDE.search("docs/design.md and docs/paper.md")


def test_every_docs_page_is_linked_from_the_readme():
    """One link away: every docs/*.md page has a Markdown link in README.md."""
    readme = without_code((ROOT / "README.md").read_text(encoding="utf-8"))
    linked = {target.partition("#")[0] for target in LINK.findall(readme)}
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    assert pages and not [p for p in pages if p not in linked], (
        f"link these from README.md: {[p for p in pages if p not in linked]}"
    )


def test_the_module_map_lists_every_module():
    """docs/design.md's module map (between its two MODULE MAP markers) names every module under
    umup_repro/ by its path (a package's __init__.py aside), and every path it names exists."""
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    _, table, _ = design.split("<!-- MODULE MAP -->")
    named = set(
        re.findall(
            r"`([\w./-]+)`", "\n".join(line.split("|")[1] for line in table.splitlines() if line.startswith("| `"))
        )
    )
    modules = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "umup_repro").rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }
    assert not sorted(modules - named), f"add rows to the module map: {sorted(modules - named)}"
    assert not [n for n in named if not (ROOT / n).exists()], "the module map names paths that do not exist"
