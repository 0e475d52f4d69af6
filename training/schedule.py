"""Learning-rate schedules: the factor of `learning_rate` at each optimizer step.

The `lr_scheduler` hyperparameter names one of SCHEDULES (contract/hyperparams.py lists
the names); train.py hands its factor to paddle.optimizer.lr.LambdaDecay, whose state the
checkpoints keep. Both warm up linearly from 0 over `warmup_steps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[int], float]  # optimizer step -> factor of the peak learning rate


def linear(warmup_steps: int, total_steps: int) -> Schedule:
    """ERNIE 1.0's (optimization.py of PaddlePaddle/ERNIE): linear warm-up from 0, then
    `1 - step / total_steps`, decaying from the peak over all the steps, not those after
    warm-up; without warm-up the rate stays constant."""

    def factor(step: int) -> float:
        if warmup_steps == 0:
            return 1.0
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, 1.0 - step / total_steps)

    return factor


def cosine(warmup_steps: int, total_steps: int) -> Schedule:
    """PaddleNLP's CosineAnnealingWithWarmupDecay (ERNIE 1.0 pretraining there) with a
    minimum of 0: linear warm-up to the peak at `warmup_steps`, then half a cosine from
    the peak to 0 at `total_steps`, and 0 after."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step <= warmup_steps:
            return step / warmup_steps
        if step > total_steps:
            return 0.0
        progress = (step - warmup_steps) / (total_steps - warmup_steps)
        return 0.5 * (math.cos(math.pi * progress) + 1.0)

    return factor


SCHEDULES: dict[str, Callable[[int, int], Schedule]] = {"linear": linear, "cosine": cosine}
