"""Sweeps as data: presets expand into the cells their grids, searches and ids promise."""

import math

import pytest
import yaml

from umup_repro.core.config import config_hash, resolve_config
from umup_repro.sweeps import budget, grid, presets
from umup_repro.sweeps.grid import expand_preset, expand_sweep
from umup_repro.sweeps.presets import PresetError, load_preset


def sweep(blocks, **extra):
    return {"blocks": blocks, **extra}


def test_log2_range_is_inclusive_and_exact():
    assert grid.axis_values("train.lr", {"log2_range": [-3, 6, 0.5]}) == [2.0 ** (e / 2) for e in range(-6, 13)]
    assert grid.axis_values("model.width", [64, 128]) == [64, 128]
    with pytest.raises(PresetError, match="train.lr: log2_range needs"):
        grid.axis_values("train.lr", {"log2_range": [3, 1, 1]})


def test_grid_is_the_cartesian_product_with_ids_from_configs():
    cells = expand_sweep(
        "s",
        sweep(
            [{"set": {"parametrization": "mup"}, "grid": {"model.width": [64, 128], "train.lr": [0.01, 0.02, 0.04]}}]
        ),
    )
    assert len(cells) == 6
    assert {(c.config.model.width, c.config.train.lr) for c in cells} == {
        (w, lr) for w in (64, 128) for lr in (0.01, 0.02, 0.04)
    }
    assert all(c.config.parametrization == "mup" and c.search_kind == "grid" for c in cells)
    # the id is the hash of the resolved config: same config -> same id, anywhere
    c = cells[0]
    same = resolve_config(
        {"parametrization": "mup", "model": {"width": c.config.model.width}, "train": {"lr": c.config.train.lr}}
    )
    assert c.id == config_hash(same)
    assert [c.search_index for c in cells] == list(range(6))


def test_changing_a_config_value_changes_the_id():
    a = expand_sweep("s", sweep([{"grid": {"train.steps": [10]}}]))[0]
    b = expand_sweep("s", sweep([{"grid": {"train.steps": [11]}}]))[0]
    c = expand_sweep("s", sweep([{"grid": {"train.steps": [10]}}], set={"train.seed": 1}))[0]
    assert len({a.id, b.id, c.id}) == 3


def test_independent_search_varies_one_key_at_a_time_around_the_base():
    cells = expand_sweep(
        "s",
        sweep(
            [
                {
                    "set": {"parametrization": "umup"},
                    "grid": {"model.width": [64, 128]},
                    "independent": {"hp.alpha_res": [0.5, 2.0], "train.lr": [4.0]},
                }
            ]
        ),
    )
    assert len(cells) == 2 * (1 + 2 + 1)
    for c in cells:
        hp, lr = c.config.hp, c.config.train.lr
        changed = {k for k, v in (("hp.alpha_res", hp["alpha_res"] != 1.0), ("train.lr", lr != 2.0)) if v}
        assert changed == (set() if c.search_axis == "base" else {c.search_axis})
    assert [c.search_axis for c in cells[:4]] == ["base", "hp.alpha_res", "hp.alpha_res", "train.lr"]


def test_random_search_is_seeded_and_inside_its_space():
    spec = sweep(
        [
            {
                "set": {"parametrization": "umup"},
                "random": {
                    "n": 25,
                    "seed": 3,
                    "space": {"train.lr": {"log2_uniform": [-2, 3]}, "hp.alpha_res": {"choice": [0.5, 1.0, 2.0]}},
                },
            }
        ]
    )
    a, b = expand_sweep("s", spec), expand_sweep("s", spec)
    assert [c.id for c in a] == [c.id for c in b] and len(a) == 25
    assert all(2**-2 <= c.config.train.lr <= 2**3 for c in a)
    assert {c.config.hp["alpha_res"] for c in a} == {0.5, 1.0, 2.0}
    other = expand_sweep(
        "s", {**spec, "blocks": [{**spec["blocks"][0], "random": {**spec["blocks"][0]["random"], "seed": 4}}]}
    )
    assert [c.id for c in other] != [c.id for c in a]


def test_a_config_reached_twice_is_one_cell():
    cells = expand_sweep("s", sweep([{"grid": {"train.lr": [1.0, 2.0]}}, {"grid": {"train.lr": [2.0, 4.0]}}]))
    assert [c.config.train.lr for c in cells] == [1.0, 2.0, 4.0]


def test_bad_cell_config_names_sweep_block_and_field():
    with pytest.raises(PresetError, match=r"(?s)sweep s, block 1: .*model\.widht: unknown key; allowed here: width"):
        expand_sweep("s", sweep([{"grid": {"train.lr": [1.0]}}, {"grid": {"model.widht": [64]}}]))
    with pytest.raises(PresetError, match=r"parametrization.*'spp'"):
        expand_sweep("s", sweep([{"grid": {"parametrization": ["spp"]}}]))


def test_unknown_preset_lists_the_allowed_ones():
    with pytest.raises(
        PresetError, match=r"unknown preset 'nope'; allowed: large, large_smoke, paper, scale, smoke, tiny"
    ):
        load_preset("nope")


def test_schema_rejects_malformed_presets_naming_the_field(tmp_path):
    good = yaml.safe_load(presets.preset_path("smoke").read_text())
    bad = dict(good, sweeps={"lr": {"blocks": [{"random": {"n": 3, "space": {}}}]}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(PresetError, match=r"sweeps\.lr\.blocks\.0\.random: 'seed' is a required property"):
        load_preset(str(path))
    path.write_text(yaml.safe_dump(dict(good, figurez={})))
    with pytest.raises(PresetError, match=r"figurez.*unexpected"):
        load_preset(str(path))


@pytest.mark.parametrize("name", ["smoke", "tiny", "paper"])
def test_presets_expand_and_their_figure_maps_name_existing_sweeps(name):
    config = load_preset(name)
    expanded = expand_preset(config)
    assert all(cells for cells in expanded.values())
    for figure, sweeps in config["figures"].items():
        assert set(sweeps) <= set(expanded), figure


def test_tiny_preset_is_cpu_sized():
    cells = [c for cs in expand_preset("tiny").values() for c in cs]
    assert {c.config.model.width for c in cells} == {32, 64, 128, 256}
    assert max(c.config.model.depth for c in cells) <= 4
    assert max(c.config.train.steps for c in cells) <= 1000
    # the budget at which u-μP's loss advantage can show (issue 20; docs/results-tiny.md)
    assert {c.config.train.steps for c in expand_preset("tiny")["lr_width"]} == {500}
    assert {c.config.data.corpus for c in cells} == {"wiki_offline"}


def test_paper_preset_holds_the_papers_grids():
    """docs/paper.md, "Proxy setup": widths 128…4096, depth 4…16, batch 64…256, steps 8192…32768, √2-spaced LR grids
    μP 2^-12…2^-2.5 and u-μP 2^-3…2^6, base point width 256 / depth 4 / batch 64 / 8192 steps."""
    e = expand_preset("paper")
    lr_width = e["lr_width"]
    assert sorted({c.config.model.width for c in lr_width}) == [128, 256, 512, 1024, 2048, 4096]
    for p, lo, hi in (("mup", -12, -2.5), ("umup", -3, 6)):
        lrs = sorted({math.log2(c.config.train.lr) for c in lr_width if c.config.parametrization == p})
        assert lrs == pytest.approx([lo + 0.5 * i for i in range(int((hi - lo) * 2) + 1)])
    assert sorted({c.config.model.depth for c in e["lr_depth"]}) == [4, 8, 16]
    assert sorted({c.config.train.batch_size for c in e["lr_batch"]}) == [64, 128, 256]
    assert sorted({c.config.train.steps for c in e["lr_steps"]}) == [8192, 16384, 32768]
    base = e["lr_depth"][0].config
    assert (base.model.width, base.train.batch_size, base.train.steps, base.data.corpus) == (
        256,
        64,
        8192,
        "wikitext103",
    )
    # every non-LR u-μP and μP hyperparameter is swept across width (base_width/base_depth are not HPs to tune)
    swept = {c.search_axis for c in e["hp_width"]} - {"base"}
    assert swept == {
        f"hp.{h}"
        for h in (
            "alpha_ffn_act",
            "alpha_attn_softmax",
            "alpha_res",
            "alpha_res_attn_ratio",
            "alpha_loss_softmax",
            "sigma_init",
            "alpha_emb",
            "eta_emb",
            "alpha_attn",
            "alpha_out",
        )
    }
    assert sum(c.search_kind == "random" for c in e["search_random"]) == 680
    assert {c.config.train.emb_lr_rule for c in e["embedding_lr"]} == {"constant", "inv_sqrt_fan_out"}
    fp8 = {(c.config.parametrization, c.config.uses_fp8) for c in e["fp8"]}
    assert fp8 == {("umup", False), ("umup_fp8", True), ("mup", False), ("mup", True)}
    assert sum(len(c) for c in e.values()) > 2000


def test_runtime_request_scales_with_flops():
    e = expand_preset("paper", ["lr_width"])["lr_width"]
    small = min(e, key=lambda c: c.flops)
    big = max(e, key=lambda c: c.flops)
    compute = {"gpu_peak_flops": 1e15, "utilisation": 0.5, "min_runtime_min": 1, "runtime_safety": 2.0}
    fp32_peak = 1e15 * 66.9 / 989.4  # paper cells train in fp32: the BF16 peak given, rescaled (budget.py)
    assert big.config.train.precision == "32"
    assert budget.runtime_minutes(big, compute) == math.ceil(big.flops / (0.5 * fp32_peak) * 2 / 60)
    assert budget.runtime_minutes(small, compute) < budget.runtime_minutes(big, compute)
    assert budget.runtime_minutes(small, {**compute, "min_runtime_min": 30}) == 30


def test_cells_on_a_cpu_preset_reports_cpu_core_hours(capsys):
    """A preset whose cells ask for no GPU is estimated in CPU core-hours, not H100-hours: each
    trained cell's start-up, per-step overhead and FLOPs at the per-core rate; a cell shared by
    sweeps counted once."""
    from argparse import Namespace

    from umup_repro.sweeps.budget import CPU_FLOPS_PER_CORE, CPU_SECONDS_PER_STEP, CPU_STARTUP_SECONDS
    from umup_repro.sweeps.cells import main
    from umup_repro.sweeps.grid import expand_preset
    from umup_repro.sweeps.presets import load_preset

    assert main(Namespace(preset="smoke", sweep=None, list=False, utilisation=None)) == 0
    out = capsys.readouterr().out
    assert "core-h" in out and "CPU core-hours" in out and "H100" not in out and "GPU-h" not in out
    cells = [c for cs in expand_preset(load_preset("smoke")).values() for c in cs if not c.alias]
    once = {c.id: c for c in cells}.values()
    assert len(once) < len(cells)  # smoke shares cells between sweeps: they must not count twice
    hours = (
        sum(
            CPU_STARTUP_SECONDS + CPU_SECONDS_PER_STEP * c.config.train.steps + c.flops / CPU_FLOPS_PER_CORE
            for c in once
        )
        / 3600
    )
    [row] = [line.split() for line in out.splitlines() if line.startswith("trained once")]
    assert int(row[2]) == len(once) and float(row[-1]) == pytest.approx(hours, rel=0.01)  # 3 digits
    assert f"training ≈ {hours * 60 / 2:.0f} min on 2 cores" in out
    assert main(Namespace(preset="paper", sweep=None, list=False, utilisation=None)) == 0
    assert "GPU-hours on H100" in capsys.readouterr().out
