"""The entrypoint end to end on a tiny model: train, validate, checkpoint, resume, stop, fail, export."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import paddle
import pytest
from ernie_sm.contract import hyperparams
from ernie_sm.contract.errors import ConfigError
from ernie_sm.text.vocab import load_vocab
from ernie_sm.training import layout, train
from ernie_sm.training.config import load_config
from ernie_sm.training.data import PretrainingData, ReadConfig, read_filelist
from ernie_sm.training.export import warm_start
from ernie_sm.training.model import ErnieForPretraining, ErnieInference

from tests import synthetic
from tests.helpers import make_job

MASK_ID = 3  # [MASK] in the synthetic vocab, as in ERNIE's
LOSS = re.compile(r"\[train\] step=(\d+) .*loss: ([0-9.]+)")
FLOPS_PER_SEC = re.compile(r"flops_per_sec=(\S+)")
PADDING = re.compile(r"padding_efficiency=(\S+)")


def _losses(caplog) -> dict[int, float]:
    found = (LOSS.search(r.getMessage()) for r in caplog.records)
    return {int(m.group(1)): float(m.group(2)) for m in found if m}


def _train(job: layout.JobLayout, stop) -> None:
    train.train(job, hyperparams.parse(job.hyperparameters), stop)


class StopAfter:
    """Stands in for SIGTERM arriving after `steps` optimizer steps."""

    def __init__(self, steps: int) -> None:
        self.checks = 0
        self.steps = steps

    @property
    def requested(self) -> bool:
        self.checks += 1
        return self.checks > self.steps


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def test_trains_validates_checkpoints_and_exports(tmp_path, sm_env, logs):
    base = sm_env(make_job(tmp_path))
    assert train.main() == 0
    losses = _losses(logs)
    assert sorted(losses) == list(range(1, 9))
    valid = [r.getMessage() for r in logs.records if r.getMessage().startswith("[valid]")]
    assert [v.split()[1] for v in valid] == ["step=4", "step=8"]
    saved = sorted(p.name for p in (base / "checkpoints").iterdir())
    assert saved == ["step_000000004", "step_000000008"]
    model = base / "model"
    assert {"model.pdparams", "ernie_config.json", "vocab.txt", "inference", "serving.json"} <= {
        p.name for p in model.iterdir()
    }
    assert not (base / "output" / "failure").exists()
    usage = [r.getMessage() for r in logs.records if r.getMessage().startswith("[flops]")]
    assert [u.split()[1] for u in usage] == [f"step={s}" for s in range(1, 9)]
    assert all(" mfu=" not in u for u in usage)  # a CPU has no peak: left out, not 0
    assert all(float(FLOPS_PER_SEC.search(u)[1]) > 0 for u in usage)
    assert all(0.5 < float(PADDING.search(u)[1]) <= 1 for u in usage)
    assert "MFU not logged: no known dense float32 peak for cpu" in logs.text


def test_mfu_is_logged_against_a_known_peak(tmp_path, sm_env, logs, monkeypatch):
    monkeypatch.setattr(train.flops, "peak_flops", lambda gpu, precision: 1e12)
    sm_env(make_job(tmp_path, num_train_steps="2", save_steps="100"))
    assert train.main() == 0
    usage = [r.getMessage() for r in logs.records if r.getMessage().startswith("[flops]")]
    assert len(usage) == 2
    for line in usage:
        mfu = float(re.search(r" mfu=(\S+)", line)[1])
        assert mfu == pytest.approx(float(FLOPS_PER_SEC.search(line)[1]) / 1e12, rel=1e-3)


def _masked_sentences(shard: Path, count: int) -> list[tuple[np.ndarray, ...]]:
    """(masked ids, sentence types, positions, masked index, true id): a letter inside a word hidden."""
    with gzip.open(shard, "rt") as f:
        lines = [line.split(";") for line in f.read().splitlines()[:count]]
    out = []
    for fields in lines:
        ids, sent, pos, seg = (np.array([int(x) for x in field.split()]) for field in fields[:4])
        at = int(np.flatnonzero(seg == 1)[0])
        masked = ids.copy()
        masked[at] = MASK_ID
        out.append((masked, sent, pos, at, ids[at]))
    return out


def _mean_true_log_prob(predict, sentences) -> float:
    found = []
    for masked, sent, pos, at, true_id in sentences:
        log_probs, nsp = predict(*(paddle.to_tensor(a[None]) for a in (masked, sent, pos)))
        assert nsp.shape == [1, 2] and log_probs.shape[:2] == [1, len(masked)]
        found.append(float(log_probs[0, at, true_id]))
    return float(np.mean(found))


def test_exported_inference_model_predicts_masked_tokens(tmp_path, sm_env, logs):
    hp = {"num_train_steps": "150", "batch_size": "2048", "learning_rate": "0.003"}
    base = sm_env(make_job(tmp_path, validation_steps="150", save_steps="150", **hp))
    assert train.main() == 0
    model_dir = base / "model"
    vocab = load_vocab(model_dir / "vocab.txt")
    assert vocab.mask_id == MASK_ID
    exported = paddle.jit.load(str(model_dir / "inference" / "ernie"))
    exported.eval()
    sentences = _masked_sentences(base / "input" / "data" / "valid" / "part-00000.gz", 30)

    config = load_config(str(model_dir / "ernie_config.json"), model_dir, len(vocab))
    paddle.seed(0)  # the job's random_seed: the same initial weights it started from
    model = ErnieForPretraining(config)
    model.eval()
    untrained = _mean_true_log_prob(ErnieInference(model), sentences)
    trained = _mean_true_log_prob(exported, sentences)
    assert trained > untrained + 0.2, (trained, untrained)

    # The exported program computes what the weights in model.pdparams compute.
    model.set_state_dict(paddle.load(str(model_dir / "model.pdparams")))
    masked, sent, pos, at, _ = sentences[0]
    inputs = [paddle.to_tensor(a[None]) for a in (masked, sent, pos)]
    np.testing.assert_allclose(
        ErnieInference(model)(*inputs)[0].numpy(),
        exported(*inputs)[0].numpy(),
        rtol=1e-4,
        atol=1e-4,
    )
    predicted = int(exported(*inputs)[0].numpy()[0, at].argmax())
    assert not vocab.tokens[predicted].startswith("[")


def test_stopped_and_resumed_run_logs_the_same_losses(tmp_path, sm_env, logs):
    sm_env(make_job(tmp_path / "straight", num_train_steps="10", save_steps="100"))
    _train(layout.from_environment(), StopAfter(1000))
    straight = _losses(logs)
    logs.clear()

    sm_env(make_job(tmp_path / "stopped", num_train_steps="10", save_steps="100"))
    job = layout.from_environment()
    with pytest.raises(train.Stopped):
        _train(job, StopAfter(4))
    first = _losses(logs)
    assert sorted(first) == [1, 2, 3, 4]
    logs.clear()
    _train(job, StopAfter(1000))
    resumed = _losses(logs)
    assert sorted(resumed) == [5, 6, 7, 8, 9, 10]
    for step, loss in {**first, **resumed}.items():
        assert loss == pytest.approx(straight[step], rel=1e-6), step


def test_a_checkpoint_without_data_positions_is_skipped_for_the_one_before(tmp_path, sm_env, logs):
    sm_env(make_job(tmp_path / "straight", num_train_steps="6", save_steps="100"))
    _train(layout.from_environment(), StopAfter(1000))
    straight = _losses(logs)
    sm_env(make_job(tmp_path / "stopped", num_train_steps="6", save_steps="2"))
    job = layout.from_environment()
    with pytest.raises(train.Stopped):
        _train(job, StopAfter(4))
    newest = job.base_dir / "checkpoints" / "step_000000004"
    meta = json.loads((newest / "meta.json").read_text())
    del meta["positions"]  # a meta.json written without them, its manifest consistent
    (newest / "meta.json").write_text(json.dumps(meta))
    manifest = json.loads((newest / "manifest.json").read_text())
    manifest["files"]["meta.json"] = {
        "size": (newest / "meta.json").stat().st_size,
        "sha256": hashlib.sha256((newest / "meta.json").read_bytes()).hexdigest(),
    }
    (newest / "manifest.json").write_text(json.dumps(manifest))
    logs.clear()
    _train(job, StopAfter(1000))
    resumed = _losses(logs)
    assert sorted(resumed) == [3, 4, 5, 6]  # from step 2's checkpoint
    for step, loss in resumed.items():
        assert loss == pytest.approx(straight[step], rel=1e-6), step
    assert any(
        "skipping checkpoint" in r.getMessage() and "no usable data position" in r.getMessage()
        for r in logs.records
    )


def test_sigterm_mid_run_saves_a_checkpoint_and_exits_143(tmp_path):
    base = make_job(
        tmp_path, num_train_steps="100000", save_steps="100000", validation_steps="100000"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env[layout.BASE_DIR_ENV] = str(base)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ernie_sm.cli", "train"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in proc.stdout:
            if "[train] step=3 " in line:
                break
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 143, rest
    assert time.monotonic() - sent < 30
    saved = [p.name for p in (base / "checkpoints").iterdir()]
    assert len(saved) == 1 and int(saved[0].split("_")[1]) >= 3
    assert not (base / "output" / "failure").exists()


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (lambda base: _hyperparameter(base, "batch_size", "many"), "batch_size: bad value 'many'"),
        (lambda base: _hyperparameter(base, "bogus", "1"), "bogus: unknown hyperparameter"),
        (lambda base: _remove(base / "input" / "data" / "train"), "the 'train' channel is missing"),
        (
            lambda base: (base / "input" / "config" / "hyperparameters.json").write_text("{"),
            "hyperparameters.json is not valid JSON",
        ),
        (lambda base: _corrupt_first_shard(base), "part-00000.gz line 2"),
        (
            lambda base: _hyperparameter(base, "max_seq_len", "1000"),
            "exceeds the model's max_position",
        ),
        (
            lambda base: _hyperparameter(base, "vocab_path", "v" * 300),
            "vocab_path: bad value 'vvv",
        ),
        (
            lambda base: _hyperparameter(base, "train_filelist", "sub/" + "f" * 300),
            "train_filelist: bad value 'sub/fff",
        ),
        (
            lambda base: _config(base, vocab_size=10**9),
            "vocab_size 1000000000 times hidden_size 32: 3.3e+10 parameters",
        ),
    ],
)
def test_failures_leave_a_reason_for_sagemaker(tmp_path, sm_env, logs, breakage, reason):
    base = sm_env(make_job(tmp_path))
    breakage(base)
    assert train.main() == 1
    failure = (base / "output" / "failure").read_text()
    assert reason in failure and "\n" not in failure.strip()


def test_warm_start_from_a_previous_jobs_model_tar_gz(tmp_path, sm_env, logs):
    first = sm_env(make_job(tmp_path / "first", num_train_steps="2"))
    assert train.main() == 0
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / "model.tar.gz", "w:gz") as tar:
        for p in (first / "model").iterdir():
            tar.add(p, arcname=p.name)
    trained = paddle.load(str(first / "model" / "model.pdparams"))
    vocab = load_vocab(first / "model" / "vocab.txt")
    config = load_config(str(first / "model" / "ernie_config.json"), first, len(vocab))
    paddle.seed(99)
    model = ErnieForPretraining(config)
    warm_start(model, archive_dir, vocab)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), np.asarray(trained[name]))

    second = sm_env(make_job(tmp_path / "second", num_train_steps="1"))
    (second / "input" / "data" / "model").mkdir()
    os.replace(archive_dir / "model.tar.gz", second / "input" / "data" / "model" / "model.tar.gz")
    logs.clear()
    assert train.main() == 0
    assert any("warm start: weights from" in r.getMessage() for r in logs.records)


def test_warm_start_with_another_architecture_is_refused(tmp_path, sm_env, logs):
    first = sm_env(make_job(tmp_path / "first", num_train_steps="1"))
    assert train.main() == 0
    vocab = load_vocab(first / "model" / "vocab.txt")
    other = load_config("ernie-tiny", first, len(vocab))
    with pytest.raises(
        ConfigError,
        match=r"ernie_config differs .*hidden_size 32 there, 64 here, num_hidden_layers 1 there, 2 here",
    ):
        warm_start(ErnieForPretraining(other), first / "model", vocab)
    # A config that only changes dropout trains another model too: named, not loaded.
    saved = json.loads((first / "model" / "ernie_config.json").read_text())
    dropout = load_config(str(first / "model" / "ernie_config.json"), first, len(vocab))
    dropout = dataclasses.replace(dropout, hidden_dropout_prob=0.0)
    with pytest.raises(ConfigError, match=r"hidden_dropout_prob 0.1 there, 0.0 here"):
        warm_start(ErnieForPretraining(dropout), first / "model", vocab)
    assert saved["hidden_dropout_prob"] == 0.1


@pytest.mark.parametrize(
    "change, difference",
    [
        (lambda t: t[:-1], rf"{len(synthetic.vocab_tokens())} tokens there, "
         rf"{len(synthetic.vocab_tokens()) - 1} here"),
        (lambda t: (*t[:50], "zz", *t[51:]), rf"id 50 is '{synthetic.vocab_tokens()[50]}' there, 'zz' here"),
    ],
)  # fmt: skip
def test_warm_start_from_a_model_of_another_vocab_is_refused(tmp_path, sm_env, change, difference):
    first = sm_env(make_job(tmp_path / "first", num_train_steps="1"))
    assert train.main() == 0
    model_vocab = load_vocab(first / "model" / "vocab.txt")
    job_vocab = dataclasses.replace(model_vocab, tokens=change(model_vocab.tokens))
    config = load_config(str(first / "model" / "ernie_config.json"), first, len(model_vocab))
    with pytest.raises(ConfigError, match=rf"its vocab differs .*\({difference}\).*--vocab"):
        warm_start(ErnieForPretraining(config), first / "model", job_vocab)


def test_a_job_warm_started_from_another_vocab_fails_naming_it(tmp_path, sm_env):
    first = sm_env(make_job(tmp_path / "first", num_train_steps="1"))
    assert train.main() == 0
    second = sm_env(make_job(tmp_path / "second", num_train_steps="1"))
    vocab = second / "input" / "data" / "train" / "vocab.txt"
    token = synthetic.vocab_tokens()[7]
    vocab.write_text(vocab.read_text().replace(f"{token}\t7", "x7\t7"))
    shutil.copytree(first / "model", second / "input" / "data" / "model")
    assert train.main() == 1
    failure = (second / "output" / "failure").read_text()
    assert (
        f"its vocab differs from the train channel's (id 7 is '{token}' there, 'x7' here)"
        in failure
    )


def _hyperparameter(base: Path, name: str, value: str) -> None:
    path = base / "input" / "config" / "hyperparameters.json"
    hp = json.loads(path.read_text())
    hp[name] = value
    path.write_text(json.dumps(hp))


def _config(base: Path, **values) -> None:
    path = base / "input" / "data" / "train" / "ernie_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def _remove(path: Path) -> None:
    shutil.rmtree(path)


def _corrupt_first_shard(base: Path) -> None:
    shard = base / "input" / "data" / "train" / "part-00000.gz"
    with gzip.open(shard, "rt") as f:
        lines = f.read().splitlines()
    lines[1] = lines[1].rsplit(";", 1)[0]  # four fields instead of five
    with gzip.open(shard, "wt") as f:
        f.write("\n".join(lines) + "\n")


def test_gradient_accumulation_consumes_that_many_batches_per_step(tmp_path, sm_env, logs):
    sm_env(make_job(tmp_path, num_train_steps="3", gradient_accumulation_steps="2"))
    job = layout.from_environment()
    hp = hyperparams.parse(job.hyperparameters)
    _train(job, StopAfter(1000))
    meta = json.loads((job.base_dir / "checkpoints" / "step_000000003" / "meta.json").read_text())
    vocab = load_vocab(job.channel("train") / "vocab.txt")
    stream = PretrainingData(
        read_filelist(job.channel("train") / "train_filelist"),
        vocab,
        ReadConfig(
            vocab_size=len(vocab),
            max_seq_len=hp.max_seq_len,
            max_position=64,
            type_vocab_size=2,
            batch_size=hp.batch_size,
            in_tokens=True,
            seed=hp.random_seed,
        ),
    )
    sixth = list(itertools.islice(stream.batches(), 6))[-1][1]
    assert meta["positions"] == [sixth.to_dict()]  # one trainer: one position


def test_mixed_precision_needs_a_gpu(tmp_path, logs):
    paddle.set_device("cpu")
    assert train._amp_dtype(hyperparams.parse({"use_fp16": "true"})) is None
    assert "use_fp16 is ignored" in logs.text
    assert train._amp_dtype(hyperparams.parse({})) is None


def test_trainers_per_device_and_host(tmp_path, sm_env):
    sm_env(make_job(tmp_path))
    job = layout.from_environment()
    one_gpu = dataclasses.replace(job, num_gpus=1)
    eight = dataclasses.replace(job, num_gpus=8)
    assert train._trainer_environments(hyperparams.parse({}), one_gpu) == []
    assert len(train._trainer_environments(hyperparams.parse({}), eight)) == 8
    single = hyperparams.parse({"is_distributed": "false"})
    assert train._trainer_environments(single, eight) == []
    two_hosts = dataclasses.replace(job, hosts=("algo-1", "algo-2"))
    with pytest.raises(ConfigError, match="is_distributed is false but the job has 2 hosts"):
        train._trainer_environments(single, two_hosts)
    cpu = hyperparams.parse({"use_cuda": "false"})
    assert train._trainer_environments(cpu, eight) == []


def test_the_original_ernie_vocab_and_demo_shard_train(tmp_path, sm_env, logs, ernie_shard):
    base = sm_env(tmp_path)
    train_dir = base / "input" / "data" / "train"
    train_dir.mkdir(parents=True)
    (train_dir / "train_filelist").write_text(f"{ernie_shard}\t0.5\n")
    hp = {
        "vocab_path": "ernie-1.0",  # the bundled preset
        "ernie_config_path": "ernie-tiny",
        "max_seq_len": "120",
        "batch_size": "2048",
        "num_train_steps": "2",
        "skip_steps": "1",
    }
    layout.write_local_job(base, hp, ["train"])
    assert train.main() == 0
    assert sorted(_losses(logs)) == [1, 2]
    # The original lines run up to 128 tokens: those are counted, not silently lost.
    assert re.search(r"skipped \d+ line\(s\) longer than max_seq_len 120", logs.text)
    assert re.search(r"\d+ sample\(s\) longer than max_seq_len 120 were left out", logs.text)
    assert load_vocab(base / "model" / "vocab.txt").unk_id == 17963
