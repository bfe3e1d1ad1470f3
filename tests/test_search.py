"""The staged search, seed replicates and the pairwise transfer error: the metric on loss
surfaces whose answer is known by hand, the stage rule, and the real Snakemake DAG on a synthetic
objective (a fake `umup-repro train` that writes a summary whose loss is a known function of the
config), which checks that stage `hp` runs at stage `lr`'s argmin, that the combined run uses each
stage-`hp` argmin, and that the dry run shows stage `hp` only once stage `lr` is decided."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_run import fake_trainer_env, job_counts, snakemake_as_is, workflow_copy

from umup_repro.results.replicates import optimum_share
from umup_repro.results.transfer_error import pair_rows, transfer_error
from umup_repro.sweeps import grid
from umup_repro.sweeps.search_stage import choose

# --------------------------------------------------------------------------------------------
# transfer error (our reconstruction of the paper's Algorithm 1: umup_repro/results/transfer_error.py)


def test_transfer_error_is_zero_for_independent_hps():
    f, t = np.meshgrid(np.arange(4.0), np.arange(5.0), indexing="ij")
    loss = 3.0 + 0.2 * (f - 1) ** 2 + 0.1 * (t - 3) ** 2  # same best t for every f
    assert transfer_error(loss) == 0.0


def test_transfer_error_of_a_coupled_surface_matches_the_hand_derived_value():
    """L(f, t) = (t − f)² + 0.1·f on F = T = {0, 1, 2}: the optimum is (0, 0) with L = 0; at f = 1
    the best t is 1 and L(0, 1) = 1; at f = 2 the best t is 2 and L(0, 2) = 4; so the error is
    (1 + 4) / 2 = 2.5. Exact arithmetic on small floats: compared to 1e-12."""
    f, t = np.meshgrid(np.arange(3.0), np.arange(3.0), indexing="ij")
    loss = (t - f) ** 2 + 0.1 * f
    assert transfer_error(loss) == pytest.approx(2.5, abs=1e-12)
    # the other order (t fixed, f transferred): at t = 1 the best f is 1 → L(1, 0)... rows = t now
    swapped = loss.T  # rows: t; L(t=0, f) = f² + 0.1 f → optimum (t=0, f=0)
    # t = 1: best f = 1 (L = 0.1); transferred to t = 0: L(f=1, t=0) = 1.1. t = 2: best f = 2 (0.2)
    # → L(f=2, t=0) = 4.2. Error (1.1 + 4.2) / 2 = 2.65.
    assert transfer_error(swapped) == pytest.approx(2.65, abs=1e-12)


def test_a_diverged_run_counts_as_the_worst_finite_loss_of_its_grid():
    loss = np.array([[1.0, 2.0], [np.inf, 1.5]])  # best (0, 0); at f = 1 the best t is 1
    # L(0, 1) − L(0, 0) = 1.0; the diverged cell is replaced by 2.0 and is not the argmin
    assert transfer_error(loss) == pytest.approx(1.0)
    assert math.isnan(transfer_error(np.full((2, 2), np.nan)))


def test_pair_rows_read_both_orders_from_a_sweep_table():
    spec = {
        "pairs": True,
        "blocks": [
            {"set": {"parametrization": "umup"}, "grid": {"train.lr": [1.0, 2.0, 4.0], "hp.alpha_res": [0.5, 1.0, 2.0]}}
        ],
    }
    cells = grid.expand_sweep("p", spec)
    rows = []
    for c in cells:  # coupled: the best alpha_res moves with the LR
        f, t = math.log2(c.config.train.lr), math.log2(c.config.hp["alpha_res"]) + 1
        rows.append(
            {
                "cell": c.id,
                "parametrization": "umup",
                "train.lr": c.config.train.lr,
                "hp.alpha_res": c.config.hp["alpha_res"],
                "final_val_loss": (t - f) ** 2 + 0.1 * f,
                "diverged": False,
            }
        )
    out = pair_rows(pd.DataFrame(rows), "p", spec, {})
    assert [(r["hp_a"], r["hp_b"]) for r in out] == [("train.lr", "hp.alpha_res"), ("hp.alpha_res", "train.lr")]
    assert out[0]["transfer_error"] == pytest.approx(2.5, abs=1e-12)
    assert out[1]["transfer_error"] == pytest.approx(2.65, abs=1e-12)
    assert out[0]["opt_a"] == 1.0 and out[0]["opt_b"] == 0.5


# --------------------------------------------------------------------------------------------
# the stage rule, seeds


def test_choose_lowest_mean_then_closest_to_default():
    best, means = choose({0.5: [3.0, 3.2], 1.0: [3.1, 3.1], 2.0: [3.0, None]}, default=1.0)
    assert means[0.5] == pytest.approx(3.1) and means[2.0] == math.inf  # a diverged seed rules 2.0 out
    assert best == 1.0  # tie at 3.1 with 0.5: the default wins
    assert choose({0.25: [3.0], 4.0: [3.0]}, default=1.0)[0] == 0.25  # equally far: the smaller
    assert choose({0.5: [None], 2.0: [math.nan]}, default=1.0)[0] == 1.0  # all diverged: the default stays


def test_seeds_give_replicates_that_differ_only_in_the_seed():
    spec = {"seeds": 3, "blocks": [{"grid": {"train.lr": [1.0, 2.0]}}]}
    cells = grid.expand_sweep("s", spec)
    assert len(cells) == 6
    assert [c.config.train.seed for c in cells] == [0, 1, 2, 0, 1, 2]
    single = grid.expand_sweep("s", {"blocks": [{"grid": {"train.lr": [1.0, 2.0]}}]})
    assert {c.id for c in single} <= {c.id for c in cells}  # replicate 0 is the unseeded cell


def test_optimum_share_is_certain_without_noise_and_split_when_values_overlap():
    clear = {1.0: np.array([3.0, 3.01, 2.99]), 2.0: np.array([3.5, 3.51, 3.49])}
    assert optimum_share(clear, 1.0) == 1.0
    # identical replicate sets: each value's bootstrap mean wins about half the time (argmin ties → first);
    # the share is a frequency over 1000 seeded resamples, so 0.2 … 0.8 leaves room for that noise
    same = {1.0: np.array([3.0, 3.2, 3.1, 2.9]), 2.0: np.array([3.2, 3.0, 2.9, 3.1])}
    assert 0.2 < optimum_share(same, 1.0) < 0.8


# --------------------------------------------------------------------------------------------
# the DAG on a synthetic objective

LR_GRID, RES_GRID, SOFTMAX_GRID = [0.5, 1.0, 4.0], [0.5, 2.0], [0.25, 4.0]

FAKE_TRAIN = """
import json, math, os, sys
if sys.argv[1] != "train":
    from umup_repro.cli import main
    sys.exit(main(sys.argv[1:]))
out = sys.argv[sys.argv.index("--out") + 1]
cfg = json.loads(sys.stdin.read())
lr, hp = cfg["train"]["lr"], cfg["hp"]
# separable: best LR 1.0, best alpha_res 2.0, best alpha_attn_softmax 0.25; LR 4.0 diverges
loss = 3.0 + 0.1 * math.log2(lr) ** 2 + 0.1 * (math.log2(hp["alpha_res"]) - 1) ** 2 \\
    + 0.1 * (math.log2(hp["alpha_attn_softmax"]) + 2) ** 2 + 0.001 * cfg["train"]["seed"]
diverged = lr > 2.0
os.makedirs(out, exist_ok=True)
from umup_repro.core.config import config_hash, flatten_config, resolve_config
resolved = resolve_config(cfg)
from run_folders import write_run_folder  # tests/ is on PYTHONPATH (fixture `synthetic`)
# with the flattened config, as a real summary carries it
write_run_folder(out, config_hash(resolved), loss=loss, diverged=diverged, lr=lr, **flatten_config(resolved))
"""


@pytest.fixture()
def synthetic(tmp_path):
    work = workflow_copy(tmp_path / "wf")
    preset = {
        "analyses": False,
        "threads_per_cell": 1,
        "resources": {"gpus": 0},
        "sweeps": {
            "search": {
                "seeds": 2,
                "blocks": [
                    {
                        "set": {"parametrization": "umup"},
                        "staged": {
                            "lr": {"train.lr": LR_GRID},
                            "hp": {"hp.alpha_res": RES_GRID, "hp.alpha_attn_softmax": SOFTMAX_GRID},
                        },
                    }
                ],
            }
        },
        "figures": {"search_strategies": ["search"]},
    }
    (work / "config" / "presets" / "synthetic.yaml").write_text(yaml.safe_dump(preset))
    (work / "config" / "config.yaml").write_text("preset: synthetic\n")
    return work, fake_trainer_env(tmp_path, FAKE_TRAIN)


def test_staged_search_dag_grows_stage_by_stage(synthetic):
    work, env = synthetic
    lr_cells = len(LR_GRID) * 2  # 2 seeds
    assert job_counts(snakemake_as_is(work, env, "-n", "all").stdout)["train_cell"] == lr_cells  # stage lr only

    snakemake_as_is(work, env, "--cores", "1", "results/search/search/lr.json")
    lr = json.loads((work / "results/search/search/lr.json").read_text())
    assert lr["groups"] == {"0.0": {"train.lr": 1.0}}
    # stage hp appears in the DAG now that stage lr is decided: each HP value x 2 seeds
    hp_cells = (len(RES_GRID) + len(SOFTMAX_GRID)) * 2
    assert job_counts(snakemake_as_is(work, env, "-n", "all").stdout)["train_cell"] == hp_cells

    snakemake_as_is(work, env, "--cores", "2", "all")
    hp = json.loads((work / "results/search/search/hp.json").read_text())
    assert hp["groups"] == {"0.0": {"hp.alpha_res": 2.0, "hp.alpha_attn_softmax": 0.25}}
    table = pd.read_csv(work / "results/tables/search.csv")
    assert set(table["search.stage"]) == {"lr", "hp", "combined"}
    assert (table[table["search.stage"] == "hp"]["train.lr"] == 1.0).all()  # at stage lr's argmin
    combined = table[table["search.stage"] == "combined"]
    assert len(combined) == 2  # two seeds
    assert (combined["train.lr"] == 1.0).all() and (combined["hp.alpha_res"] == 2.0).all()
    assert (combined["hp.alpha_attn_softmax"] == 0.25).all()
    assert set(table["seeds_n"]) == {2}
    assert (work / "figures/search_strategies.png").is_file()
    curves = pd.read_csv(work / "results/tables/figures/search_strategies.csv")
    assert list(curves["stage"].drop_duplicates()) == ["lr", "hp", "combined"]
    assert curves["best_so_far"].iloc[-1] == pytest.approx(3.0)  # the combined run hits the optimum


def test_transfer_summary_averages_seed_replicates_and_reports_how_sure_the_optimum_is():
    from umup_repro.results.aggregate import transfer_summary

    rows = []
    for width in (32, 64):
        for lr in (1.0, 2.0, 4.0):
            for seed in (0, 1, 2):
                rows.append(
                    {
                        "cell": f"{width}-{lr}-{seed}",
                        "parametrization": "umup",
                        "model.width": width,
                        "train.lr": lr,
                        "train.seed": seed,
                        "diverged": False,
                        "final_val_loss": (math.log2(lr) - 1) ** 2 + 0.01 * seed,
                    }
                )
    out = transfer_summary(pd.DataFrame(rows), "s", {"axis": "model.width"})
    assert list(out["opt_value"]) == [2.0, 2.0]
    assert out["best_loss"].tolist() == pytest.approx([0.01, 0.01])  # mean of 0, 0.01, 0.02
    assert out["best_loss_se"].tolist() == pytest.approx([0.01 / math.sqrt(3)] * 2)  # std 0.01 (ddof 1) / √3
    assert list(out["seeds_n"]) == [3, 3] and list(out["optimum_share"]) == [1.0, 1.0]


def test_transfer_error_figure_titles_each_parametrizations_mean(tmp_path):
    from umup_repro.figures.plot import plot

    rows = [
        ("umup", "train.lr", "hp.alpha_res", 0.002),
        ("umup", "hp.alpha_res", "train.lr", 0.008),
        ("mup", "train.lr", "hp.alpha_out", 0.01),
        ("mup", "hp.alpha_out", "train.lr", 0.05),
    ]
    pd.DataFrame(rows, columns=["parametrization", "hp_a", "hp_b", "transfer_error"]).to_csv(
        tmp_path / "transfer_error.csv", index=False
    )
    data = plot("transfer_error", tmp_path, ["hp_pairs"], tmp_path / "te.pdf")
    assert (tmp_path / "te.png").is_file() and (tmp_path / "te.pdf").stat().st_size > 5_000
    means = dict(zip(data["variant"], data["mean_transfer_error"]))
    assert means == pytest.approx({"mup": 0.03, "umup": 0.005})
