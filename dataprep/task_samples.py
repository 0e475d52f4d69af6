"""Shard lines of ERNIE 2.0's sentence and document tasks, from a chunk's encoded documents.

Every line has the shard format's five `;`-fields (token ids, sentence types, positions
0..L-1, seg labels with -1 at [CLS] and [SEP], label) and at most max_seq_len tokens;
the tasks, their classes and labels are those of contract/tasks.py:

- sentence_reordering: `[CLS] s_p0 [SEP] s_p1 [SEP] ... [SEP]`, types 0. A paragraph
  (consecutive sentences up to the budget) is cut into n segments, n uniform in
  1..MAX_SEGMENTS (at most its token count), at sentence boundaries when it has n
  sentences, else inside them; the segments are shown in an order p uniform among the
  n! (identity included), and the label is k with REORDERINGS[k] == p.
- sentence_distance: `[CLS] A [SEP] B [SEP]`, types 0 up to A's [SEP] and 1 after, A a
  sentence and B the next one (0), another of the document not right after A (1), or
  one of another document (2): uniform among the classes the document allows.
- token_document_relation: `[CLS] segment [SEP]`, types 0, with one label per token:
  1 where its id is in another segment of the document (cut as paragraphs are), 0 where
  not, IGNORE at [CLS] and [SEP]. A document of one segment gives no lines: there is
  nothing to relate its tokens to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from operator import attrgetter

import numpy as np
from ernie_sm.contract.tasks import (
    IGNORE,
    MAX_SEGMENTS,
    REORDERINGS,
    SENTENCE_DISTANCE,
    SENTENCE_REORDERING,
    TOKEN_DOCUMENT_RELATION,
    Task,
)
from ernie_sm.dataprep.samples import CLS, SEP, Sentence, concat, split_long

# The reordering classes of each segment count n.
_CLASSES = {
    n: [k for k, p in enumerate(REORDERINGS) if len(p) == n] for n in range(1, MAX_SEGMENTS + 1)
}


@dataclass(frozen=True)
class TaskSettings:
    max_seq_len: int
    cls_id: int = CLS
    sep_id: int = SEP

    @property
    def paragraph_budget(self) -> int:
        """Text tokens of a reordering line: [CLS] and up to MAX_SEGMENTS [SEP] besides."""
        return self.max_seq_len - 1 - MAX_SEGMENTS

    @property
    def sentence_budget(self) -> int:
        """Tokens of either sentence of a distance line: [CLS] A [SEP] B [SEP]."""
        return (self.max_seq_len - 3) // 2

    @property
    def segment_budget(self) -> int:
        """Text tokens of a token-document relation line: [CLS] segment [SEP]."""
        return self.max_seq_len - 2


Lines = Callable[[int, list[list[Sentence]], TaskSettings, np.random.Generator, Counter], list[str]]


def task_lines(
    task: Task,
    docs: list[list[Sentence]],
    settings: TaskSettings,
    rng: np.random.Generator,
    stats: Counter,
) -> list[str]:
    """Lines of `task` for every document of a chunk; `stats` counts labels and shortfalls."""
    budget, document_lines = _MAKERS[task.name]
    # Sentences longer than a line holds are cut once, so other documents' fit too.
    fitted = [split_long(doc, budget(settings), stats) for doc in docs]
    lines = []
    for d, doc in enumerate(fitted):
        made = document_lines(d, fitted, settings, rng, stats)
        stats["documents_without_lines"] += bool(doc) and not made
        lines += made
    return lines


def reordering_lines(
    doc: int,
    docs: list[list[Sentence]],
    settings: TaskSettings,
    rng: np.random.Generator,
    stats: Counter,
) -> list[str]:
    """One line per paragraph of document `doc`."""
    return [
        _reordering_line(paragraph, settings, rng, stats)
        for paragraph in pack(docs[doc], settings.paragraph_budget)
    ]


def _reordering_line(
    paragraph: list[Sentence], settings: TaskSettings, rng: np.random.Generator, stats: Counter
) -> str:
    ids, seg = concat(paragraph)
    n = int(rng.integers(1, min(MAX_SEGMENTS, len(ids)) + 1))
    bounds = _cuts(paragraph, n, rng, stats)
    segments = [(ids[a:b], seg[a:b]) for a, b in pairwise(bounds)]
    classes = _CLASSES[n]
    label = classes[int(rng.integers(len(classes)))]
    stats[f"label_{label}"] += 1
    shown = [segments[i] for i in REORDERINGS[label]]
    return _line(shown, [0] * n, [label], settings)


def _cuts(paragraph: list[Sentence], n: int, rng: np.random.Generator, stats: Counter) -> list[int]:
    """Token offsets 0 = b0 < ... < bn = length cutting the paragraph into n segments."""
    ends = np.cumsum([len(ids) for ids, _ in paragraph])
    if len(paragraph) >= n:
        inner = ends[:-1]  # sentence boundaries
    else:
        inner = np.arange(1, ends[-1])
        stats["cut_inside_sentences"] += 1
    chosen = np.sort(rng.choice(inner, n - 1, replace=False)) if n > 1 else []
    return [0, *map(int, chosen), int(ends[-1])]


def distance_lines(
    doc: int,
    docs: list[list[Sentence]],
    settings: TaskSettings,
    rng: np.random.Generator,
    stats: Counter,
) -> list[str]:
    """One line per sentence of document `doc` but its last (A always has a next one)."""
    sentences = docs[doc]
    others = [d for d in range(len(docs)) if d != doc and docs[d]]
    # The sentences not A nor right after it ("far") are every index but a and a + 1:
    # the k-th of them is k below a, k + 2 from there, so none is listed (which made a
    # document quadratic in its sentences) and the draws are those of the list.
    far = len(sentences) - 2
    lines = []
    for a in range(len(sentences) - 1):
        possible = [label for label, ok in ((0, True), (1, far > 0), (2, others)) if ok]
        stats["classes_unavailable"] += len(possible) < 3
        label = possible[int(rng.integers(len(possible)))]
        if label == 2:
            other = docs[others[int(rng.integers(len(others)))]]
            b = other[int(rng.integers(len(other)))]
        elif label == 0:
            b = sentences[a + 1]
        else:
            k = int(rng.integers(far))
            b = sentences[k if k < a else k + 2]
        stats[f"label_{label}"] += 1
        lines.append(_line([sentences[a], b], [0, 1], [label], settings))
    return lines


def relation_lines(
    doc: int,
    docs: list[list[Sentence]],
    settings: TaskSettings,
    rng: np.random.Generator,
    stats: Counter,
) -> list[str]:
    """One line per segment of document `doc`; none for a document of one segment."""
    segments = [concat(run) for run in pack(docs[doc], settings.segment_budget)]
    if len(segments) < 2:
        stats["single_segment_documents"] += bool(segments)
        return []
    holders = Counter(token for ids, _ in segments for token in set(ids))  # segments per token
    lines = []
    for ids, seg in segments:
        labels = [int(holders[token] > 1) for token in ids]
        stats["token_label_1"] += sum(labels)
        stats["token_label_0"] += len(labels) - sum(labels)
        lines.append(_line([(ids, seg)], [0], [IGNORE, *labels, IGNORE], settings))
    return lines


def pack(sentences: list[Sentence], budget: int) -> list[list[Sentence]]:
    """Runs of consecutive sentences, each as long as fits in `budget` tokens; every
    sentence is expected to fit on its own (see split_long)."""
    runs: list[list[Sentence]] = []
    run: list[Sentence] = []
    size = 0
    for sentence in sentences:
        if run and size + len(sentence[0]) > budget:
            runs.append(run)
            run, size = [], 0
        run.append(sentence)
        size += len(sentence[0])
    return [*runs, run] if run else runs


def _line(
    segments: list[Sentence], types: list[int], labels: list[int], settings: TaskSettings
) -> str:
    """`[CLS] s0 [SEP] s1 [SEP] ...`: [CLS] takes the first segment's type, each [SEP] its
    segment's; `labels` is the last field, one value or one per token."""
    tokens, sent, seg = [settings.cls_id], [types[0]], [-1]
    for (ids, words), sentence_type in zip(segments, types, strict=True):
        tokens += [*ids, settings.sep_id]
        sent += [sentence_type] * (len(ids) + 1)
        seg += [*words, -1]
    fields = (tokens, sent, range(len(tokens)), seg, labels)
    return ";".join(" ".join(map(str, f)) for f in fields)


# Per task: the most tokens one of its sentences may have, and its lines for one document.
_MAKERS: dict[str, tuple[Callable[[TaskSettings], int], Lines]] = {
    SENTENCE_REORDERING.name: (attrgetter("paragraph_budget"), reordering_lines),
    SENTENCE_DISTANCE.name: (attrgetter("sentence_budget"), distance_lines),
    TOKEN_DOCUMENT_RELATION.name: (attrgetter("segment_budget"), relation_lines),
}
SAMPLE_TASKS = tuple(_MAKERS)  # the tasks this module makes lines for
# What a task's lines need of a corpus, for the error where it gives none.
TASK_NEEDS = {
    SENTENCE_REORDERING.name: "it needs a document with text",
    SENTENCE_DISTANCE.name: "it needs documents of two or more sentences",
    TOKEN_DOCUMENT_RELATION.name: (
        "it needs documents longer than one segment ({segment} tokens: --max-seq-len less "
        "2); a smaller --max-seq-len cuts shorter segments, so that short documents have two"
    ),
}
