"""Log lines -> metrics: the lines the trainer prints and the regexes SageMaker reads them with.

The stack hands `METRIC_DEFINITIONS` to CreateTrainingJob; the trainer prints with
`train_line`, `flops_line` and `valid_line`, and in an ERNIE 2.0 job `task_line` /
`valid_task_line` for every task. `Training-loss` keeps the regex users know,
`loss: ([0-9\\.]+)`, so no other line may contain the text "loss: ": every other
figure is printed as `name=value`.

`ernie-sm evaluate` prints `finetune_line`, `dev_line` and `eval_line`, read by the
separate `EVAL_METRIC_DEFINITIONS` (its jobs print none of the pretraining lines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ernie_sm.contract.tasks import TASKS

NUMBER = r"([0-9\.]+)"
SCIENTIFIC = r"([0-9\.]+(?:e[-+][0-9]+)?)"


@dataclass(frozen=True)
class TrainStats:
    step: int
    epoch: int
    loss: float
    mlm_loss: float | None  # None: no knowledge-masking batch in the window (ERNIE 2.0)
    nsp_acc: float | None
    lr: float
    tokens_per_sec: float


@dataclass(frozen=True)
class ValidStats:
    step: int
    loss: float
    mlm_loss: float
    nsp_acc: float


@dataclass(frozen=True)
class FlopsStats:
    step: int
    flops_per_sec: float  # model FLOPs (training/flops.py) of all trainers per second
    padding_efficiency: float  # real tokens / padded tokens computed on
    mfu: float | None  # of one GPU; None where its dense peak is unknown (CPU, other GPU)


def perplexity(mlm_loss: float) -> float:
    # exp overflows past ~709; report the ceiling rather than crash early in training.
    return math.exp(min(mlm_loss, 700.0))


def train_line(s: TrainStats) -> str:
    masking = (
        f"mlm_loss={s.mlm_loss:.6f} ppl={perplexity(s.mlm_loss):.4f} nsp_acc={s.nsp_acc:.4f} "
        if s.mlm_loss is not None and s.nsp_acc is not None
        else ""
    )
    return (
        f"[train] step={s.step} epoch={s.epoch} loss: {s.loss:.6f} {masking}"
        f"lr={s.lr:.4e} tokens_per_sec={s.tokens_per_sec:.1f}"
    )


def flops_line(s: FlopsStats) -> str:
    """Utilisation; `mfu` is left out rather than printed as 0 where it is not known."""
    line = (
        f"[flops] step={s.step} flops_per_sec={s.flops_per_sec:.4e} "
        f"padding_efficiency={s.padding_efficiency:.4f}"
    )
    return line if s.mfu is None else f"{line} mfu={s.mfu:.4g}"  # .4g: no 0.0000 for 4e-05


def valid_line(s: ValidStats) -> str:
    return (
        f"[valid] step={s.step} valid_loss={s.loss:.6f} valid_mlm_loss={s.mlm_loss:.6f} "
        f"valid_ppl={perplexity(s.mlm_loss):.4f} valid_nsp_acc={s.nsp_acc:.4f}"
    )


def task_line(step: int, task: str, loss: float, accuracy: float) -> str:
    """One ERNIE 2.0 task's mean loss and accuracy over the window's batches of it."""
    return f"[task] step={step} task={task} {task}_loss={loss:.6f} {task}_acc={accuracy:.4f}"


def valid_task_line(step: int, task: str, loss: float, accuracy: float) -> str:
    return (
        f"[valid_task] step={step} task={task} valid_{task}_loss={loss:.6f} "
        f"valid_{task}_acc={accuracy:.4f}"
    )


def _task_definitions() -> tuple[dict[str, str], ...]:
    """Per task: Training-<task>-loss/-accuracy and Validation-<task>-loss/-accuracy."""
    definitions = []
    for name in TASKS:
        definitions += [
            {"Name": f"Training-{name}-loss", "Regex": rf"\[task\] .* {name}_loss={NUMBER}"},
            {"Name": f"Training-{name}-accuracy", "Regex": rf"\[task\] .* {name}_acc={NUMBER}"},
            {
                "Name": f"Validation-{name}-loss",
                "Regex": rf"\[valid_task\] .* valid_{name}_loss={NUMBER}",
            },
            {
                "Name": f"Validation-{name}-accuracy",
                "Regex": rf"\[valid_task\] .* valid_{name}_acc={NUMBER}",
            },
        ]
    return tuple(definitions)


# Name -> regex, in the form CreateTrainingJob's AlgorithmSpecification.MetricDefinitions takes.
METRIC_DEFINITIONS: tuple[dict[str, str], ...] = (
    {"Name": "Training-loss", "Regex": r"loss: ([0-9\.]+)"},
    {"Name": "Training-mlm-loss", "Regex": rf"\[train\].* mlm_loss={NUMBER}"},
    {"Name": "Training-perplexity", "Regex": rf"\[train\].* ppl={NUMBER}"},
    {"Name": "Training-nsp-accuracy", "Regex": rf"\[train\].* nsp_acc={NUMBER}"},
    {"Name": "Training-learning-rate", "Regex": rf"\[train\].* lr={SCIENTIFIC}"},
    {"Name": "Training-tokens-per-second", "Regex": rf"\[train\].* tokens_per_sec={NUMBER}"},
    {"Name": "Validation-loss", "Regex": rf"\[valid\].* valid_loss={NUMBER}"},
    {"Name": "Validation-mlm-loss", "Regex": rf"\[valid\].* valid_mlm_loss={NUMBER}"},
    {"Name": "Validation-perplexity", "Regex": rf"\[valid\].* valid_ppl={NUMBER}"},
    {"Name": "Validation-nsp-accuracy", "Regex": rf"\[valid\].* valid_nsp_acc={NUMBER}"},
    {
        "Name": "Training-model-flops-per-second",
        "Regex": rf"\[flops\].* flops_per_sec={SCIENTIFIC}",
    },
    {"Name": "Training-padding-efficiency", "Regex": rf"\[flops\].* padding_efficiency={NUMBER}"},
    {"Name": "Training-mfu", "Regex": rf"\[flops\].* mfu={SCIENTIFIC}"},
    *_task_definitions(),
)


# `ernie-sm evaluate`: `model` is "pretrained" (the model channel) or "baseline".
PRETRAINED, BASELINE = "pretrained", "baseline"


def finetune_line(model: str, step: int, loss: float) -> str:
    return f"[finetune] model={model} step={step} loss={loss:.6f}"


def dev_line(model: str, step: int, accuracy: float) -> str:
    return f"[dev] model={model} step={step} dev_accuracy={accuracy:.6f}"


def eval_line(model: str, accuracy: float, f1: float) -> str:
    """The test scores of one model: eval_* for the pretrained model, baseline_* for the baseline."""
    prefix = "eval" if model == PRETRAINED else "baseline"
    return f"[eval] model={model} {prefix}_accuracy={accuracy:.6f} {prefix}_f1={f1:.6f}"


EVAL_METRIC_DEFINITIONS: tuple[dict[str, str], ...] = (
    {"Name": "eval_accuracy", "Regex": rf"\[eval\] model=pretrained .*eval_accuracy={NUMBER}"},
    {"Name": "eval_f1", "Regex": rf"\[eval\] model=pretrained .*eval_f1={NUMBER}"},
    {
        "Name": "baseline_accuracy",
        "Regex": rf"\[eval\] model=baseline .*baseline_accuracy={NUMBER}",
    },
    {"Name": "baseline_f1", "Regex": rf"\[eval\] model=baseline .*baseline_f1={NUMBER}"},
    {"Name": "eval_dev_accuracy", "Regex": rf"\[dev\] model=pretrained .*dev_accuracy={NUMBER}"},
)
