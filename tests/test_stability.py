"""Paper Fig. 2's switches: trainable norm gains, the three weight-decay forms, TP-V's repeated
data, the settings read off a config, their transfer summary and figure."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from umup_repro.core.config import ConfigError, flatten_config, resolve_config
from umup_repro.figures.stability_fixes import stability_fixes
from umup_repro.model.decoder import build_model, count_parameters
from umup_repro.model.optim import build_optimizer
from umup_repro.results.aggregate import transfer_summary
from umup_repro.results.stability import setting_of, with_setting
from umup_repro.results.tables import prepare
from umup_repro.training.lightning_module import StepBatches

WIDTH, DEPTH = 64, 2
SMALL = {"model": {"width": WIDTH, "depth": DEPTH, "head_dim": 16, "seq_len": 16, "vocab_size": 128}}


def config(parametrization="mup", **train):
    return resolve_config({**SMALL, "parametrization": parametrization, "train": train})


def with_gains(parametrization, gains, **train):
    c = config(parametrization, **train)
    return resolve_config({**c.model_dump(), "model": {**c.model.model_dump(), "norm_gains": gains}})


@pytest.mark.parametrize("parametrization", ["sp", "mup", "umup"])
def test_norm_gains_add_one_unit_vector_per_norm_with_the_parametrizations_lr(parametrization):
    """2 norms per block + the final norm, each a width-long gain initialised to 1; LR factor 1
    times the depth factor inside the blocks (TP-V's Table 3 for μP; the library's
    `lr_scale_func_adam` for u-μP); never decayed."""
    eta = 0.01
    plain = build_model(with_gains(parametrization, False, lr=eta))
    cfg = with_gains(parametrization, True, lr=eta, weight_decay=0.1)
    gained = build_model(cfg)
    assert count_parameters(gained) - count_parameters(plain) == (2 * DEPTH + 1) * WIDTH
    names = [n for n, _ in gained.named_parameters() if n not in dict(plain.named_parameters())]
    expected = [f"blocks.{i}.{k}_norm.weight" for i in range(DEPTH) for k in ("attn", "ffn")] + ["out_norm.weight"]
    assert sorted(names) == sorted(expected)
    depth_factor = {"sp": 1.0, "mup": math.sqrt(cfg.hp.get("base_depth", 1) / DEPTH), "umup": 1 / math.sqrt(DEPTH)}
    groups = {g["name"]: g for g in build_optimizer(gained, cfg).param_groups}
    params = dict(gained.named_parameters())
    for name in expected:
        assert torch.equal(params[name].detach(), torch.ones(WIDTH))
        want = eta * (1.0 if name == "out_norm.weight" else depth_factor[parametrization])
        assert groups[name]["lr"] == pytest.approx(want, rel=1e-12)
        assert groups[name]["weight_decay"] == 0.0
    # with gains at 1 the function is the parameter-free model's: same weights, same loss
    torch.manual_seed(0)
    plain = build_model(with_gains(parametrization, False, lr=eta))
    torch.manual_seed(0)
    gained = build_model(cfg)
    batch = torch.randint(0, 128, (2, 17), generator=torch.Generator().manual_seed(1))
    assert gained.loss(batch).item() == pytest.approx(plain.loss(batch).item(), rel=1e-6)  # fp32 rounding


def test_norm_gains_train():
    """A few Adam steps on one batch: every gain moves off 1 and the loss falls."""
    cfg = with_gains("umup", True, lr=0.5)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(model, cfg)
    batch = torch.randint(0, 128, (4, 17), generator=torch.Generator().manual_seed(0))
    first = model.loss(batch).item()
    for _ in range(5):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    assert model.loss(batch).item() < first - 0.1
    for name, p in model.named_parameters():
        if name.endswith("_norm.weight"):
            assert (p.detach() - 1).abs().max() > 1e-3, name


@pytest.mark.parametrize("eta", [2.0**-8, 2.0**-5])
@pytest.mark.parametrize("form", ["decoupled", "independent", "coupled"])
def test_one_step_with_zero_gradient_shrinks_weights_by_the_forms_rule(form, eta):
    """Zero gradient, one step, λ = 0.01, μP (so tensors have different LR factors c):
    decoupled p·(1 − η·c·λ); independent p·(1 − λ) whatever η and c; coupled: only through the
    gradient λ·p, i.e. Adam's first step on it, p − η·c·λp/(|λp| + ε)."""
    lam = 0.01
    cfg = config("mup", lr=eta, weight_decay=lam, weight_decay_form=form)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    eps = cfg.train.adam_eps
    factors = set()
    for g in opt.param_groups:
        (p,), w0, lr = g["params"], before[g["name"]], g["lr"]
        factors.add(round(g["lr_factor"], 12))
        if form == "decoupled":
            want = w0 * (1 - lr * lam)
        elif form == "independent":
            want = w0 * (1 - lam)
        else:
            grad = lam * w0
            want = w0 - lr * grad / (grad.abs() + eps)
        # fp32 rounding: Adam's moments (0.1·g/0.1, √(0.001·g²)/√0.001) and the update each cost a
        # few ulps; 1e-6·lr is ≈ 8 ulps of the step, far below any step of the wrong form (≥ lr·λ)
        torch.testing.assert_close(p.detach(), want, rtol=1e-6, atol=1e-6 * lr)
    assert len(factors) > 1  # the rule was checked on tensors with different c


def test_weight_decay_form_and_train_tokens_are_validated():
    with pytest.raises(ConfigError, match="train.weight_decay_form"):
        resolve_config({"train": {"weight_decay_form": "adamw"}})
    with pytest.raises(ConfigError, match="model.norm_gains"):
        resolve_config({"model": {"norm_gains": "sometimes"}})
    with pytest.raises(ConfigError, match="data.train_tokens"):
        resolve_config({"model": {"seq_len": 64}, "data": {"train_tokens": 64}})
    with pytest.raises(ConfigError, match="data.train_tokens"):
        resolve_config({"data": {"train_tokens": 0}})
    assert resolve_config({}).train.weight_decay_form == "independent"
    assert resolve_config({}).model.norm_gains is False


def test_train_tokens_repeat_the_first_tokens_only():
    cfg = resolve_config({**SMALL, "data": {"train_tokens": 40}, "train": {"steps": 50, "batch_size": 4}})
    tokens = np.arange(10_000, dtype=np.int64)
    seen = torch.cat([rows for _, _, rows in StepBatches(tokens, cfg, start=lambda: 0)])
    assert int(seen.max()) < 40  # every window inside the first 40 tokens
    assert len(torch.unique(seen)) == 40  # and 50 steps of 4 windows cover them all (data repeats)


def _settings_table():
    """Two widths × three LRs × the three settings (μP); the optimum moves only under `llama`."""
    settings = {
        "tpv": {
            "train.schedule": "constant",
            "data.train_tokens": 1024,
            "model.norm_gains": True,
            "train.weight_decay_form": "independent",
        },
        "llama": {
            "train.schedule": "cosine",
            "data.train_tokens": math.nan,
            "model.norm_gains": True,
            "train.weight_decay_form": "decoupled",
        },
        "llama_fixes": {
            "train.schedule": "cosine",
            "data.train_tokens": math.nan,
            "model.norm_gains": False,
            "train.weight_decay_form": "independent",
        },
    }
    best = {("llama", 128): -6}
    rows = []
    for name, cols in settings.items():
        for w in (32, 128):
            for k in (-8, -7, -6):
                opt = best.get((name, w), -7)
                rows.append(
                    {
                        "parametrization": "mup",
                        "model.width": w,
                        "train.lr": 2.0**k,
                        **cols,
                        "final_val_loss": 4.0 + 0.1 * abs(k - opt),
                        "diverged": False,
                    }
                )
    return pd.DataFrame(rows)


def test_setting_is_read_off_the_config():
    assert setting_of(flatten_config(resolve_config({}))) == "llama_fixes"
    assert setting_of(flatten_config(resolve_config({"model": {"norm_gains": True}}))) == "llama"
    assert setting_of(flatten_config(resolve_config({"train": {"weight_decay_form": "decoupled"}}))) == "llama"
    tpv = resolve_config({"train": {"schedule": "constant"}, "data": {"train_tokens": 4096}})
    assert setting_of(flatten_config(tpv)) == "tpv"


def test_with_setting_reads_the_config_the_column_or_the_group_label():
    """One reader for the sweep tables (the config) and transfer summaries (the `setting` column
    where set, else the setting inside an older group label); the label loses that part."""
    sweep = with_setting(_settings_table())
    assert set(sweep["setting"]) == {"tpv", "llama", "llama_fixes"}
    summary = pd.DataFrame(
        {"group": ["mup/llama", "mup/llama_fixes", "umup", "mup"], "setting": [None, float("nan"), "", "tpv"]}
    )
    read = with_setting(summary)
    assert read["setting"].tolist()[:2] == ["llama", "llama_fixes"] and read["setting"].iloc[3] == "tpv"
    assert pd.isna(read["setting"].iloc[2]) and read["group"].tolist() == ["mup", "mup", "umup", "mup"]
    assert with_setting(summary.drop(columns="setting"))["setting"].tolist()[:2] == ["llama", "llama_fixes"]


def test_transfer_summary_has_drift_and_regret_per_setting():
    s = transfer_summary(
        _settings_table(), "lr_stability", {"axis": "model.width", "group": ["parametrization", "setting"]}
    )
    assert set(s["group"]) == {"mup"} and set(s["setting"]) == {"tpv", "llama", "llama_fixes"}
    at = s[s["axis_value"] == 128].set_index("setting")
    assert at.loc["llama", "drift_log2"] == 1.0 and at.loc["llama", "regret"] == pytest.approx(0.1)
    assert at.loc["tpv", "drift_log2"] == 0.0 and at.loc["llama_fixes", "regret"] == 0.0
    plain = transfer_summary(_settings_table(), "w", {"axis": "model.width"})
    assert (plain["setting"] == "").all()  # other sweeps: empty column


def test_stability_fixes_figure_marks_each_widths_optimum(tmp_path):
    result = stability_fixes(prepare(_settings_table()), tmp_path / "s.pdf")
    assert (tmp_path / "s.pdf").stat().st_size > 0 and (tmp_path / "s.png").stat().st_size > 0
    got = {(r.setting, r.line): r.x_opt for r in result.itertuples()}
    assert got[("llama", 128)] == 2.0**-6 and got[("llama", 32)] == 2.0**-7
    assert got[("tpv", 128)] == got[("llama_fixes", 128)] == 2.0**-7
    assert len(got) == 6 and result["runs"].sum() == 18
