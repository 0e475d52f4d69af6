"""A local SageMaker job with a synthetic dataset and a tiny model, for the tests."""

from __future__ import annotations

import json
from pathlib import Path

from ernie_sm.training import layout
from ernie_sm.training.vocab import Vocab

from tests import synthetic

TINY_CONFIG = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "relu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "max_position_embeddings": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 1,
    "type_vocab_size": 2,
}

TINY_HYPERPARAMETERS = {
    "ernie_config_path": "ernie_config.json",
    "max_seq_len": "64",
    "batch_size": "512",
    "learning_rate": "0.001",
    "warmup_steps": "2",
    "num_train_steps": "8",
    "skip_steps": "1",
    "validation_steps": "4",
    "save_steps": "4",
    "num_workers": "0",
}


def make_job(base: Path, **overrides: str) -> Path:
    """A SageMaker layout under `base` (train + valid channels); returns `base`."""
    data = base / "input" / "data"
    synthetic.write_dataset(data / "train", data / "valid", train_shards=2, lines_per_shard=200)
    (data / "train" / "ernie_config.json").write_text(json.dumps(TINY_CONFIG))
    layout.write_local_job(base, {**TINY_HYPERPARAMETERS, **overrides}, ["train", "valid"])
    return base


# Specials and 96 plain tokens: what the reader's unit tests need of a vocab.
TOY_VOCAB = Vocab(
    tokens=("[PAD]", "[CLS]", "[SEP]", "[MASK]", *(f"t{i}" for i in range(4, 100))),
    pad_id=0,
    cls_id=1,
    sep_id=2,
    mask_id=3,
    unk_id=None,
)


def tiny_input(**hyperparameters: str) -> dict:
    """An execution input for the tiny model on the dataset staged at datasets/demo."""
    return {
        "dataset": "datasets/demo",
        "spot": False,
        "hyperparameters": {**TINY_HYPERPARAMETERS, **hyperparameters},
    }
