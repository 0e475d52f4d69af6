import json

import pytest
from ernie_sm.contract.errors import ConfigError
from ernie_sm.training.config import load_config

# config/ernie_config.json of PaddlePaddle/ERNIE (branch repro), as released.
RELEASED_ERNIE_1_CONFIG = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "relu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "max_position_embeddings": 513,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "type_vocab_size": 2,
    "vocab_size": 18000,
}


def test_ernie_1_base_preset_is_the_released_config(tmp_path):
    (tmp_path / "ernie_config.json").write_text(json.dumps(RELEASED_ERNIE_1_CONFIG))
    c = load_config("ernie-1.0-base", tmp_path, 17964)
    assert c == load_config("ernie_config.json", tmp_path, 17964)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (768, 12, 12)
    assert (c.vocab_size, c.hidden_act, c.max_position_embeddings) == (18000, "relu", 513)


def test_bundled_presets_and_vocab_size_from_the_vocab(tmp_path):
    assert load_config("ernie-1.0-base", tmp_path, 17964).vocab_size == 18000
    assert load_config("ernie-tiny", tmp_path, 305).vocab_size == 305


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"vocab_size": 10}, r"vocab_size 10 is smaller than the vocab \(305 tokens\)"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "not divisible by num_attention_heads"),
        ({"hidden_act": "swish"}, "hidden_act 'swish' is not one of relu, gelu"),
        ({"hiden_size": 30}, "unknown keys hiden_size"),
    ],
)
def test_bad_configs_are_named(tmp_path, content, message):
    (tmp_path / "c.json").write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message):
        load_config("c.json", tmp_path, 305)


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nope.json", tmp_path, 305)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config("bad.json", tmp_path, 305)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"num_attention_heads": 0}, "num_attention_heads must be a whole number >= 1, got 0"),
        ({"hidden_size": "768"}, 'hidden_size must be a whole number >= 1, got "768"'),
        ({"num_hidden_layers": None}, "num_hidden_layers must be a whole number >= 1, got null"),
        ({"type_vocab_size": -2}, "type_vocab_size must be a whole number >= 1, got -2"),
        ({"hidden_size": 64.0}, "hidden_size must be a whole number >= 1, got 64.0"),
        ({"num_hidden_layers": True}, "num_hidden_layers must be a whole number >= 1, got true"),
        ({"vocab_size": 1e9}, "vocab_size must be a whole number >= 1, got 1000000000.0"),
        (
            {"hidden_dropout_prob": 1.0},
            r"hidden_dropout_prob must be a number in \[0, 1\), got 1.0",
        ),
        ({"attention_probs_dropout_prob": -0.1}, "attention_probs_dropout_prob must be a number"),
        ({"attention_probs_dropout_prob": "0.1"}, "attention_probs_dropout_prob must be a number"),
        ({"initializer_range": 0}, "initializer_range must be a number > 0, got 0"),
        ({"initializer_range": float("nan")}, "initializer_range must be a number > 0, got NaN"),
    ],
)
def test_config_values_of_the_wrong_type_or_range_name_file_and_key(tmp_path, content, message):
    (tmp_path / "c.json").write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message) as error:
        load_config("c.json", tmp_path, 305)
    assert str(error.value).startswith(f"model config {tmp_path / 'c.json'}: ")


@pytest.mark.parametrize("content", ["[768, 12]", "12", '"ernie"', "null"])
def test_a_config_that_is_not_an_object_is_named(tmp_path, content):
    (tmp_path / "c.json").write_text(content)
    with pytest.raises(ConfigError, match=r"c\.json must hold a JSON object of settings, not "):
        load_config("c.json", tmp_path, 305)


def test_a_config_that_is_not_utf8_is_named_with_its_line(tmp_path):
    (tmp_path / "c.json").write_bytes('{\n"hidden_act": "门"}'.encode("gb18030"))
    with pytest.raises(ConfigError, match=r"model config .*c\.json line 2: bytes .* not UTF-8"):
        load_config("c.json", tmp_path, 305)
