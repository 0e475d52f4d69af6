"""ERNIE 2.0's pretraining tasks: the one table of their names, ids, classes and data.

ERNIE 2.0 (Sun et al., 2020) pretrains one encoder on tasks introduced stage by stage,
each batch tagged with its task's id through a task embedding. The tasks here are those
that raw text yields:

- knowledge_masking: ERNIE 1.0's masked LM with phrase/entity masking, plus next-sentence
  prediction (its shards are ERNIE 1.0's, format 1);
- sentence_reordering: a paragraph cut into 1..MAX_SEGMENTS segments, shown shuffled;
  classify the permutation among the sum of n! for n = 1..MAX_SEGMENTS (9 classes);
- sentence_distance: two segments that are adjacent (0), of one document but not
  adjacent (1), or of two documents (2);
- token_document_relation: for every token of a segment, whether it also appears in
  the other segments of its document (a per-token label; -1 where there is none).

A dataset prepared for them holds, in each channel, DATASET_FILE naming its format
version and tasks; knowledge masking's shards and filelist sit at the channel's top
as in format 1, every other task's in a folder of the task's name with the same
filelist name. A channel without DATASET_FILE is format 1: knowledge masking only.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 2
DATASET_FILE = "dataset.json"
MAX_SEGMENTS = 3
# Class k of sentence reordering: shown segment i is original segment REORDERINGS[k][i].
REORDERINGS: tuple[tuple[int, ...], ...] = tuple(
    p for n in range(1, MAX_SEGMENTS + 1) for p in itertools.permutations(range(n))
)
IGNORE = -1  # a per-token label that is not scored ([CLS], [SEP], padding)


@dataclass(frozen=True)
class Task:
    name: str
    id: int  # its row of the task embedding
    num_classes: int
    token_level: bool  # one label per token, else one per sample
    masked: bool  # its batches are masked for the masked-LM loss


KNOWLEDGE_MASKING = Task("knowledge_masking", 0, 2, token_level=False, masked=True)
SENTENCE_REORDERING = Task("sentence_reordering", 1, len(REORDERINGS), False, False)
SENTENCE_DISTANCE = Task("sentence_distance", 2, 3, False, False)
TOKEN_DOCUMENT_RELATION = Task("token_document_relation", 3, 2, True, False)
TASKS: dict[str, Task] = {
    t.name: t
    for t in (KNOWLEDGE_MASKING, SENTENCE_REORDERING, SENTENCE_DISTANCE, TOKEN_DOCUMENT_RELATION)
}
NUM_TASK_TYPES = len(TASKS)  # task_type_vocab_size of the models this code builds


def parse_weights(text: str) -> dict[str, float]:
    """`name:weight,name:weight` (a bare name weighs 1) -> {name: weight}; ValueError naming
    the bad entry. Weights are finite and > 0; each task at most once."""
    weights: dict[str, float] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, _, number = (part.strip() for part in entry.partition(":"))
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
        if name in weights:
            raise ValueError(f"task {name} is named twice")
        try:
            weight = float(number) if number else 1.0
        except ValueError:
            raise ValueError(f"weight {number!r} of {name} is not a number") from None
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"weight {number!r} of {name} must be a finite number > 0")
        if weight < sys.float_info.min:
            raise ValueError(
                f"weight {number!r} of {name} is subnormal (below {sys.float_info.min:.4g}): "
                "too small to compute with"
            )
        weights[name] = weight
    return weights


def parse_mix(text: str) -> dict[str, float]:
    """parse_weights for weights the tasks are drawn by (the `tasks` hyperparameter): the
    weights must also sum to a finite number and each task be drawable (mix_problems)."""
    weights = parse_weights(text)
    for name, problem in mix_problems(weights).items():
        raise ValueError(problem if name is None else f"weight of {name} {problem}")
    return weights


# A draw is a uniform double of 53 bits in [0, 1): a task whose share of the weights is
# below 2**-53 is never drawn.
MIN_SHARE = 2.0**-53


def mix_problems(weights: dict[str, float]) -> dict[str | None, str]:
    """What keeps sampling weights (each finite, > 0) from being drawn by: {None: ...} when
    their sum overflows, {task: ...} for a task whose share is too small to ever be drawn."""
    total = sum(weights.values())
    if not math.isfinite(total):
        return {None: f"the weights sum to more than {sys.float_info.max:.4g}: scale them down"}
    return {
        name: (
            f"{weight:g} is {weight / total:.3g} of the weights' sum: below {MIN_SHARE:.3g}, "
            "it would never be drawn"
        )
        for name, weight in weights.items()
        if weight / total < MIN_SHARE
    }


def format_weights(weights: dict[str, float]) -> str:
    """The hyperparameter string parse_weights reads back."""
    return ",".join(f"{name}:{weight:g}" for name, weight in weights.items())


def task_folder(channel: Path, task: Task) -> Path:
    """Where a task's filelist and shards are in a channel (see the module docstring)."""
    return channel if task == KNOWLEDGE_MASKING else channel / task.name


def dataset_tasks(channel: Path) -> tuple[int, list[str]]:
    """(format version, task names) a channel declares; format 1 without DATASET_FILE.
    ValueError when the file is unreadable or of a newer format than this code reads."""
    path = channel / DATASET_FILE
    if not path.is_file():
        return 1, [KNOWLEDGE_MASKING.name]
    try:
        declared = json.loads(path.read_text(encoding="utf-8"))
        version, names = int(declared["format_version"]), list(declared["tasks"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a dataset description: {exc}") from None
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format version {version} is newer than this trainer reads "
            f"({FORMAT_VERSION}); use the ernie-sm that prepared it"
        )
    return version, names


def describe_dataset(names: list[str]) -> str:
    """The DATASET_FILE text for a channel holding these tasks' shards."""
    return json.dumps({"format_version": FORMAT_VERSION, "tasks": names}, indent=2) + "\n"
