"""The large-scale experiment as presets: `large` and `scale` plan their cells with node and GPU
resources (dry runs), and `large_smoke` trains its tiny cells end to end and draws `large_scale`."""

from __future__ import annotations

import re

import pandas as pd
from workflow_run import job_counts, snakemake, workflow_copy


def test_large_and_scale_dry_runs_list_cells_with_nodes_and_gpus(tmp_path):
    root = workflow_copy(tmp_path / "wf")
    for preset, cells, nodes in (("large", 9, {"2", "4", "8"}), ("scale", 6, {"1"})):
        out = snakemake(root, "-n", "all", "--config", f"preset={preset}")
        text = out.stdout + out.stderr
        assert job_counts(text)["train_cell"] == cells
        train = [r for r in re.findall(r"resources: ([^\n]+)", text) if "tasks_per_node" in r]
        assert len(train) == cells
        assert {re.search(r"\bnodes=(\d+)", r).group(1) for r in train} == nodes
        assert all("gpus=8" in r and "tasks_per_node=8" in r for r in train)


def test_large_smoke_draws_the_large_scale_figure_and_table(tmp_path):
    root = workflow_copy(tmp_path / "wf")
    snakemake(root, "--cores", "2", "figures/large_scale.pdf", "--config", "preset=large_smoke")
    assert (root / "figures" / "large_scale.pdf").stat().st_size > 0
    table = pd.read_csv(root / "results" / "tables" / "figures" / "large_scale.csv")
    assert set(table["scheme"]) == {"SP-BF16", "u-μP-BF16", "u-μP-FP8"}
    assert sorted(set(table["width"])) == [32, 64] and len(table) == 6
    assert (table["tokens"] == 20 * 4 * 32).all() and table["final_train_loss"].notna().all()
