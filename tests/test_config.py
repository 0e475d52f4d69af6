import json

import pytest

from training.config import load_config
from training.errors import ConfigError

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
