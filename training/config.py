"""ERNIE model configuration, read from an `ernie_config.json`-compatible file or a bundled preset."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ernie_sm.contract import presets
from ernie_sm.contract.errors import ConfigError
from ernie_sm.contract.textfile import read_text

ACTIVATIONS = ("relu", "gelu")
# Keys other ERNIE releases write that do not change the architecture (ERNIE 2.0's
# use_task_id is read with task_type_vocab_size, below).
IGNORED_KEYS = {"pad_token_id", "model_type"}
ALIASES = {"sent_type_vocab_size": "type_vocab_size"}


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # JSON true is an int


# What each value must be; checked before any arithmetic on them (0 heads would divide by 0).
SIZE = (lambda v: _number(v) and isinstance(v, int) and v >= 1, "a whole number >= 1")
DROPOUT = (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)")
RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "vocab_size": SIZE,
    "hidden_size": SIZE,
    "num_hidden_layers": SIZE,
    "num_attention_heads": SIZE,
    "max_position_embeddings": SIZE,
    "type_vocab_size": SIZE,
    "task_type_vocab_size": (
        lambda v: _number(v) and isinstance(v, int) and v >= 0,
        "a whole number >= 0",
    ),
    "hidden_dropout_prob": DROPOUT,
    "attention_probs_dropout_prob": DROPOUT,
    "initializer_range": (lambda v: _number(v) and 0 < v < math.inf, "a number > 0"),
}


@dataclass(frozen=True)
class ErnieConfig:
    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    hidden_act: str = "relu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 513
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    task_type_vocab_size: int = 0  # ERNIE 2.0's task embedding rows; 0: none (ERNIE 1.0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def load_config(path_or_preset: str, base_dir: Path, vocab_len: int) -> ErnieConfig:
    """Load a config; `vocab_size` may be absent (then the vocab's length) but not smaller than it."""
    path = presets.locate(path_or_preset, base_dir, presets.CONFIGS, "ernie_config_path")
    source = f"preset {path_or_preset}" if path_or_preset in presets.CONFIGS.names else str(path)
    text = read_text(path, "model config", ConfigError)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"model config {source} is not valid JSON: {exc}") from None
    return config_from_dict(raw, source, vocab_len)


def config_from_dict(raw: object, source: str, vocab_len: int) -> ErnieConfig:
    """A config from parsed JSON; `source` names where it came from in errors."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"model config {source} must hold a JSON object of settings, not {json.dumps(raw)[:80]}"
        )
    raw = {ALIASES.get(k, k): v for k, v in raw.items() if k not in IGNORED_KEYS}
    if not raw.pop("use_task_id", True):  # ERNIE 2.0 configs without task ids
        raw.pop("task_type_vocab_size", None)
    known = set(ErnieConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"model config {source}: unknown keys {', '.join(unknown)}")
    raw.setdefault("vocab_size", vocab_len)
    try:
        config = ErnieConfig(**raw)
    except TypeError as exc:
        raise ConfigError(f"model config {source}: {exc}") from None
    _check(config, source, vocab_len)
    return config


def _check(c: ErnieConfig, source: str, vocab_len: int) -> None:
    for key, (valid, wanted) in RULES.items():
        if not valid(getattr(c, key)):
            raise ConfigError(
                f"model config {source}: {key} must be {wanted}, got {json.dumps(getattr(c, key))}"
            )
    if c.vocab_size < vocab_len:
        raise ConfigError(
            f"model config {source}: vocab_size {c.vocab_size} is smaller than the vocab "
            f"({vocab_len} tokens)"
        )
    if c.hidden_act not in ACTIVATIONS:
        raise ConfigError(
            f"model config {source}: hidden_act {c.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}"
        )
    if c.hidden_size % c.num_attention_heads:
        raise ConfigError(
            f"model config {source}: hidden_size {c.hidden_size} is not divisible by "
            f"num_attention_heads {c.num_attention_heads}"
        )
