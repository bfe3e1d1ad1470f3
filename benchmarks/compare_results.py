"""Compare two results trees (and their figures) of the same preset, e.g. before and after a
refactoring that must not move a number:

    python benchmarks/compare_results.py OLD_ROOT NEW_ROOT

where each root holds `results/` and `figures/` as `snakemake ... all` leaves them. Checked: every
run folder's config.yaml, parametrization.csv, metrics.csv and rms.csv byte-identical; summaries
and tables equal apart from the timing and provenance fields below; coordinate-check and search
files byte-identical; figure PNGs byte-identical (PDFs carry a creation date, so they are not
compared). Prints what differs; exit 0 when nothing does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

# What a rerun may change without changing a result: when, where and with which code it ran.
VOLATILE = {
    "wall_seconds",
    "train_seconds",
    "tokens_per_second",
    "mfu",
    "hostname",
    "device",
    "versions",
    "git_commit",
    "git_dirty",
    "code_fingerprint",
}
RUN_FILES = ("config.yaml", "parametrization.csv", "metrics.csv", "rms.csv")


def _same_bytes(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def compare(old: Path, new: Path) -> list[str]:
    problems: list[str] = []
    old_runs = sorted(p.parent.relative_to(old) for p in (old / "results/runs").glob("*/*/summary.json"))
    new_runs = sorted(p.parent.relative_to(new) for p in (new / "results/runs").glob("*/*/summary.json"))
    if old_runs != new_runs:
        problems.append(
            f"run folders differ: only old {sorted(set(old_runs) - set(new_runs))[:5]}, "
            f"only new {sorted(set(new_runs) - set(old_runs))[:5]}"
        )
    for run in sorted(set(old_runs) & set(new_runs)):
        problems += [f"{run}/{f} differs" for f in RUN_FILES if not _same_bytes(old / run / f, new / run / f)]
        a, b = (json.loads((root / run / "summary.json").read_text()) for root in (old, new))
        keys = sorted(k for k in set(a) | set(b) if k not in VOLATILE and a.get(k) != b.get(k))
        if keys:
            problems.append(f"{run}/summary.json differs in {keys}")
    for table in sorted((old / "results/tables").rglob("*.csv")):
        rel = table.relative_to(old)
        if not (new / rel).is_file():
            problems.append(f"{rel} missing in new")
            continue
        a, b = (pd.read_csv(root / rel).drop(columns=list(VOLATILE), errors="ignore") for root in (old, new))
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        except AssertionError as err:
            problems.append(f"{rel} differs: {str(err).splitlines()[0]}")
    for folder in ("results/search", "results/tables/coord_check"):
        for f in sorted((old / folder).rglob("*")):
            if f.is_file() and f.suffix != ".pdf" and not _same_bytes(f, new / f.relative_to(old)):
                problems.append(f"{f.relative_to(old)} differs")
    pngs = sorted((old / "figures").glob("*.png"))
    problems += [f"{p.relative_to(old)} differs" for p in pngs if not _same_bytes(p, new / p.relative_to(old))]
    print(
        f"compared {len(old_runs)} run folders, {len(list((old / 'results/tables').rglob('*.csv')))} tables, "
        f"{len(pngs)} figure PNGs: {len(problems)} differences"
    )
    return problems


if __name__ == "__main__":
    found = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    print("\n".join(found))
    sys.exit(1 if found else 0)
