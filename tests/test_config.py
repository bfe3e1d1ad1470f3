"""Bad configs fail before anything is built, naming the field and what is allowed."""

import pytest

from umup_repro.core.config import ConfigError, resolve_config
from umup_repro.model.decoder import build_model


@pytest.mark.parametrize(
    "raw,field,allowed",
    [
        ({"parametrization": "mupp"}, "parametrization", "'sp', 'mup', 'umup' or 'umup_fp8'"),
        ({"model": {"width": 100}}, "model.width", "divisible by model.head_dim"),
        ({"model": {"width": 256, "heads": 3}}, "model.width", "divisible by model.heads"),
        ({"model": {"width": 0}}, "model.width", "greater than 0"),
        ({"model": {"depth": -2}}, "model.depth", "greater than 0"),
        ({"model": {"vocab_size": 1}}, "model.vocab_size", "greater than 1"),
        ({"train": {"batch_size": 0}}, "train.batch_size", "greater than 0"),
        ({"hp": {"alpha_foo": 1.0}}, "hp.alpha_foo", "alpha_attn_softmax, alpha_ffn_act"),
        ({"parametrization": "mup", "hp": {"alpha_res": 1.0}}, "hp.alpha_res", "alpha_attn, alpha_emb, alpha_out"),
        ({"hp": {"alpha_res": -1.0}}, "hp.alpha_res", "positive"),
        ({"model": {"widht": 128}}, "model.widht", "allowed here: width, depth"),
        ({"model": {"width": "wide"}}, "model.width", "valid integer"),
    ],
)
def test_bad_config_names_field_and_allowed_values(raw, field, allowed):
    with pytest.raises(ConfigError) as err:
        build_model(raw)
    message = str(err.value)
    assert field in message and allowed in message, message


def test_defaults_fill_in_and_lr_follows_parametrization():
    assert resolve_config({"parametrization": "umup"}).train.lr == 2.0
    assert resolve_config({"parametrization": "mup"}).train.lr == 2.0**-8
    config = resolve_config({"parametrization": "mup", "hp": {"alpha_out": 2.0}})
    assert config.hp["alpha_out"] == 2.0 and config.hp["base_width"] == 256


def test_dotted_overrides():
    config = resolve_config({"model": {"width": 128}}, **{"model.depth": 3, "hp.alpha_res": 2.0})
    assert (config.model.width, config.model.depth, config.hp["alpha_res"]) == (128, 3, 2.0)
