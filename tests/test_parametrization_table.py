"""parametrization.csv of a u-μP and a μP run equals the abc-table of docs/paper.md, tensor by tensor.

The expected values are the table's formulas written out here (independently of
umup_repro/model/parametrization.py); the runs are real `run_cell` runs of 2 steps on random tokens.
"""

import math

import numpy as np
import pandas as pd
import pytest

from umup_repro.core.config import resolve_config
from umup_repro.training.train import run_cell

ETA, WIDTH, DEPTH, VOCAB, FFN_RATIO = 0.25, 64, 2, 256, 4.0
MUP_HP = {"sigma_init": 0.1, "alpha_emb": 2.0, "eta_emb": 3.0, "alpha_out": 0.5, "base_width": 32, "base_depth": 1}


def run(tmp_path, parametrization, hp):
    config = resolve_config(
        {
            "parametrization": parametrization,
            "hp": hp,
            "model": {
                "width": WIDTH,
                "depth": DEPTH,
                "vocab_size": VOCAB,
                "seq_len": 16,
                "head_dim": 16,
                "ffn_ratio": FFN_RATIO,
            },
            "train": {"lr": ETA, "steps": 2, "batch_size": 2, "warmup": 1},
            "data": {"val_batches": 1},
            "log": {"rms_every": 1, "val_every": 2},
        }
    )
    rng = np.random.default_rng(0)
    tokens = {s: rng.integers(0, VOCAB, 4000).astype(np.int32) for s in ("train", "validation")}
    out = tmp_path / parametrization
    assert run_cell(config, out, progress="none", tokens=tokens) == 0
    return pd.read_csv(out / "parametrization.csv").set_index("tensor")


def check(table, tensor, role, shape, std, mult, lr_factor):
    row = table.loc[tensor]
    assert (row["role"], row["shape"]) == (role, shape)
    assert row["init_std"] == pytest.approx(std, rel=1e-12)
    # measured std of the draw: ≥ 4096 samples, so the estimate's relative error is < 1.2% (1 σ); allow 6%
    assert row["init_std_measured"] == pytest.approx(std, rel=0.06)
    assert row["multiplier"] == pytest.approx(mult, rel=1e-12)
    assert row["lr_factor"] == pytest.approx(lr_factor, rel=1e-12)
    assert row["peak_lr"] == pytest.approx(ETA * lr_factor, rel=1e-12)


def test_umup_run_matches_the_abc_table(tmp_path):
    t = run(tmp_path, "umup", {})
    ffn = int(WIDTH * FFN_RATIO)
    depth_c = 1 / math.sqrt(DEPTH)  # c ×1/√depth inside the blocks
    check(t, "embedding.weight", "embedding", f"{VOCAB}x{WIDTH}", 1.0, 1.0, 1 / math.sqrt(WIDTH))
    check(t, "readout.weight", "readout", f"{VOCAB}x{WIDTH}", 1.0, 1 / WIDTH, 1.0)
    hidden = [n for n in t.index if n.startswith("blocks.")]
    assert len(hidden) == DEPTH * 7  # q, k, v, out, up, gate, down
    for name in hidden:
        fan_in = ffn if t.loc[name, "shape"] == f"{WIDTH}x{ffn}" else WIDTH
        check(t, name, "hidden", t.loc[name, "shape"], 1.0, 1 / math.sqrt(fan_in), depth_c / math.sqrt(fan_in))
    assert t["trainable"].all()


def test_mup_run_matches_the_abc_table(tmp_path):
    t = run(tmp_path, "mup", MUP_HP)
    ffn = int(WIDTH * FFN_RATIO)
    sigma, base_w, base_d = MUP_HP["sigma_init"], MUP_HP["base_width"], MUP_HP["base_depth"]
    depth_c = math.sqrt(base_d / DEPTH)  # c ×√(base_depth/depth) inside the blocks
    check(t, "embedding.weight", "embedding", f"{VOCAB}x{WIDTH}", sigma, MUP_HP["alpha_emb"], MUP_HP["eta_emb"])
    base_fan_in = WIDTH * base_w / WIDTH
    check(t, "readout.weight", "readout", f"{VOCAB}x{WIDTH}", sigma, MUP_HP["alpha_out"] * base_fan_in / WIDTH, 1.0)
    for name in (n for n in t.index if n.startswith("blocks.")):
        fan_in = ffn if t.loc[name, "shape"] == f"{WIDTH}x{ffn}" else WIDTH
        base_fan_in = fan_in * base_w / WIDTH
        check(
            t,
            name,
            "hidden",
            t.loc[name, "shape"],
            sigma * math.sqrt(base_fan_in / fan_in),
            1.0,
            depth_c * base_fan_in / fan_in,
        )
