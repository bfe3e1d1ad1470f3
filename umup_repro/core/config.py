"""The cell config: one validated, fully resolved description of a training run.

Every run, preset and test goes through `resolve_config`, so a typo in a key, a wrong type or an
impossible shape fails here, before anything is built, with the field named and the allowed values
listed. The resolved config (all defaults filled in) is what gets hashed into a cell id.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from umup_repro.core import parametrizations

# The parametrizations live in their catalog (umup_repro/core/parametrizations.py). PARAMETRIZATIONS, HP_DEFAULTS,
# DEFAULT_LR and DEFAULT_EMB_LR_RULE are views of it, computed on each access (module `__getattr__` below), so an
# entry registered later is in them too.
_VIEWS = {
    "PARAMETRIZATIONS": lambda: parametrizations.names(),
    "HP_DEFAULTS": lambda: {p.name: p.hp_defaults for p in parametrizations.CATALOG.values()},
    "DEFAULT_LR": lambda: {p.name: p.default_lr for p in parametrizations.CATALOG.values()},
    "DEFAULT_EMB_LR_RULE": lambda: {p.name: p.emb_lr_rule for p in parametrizations.CATALOG.values()},
}


def __getattr__(name: str) -> Any:
    if name in _VIEWS:
        return _VIEWS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def coercion_problem(annotation: Any, value: Any) -> str | None:
    """Why `value` must not be coerced into a field of type `annotation` (None if it may):
    numbers must be numbers (not booleans, not strings), booleans must be booleans."""
    kinds = set(get_args(annotation)) or {annotation}
    if bool in kinds and not isinstance(value, bool):
        return "must be true or false"
    if kinds & {int, float} and (isinstance(value, (bool, str)) or not isinstance(value, (int, float))):
        return "must be a valid integer" if float not in kinds else "must be a number"
    return None


# Size bounds: far above any run this pipeline can train (the paper's largest is width 4096),
# low enough that an absurd shape is refused naming its field instead of exhausting memory.
MAX_WIDTH, MAX_DEPTH, MAX_VOCAB, MAX_SEQ_LEN = 2**16, 1024, 2**20, 2**20
MAX_STEPS, MAX_BATCH, MAX_TOKENS_PER_STEP = 2**31, 2**20, 2**24


class ConfigError(ValueError):
    """A config that cannot be run; the message names the field and what is allowed."""


class _Section(BaseModel):
    # allow_inf_nan: an infinite LR or bound would train and then fail writing JSON; and no
    # coercion of booleans or strings into numbers (`width: true` is not 1): see `_no_coercion`.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_coercion(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if field is None or value is None:
                    continue
                if get_origin(field.annotation) is dict and isinstance(value, dict):
                    items = [(f"{name}.{k}", get_args(field.annotation)[1], v) for k, v in value.items()]
                else:
                    items = [(name, field.annotation, value)]
                for where, annotation, v in items:
                    problem = coercion_problem(annotation, v)
                    if problem:
                        raise ValueError(f"{where}: {problem} (got {v!r})")
        return data


class ModelConfig(_Section):
    width: int = Field(256, gt=0, le=MAX_WIDTH)
    depth: int = Field(4, gt=0, le=MAX_DEPTH)
    head_dim: int = Field(64, gt=0, description="used when heads is null")
    heads: int | None = Field(None, gt=0, description="if set, head_dim = width / heads")
    ffn_ratio: float = Field(4.0, gt=0, le=64)
    vocab_size: int = Field(4096, gt=1, le=MAX_VOCAB)
    seq_len: int = Field(256, gt=0, le=MAX_SEQ_LEN)
    rope: bool = True
    rope_base: float = Field(10000.0, gt=0)
    fp8: bool = Field(False, description="FP8 casts on matmul inputs (forced on by umup_fp8)")
    # Which matmul inputs the FP8 casts reach (docs/paper.md, "FP8"): `selective` is the paper's final
    # scheme of its large-scale runs (q/k/v and FFN up/gate in FP8; attention-out and FFN-down
    # inputs, whose scale grows in training, kept in high precision); `all_hidden` is the plain
    # cast of every matmul input inside the transformer blocks that the proxy experiments used
    # (Fig. 1c). Embedding (a lookup) and readout stay in high precision in both.
    fp8_scheme: Literal["selective", "all_hidden"] = Field(
        "selective", description="matmuls cast to FP8 when FP8 is on: selective (paper's final) or all_hidden"
    )
    # RMSNorm with a learned per-channel gain (init 1), the standard Llama choice; false keeps the
    # paper's non-parametric norms, one of its two stability fixes (docs/paper.md, "Stability fixes").
    norm_gains: bool = Field(False, description="trainable RMSNorm gains (standard Llama); false = the paper's fix")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.heads is not None and self.width % self.heads:
            raise ValueError(f"model.width ({self.width}) must be divisible by model.heads ({self.heads})")
        if self.heads is None and self.width % self.head_dim:
            raise ValueError(
                f"model.width ({self.width}) must be divisible by model.head_dim ({self.head_dim});"
                " set model.heads or model.head_dim to a divisor of the width"
            )
        if self.ffn_width < 1:
            raise ValueError(
                f"ffn_ratio: {self.ffn_ratio} gives an FFN width of {self.ffn_width}"
                f" at model.width {self.width}; it must be at least 1"
            )
        if self.rope and (self.d_head < 2 or self.d_head % 2):
            raise ValueError(
                f"head_dim: {self.d_head} must be even and at least 2 with model.rope"
                " (RoPE rotates pairs of dimensions)"
            )
        return self

    @property
    def n_heads(self) -> int:
        return self.heads if self.heads is not None else self.width // self.head_dim

    @property
    def d_head(self) -> int:
        return self.width // self.n_heads

    @property
    def ffn_width(self) -> int:
        return int(round(self.width * self.ffn_ratio))


class DataConfig(_Section):
    corpus: Literal["wiki_offline", "wikitext103", "slimpajama", "text_files"] = "wiki_offline"
    hub_name: str | None = Field(None, description="override the corpus' hub dataset name")
    hub_config: str | None = Field(None, description="override the hub dataset config")
    files: list[str] = Field(default_factory=list, description="paths, for corpus text_files")
    max_tokens: int | None = Field(None, gt=0, description="token budget for streamed corpora")
    tokenizer: str = Field("bpe", description="'bpe' (trained, cached) or a hub tokenizer name")
    val_batches: int = Field(4, gt=0, le=10_000)
    train_split: str = Field("train", description="hub split to train on (wikitext103, slimpajama)")
    val_split: str = Field("validation", description="hub split to validate on (wikitext103, slimpajama)")
    val_fraction: float = Field(
        0.05, gt=0, lt=1, description="documents carved out (by hash) for validation: wiki_offline, text_files"
    )
    # Tensor Programs V's setting trains for several epochs over a small corpus: training windows
    # come from the first train_tokens tokens of the training split only, so a run of
    # steps·batch·seq_len > train_tokens tokens repeats its data (validation is unchanged).
    train_tokens: int | None = Field(
        None, gt=0, description="train on the first N tokens only (data repeats: epochs); null = the whole split"
    )

    @model_validator(mode="after")
    def _files_for_text_files(self) -> DataConfig:
        if self.corpus == "text_files" and not self.files:
            raise ValueError("data.files must list at least one path when data.corpus is text_files")
        return self


class TrainConfig(_Section):
    steps: int = Field(200, gt=0, le=MAX_STEPS)
    batch_size: int = Field(16, gt=0, le=MAX_BATCH)
    lr: float | None = Field(None, gt=0, description="global eta; null = parametrization default")
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup: int = Field(20, ge=0)
    final_lr_frac: float = Field(0.0, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0, description="lambda; what one step does with it: weight_decay_form")
    # docs/paper.md, "Stability fixes": `independent` shrinks every weight by λ per step at the peak
    # LR whatever η (the paper's fix), `decoupled` by lr·λ (torch's AdamW), `coupled` adds λ·w to
    # the gradient (L2, torch's Adam). Code: umup_repro/model/optim.py.
    weight_decay_form: Literal["coupled", "decoupled", "independent"] = Field(
        "independent", description="coupled (L2 in the gradient), decoupled (AdamW, lr·λ), independent (λ)"
    )
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(None, gt=0)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy/torch seeds are unsigned 32-bit")
    precision: Literal["32", "tf32", "bf16-mixed"] = Field(
        "32", description="fp32 ('32'); fp32 weights with TF32 matmuls on GPUs ('tf32'; fp32 on CPU); bf16-mixed"
    )
    diverge_loss: float = Field(20.0, gt=0, description="loss above this ends the run as diverged")
    checkpoint_every: int = Field(50, gt=0)
    emb_lr_rule: Literal["default", "constant", "inv_sqrt_fan_out"] = Field(
        "default",
        description="embedding Adam LR factor: 'constant' (μP's c_emb = 1, times eta_emb) or"
        " 'inv_sqrt_fan_out' (u-μP's 1/√width); 'default' = the parametrization's own rule",
    )


class LogConfig(_Section):
    rms_every: int = Field(50, gt=0)
    val_every: int = Field(50, gt=0)


class DistributedConfig(_Section):
    """How many processes train one cell (docs/design.md, "Distributed cells"). The global batch
    is train.batch_size whatever these are: each device takes batch_size / (nodes·devices) rows of
    the step's batch, in `accumulate` micro-batches."""

    nodes: int = Field(1, gt=0, description="nodes one cell runs on (SLURM: --nodes)")
    devices: int = Field(1, gt=0, description="devices (one process each) per node")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: replicas; fsdp: sharded weights, gradients and optimizer state"
    )
    accumulate: int = Field(1, gt=0, description="micro-batches per device and step (gradient accumulation)")

    @property
    def world_size(self) -> int:
        return self.nodes * self.devices


class RunConfig(_Section):
    parametrization: str = "umup"  # a name of the catalog, umup_repro/core/parametrizations.py (`_in_catalog`)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    hp: dict[str, float] = Field(default_factory=dict)
    log: LogConfig = Field(default_factory=LogConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

    @field_validator("parametrization", mode="before")
    @classmethod
    def _in_catalog(cls, value: Any) -> Any:
        allowed = parametrizations.names()
        if not isinstance(value, str) or value not in allowed:
            quoted = [repr(n) for n in allowed]
            raise ValueError(f"Input should be {', '.join(quoted[:-1])} or {quoted[-1]}")
        return value

    @model_validator(mode="after")
    def _batch_divides(self) -> RunConfig:
        d = self.distributed
        if self.train.batch_size % (d.world_size * d.accumulate):
            raise ValueError(
                f"train.batch_size ({self.train.batch_size}) must be divisible by distributed.nodes ×"
                f" distributed.devices × distributed.accumulate ({d.nodes} × {d.devices} × {d.accumulate})"
            )
        return self

    @property
    def micro_batch(self) -> int:
        """Rows one device computes at a time: the global batch / (world size · accumulate)."""
        d = self.distributed
        return self.train.batch_size // (d.world_size * d.accumulate)

    @model_validator(mode="after")
    def _resolve_hp_and_lr(self) -> RunConfig:
        entry = parametrizations.get(self.parametrization)
        allowed = entry.hp_defaults
        unknown = sorted(set(self.hp) - set(allowed))
        if unknown:
            raise ValueError(
                f"hp.{unknown[0]}: unknown hyperparameter for parametrization "
                f"{self.parametrization!r}; allowed: {', '.join(sorted(allowed))}"
            )
        for name, value in self.hp.items():
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"hp.{name}: must be a positive finite number (got {value})")
        resolved = {**allowed, **self.hp}
        for name in ("base_width", "base_depth"):
            if name in resolved and resolved[name] != int(resolved[name]):
                raise ValueError(f"hp.{name}: must be a whole number (got {resolved[name]})")
        # Bypass validate_assignment recursion by writing the fields directly.
        object.__setattr__(self, "hp", resolved)
        tokens = self.train.batch_size * self.model.seq_len
        if tokens > MAX_TOKENS_PER_STEP:
            raise ValueError(
                f"train.batch_size × model.seq_len = {tokens} tokens per step is above the size"
                f" bound {MAX_TOKENS_PER_STEP}"
            )
        if self.train.lr is None:
            object.__setattr__(self.train, "lr", entry.default_lr)
        if self.train.emb_lr_rule == "default":
            object.__setattr__(self.train, "emb_lr_rule", entry.emb_lr_rule)
        return self

    @model_validator(mode="after")
    def _train_tokens_hold_a_window(self) -> RunConfig:
        if self.data.train_tokens is not None and self.data.train_tokens < self.model.seq_len + 1:
            raise ValueError(
                f"data.train_tokens ({self.data.train_tokens}) must hold one window of"
                f" model.seq_len + 1 = {self.model.seq_len + 1} tokens"
            )
        return self

    @property
    def uses_fp8(self) -> bool:
        return parametrizations.get(self.parametrization).fp8 or self.model.fp8


def _format_errors(err: ValidationError, cls: type[BaseModel]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            section = _section_fields(cls, e["loc"][:-1])
            allowed = ", ".join(section) if section else "none"
            lines.append(f"{loc}: unknown key; allowed here: {allowed}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if loc and re.match(r"^[\w.]+: ", msg):  # a section validator naming its field
                loc, msg = f"{loc}.{msg.split(': ', 1)[0]}", msg.split(": ", 1)[1]
            got = e.get("input")
            shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
            lines.append(f"{loc}: {msg}{shown}" if loc else msg)
    return "invalid config:\n  " + "\n  ".join(lines)


def _section_fields(cls: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = cls.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        cls = field.annotation
    return list(cls.model_fields)


def resolve_config(raw: dict[str, Any] | None = None, **overrides: Any) -> RunConfig:
    """Validate a (possibly partial) config dict and fill in every default.

    `overrides` are dotted keys (`model.width=128`) applied on top, as `--set` does.
    """
    data = _deep_copy(raw or {})
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config: expected a mapping at the top level, got {type(data).__name__}")
    for dotted, value in overrides.items():
        set_dotted(data, dotted, value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, RunConfig)) from None


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c = value` in a nested dict, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"invalid config: {dotted}: {part} is not a section")
    node[leaf] = value


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """The resolved config as plain data (what config.yaml holds and what is hashed). A
    single-process `distributed` section is left out, so the cells that predate it keep their ids."""
    data = config.model_dump(mode="json")
    if data["distributed"] == _SINGLE_PROCESS:
        del data["distributed"]
    return data


_SINGLE_PROCESS = DistributedConfig().model_dump(mode="json")


def config_hash(config: RunConfig, length: int = 12) -> str:
    """The cell id: a short hash of the canonical, fully resolved config (same config, same id)."""
    canonical = json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def flatten_config(config: RunConfig) -> dict[str, Any]:
    """`{"model.width": 256, "train.lr": 2.0, "hp.alpha_res": 1.0, "parametrization": "umup", ...}`:
    the columns a summary and a sweep table carry."""
    flat: dict[str, Any] = {}
    for key, value in config_to_dict(config).items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj
