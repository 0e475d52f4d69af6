"""ERNIE 2.0's pieces on the trainer's side: task shards, batches, heads, losses, the task
draw, and warm starts between ERNIE 1.0 and 2.0 models."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import re
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from ernie_sm.contract import hyperparams, tasks
from ernie_sm.contract.errors import ConfigError, DataError
from ernie_sm.contract.tasks import (
    KNOWLEDGE_MASKING,
    SENTENCE_DISTANCE,
    SENTENCE_REORDERING,
    TOKEN_DOCUMENT_RELATION,
)
from ernie_sm.dataprep.prepare import PrepareOptions, prepare
from ernie_sm.training import layout, train
from ernie_sm.training.config import ErnieConfig
from ernie_sm.training.data import (
    BatchConfig,
    ShardLimits,
    TokenIds,
    make_batch,
    parse_shard,
    read_filelist,
)
from ernie_sm.training.export import export_model, warm_start
from ernie_sm.training.model import ErnieForPretraining, task_loss
from ernie_sm.training.multitask import TaskFigures, TaskMix, forward
from rich.console import Console

from tests import synthetic
from tests.helpers import (
    TINY_CONFIG,
    TINY_HYPERPARAMETERS,
    TOY_VOCAB,
    add_task_shards,
    make_job,
)
from tests.test_train import StopAfter

IDS = TokenIds.from_vocab(TOY_VOCAB)
CONFIG = ErnieConfig(
    vocab_size=len(TOY_VOCAB.tokens),
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=32,
)
ERNIE2 = dataclasses.replace(CONFIG, task_type_vocab_size=tasks.NUM_TASK_TYPES)
TDR = "1 5 6 2;0 0 0 0;0 1 2 3;-1 0 1 -1;-1 1 0 -1"
REORDERED = "1 5 2 6 2 7 2;0 0 0 0 0 0 0;0 1 2 3 4 5 6;-1 0 -1 0 -1 0 -1;8"


def limits(task: tasks.Task) -> ShardLimits:
    return ShardLimits(len(TOY_VOCAB.tokens), 16, 32, 2, task)


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "shard.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_the_reordering_classes_are_every_permutation_of_one_to_three_segments():
    # The paper's k = 1! + 2! + 3! classes, the unshuffled order of each count among them.
    assert tasks.REORDERINGS == (
        (0,),
        (0, 1),
        (1, 0),
        (0, 1, 2),
        (0, 2, 1),
        (1, 0, 2),
        (1, 2, 0),
        (2, 0, 1),
        (2, 1, 0),
    )
    assert SENTENCE_REORDERING.num_classes == 9


def test_task_weights_parse_and_name_what_is_wrong():
    assert tasks.parse_weights("knowledge_masking:2, sentence_distance") == {
        "knowledge_masking": 2.0,
        "sentence_distance": 1.0,
    }
    assert tasks.parse_weights(tasks.format_weights({"sentence_reordering": 0.25})) == {
        "sentence_reordering": 0.25
    }
    for text, message in [
        ("masking", "unknown task 'masking'"),
        ("sentence_distance:0", "weight '0' of sentence_distance must be a finite number > 0"),
        ("sentence_distance:nan", "must be a finite number > 0"),
        ("sentence_distance:x", "weight 'x' of sentence_distance is not a number"),
        ("sentence_distance,sentence_distance:2", "task sentence_distance is named twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            tasks.parse_weights(text)


def test_sampling_weights_that_overflow_or_are_never_drawn_are_refused():
    huge = "knowledge_masking:1e308,sentence_distance:1e308"
    with pytest.raises(ValueError, match=r"the weights sum to more than 1\.798e\+308"):
        tasks.parse_mix(huge)
    with pytest.raises(ValueError, match="weight '1e-320' of sentence_distance is subnormal"):
        tasks.parse_mix("knowledge_masking,sentence_distance:1e-320")
    with pytest.raises(ValueError, match=r"weight of sentence_distance 1e-17 .* never be drawn"):
        tasks.parse_mix("knowledge_masking,sentence_distance:1e-17")
    assert tasks.parse_mix("knowledge_masking:1e307,sentence_distance:1e292") == {
        "knowledge_masking": 1e307,
        "sentence_distance": 1e292,
    }
    assert tasks.parse_mix("sentence_distance:1e-300") == {"sentence_distance": 1e-300}
    # The trainer refuses them by hyperparameter, before any work.
    for text in (huge, "knowledge_masking,sentence_distance:1e-320"):
        assert "tasks" in hyperparams.validate({"tasks": text})
    assert hyperparams.validate({"task_loss_weights": "knowledge_masking:1e308"}) == {}


def test_a_token_level_task_reads_one_label_per_token(tmp_path):
    shard = parse_shard(write(tmp_path, TDR, TDR), limits(TOKEN_DOCUMENT_RELATION))
    assert shard.token_labels and shard.label.tolist() == [-1, 1, 0, -1] * 2
    reordered = parse_shard(write(tmp_path, REORDERED), limits(SENTENCE_REORDERING))
    assert not reordered.token_labels and reordered.label.tolist() == [8]


@pytest.mark.parametrize(
    "task, line, message",
    [
        (TOKEN_DOCUMENT_RELATION, "1 5 6 2;0 0 0 0;0 1 2 3;-1 0 1 -1;1", "line 2, field label: 1 values, but token_ids has 4"),
        (TOKEN_DOCUMENT_RELATION, "1 5 6 2;0 0 0 0;0 1 2 3;-1 0 1 -1;-1 2 0 -1", "line 2, field label: value 2 not in [-1, 2)"),
        (SENTENCE_REORDERING, REORDERED.replace(";8", ";9"), "line 2, field label: value 9 not in [0, 9)"),
        (SENTENCE_DISTANCE, REORDERED.replace(";8", ";-1"), "line 2, field label: value -1 not in [0, 3)"),
        (SENTENCE_DISTANCE, REORDERED.replace(";8", ";1 2"), "line 2, field label: expected exactly one value, found 2"),
        (KNOWLEDGE_MASKING, REORDERED.replace(";8", ";2"), "line 2, field nsp_label: value 2 not in {0, 1}"),
    ],
)  # fmt: skip
def test_a_bad_label_names_its_line_and_field(tmp_path, task, line, message):
    good = TDR if task.token_level else REORDERED.replace(";8", ";0")
    with pytest.raises(DataError, match=rf"shard.gz {message}$".replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):  # fmt: skip
        parse_shard(write(tmp_path, good, line), limits(task))


def test_an_unmasked_token_level_batch_pads_its_labels_with_ignore(tmp_path):
    short = "1 7 2;0 0 0;0 1 2;-1 0 -1;-1 0 -1"
    shard = parse_shard(write(tmp_path, TDR, short), limits(TOKEN_DOCUMENT_RELATION))
    config = BatchConfig(IDS, 100, True, masked=False)
    batch = make_batch(shard, np.array([0, 1]), config, False, np.random.default_rng(0))
    assert batch.label.tolist() == [[-1, 1, 0, -1], [-1, 0, -1, -1]]
    assert batch.src_ids.tolist() == [[1, 5, 6, 2], [1, 7, 2, 0]]  # nothing masked
    assert batch.mask_pos.size == batch.mask_label.size == 0


def test_heads_exist_only_with_a_task_embedding_and_the_task_id_matters():
    paddle.seed(0)
    assert not [n for n, _ in ErnieForPretraining(CONFIG).named_parameters() if "task" in n]
    model = ErnieForPretraining(ERNIE2)
    model.eval()
    names = {n for n, _ in model.named_parameters()}
    assert {
        "ernie.task_emb.weight",
        "task_heads.sentence_reordering.weight",
        "task_heads.sentence_distance.weight",
        "task_heads.token_document_relation.weight",
    } <= names
    src = paddle.to_tensor(np.array([[1, 5, 6, 2, 7, 2], [1, 8, 2, 9, 2, 0]]))
    sent, pos = paddle.zeros_like(src), paddle.to_tensor(np.tile(np.arange(6), (2, 1)))
    _, reorder = model(src, sent, pos, None, SENTENCE_REORDERING)
    _, relation = model(src, sent, pos, None, TOKEN_DOCUMENT_RELATION)
    assert reorder.shape == [2, 9] and relation.shape == [2, 6, 2]
    as_distance = model.ernie(src, sent, pos, SENTENCE_DISTANCE.id)[1]
    as_reordering = model.ernie(src, sent, pos, SENTENCE_REORDERING.id)[1]
    assert not np.allclose(as_distance.numpy(), as_reordering.numpy())


def test_the_task_loss_scores_only_labelled_tokens():
    logits = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 3, 2)).astype("float32"))
    label = np.array([[-1, 1, 0], [-1, 0, -1]])
    loss, accuracy = task_loss(logits, paddle.to_tensor(label))
    flat, kept = logits.numpy().reshape(-1, 2), label.ravel() >= 0
    expected = F.cross_entropy(
        paddle.to_tensor(flat[kept]), paddle.to_tensor(label.ravel()[kept][:, None])
    )
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    right = (flat[kept].argmax(-1) == label.ravel()[kept]).mean()
    assert float(accuracy) == pytest.approx(right)


def test_the_task_draw_follows_the_weights_and_the_step_alone():
    mix = TaskMix({"knowledge_masking": 3.0, "sentence_distance": 1.0}, seed=7)
    draws = [mix.draw(step, micro).name for step in range(2000) for micro in range(2)]
    assert draws.count("sentence_distance") / len(draws) == pytest.approx(0.25, abs=0.03)
    again = TaskMix({"knowledge_masking": 3.0, "sentence_distance": 1.0}, seed=7)
    assert [again.draw(step, 1).name for step in range(500, 600)] == draws[1001:1201:2]
    assert TaskMix({"sentence_reordering": 1.0}, 0).draw(3, 0) == SENTENCE_REORDERING


def test_figures_are_count_weighted_and_a_task_without_batches_reports_nothing(tmp_path):
    paddle.seed(0)
    model = ErnieForPretraining(ERNIE2)
    shard = parse_shard(write(tmp_path, REORDERED, REORDERED), limits(SENTENCE_REORDERING))
    batch = make_batch(
        shard, np.array([0, 1]), BatchConfig(IDS, 100, True, masked=False), False, None
    )
    figures = TaskFigures([KNOWLEDGE_MASKING, SENTENCE_REORDERING])
    loss, reported = forward(model, batch, SENTENCE_REORDERING)
    figures.add(SENTENCE_REORDERING, reported)
    figures.add(SENTENCE_REORDERING, reported)
    means = figures.means()
    assert list(means) == ["sentence_reordering"]  # no knowledge-masking zeros
    assert means["sentence_reordering"]["loss"] == pytest.approx(float(loss), rel=1e-6)


def test_an_ernie_1_model_warm_starts_an_ernie_2_model(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    paddle.seed(1)
    old = ErnieForPretraining(CONFIG)
    (tmp_path / "vocab.txt").write_text(
        "".join(f"{t}\t{i}\n" for i, t in enumerate(TOY_VOCAB.tokens))
    )
    export_model(old, CONFIG, tmp_path / "vocab.txt", tmp_path / "model")
    paddle.seed(2)
    new = ErnieForPretraining(ERNIE2)
    fresh = {n: p.numpy().copy() for n, p in new.named_parameters()}
    warm_start(new, tmp_path / "model", TOY_VOCAB)
    loaded = dict(new.named_parameters())
    for name, value in old.named_parameters():
        np.testing.assert_array_equal(loaded[name].numpy(), value.numpy())
    added = sorted(n for n in fresh if n.startswith(("ernie.task_emb.", "task_heads.")))
    assert len(added) == 7
    for name in added:
        np.testing.assert_array_equal(loaded[name].numpy(), fresh[name])
    reported = [
        r.getMessage() for r in caplog.records if "initialised, not loaded" in r.getMessage()
    ]
    assert len(reported) == 1 and sorted(reported[0].split(": ")[-1].split(", ")) == added

    # Back the other way: an ERNIE 2.0 model is no ERNIE 1.0 job's start.
    export_model(new, ERNIE2, tmp_path / "vocab.txt", tmp_path / "ernie2")
    with pytest.raises(
        ConfigError, match=r"it is an ERNIE 2\.0 model .* set the tasks hyperparameter"
    ):
        warm_start(ErnieForPretraining(CONFIG), tmp_path / "ernie2", TOY_VOCAB)
    warm_start(ErnieForPretraining(ERNIE2), tmp_path / "ernie2", TOY_VOCAB)  # 2.0 into 2.0


ALL_TASKS = "knowledge_masking:2,sentence_reordering,sentence_distance,token_document_relation"
NEW_TASKS = ["sentence_reordering", "sentence_distance", "token_document_relation"]
TASK_LINE = re.compile(r"\[task\] step=(\d+) task=(\w+) \w+_loss=([0-9.]+)")


def ernie2_job(base: Path, **overrides: str) -> Path:
    make_job(base, tasks=ALL_TASKS, **overrides)
    data = base / "input" / "data"
    add_task_shards(data / "train", "train_filelist", NEW_TASKS)
    add_task_shards(data / "valid", "valid_filelist", NEW_TASKS, seed=100)
    return base


def task_losses(caplog) -> dict[tuple[int, str], float]:
    found = (TASK_LINE.search(r.getMessage()) for r in caplog.records)
    return {(int(m[1]), m[2]): float(m[3]) for m in found if m}


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def test_an_ernie_2_job_trains_and_validates_every_task(tmp_path, sm_env, logs):
    base = sm_env(ernie2_job(tmp_path, gradient_accumulation_steps="2"))
    assert train.main() == 0
    messages = [r.getMessage() for r in logs.records]
    trained = {name for _, name in task_losses(logs)}
    assert trained == {"knowledge_masking", *NEW_TASKS}  # 16 draws at weights 2:1:1:1
    valid = [m.split()[1:3] for m in messages if m.startswith("[valid_task]")]
    assert valid == [[f"step={s}", f"task={t}"] for s in (4, 8) for t in ALL_TASKS_NAMES]
    assert sum(m.startswith("[valid] ") for m in messages) == 2  # knowledge masking's, as in 1.0
    meta = json.loads((base / "checkpoints" / "step_000000008" / "meta.json").read_text())
    assert sorted(meta["task_positions"]) == sorted(ALL_TASKS_NAMES)
    config = json.loads((base / "model" / "ernie_config.json").read_text())
    assert config["task_type_vocab_size"] == tasks.NUM_TASK_TYPES


ALL_TASKS_NAMES = ["knowledge_masking", *NEW_TASKS]


def test_a_stopped_ernie_2_job_resumes_every_task_where_it_was(tmp_path, sm_env, logs):
    sm_env(ernie2_job(tmp_path / "straight", num_train_steps="10", save_steps="100"))
    train.train(layout.from_environment(), parse_hp(), StopAfter(1000))
    straight = task_losses(logs)
    logs.clear()
    sm_env(ernie2_job(tmp_path / "stopped", num_train_steps="10", save_steps="100"))
    job = layout.from_environment()
    with pytest.raises(train.Stopped):
        train.train(job, parse_hp(), StopAfter(4))
    train.train(job, parse_hp(), StopAfter(1000))
    assert task_losses(logs) == pytest.approx(straight, rel=1e-6)
    assert len({name for _, name in straight}) >= 3


def parse_hp():
    return hyperparams.parse(layout.from_environment().hyperparameters)


def test_a_task_the_dataset_lacks_fails_before_training_saying_how_to_prepare_it(tmp_path, sm_env):
    base = sm_env(make_job(tmp_path, tasks="knowledge_masking,sentence_distance"))
    assert train.main() == 1
    failure = (base / "output" / "failure").read_text().strip()
    assert failure == (
        "the train channel holds no samples of sentence_distance: it is a format 1 dataset of "
        "knowledge_masking. Prepare the corpus with `ernie-sm prepare --tasks "
        "sentence_distance`, or drop them from tasks"
    )


def test_a_checkpoint_of_other_tasks_is_not_resumed(tmp_path, sm_env):
    base = sm_env(ernie2_job(tmp_path, num_train_steps="2", save_steps="2"))
    assert train.main() == 0
    hp = base / "input" / "config" / "hyperparameters.json"
    values = json.loads(hp.read_text())
    hp.write_text(json.dumps({**values, "tasks": "sentence_distance", "num_train_steps": "4"}))
    assert train.main() == 1
    assert (
        "was saved training knowledge_masking, sentence_reordering"
        in (base / "output" / "failure").read_text()
    )


LEARNING = {  # steps each task takes alone to beat its majority class, on the CPU in seconds
    "token_document_relation": 50,
    "sentence_distance": 200,
    "sentence_reordering": 320,
}
VALID_TASK = re.compile(r"\[valid_task\] step=\d+ task=(\w+) .*_acc=([0-9.]+)")


@pytest.fixture(scope="module")
def learnable(tmp_path_factory) -> Path:
    """synthetic.learnable_task_corpus prepared with every task, and a model config that
    learns them: the channels of the jobs below."""
    folder = tmp_path_factory.mktemp("learnable")
    corpus = synthetic.learnable_task_corpus(folder / "corpus.txt", docs=600)
    options = PrepareOptions(
        inputs=[corpus],
        output=folder / "dataset",
        vocab_size=1000,
        max_seq_len=64,
        valid_fraction=0.1,
        workers=1,
        tasks=list(LEARNING),
    )
    prepare(options, console=Console(quiet=True))
    config = {**TINY_CONFIG, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "dataset" / "train" / "ernie_config.json").write_text(json.dumps(config))
    return folder / "dataset"


def majority_share(channel: Path, task: tasks.Task) -> float:
    """The accuracy of always answering the valid set's most frequent label."""
    limits = ShardLimits(1000, 64, 64, 2, task)
    filelist = tasks.task_folder(channel, task) / "valid_filelist"
    shards = read_filelist(filelist)
    labels = np.concatenate([parse_shard(s.path, limits).label for s in shards])
    labels = labels[labels != tasks.IGNORE]
    return np.bincount(labels).max() / labels.size


@pytest.mark.parametrize("name", list(LEARNING))
def test_each_new_task_learns_well_above_its_majority_class(
    learnable, name, tmp_path, sm_env, logs
):
    base = sm_env(tmp_path)
    for channel in ("train", "valid"):
        (base / "input" / "data").mkdir(parents=True, exist_ok=True)
        (base / "input" / "data" / channel).symlink_to(learnable / channel)
    steps = str(LEARNING[name])
    hyperparameters = {**TINY_HYPERPARAMETERS, "tasks": name, "num_train_steps": steps}
    hyperparameters.update(
        learning_rate="0.002",
        warmup_steps="30",
        batch_size="1024",
        skip_steps="10",
        validation_steps=steps,
        save_steps="100000",
    )
    layout.write_local_job(base, hyperparameters, ["train", "valid"])
    assert train.main() == 0
    found = (VALID_TASK.search(r.getMessage()) for r in logs.records)
    accuracy = {m[1]: float(m[2]) for m in found if m}
    chance = majority_share(learnable / "valid", tasks.TASKS[name])
    assert accuracy[name] > chance + 0.1, (accuracy, chance)


VALID_LINE = re.compile(r"\[valid(?:_task)?\] step=(\d+) ")


def valid_lines(caplog) -> dict[int, list[str]]:
    """The validation lines logged, by step."""
    lines: dict[int, list[str]] = {}
    for message in (r.getMessage() for r in caplog.records):
        if m := VALID_LINE.match(message):
            lines.setdefault(int(m[1]), []).append(message)
    return lines


@pytest.mark.parametrize("ernie2", [False, True], ids=["ernie-1.0", "ernie-2.0"])
@pytest.mark.parametrize("steps", [6, 3], ids=["mid-run", "last-step"])
def test_a_validation_a_stop_cuts_short_is_run_by_the_resumed_job(
    tmp_path, sm_env, logs, ernie2, steps
):
    job = ernie2_job if ernie2 else make_job
    settings = dict(num_train_steps=str(steps), validation_steps="3", save_steps="100")
    runs = {}
    for name in ("straight", "stopped"):
        sm_env(job(tmp_path / name, **settings))
        runs[name] = layout.from_environment()
    hp = hyperparams.parse(runs["straight"].hyperparameters)
    train.train(runs["straight"], hp, StopAfter(1000))
    straight = valid_lines(logs)
    assert sorted(straight) == list(range(3, steps + 1, 3))
    logs.clear()
    # Checks 1-3 are the steps', check 4 the first validation batch of step 3.
    with pytest.raises(train.Stopped):
        train.train(runs["stopped"], hp, StopAfter(3))
    assert valid_lines(logs) == {}
    assert not (runs["stopped"].model_dir / "model.pdparams").exists()  # none without it
    logs.clear()
    train.train(runs["stopped"], hp, StopAfter(1000))
    assert valid_lines(logs) == straight  # step 3's first, then any later ones
    assert (runs["stopped"].model_dir / "model.pdparams").exists()
