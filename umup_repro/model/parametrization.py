"""The abc-rules of SP, μP and u-μP as data (docs/paper.md, "The abc-table").

For every weight the model asks one question: given my role and shape, what is my init std (b),
my forward multiplier (a) and my Adam LR factor (c, multiplying the global η)? The answers live in
the table `RULES` below, one entry per (family, role), written as functions of a `Shape`
so the table reads like the paper's. A parametrization's family is its entry in the catalog,
umup_repro/core/parametrizations.py (`umup_fp8` follows `umup`'s rules). Depth enters twice,
outside the table: the LR factor of every parameter inside the residual stack
(`depth_lr_factor`) and the residual branch weights (`residual_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from umup_repro.core import parametrizations
from umup_repro.core.parametrizations import EMB_LR_RULES

ROLES = ("embedding", "hidden", "readout", "norm", "norm_gain")


@dataclass(frozen=True)
class Shape:
    """What a rule may depend on: the tensor's fans, the model's depth and the HPs."""

    fan_in: int
    fan_out: int
    width: int
    depth: int
    hp: Mapping[str, float]

    @property
    def base_fan_in(self) -> float:
        """The same tensor's fan-in in the base model (μP): fan_in scaled by base_width/width."""
        return self.fan_in * float(self.hp["base_width"]) / self.width

    @property
    def base_depth(self) -> float:
        return float(self.hp["base_depth"])


@dataclass(frozen=True)
class TensorRule:
    init_std: float
    multiplier: float
    lr_factor: float
    trainable: bool = True


@dataclass(frozen=True)
class Rule:
    """One row of the table: each entry a function of the Shape."""

    init_std: Callable[[Shape], float]
    multiplier: Callable[[Shape], float]
    lr_factor: Callable[[Shape], float]
    trainable: bool = True

    def __call__(self, s: Shape) -> TensorRule:
        return TensorRule(self.init_std(s), self.multiplier(s), self.lr_factor(s), self.trainable)


def _const(value: float) -> Callable[[Shape], float]:
    return lambda s: value


# Norms have no trainable parameters in any parametrization (one of the paper's stability fixes).
_NORM = Rule(_const(1.0), _const(1.0), _const(0.0), trainable=False)
# A trainable RMSNorm gain (`model.norm_gains`, the standard-Llama setting of Fig. 2): init 1, no
# multiplier, Adam LR factor 1 before the depth factor, in every parametrization. Sources: μP's
# table for Adam (Tensor Programs V, Table 3: vector-like parameters such as gains and biases keep
# LR Θ(1) in width); u-μP: the library's `optim.lr_scale_func_adam` gives mup_type "norm" and
# "bias" only the depth factor `lr_scale_for_depth`, and `_modules.RMSNorm` inits the gain to ones.
# The depth factor is applied by `tensor_rule` to gains inside the residual blocks, as to weights.
_NORM_GAIN = Rule(_const(1.0), _const(1.0), _const(1.0))

RULES: dict[str, dict[str, Rule]] = {
    "sp": {
        # torch-default-like: std sigma/sqrt(fan_in) for matrices, sigma for the embedding table.
        "embedding": Rule(lambda s: s.hp["sigma_init"], _const(1.0), _const(1.0)),
        "hidden": Rule(lambda s: s.hp["sigma_init"] / math.sqrt(s.fan_in), _const(1.0), _const(1.0)),
        "readout": Rule(lambda s: s.hp["sigma_init"] / math.sqrt(s.fan_in), _const(1.0), _const(1.0)),
        "norm": _NORM,
        "norm_gain": _NORM_GAIN,
    },
    "mup": {
        "embedding": Rule(lambda s: s.hp["sigma_init"], lambda s: s.hp["alpha_emb"], lambda s: s.hp["eta_emb"]),
        "hidden": Rule(
            lambda s: s.hp["sigma_init"] * math.sqrt(s.base_fan_in / s.fan_in),
            _const(1.0),
            lambda s: s.base_fan_in / s.fan_in,
        ),
        "readout": Rule(
            lambda s: s.hp["sigma_init"],
            lambda s: s.hp["alpha_out"] * s.base_fan_in / s.fan_in,
            _const(1.0),
        ),
        "norm": _NORM,
        "norm_gain": _NORM_GAIN,
    },
    "umup": {
        "embedding": Rule(_const(1.0), _const(1.0), lambda s: 1 / math.sqrt(s.fan_out)),
        "hidden": Rule(_const(1.0), lambda s: 1 / math.sqrt(s.fan_in), lambda s: 1 / math.sqrt(s.fan_in)),
        "readout": Rule(_const(1.0), lambda s: 1 / s.fan_in, _const(1.0)),
        "norm": _NORM,
        "norm_gain": _NORM_GAIN,
    },
}


def family(parametrization: str) -> str:
    """The family whose rules `parametrization` follows (its catalog entry's: u-μP-FP8 follows
    u-μP's). An unknown name, or a family without a rule table, is an error naming the allowed ones."""
    fam = parametrizations.get(parametrization).family
    if fam not in RULES:
        raise ValueError(
            f"parametrization {parametrization!r}: family {fam!r} has no rules; families: {', '.join(RULES)}"
        )
    return fam


def _no_branch(fam: str, what: str) -> ValueError:
    return ValueError(f"family {fam!r} has no {what} rule (umup_repro/model/parametrization.py)")


def tensor_rule(
    parametrization: str,
    role: str,
    *,
    fan_in: int,
    fan_out: int,
    width: int,
    depth: int,
    hp: Mapping[str, float],
    in_residual_stack: bool = False,
    emb_lr_rule: str | None = None,
) -> TensorRule:
    """The init std, multiplier and LR factor of one tensor, depth factor included.

    `emb_lr_rule` ('constant' or 'inv_sqrt_fan_out') swaps the embedding's LR rule for the other
    family's, for the paper's embedding-LR ablation; None keeps the table's rule.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    rule = RULES[family(parametrization)][role](Shape(fan_in, fan_out, width, depth, hp))
    if role == "embedding" and emb_lr_rule is not None:
        rule = TensorRule(
            rule.init_std,
            rule.multiplier,
            rule.lr_factor * _emb_lr_swap(parametrization, emb_lr_rule, fan_out),
            rule.trainable,
        )
    if in_residual_stack and rule.trainable:
        depth_factor = depth_lr_factor(parametrization, depth, hp)
        rule = TensorRule(rule.init_std, rule.multiplier, rule.lr_factor * depth_factor, rule.trainable)
    return rule


def _emb_lr_swap(parametrization: str, emb_lr_rule: str, fan_out: int) -> float:
    """Factor turning the table's embedding LR rule into `emb_lr_rule` (1 when they agree)."""
    if emb_lr_rule not in EMB_LR_RULES:
        raise ValueError(f"emb_lr_rule must be one of {', '.join(EMB_LR_RULES)} (got {emb_lr_rule!r})")
    fam = family(parametrization)
    own = {"sp": "constant", "mup": "constant", "umup": "inv_sqrt_fan_out"}.get(fam)
    if own is None:
        raise _no_branch(fam, "embedding-LR")
    if emb_lr_rule == own:
        return 1.0
    return 1 / math.sqrt(fan_out) if emb_lr_rule == "inv_sqrt_fan_out" else math.sqrt(fan_out)


def depth_lr_factor(parametrization: str, depth: int, hp: Mapping[str, float]) -> float:
    """LR factor of every parameter inside the residual blocks."""
    fam = family(parametrization)
    if fam == "umup":
        return 1 / math.sqrt(depth)
    if fam == "mup":
        return math.sqrt(hp["base_depth"] / depth)
    if fam == "sp":
        return 1.0
    raise _no_branch(fam, "depth LR factor")


def umup_taus(depth: int, alpha_res: float = 1.0, alpha_res_attn_ratio: float = 1.0) -> list[float]:
    """u-μP residual rule: τ_i of the 2·depth branches (even i = attention, odd i = FFN).

    The stream after branch i is the normalised sum of the embedding (weight² B/2) and the branches
    so far (weights α_attn, α_mlp); τ_i is branch i's weight relative to the stream it joins.
    """
    n_branches = 2 * depth
    alpha_mlp = alpha_res * math.sqrt(2 / (1 + alpha_res_attn_ratio**2))
    alpha_attn = alpha_res_attn_ratio * alpha_mlp
    taus, variance = [], n_branches / 2
    for i in range(n_branches):
        alpha = alpha_attn if i % 2 == 0 else alpha_mlp
        taus.append(alpha / math.sqrt(variance))
        variance += alpha**2
    return taus


def residual_weights(parametrization: str, depth: int, hp: Mapping[str, float]) -> list[tuple[float, float]]:
    """(skip weight, branch weight) of each of the 2·depth residual branches.

    SP adds branches as they are; μP scales each branch by √(base_depth/depth); u-μP mixes
    τ/√(1+τ²)·f(x) + 1/√(1+τ²)·x so the stream keeps unit scale.
    """
    fam = family(parametrization)
    if fam == "umup":
        taus = umup_taus(depth, hp["alpha_res"], hp["alpha_res_attn_ratio"])
        return [(1 / math.sqrt(1 + t * t), t / math.sqrt(1 + t * t)) for t in taus]
    if fam not in ("sp", "mup"):
        raise _no_branch(fam, "residual weights")
    branch = math.sqrt(hp["base_depth"] / depth) if fam == "mup" else 1.0
    return [(1.0, branch)] * (2 * depth)


def attention_logit_scale(parametrization: str, d_head: int, hp: Mapping[str, float]) -> float:
    """SP 1/√d_head; μP α_attn/d_head; u-μP α_attn-softmax/d_head."""
    fam = family(parametrization)
    if fam == "umup":
        return hp["alpha_attn_softmax"] / d_head
    if fam == "mup":
        return hp["alpha_attn"] / d_head
    if fam == "sp":
        return 1 / math.sqrt(d_head)
    raise _no_branch(fam, "attention logit scale")


def is_unit_scaled(parametrization: str) -> bool:
    """u-μP uses unit-scaled ops (separate backward scales); SP and μP use true gradients."""
    fam = family(parametrization)
    if fam not in ("sp", "mup", "umup"):
        raise _no_branch(fam, "unit-scaling")
    return fam == "umup"
