"""ERNIE 2.0 multi-task training: which task each micro-batch trains, one task's forward and
loss, and the per-task figures the logs report.

An ERNIE 1.0 job is the one-task case: every micro-batch is knowledge masking.
"""

from __future__ import annotations

import numpy as np
import paddle
from ernie_sm.contract.tasks import IGNORE, KNOWLEDGE_MASKING, TASKS, Task
from ernie_sm.training.data import Batch
from ernie_sm.training.model import pretraining_loss, task_loss

_MIX = 3  # seed purpose, after the data pipeline's (order, train, valid)

# What each task reports, as (figure, what its mean is over); knowledge masking's accuracy
# is the masked-token accuracy, its loss the masked-LM loss plus the NSP loss.
KM_FIGURES = ("mlm_loss", "nsp_loss", "nsp_acc", "mlm_acc")
TASK_FIGURES = ("loss", "acc")


class TaskMix:
    """Draws the task of each micro-batch by weight, from (seed, step, micro) alone: every
    rank draws the same task (so the same heads get gradients) and a resumed job draws
    what the interrupted one would have."""

    def __init__(self, weights: dict[str, float], seed: int) -> None:
        self.tasks = [TASKS[name] for name in weights]
        total = sum(weights.values())
        self.probabilities = np.array([w / total for w in weights.values()])
        self.seed = seed

    def draw(self, step: int, micro: int) -> Task:
        if len(self.tasks) == 1:
            return self.tasks[0]
        rng = np.random.default_rng((self.seed, _MIX, step, micro))
        return self.tasks[int(rng.choice(len(self.tasks), p=self.probabilities))]


Figures = dict[str, tuple[paddle.Tensor, int]]  # figure -> (mean over a batch, count)


def forward(model: paddle.nn.Layer, batch: Batch, task: Task) -> tuple[paddle.Tensor, Figures]:
    """The task's loss on one batch (what backward() takes) and its figures."""
    src, sent, pos = (paddle.to_tensor(a) for a in (batch.src_ids, batch.sent_ids, batch.pos_ids))
    label = paddle.to_tensor(batch.label)
    if task == KNOWLEDGE_MASKING:
        mask_label = paddle.to_tensor(batch.mask_label)
        mlm_logits, nsp_logits = model(src, sent, pos, paddle.to_tensor(batch.mask_pos), task)
        loss, mlm, nsp_acc = pretraining_loss(mlm_logits, nsp_logits, mask_label, label)
        mlm_acc = (mlm_logits.argmax(-1) == mask_label).astype("float32").mean()
        n_mask, n = len(batch.mask_label), len(batch.label)
        figures = {
            "mlm_loss": (mlm, n_mask),
            "nsp_loss": (loss - mlm, n),
            "nsp_acc": (nsp_acc, n),
            "mlm_acc": (mlm_acc, n_mask),
        }
        return loss, figures
    _, logits = model(src, sent, pos, None, task)
    loss, accuracy = task_loss(logits, label)
    scored = int(np.count_nonzero(batch.label != IGNORE))  # on the host: no device sync
    return loss, {"loss": (loss, scored), "acc": (accuracy, scored)}


class TaskFigures:
    """Count-weighted sums of each task's figures over a logging window or a validation pass."""

    def __init__(self, tasks: list[Task]) -> None:
        self.tasks = tasks
        self.sums = {(t.name, f): 0.0 for t in tasks for f in _figures(t)}
        self.counts = dict.fromkeys(self.sums, 0)

    def add(self, task: Task, figures: Figures) -> None:
        for name, (mean, count) in figures.items():
            self.sums[task.name, name] += mean.detach() * count
            self.counts[task.name, name] += count

    def means(self, world_size: int = 1) -> dict[str, dict[str, float]]:
        """{task: {figure: mean}} for the tasks with something counted (summed over every
        rank when world_size > 1); a task's `loss` and `acc` are derived for knowledge
        masking too."""
        keys = list(self.sums)
        values = [float(self.sums[k]) for k in keys] + [float(self.counts[k]) for k in keys]
        if world_size > 1:
            tensor = paddle.to_tensor(values, dtype="float64")
            paddle.distributed.all_reduce(tensor)
            values = [float(v) for v in tensor.numpy()]
        n = len(keys)
        sums = dict(zip(keys, values[:n], strict=True))
        counts = dict(zip(keys, values[n:], strict=True))
        out: dict[str, dict[str, float]] = {}
        for task in self.tasks:
            figures = {
                f: sums[task.name, f] / counts[task.name, f]
                for f in _figures(task)
                if counts[task.name, f]
            }
            if len(figures) < len(_figures(task)):
                continue  # nothing (or not everything) measured: no figure rather than a zero
            if task == KNOWLEDGE_MASKING:
                figures["loss"] = figures["mlm_loss"] + figures["nsp_loss"]
                figures["acc"] = figures["mlm_acc"]
            out[task.name] = figures
        return out


def _figures(task: Task) -> tuple[str, ...]:
    return KM_FIGURES if task == KNOWLEDGE_MASKING else TASK_FIGURES
