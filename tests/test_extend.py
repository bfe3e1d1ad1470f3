"""Grids that follow the optimum (umup_repro/sweeps/extend.py): the pass rule on hand-made lines
(edge optimum → one point beyond, interior → none or half steps, a diverged edge never best) and
the real Snakemake DAG on a known loss surface: the first pass alone in the dry run, a grid
extended past its edge optimum pass by pass until `extend.max`, a rerun that does nothing."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml
from workflow_run import executed_jobs, fake_trainer_env, job_counts, snakemake_as_is, workflow_copy

from umup_repro.sweeps import grid
from umup_repro.sweeps.extend import decide_pass, extension, load_passes, sweep_decisions
from umup_repro.sweeps.presets import PresetError, validate_schema

# --------------------------------------------------------------------------------------------
# the rule


def test_an_optimum_at_the_lower_edge_adds_one_step_below():
    assert extension({0.25: [3.0], 0.5: [3.2], 1.0: [3.5]}) == ([0.125], "lower", 0.25)


def test_an_optimum_at_the_upper_edge_adds_one_step_above_by_the_edges_gap():
    # the step is the gap between the edge and its neighbour (2 in log2 here), averaged over seeds
    assert extension({0.25: [3.5, 3.6], 1.0: [3.2, 3.1], 4.0: [3.0, 3.1]}) == ([16.0], "upper", 4.0)


def test_an_interior_optimum_adds_nothing_unless_half_steps_are_asked_for():
    line = {0.25: [3.3], 0.5: [3.0], 1.0: [3.4]}
    assert extension(line) == ([], "interior", 0.5)
    added, where, _ = extension(line, half_steps=True)
    assert where == "interior" and added == pytest.approx([0.5 / math.sqrt(2), 0.5 * math.sqrt(2)])
    uneven = {0.125: [3.5], 0.5: [3.0], 1.0: [3.4]}  # only the widest gap (the lower one) is halved
    assert extension(uneven, half_steps=True)[0] == [0.25]


def test_half_steps_refine_a_line_once():
    spec = {"blocks": [{"grid": {"train.lr": [0.25, 0.5, 1.0]}}]}
    flat = [(b, p, grid.flatten_config(c)) for b, p, _s, c in grid.sweep_runs("s", spec)]
    losses = [3.3, 3.0, 3.4]
    points, rows = decide_pass(flat, losses, {"axis": "train.lr", "half_steps": True})
    assert [p["half"] for p in points] == [True, True] and rows[0]["where"] == "interior"
    refined = grid.expand_sweep("s", spec, decisions={"extend": points})
    flat = [(b, p, grid.flatten_config(c)) for b, p, _s, c in grid.sweep_runs("s", spec, None, {"extend": points})]
    assert len(refined) == len(flat) == 5
    losses = [3.3, 3.0, 3.4, 3.1, 3.1]  # the optimum stays: the line is not halved again
    assert decide_pass(flat, losses, {"axis": "train.lr", "half_steps": True}, points)[0] == []


def test_a_diverged_edge_is_never_the_best():
    # 1.0 has the lowest loss of its surviving seed but another seed diverged: the line's best is 0.5
    assert extension({0.25: [3.3], 0.5: [3.1], 1.0: [2.0, None]}) == ([], "interior", 0.5)
    assert extension({0.25: [3.3], 0.5: [3.1], 1.0: [math.inf]})[0] == []
    assert extension({0.25: [None], 0.5: [math.nan]}) == ([], "none", None)  # nothing to follow


def test_an_integer_axis_stays_integer():
    assert extension({32: [3.0], 64: [3.1]}) == ([16], "lower", 32)


def test_a_pass_adds_the_point_to_the_edge_lines_block_only():
    spec = {
        "blocks": [{"set": {"parametrization": "umup"}, "grid": {"model.width": [64, 128], "train.lr": [0.5, 1.0]}}]
    }
    runs = [(b, point, cfg) for b, point, _s, cfg in grid.sweep_runs("s", spec)]
    flat = [(b, p, grid.flatten_config(c)) for b, p, c in runs]
    # width 64: best at lr 1.0 (upper edge); width 128: lr 0.5 (lower edge)
    losses = [3.0 + (0.1 if (f["model.width"] == 64) == (f["train.lr"] == 0.5) else 0.0) for _b, _p, f in flat]
    points, rows = decide_pass(flat, losses, {"axis": "train.lr"})
    assert [p["set"] for p in points] == [
        {"parametrization": "umup", "model.width": 64, "train.lr": 2.0},
        {"parametrization": "umup", "model.width": 128, "train.lr": 0.25},
    ]
    assert not any(p["half"] for p in points)
    assert [(r["line"], r["where"]) for r in rows] == [({"model.width": 64}, "upper"), ({"model.width": 128}, "lower")]
    cells = grid.expand_sweep("s", spec, decisions={"extend": points})
    assert len(cells) == 6 and {c.search_kind for c in cells} == {"grid"}  # ordinary grid cells


def test_passes_stop_at_the_bound_and_after_a_pass_that_added_nothing(tmp_path):
    spec = {"extend": {"axis": "train.lr", "max": 2}, "blocks": [{"grid": {"train.lr": [0.5, 1.0]}}]}
    point = {"block": 0, "set": {"train.lr": 2.0}}
    for k, points in ((1, [point]), (2, []), (3, [point])):  # pass 3: stale, beyond an empty pass and max
        (tmp_path / "s").mkdir(exist_ok=True)
        (tmp_path / "s" / f"extend-{k}.json").write_text(json.dumps({"points": points}))
    assert load_passes(tmp_path, "s", spec) == [[point], []]
    assert load_passes(tmp_path, "s", spec, upto=1) == [[point]]
    assert sweep_decisions(tmp_path, "s", spec) == {"extend": [point]}


def test_the_schema_names_extends_fields_and_allowed_values():
    base = {"preset": "x", "sweeps": {"s": {"blocks": [{"grid": {"train.lr": [1.0]}}]}}}
    base["sweeps"]["s"]["extend"] = {"axis": "train.lr", "max": 2, "steps": 1}
    with pytest.raises(PresetError, match=r"sweeps\.s\.extend: 'steps' is not one of \['axis', 'max', 'half_steps'\]"):
        validate_schema(base)
    base["sweeps"]["s"]["extend"] = {"axis": "train.lr", "max": 0}
    with pytest.raises(PresetError, match=r"sweeps\.s\.extend\.max"):
        validate_schema(base)


# --------------------------------------------------------------------------------------------
# the DAG on a known loss surface

LR_GRID = [0.125, 0.25, 0.5]

# width 32: best log2 η = 2 (beyond the grid's top: followed until the bound); width 64: best
# log2 η = −2 (interior: never extended); η ≥ 4 diverges
FAKE_TRAIN = """
import json, math, os, sys
if sys.argv[1] != "train":
    from umup_repro.cli import main
    sys.exit(main(sys.argv[1:]))
out = sys.argv[sys.argv.index("--out") + 1]
cfg = json.loads(sys.stdin.read())
lr, width = cfg["train"]["lr"], cfg["model"]["width"]
loss = 3.0 + 0.1 * (math.log2(lr) - (2 if width == 32 else -2)) ** 2
from umup_repro.core.config import config_hash, flatten_config, resolve_config
from run_folders import write_run_folder
resolved = resolve_config(cfg)
write_run_folder(out, config_hash(resolved), loss=loss, diverged=lr >= 4, lr=lr, **flatten_config(resolved))
"""


@pytest.fixture()
def extended(tmp_path):
    work = workflow_copy(tmp_path / "wf")
    preset = {
        "analyses": False,
        "threads_per_cell": 1,
        "resources": {"gpus": 0},
        "defaults": {"parametrization": "umup", "model": {"depth": 1, "head_dim": 16}},
        "sweeps": {
            "lines": {
                "extend": {"axis": "train.lr", "max": 2},
                "blocks": [{"grid": {"model.width": [32, 64], "train.lr": LR_GRID}}],
            }
        },
        "figures": {},
    }
    (work / "config" / "presets" / "extended.yaml").write_text(yaml.safe_dump(preset))
    (work / "config" / "config.yaml").write_text("preset: extended\n")
    return work, fake_trainer_env(tmp_path, FAKE_TRAIN)


def test_a_grid_follows_its_edge_optimum_until_the_bound(extended):
    work, env = extended
    first = job_counts(snakemake_as_is(work, env, "-n", "all").stdout)
    assert first["train_cell"] == 2 * len(LR_GRID) and first["extend_grid"] == 1  # the first pass only

    run = snakemake_as_is(work, env, "--cores", "2", "all")
    done = executed_jobs(run.stdout + run.stderr)
    assert done["extend_grid"] == 2 and done["train_cell"] == 2 * len(LR_GRID) + 2
    search = work / "results/search/lines"
    passes = [json.loads((search / f"extend-{k}.json").read_text()) for k in (1, 2)]
    assert [[p["set"]["train.lr"] for p in d["points"]] for d in passes] == [[1.0], [2.0]]
    assert [r["where"] for r in passes[0]["lines"]] == ["upper", "interior"]
    assert not (search / "extend-3.json").exists()  # max: 2 passes, though width 32's best is still the edge

    table = pd.read_csv(work / "results/tables/lines.csv")
    by_width = table.groupby("model.width")["train.lr"].apply(sorted).to_dict()
    assert by_width == {32: LR_GRID + [1.0, 2.0], 64: LR_GRID}
    assert set(table["search.kind"]) == {"grid"}  # later passes are ordinary cells

    again = snakemake_as_is(work, env, "-n", "all")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_extend_needs_plain_grids_and_a_config_key():
    from umup_repro.sweeps.preset_checks import check_preset

    staged = {"staged": {"lr": {"train.lr": [1.0]}, "hp": {"hp.alpha_res": [1.0]}}}
    preset = {"sweeps": {"s": {"extend": {"axis": "train.lr", "max": 1}, "blocks": [{"grid": {}}, staged]}}}
    with pytest.raises(ValueError, match=r"sweeps\.s\.extend: block 1 has a search"):
        check_preset(preset, "preset x")
    preset = {"sweeps": {"s": {"extend": {"axis": "train.nosuch", "max": 1}, "blocks": [{"grid": {}}]}}}
    with pytest.raises(ValueError, match=r"sweeps\.s\.extend\.axis: 'train\.nosuch' is not a config key"):
        check_preset(preset, "preset x")
