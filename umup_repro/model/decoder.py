"""One Llama-style decoder whose layers take the parametrization.

Pre-norm blocks (RMSNorm without parameters, or with trainable gains under `model.norm_gains`) with
causal self-attention (RoPE by config) and a SwiGLU FFN, no biases, untied embedding and readout.
Every weight gets its init std, multiplier and LR factor from `parametrization.tensor_rule`; u-μP
swaps the plain ops for the unit-scaled ones of `ops`. FP8 casts follow `model.fp8_scheme`:
`selective` casts the q/k/v and FFN up/gate matmuls only (docs/paper.md, FP8: the attention-out and
FFN-down inputs stay in high precision), `all_hidden` every matmul of the blocks; the embedding and
the readout never.

`Tap` modules mark the activations the RMS logging and coordinate checks record (forward hooks
on them and on every linear layer; see `umup_repro.model.rms`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from umup_repro.core.config import RunConfig, resolve_config
from umup_repro.model import ops
from umup_repro.model.parametrization import (
    TensorRule,
    attention_logit_scale,
    is_unit_scaled,
    residual_weights,
    tensor_rule,
)


class Tap(nn.Identity):
    """A named point in the forward pass whose output the RMS recorders watch."""


class Linear(nn.Module):
    """A bias-free linear layer under a TensorRule; unit-scaled ops for u-μP, FP8 by flag."""

    def __init__(
        self, fan_in: int, fan_out: int, rule: TensorRule, *, unit: bool, readout: bool = False, use_fp8: bool = False
    ):
        super().__init__()
        self.rule, self.unit, self.readout, self.use_fp8 = rule, unit, readout, use_fp8
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in))
        nn.init.normal_(self.weight, std=rule.init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unit:
            if self.readout:
                return ops.unit_readout(x, self.weight)
            return ops.unit_linear(x, self.weight, self.use_fp8)
        m = self.rule.multiplier
        if self.use_fp8:  # μP/SP with FP8 casts: true gradients, cast inputs
            return ops.scaled_matmul(x, self.weight, m, m, m, use_fp8=True)
        y = F.linear(x, self.weight)
        return y * m if m != 1.0 else y

    def extra_repr(self) -> str:
        fan_out, fan_in = self.weight.shape
        return f"{fan_in}->{fan_out}, unit={self.unit}, fp8={self.use_fp8}"


class Embedding(nn.Module):
    def __init__(self, vocab: int, width: int, rule: TensorRule, *, unit: bool):
        super().__init__()
        self.rule, self.unit = rule, unit
        self.weight = nn.Parameter(torch.empty(vocab, width))
        nn.init.normal_(self.weight, std=rule.init_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.unit:
            return ops.unit_embedding(ids, self.weight)
        y = F.embedding(ids, self.weight)
        return y * self.rule.multiplier if self.rule.multiplier != 1.0 else y


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """RMSNorm, without trainable parameters (one of the paper's stability fixes) unless a gain is given."""
    return F.rms_norm(x, (x.shape[-1],), weight=weight, eps=1e-6)


class RMSNorm(nn.Module):
    """RMSNorm; with a TensorRule it has a trainable per-channel gain (`model.norm_gains`, the
    standard Llama choice), without one it has no parameters (the paper's fix). Under u-μP the
    gain's gradient is the true one times one factor (the unit-scaled ops above it), which Adam
    ignores, so it needs no unit-scaled op of its own."""

    def __init__(self, width: int, rule: TensorRule | None):
        super().__init__()
        self.rule = rule
        self.weight = nn.Parameter(torch.full((width,), rule.init_std)) if rule is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight)


class Rotary(nn.Module):
    """Rotary position embedding (rotate-half form); a rotation, so it keeps unit scale."""

    inv_freq: torch.Tensor  # a buffer (not a parameter), registered in __init__

    def __init__(self, d_head: int, base: float):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: batch, heads, seq, d_head
        pos = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)
        angles = torch.outer(pos, self.inv_freq)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, config: RunConfig, hidden: TensorRule, unit: bool, use_fp8: bool):
        super().__init__()
        m = config.model
        d = m.width
        self.heads, self.d_head, self.unit = m.n_heads, m.d_head, unit
        self.q_proj = Linear(d, d, hidden, unit=unit, use_fp8=use_fp8)
        self.k_proj = Linear(d, d, hidden, unit=unit, use_fp8=use_fp8)
        self.v_proj = Linear(d, d, hidden, unit=unit, use_fp8=use_fp8)
        self.out_proj = Linear(d, d, hidden, unit=unit, use_fp8=use_fp8 and m.fp8_scheme == "all_hidden")
        self.rotary = Rotary(self.d_head, m.rope_base) if m.rope else None
        self.logit_scale = attention_logit_scale(config.parametrization, self.d_head, config.hp)
        self.core = Tap()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.heads, self.d_head).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        attend = ops.unit_attention if self.unit else ops.attention
        out = attend(q, k, v, self.logit_scale).transpose(1, 2).reshape(b, s, d)
        return self.out_proj(self.core(out))


class FFN(nn.Module):
    def __init__(self, config: RunConfig, up: TensorRule, down: TensorRule, unit: bool, use_fp8: bool):
        super().__init__()
        d, f = config.model.width, config.model.ffn_width
        self.unit = unit
        self.alpha = config.hp.get("alpha_ffn_act", 1.0)
        self.up_proj = Linear(d, f, up, unit=unit, use_fp8=use_fp8)
        self.gate_proj = Linear(d, f, up, unit=unit, use_fp8=use_fp8)
        self.down_proj = Linear(f, d, down, unit=unit, use_fp8=use_fp8 and config.model.fp8_scheme == "all_hidden")
        self.act = Tap()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = self.up_proj(x), self.gate_proj(x)
        h = ops.unit_swiglu(u, v, self.alpha) if self.unit else ops.swiglu(u, v)
        return self.down_proj(self.act(h))


class Block(nn.Module):
    """Pre-norm attention and FFN branches, each joined to the stream by its residual weights."""

    def __init__(self, config: RunConfig, weights: list[tuple[float, float]], rules: dict, unit: bool, use_fp8: bool):
        super().__init__()
        self.unit = unit
        self.attn_norm = RMSNorm(config.model.width, rules["norm"])
        self.ffn_norm = RMSNorm(config.model.width, rules["norm"])
        (self.attn_skip, self.attn_branch), (self.ffn_skip, self.ffn_branch) = weights
        self.attn = Attention(config, rules["hidden_d"], unit, use_fp8)
        self.ffn = FFN(config, rules["hidden_d"], rules["hidden_f"], unit, use_fp8)
        self.attn_in, self.attn_resid = Tap(), Tap()
        self.ffn_in, self.ffn_resid = Tap(), Tap()

    def _residual(self, x, branch, norm, norm_tap, skip_w, branch_w):
        if self.unit:
            branch_in, skip = ops.residual_split(x, skip_w, branch_w)
            return ops.residual_add(branch(norm_tap(norm(branch_in))), skip, skip_w, branch_w)
        out = branch(norm_tap(norm(x)))
        return x + (out * branch_w if branch_w != 1.0 else out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_resid(
            self._residual(x, self.attn, self.attn_norm, self.attn_in, self.attn_skip, self.attn_branch)
        )
        return self.ffn_resid(self._residual(x, self.ffn, self.ffn_norm, self.ffn_in, self.ffn_skip, self.ffn_branch))


class Decoder(nn.Module):
    """The one model class: embedding → depth × Block → RMSNorm → readout."""

    def __init__(self, config: RunConfig):
        super().__init__()
        m, p, hp = config.model, config.parametrization, config.hp
        self.config = config
        self.unit = is_unit_scaled(p)
        use_fp8 = config.uses_fp8
        self.alpha_loss = hp.get("alpha_loss_softmax", 1.0)

        def rule(role, fan_in, fan_out, in_stack):
            return tensor_rule(
                p,
                role,
                fan_in=fan_in,
                fan_out=fan_out,
                width=m.width,
                depth=m.depth,
                hp=hp,
                in_residual_stack=in_stack,
                emb_lr_rule=config.train.emb_lr_rule,
            )

        block_rules = {
            "hidden_d": rule("hidden", m.width, m.width, True),  # q, k, v, out, up, gate
            "hidden_f": rule("hidden", m.ffn_width, m.width, True),  # down
            "norm": rule("norm_gain", m.width, m.width, True) if m.norm_gains else None,  # the blocks' gains
        }
        weights = residual_weights(p, m.depth, hp)
        self.embedding = Embedding(
            m.vocab_size, m.width, rule("embedding", m.vocab_size, m.width, False), unit=self.unit
        )
        self.blocks = nn.ModuleList(
            Block(config, weights[2 * i : 2 * i + 2], block_rules, self.unit, use_fp8) for i in range(m.depth)
        )
        self.out_norm = RMSNorm(m.width, rule("norm_gain", m.width, m.width, False) if m.norm_gains else None)
        self.final_norm = Tap()
        self.readout = Linear(
            m.width, m.vocab_size, rule("readout", m.width, m.vocab_size, False), unit=self.unit, readout=True
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (batch, seq) → logits (batch, seq, vocab)."""
        x = self.embedding(ids)
        for block in self.blocks:
            x = block(x)
        return self.readout(self.final_norm(self.out_norm(x)))

    def loss_from_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.unit:
            return ops.unit_cross_entropy(logits, targets, self.alpha_loss)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of a (batch, seq_len + 1) token tensor."""
        return self.loss_from_logits(self(batch[:, :-1]), batch[:, 1:])

    def lr_factors(self) -> dict[str, float]:
        """Adam LR factor of every trainable parameter, by name (depth factor included)."""
        return {
            f"{name}.weight": module.rule.lr_factor
            for name, module in self.named_modules()
            if isinstance(module, (Linear, Embedding, RMSNorm)) and module.rule is not None
        }


def build_model(config: RunConfig | dict) -> Decoder:
    """The decoder for a config (a RunConfig, or a dict validated here so bad values fail before
    anything is built); weights drawn from torch's current RNG state."""
    if not isinstance(config, RunConfig):
        config = resolve_config(config)
    return Decoder(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
