"""The parametrizations, once: every name a config's `parametrization` accepts, with what it means.

An entry names its *family*, whose abc-rules (`RULES` in `umup_repro/model/parametrization.py`)
and family-level rules (depth LR factor, residual weights, attention scale, unit-scaled ops) it
follows, and carries everything else that differs per name: its hyperparameters with their
defaults (the `hp` keys a config may set), its default global η, its embedding-LR rule, whether it
forces FP8, its label and colour in the figures and its η for the coordinate check. The config,
the model, the figures, the claims and the CLI read this catalog; nothing else lists the names.

A variant of an existing family (as `umup_fp8` is of `umup`) is one more entry, `register(...)`;
a new family also needs its rule table and branches in the model (docs/extending.md,
"A parametrization"). Torch-free: the config imports it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType

# The embedding's Adam LR rules (docs/paper.md): μP's constant c_emb, u-μP's 1/√fan_out.
EMB_LR_RULES = ("constant", "inv_sqrt_fan_out")


@dataclasses.dataclass(frozen=True)
class Parametrization:
    name: str
    family: str  # whose rules apply: sp | mup | umup (the keys of the model's RULES)
    hp_defaults: Mapping[str, float]  # the hyperparameters a config may set, with their defaults
    default_lr: float  # the global η when train.lr is null
    emb_lr_rule: str  # the embedding's LR rule when train.emb_lr_rule is `default` (EMB_LR_RULES)
    fp8: bool = False  # FP8 casts on whatever model.fp8 says
    label: str = ""  # its name in figures and tables ("" = the name itself)
    color: str | None = None  # a matplotlib colour (None = the default cycle)
    coord_check_lr: float | None = None  # constant η of `umup-repro coord-check` (None = default_lr)

    def __post_init__(self) -> None:
        if self.emb_lr_rule not in EMB_LR_RULES:
            raise ValueError(
                f"parametrization {self.name!r}: emb_lr_rule must be one of"
                f" {', '.join(EMB_LR_RULES)} (got {self.emb_lr_rule!r})"
            )
        # a read-only copy: a resolved config's hp never reaches back into the catalog
        object.__setattr__(self, "hp_defaults", MappingProxyType(dict(self.hp_defaults)))

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def check_lr(self) -> float:
        return self.default_lr if self.coord_check_lr is None else self.coord_check_lr


# hp_defaults: the hyperparameters per parametrization, with their defaults (docs/paper.md, "Hyperparameters";
# "unknown" ones are our documented choices). train.lr is the global eta of every parametrization.
# default_lr: docs/paper.md: u-muP 2^1, muP 2^-8; SP: our choice, Adam-typical.
# emb_lr_rule: the embedding LR rule each parametrization uses unless train.emb_lr_rule overrides it (docs/paper.md:
# u-μP's 1/√fan_out is empirical; the paper's ablation compares it with μP's constant c_emb).
# coord_check_lr: constant LRs for the coordinate check. μP at the paper's default 2^-8; u-μP at 2^-1 (its tuned 2^1
# on one memorised batch gives the block-0 attention output a finite-width slope of -0.23 over 64…1024, shrinking
# with width); SP at 2^-6, where the readout update's alignment visibly blows up logits.

# SP: torch-default-like init, std = sigma_init / sqrt(fan_in) for matrices, sigma_init for
# the embedding; one global LR; attention 1/sqrt(d_head).
SP = Parametrization(
    name="sp",
    family="sp",
    hp_defaults={"sigma_init": 1.0},
    default_lr=2.0**-9,
    emb_lr_rule="constant",
    label="SP",
    color="C7",
    coord_check_lr=2.0**-6,
)
# muP as implemented in the paper (docs/paper.md, "The abc-table"). sigma_init = 1/sqrt(base_width) gives
# unit-RMS hidden outputs at the base width.
MUP = Parametrization(
    name="mup",
    family="mup",
    hp_defaults={
        "sigma_init": 1 / math.sqrt(256),
        "alpha_emb": 1.0,
        "eta_emb": 1.0,
        "alpha_attn": 1.0,
        "alpha_out": 1.0,
        "base_width": 256,
        "base_depth": 4,
    },
    default_lr=2.0**-8,
    emb_lr_rule="constant",
    label="μP",
    color="C0",
    coord_check_lr=2.0**-8,
)
# u-μP: all HPs default 1 (docs/paper.md).
UMUP = Parametrization(
    name="umup",
    family="umup",
    hp_defaults={
        "alpha_ffn_act": 1.0,
        "alpha_attn_softmax": 1.0,
        "alpha_res": 1.0,
        "alpha_res_attn_ratio": 1.0,
        "alpha_loss_softmax": 1.0,
    },
    default_lr=2.0**1,
    emb_lr_rule="inv_sqrt_fan_out",
    label="u-μP",
    color="C3",
    coord_check_lr=2.0**-1,
)
# u-μP-FP8 follows u-μP's rules and defaults; only its matmul precision differs.
UMUP_FP8 = dataclasses.replace(UMUP, name="umup_fp8", fp8=True, label="u-μP FP8", color="C1")

# The catalog, in the order figures and listings use (a dict keyed by name; `register` appends).
CATALOG: dict[str, Parametrization] = {p.name: p for p in (SP, MUP, UMUP, UMUP_FP8)}


def names() -> tuple[str, ...]:
    """The parametrizations, in the catalog's order (SP, μP, u-μP, then the variants)."""
    return tuple(CATALOG)


def get(name: str) -> Parametrization:
    """The catalog entry of `name`; an unknown name is an error naming the allowed ones."""
    try:
        return CATALOG[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown parametrization {name!r}; allowed: {', '.join(CATALOG)}") from None


def register(entry: Parametrization) -> Parametrization:
    """Add `entry` to the catalog (after the others); its name must be new."""
    if entry.name in CATALOG:
        raise ValueError(f"parametrization {entry.name!r} is already in the catalog")
    CATALOG[entry.name] = entry
    return entry
