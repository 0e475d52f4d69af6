"""A local SageMaker job with a synthetic dataset and a tiny model, for the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ernie_sm.contract import tasks
from ernie_sm.text.vocab import Vocab
from ernie_sm.training import layout

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


def add_task_shards(
    channel: Path, filelist: str, names: list[str], seed: int = 0, shards: int = 1
) -> None:
    """Give a channel of make_job ERNIE 2.0 task shards (format 2): the synthetic samples
    with labels drawn at random, which exercise the mechanics, not learning."""
    rng = np.random.default_rng(seed)
    for name in names:
        task = tasks.TASKS[name]
        folder = tasks.task_folder(channel, task)
        folder.mkdir(exist_ok=True)
        for shard in range(shards):
            _write_task_shard(folder / f"part-{shard:05d}.gz", task, seed + shard, rng)
        listed = "".join(f"part-{shard:05d}.gz\t0\n" for shard in range(shards))
        (folder / filelist).write_text(listed)
    (channel / tasks.DATASET_FILE).write_text(tasks.describe_dataset(["knowledge_masking", *names]))


def _write_task_shard(path: Path, task: tasks.Task, seed: int, rng: np.random.Generator) -> None:
    lines = []
    for line in synthetic.samples(120, seed=seed + 100 * task.id):
        fields = line.split(";")[:4]
        n = len(fields[0].split())
        if task.token_level:
            labels = rng.integers(0, task.num_classes, n)
            labels[[0, -1]] = tasks.IGNORE
            lines.append(";".join([*fields, " ".join(map(str, labels))]))
        else:
            lines.append(";".join([*fields, str(rng.integers(task.num_classes))]))
    synthetic.write_shard(path, lines)


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


# `ernie-sm evaluate` on the tiny model, on the CPU, in seconds.
TINY_EVAL_HYPERPARAMETERS = {
    "learning_rate": "0.003",
    "num_train_steps": "20",
    "batch_size": "16",
    "max_seq_len": "16",
    "eval_steps": "10",
    "patience": "0",
    "use_cuda": "false",
}


def write_labelled_set(folder: Path, seed: int = 0) -> Path:
    """train.tsv, dev.tsv, test.tsv in the synthetic dataset's characters: label "a" when
    a text holds characters of one group, "b" of another (the eval channel's format)."""
    rng = np.random.default_rng(seed)
    chars = [t for t in synthetic.vocab_tokens() if not t.startswith("[")]
    group_a, group_b, neutral = chars[:10], chars[10:20], chars[20:]
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 120), ("dev", 30), ("test", 30)):
        lines = ["label\ttext_a"]
        for i in range(n):
            label, group = ("a", group_a) if i % 2 == 0 else ("b", group_b)
            text = [*rng.choice(neutral, 5), *rng.choice(group, 2)]
            lines.append(f"{label}\t{''.join(rng.permutation(text))}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
