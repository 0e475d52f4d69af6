"""A job never reports success it did not earn: no step, divergence, data that ran out,
validation that measured nothing, and the schedule the original ERNIE trains with."""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
import shutil
from pathlib import Path

import pytest
from ernie_sm.contract import hyperparams
from ernie_sm.training import layout, train

from tests.helpers import TINY_HYPERPARAMETERS, make_job

LOSS_LINE = re.compile(r"\[train\] step=(\d+) .*loss: (\S+) .*lr=(\S+)")


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def _run(base: Path, **overrides: str) -> tuple[int, str]:
    """The entrypoint on `base` with these hyperparameters; (exit status, failure reason)."""
    hp = json.loads((base / "input" / "config" / "hyperparameters.json").read_text())
    channels = [p.name for p in (base / "input" / "data").iterdir()]
    layout.write_local_job(base, {**hp, **overrides}, channels)
    status = train.main()
    failure = base / "output" / "failure"
    return status, failure.read_text() if failure.exists() else ""


def _train_lines(logs) -> list[tuple[int, str, float]]:
    found = (LOSS_LINE.search(r.getMessage()) for r in logs.records)
    return [(int(m.group(1)), m.group(2), float(m.group(3))) for m in found if m]


def _checkpoint_steps(base: Path) -> list[int]:
    folder = base / "checkpoints"
    return (
        sorted(int(p.name.split("_")[1]) for p in folder.glob("step_*")) if folder.exists() else []
    )


def _train_only(base: Path) -> Path:
    """Drop the valid channel: what is tested is the train channel."""
    for file in (base / "input" / "data" / "valid").iterdir():
        file.unlink()
    (base / "input" / "data" / "valid").rmdir()
    return base


def test_no_sample_fitting_max_seq_len_fails_without_a_model(tmp_path, sm_env, logs):
    base = _train_only(sm_env(make_job(tmp_path)))
    status, reason = _run(base, max_seq_len="6", epoch="2")
    assert status == 1
    assert reason.startswith("no training step was taken: no sample of the train channel is at")
    assert "max_seq_len 6" in reason and not (base / "model" / "model.pdparams").exists()


def test_accumulating_more_batches_than_the_data_has_fails(tmp_path, sm_env, logs):
    base = _train_only(sm_env(make_job(tmp_path)))
    status, reason = _run(base, gradient_accumulation_steps="10000", epoch="1")
    assert status == 1
    assert "fewer than gradient_accumulation_steps (10000) batches" in reason
    assert _train_lines(logs) == []


def test_data_running_out_before_num_train_steps_fails_and_keeps_a_checkpoint(
    tmp_path, sm_env, logs
):
    base = sm_env(make_job(tmp_path))
    status, reason = _run(base, epoch="1", num_train_steps="100000", save_steps="100000")
    steps = [step for step, _, _ in _train_lines(logs)]
    assert status == 1 and steps
    assert f"ran out after 1 epoch(s) at step {steps[-1]} of num_train_steps 100000" in reason
    assert _checkpoint_steps(base) == [steps[-1]]  # a new job can continue from there
    assert not (base / "model" / "model.pdparams").exists()


def test_data_of_which_nothing_fits_max_seq_len_fails_after_one_pass(tmp_path, sm_env, logs):
    base = sm_env(make_job(tmp_path))
    shutil.rmtree(base / "input" / "data" / "valid")  # it is checked before any step
    status, reason = _run(base, max_seq_len="4", epoch="100", num_train_steps="10")
    assert status == 1
    assert "no training step was taken: no sample of the train channel is at most" in reason
    passes = [r for r in logs.records if "line(s) longer than max_seq_len 4" in r.getMessage()]
    assert len(passes) == 2  # one pass of each of the 2 shards, not 100 epochs of them


def test_divergence_fails_at_the_step_and_saves_nothing_of_it(tmp_path, sm_env, logs):
    base = sm_env(make_job(tmp_path))
    status, reason = _run(
        base, learning_rate="1e6", warmup_steps="0", num_train_steps="50", save_steps="1"
    )
    assert status == 1
    match = re.search(r"training diverged: the loss is (nan|inf|-inf) at step (\d+)", reason)
    assert match, reason
    bad_step = int(match.group(2))
    assert all(math.isfinite(float(loss)) for _, loss, _ in _train_lines(logs))
    kept = int(hyperparams.defaults()["keep_checkpoints"])
    assert _checkpoint_steps(base) == list(range(1, bad_step))[-kept:]
    assert f"the newest checkpoint is from step {bad_step - 1}" in reason
    assert not (base / "model" / "model.pdparams").exists()


def test_float16_gives_the_loss_scaler_its_chance_before_failing():
    hp = hyperparams.parse({"init_loss_scaling": "1024", "decr_ratio": "0.5"})
    watch = train._DivergenceWatch(hp, "float16")
    # log(1024) / log(2) = 10 halvings, each after decr_every_n_nan_or_inf (2) overflows.
    assert watch.patience == 21
    for step in range(1, 21):
        watch.check(math.nan, step, 0, world_size=1)
    watch.check(1.5, 21, 0, world_size=1)  # a finite loss starts the count again
    assert watch.bad_steps == 0
    for step in range(22, 42):
        watch.check(math.inf, step, 0, world_size=1)
    with pytest.raises(train.TrainingError, match="the loss is inf at step 42 and the 20 before"):
        watch.check(math.inf, 42, 0, world_size=1)
    assert train._DivergenceWatch(hp, None).patience == 1
    assert train._DivergenceWatch(hp, "bfloat16").patience == 1


def test_a_valid_channel_with_no_sample_that_fits_fails_before_training(tmp_path, sm_env, logs):
    base = sm_env(make_job(tmp_path))
    valid = base / "input" / "data" / "valid" / "part-00000.gz"
    long_line = "1 " + "5 " * 80 + "2;" + "0 " * 82 + ";" + " ".join(map(str, range(82)))
    long_line += ";-1 " + "0 " * 80 + "-1;1"
    valid.write_bytes(gzip.compress((long_line + "\n").encode()))
    status, reason = _run(base)
    assert status == 1
    assert "the valid channel has no sample of at most max_seq_len 64 tokens" in reason
    assert _train_lines(logs) == []


def test_a_malformed_valid_line_fails_before_the_first_paid_step(tmp_path, sm_env, logs):
    base = sm_env(make_job(tmp_path))
    valid = base / "input" / "data" / "valid" / "part-00000.gz"
    lines = gzip.decompress(valid.read_bytes()).decode().splitlines()
    lines[2] = lines[2].rsplit(";", 1)[0]  # four fields
    valid.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    status, reason = _run(base)
    assert status == 1 and "part-00000.gz line 3" in reason
    assert _train_lines(logs) == []


def test_a_validation_pass_cut_short_logs_nothing(tmp_path, sm_env, logs):
    base = sm_env(make_job(tmp_path))
    job = layout.from_environment()
    hp = hyperparams.parse(job.hyperparameters)

    class StopDuringValidation:
        """SIGTERM arrives during the validation pass after step 4."""

        checks = 0

        @property
        def requested(self) -> bool:
            self.checks += 1
            return self.checks > 5

    with pytest.raises(train.Stopped):
        train.train(job, hp, StopDuringValidation())
    assert not [r for r in logs.records if "[valid]" in r.getMessage()]
    assert _checkpoint_steps(base) == [4]


def test_the_logged_learning_rate_follows_that_schedule(tmp_path, sm_env, logs):
    sm_env(make_job(tmp_path))
    assert train.main() == 0
    rates = {step: lr for step, _, lr in _train_lines(logs)}
    peak = float(TINY_HYPERPARAMETERS["learning_rate"])  # warm-up 2 steps, 8 in all
    # The rate logged after step s is the one the next step uses: factor(s).
    assert rates[1] == pytest.approx(peak * 0.5)
    assert rates[4] == pytest.approx(peak * (1 - 4 / 8))
    assert rates[8] == 0.0


def test_lr_scheduler_cosine_is_the_schedule_the_optimizer_follows(tmp_path, sm_env, logs):
    base = _train_only(sm_env(make_job(tmp_path)))
    assert _run(base, lr_scheduler="cosine")[0] == 0
    rates = {step: lr for step, _, lr in _train_lines(logs)}
    peak = float(TINY_HYPERPARAMETERS["learning_rate"])  # warm-up 2 steps, 8 in all
    assert rates[1] == pytest.approx(peak * 0.5)
    assert rates[2] == pytest.approx(peak)  # the end of warm-up
    assert rates[5] == pytest.approx(peak * 0.5)  # half way from step 2 to step 8
    assert rates[8] == pytest.approx(0.0, abs=1e-12)


def test_resuming_a_checkpoint_of_another_model_is_refused(tmp_path, sm_env, logs):
    base = sm_env(make_job(tmp_path))
    assert _run(base, num_train_steps="4")[0] == 0
    config_file = base / "input" / "data" / "train" / "ernie_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "hidden_size": config["hidden_size"] * 2}))
    status, reason = _run(base, num_train_steps="8")
    assert status == 1
    assert re.search(
        r"checkpoint .*step_000000004 is of another model: hidden_size \d+ there", reason
    )
