"""Sentence pairs `[CLS] A [SEP] B [SEP]` from encoded documents, as lines of the shard format.

As in BERT's and ERNIE's data creation: consecutive sentences of a document are packed
towards max_seq_len, cut at a random sentence boundary into A and B; with probability
`negative_ratio` B is replaced by text from another document (nsp label 0) and the
sentences it displaced go back to be used again. A pair too long loses tokens from the
longer side, front or back at random, never emptying either side.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

Sentence = tuple[list[int], list[int]]  # token ids, seg labels
CLS, SEP = 1, 2


@dataclass(frozen=True)
class PairSettings:
    max_seq_len: int
    negative_ratio: float
    cls_id: int = CLS
    sep_id: int = SEP

    @property
    def budget(self) -> int:
        return self.max_seq_len - 3  # [CLS], [SEP], [SEP]


def document_pairs(
    doc: int,
    docs: list[list[Sentence]],
    settings: PairSettings,
    rng: np.random.Generator,
    stats: Counter,
) -> list[str]:
    """Shard lines for document `doc` of `docs` (the others supply negatives)."""
    sentences = split_long(docs[doc], settings.budget - 1, stats)
    lines: list[str] = []
    chunk: list[Sentence] = []
    i = 0
    while i < len(sentences):
        chunk.append(sentences[i])
        if i == len(sentences) - 1 or sum(len(s[0]) for s in chunk) >= settings.budget:
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) > 1 else 1
            a = concat(chunk[:a_end])
            # A lone sentence has no true next one here: pair it with another document's text.
            lone = len(chunk) == 1 and settings.negative_ratio > 0
            negative = lone or rng.random() < settings.negative_ratio
            b = _random_text(doc, docs, settings.budget - len(a[0]), rng) if negative else None
            if b is None:  # a positive pair, or no other document to draw from
                b = concat(chunk[a_end:])
                negative = False
            else:
                i -= len(chunk) - a_end  # B's sentences were not used: start there next
            if a[0] and b[0]:
                lines.append(
                    _line(*_truncate(a, b, settings.budget, rng), int(not negative), settings)
                )
                stats["negative" if negative else "positive"] += 1
            else:
                stats["unpaired_chunks"] += 1
            chunk = []
        i += 1
    return lines


def split_long(sentences: list[Sentence], limit: int, stats: Counter) -> list[Sentence]:
    """Cut sentences longer than a pair can hold into pieces that fit."""
    out = []
    for ids, seg in sentences:
        if len(ids) > limit:
            stats["long_sentences_split"] += 1
            out += [(ids[k : k + limit], seg[k : k + limit]) for k in range(0, len(ids), limit)]
        elif ids:
            out.append((ids, seg))
    return out


def concat(sentences: list[Sentence]) -> Sentence:
    """One sentence of the sentences' ids and seg labels, in order."""
    return [t for s in sentences for t in s[0]], [g for s in sentences for g in s[1]]


def _random_text(
    doc: int, docs: list[list[Sentence]], budget: int, rng: np.random.Generator
) -> Sentence | None:
    """Consecutive sentences of another non-empty document, up to `budget` tokens."""
    others = [d for d in range(len(docs)) if d != doc and docs[d]]
    if not others or budget <= 0:
        return None
    other = docs[others[int(rng.integers(len(others)))]]
    start = int(rng.integers(len(other)))
    taken: list[Sentence] = []
    for sentence in other[start:]:
        if taken and sum(len(s[0]) for s in taken) + len(sentence[0]) > budget:
            break
        taken.append(sentence)
    return concat(taken)


def _truncate(
    a: Sentence, b: Sentence, budget: int, rng: np.random.Generator
) -> tuple[Sentence, Sentence]:
    a_ids, a_seg, b_ids, b_seg = list(a[0]), list(a[1]), list(b[0]), list(b[1])
    while len(a_ids) + len(b_ids) > budget:
        ids, seg = (a_ids, a_seg) if len(a_ids) > len(b_ids) else (b_ids, b_seg)
        at = 0 if rng.random() < 0.5 else -1
        del ids[at], seg[at]
    return (a_ids, a_seg), (b_ids, b_seg)


def _line(a: Sentence, b: Sentence, nsp_label: int, settings: PairSettings) -> str:
    tokens = [settings.cls_id, *a[0], settings.sep_id, *b[0], settings.sep_id]
    sent = [0] * (len(a[0]) + 2) + [1] * (len(b[0]) + 1)
    seg = [-1, *a[1], -1, *b[1], -1]
    fields = (tokens, sent, range(len(tokens)), seg)
    return ";".join(" ".join(map(str, f)) for f in fields) + f";{nsp_label}"
