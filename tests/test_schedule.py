"""The learning-rate schedules `lr_scheduler` selects (training/schedule.py)."""

from __future__ import annotations

import itertools
import math

import pytest
from ernie_sm.contract import hyperparams
from ernie_sm.contract.errors import HyperparameterError
from ernie_sm.pipeline.execution_input import ExecutionInputError
from ernie_sm.pipeline.parsing import parse_input
from ernie_sm.training import schedule


@pytest.mark.parametrize(
    ("warmup", "expected"),
    [
        # ERNIE's optimization.py: step / warmup, then 1 - step / total over all the steps.
        (10, {0: 0.0, 5: 0.5, 10: 0.9, 55: 0.45, 99: 0.01, 100: 0.0, 150: 0.0}),
        (0, {0: 1.0, 50: 1.0, 100: 1.0}),  # no warm-up: a constant rate, as the original
    ],
)
def test_the_schedule_is_the_original_ernie_one(warmup, expected):
    factor = schedule.linear(warmup, 100)
    assert {step: round(factor(step), 10) for step in expected} == expected


def _before(warmup_steps: int, total_steps: int, step: int) -> float:
    """train._learning_rate_factor as it was before lr_scheduler selected a schedule."""
    if warmup_steps == 0:
        return 1.0
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, 1.0 - step / total_steps)


@pytest.mark.parametrize(("warmup", "total"), [(5000, 1_000_000), (2, 8), (0, 8), (8, 8)])
def test_linear_is_the_default_and_gives_exactly_the_rates_of_before(warmup, total):
    assert hyperparams.parse({}).lr_scheduler == "linear"
    factor = schedule.SCHEDULES[hyperparams.parse({}).lr_scheduler](warmup, total)
    steps = [*range(0, 3 * warmup + 20), total // 2, total - 1, total, total + 1]
    assert [factor(s) for s in steps] == [_before(warmup, total, s) for s in steps]


def test_cosine_warms_up_linearly_then_decays_to_zero_at_num_train_steps():
    # PaddleNLP's CosineAnnealingWithWarmupDecay with min_lr 0: warm-up to the peak at
    # warmup_steps, half a cosine from there to 0 at the last step, 0 after.
    factor = schedule.cosine(100, 1100)
    assert factor(0) == 0.0 and factor(50) == 0.5
    assert factor(100) == 1.0  # the end of warm-up: the peak
    assert factor(101) == pytest.approx(0.5 * (1 + math.cos(math.pi / 1000)))
    assert factor(350) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert factor(600) == pytest.approx(0.5)  # the midpoint of the decay
    assert factor(1100) == pytest.approx(0.0, abs=1e-15)  # num_train_steps
    assert factor(1200) == 0.0
    values = [factor(s) for s in range(100, 1101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_cosine_without_warm_up_starts_at_the_peak():
    factor = schedule.cosine(0, 10)
    assert factor(0) == 1.0 and factor(5) == pytest.approx(0.5)
    assert factor(10) == pytest.approx(0.0, abs=1e-15)


def test_every_schedule_the_hyperparameter_names_exists_and_no_other():
    assert list(schedule.SCHEDULES) == list(hyperparams.LR_SCHEDULERS)
    assert hyperparams.SPECS["lr_scheduler"].default == "linear"
    assert hyperparams.parse({"lr_scheduler": "Cosine"}).lr_scheduler == "cosine"
    # The only value accepted before it selected anything is linear by its old name.
    assert hyperparams.parse({"lr_scheduler": "linear_warmup_decay"}).lr_scheduler == "linear"


def test_an_unknown_schedule_is_refused_naming_the_field_and_the_choices():
    expected = "lr_scheduler: bad value 'noam_decay': expected one of linear, cosine"
    with pytest.raises(HyperparameterError) as err:
        hyperparams.parse({"lr_scheduler": "noam_decay"})
    assert expected in str(err.value)
    with pytest.raises(ExecutionInputError) as err:  # before any job is created
        parse_input({"hyperparameters": {"lr_scheduler": "noam_decay"}})
    assert f"hyperparameters.{expected}" in str(err.value)
