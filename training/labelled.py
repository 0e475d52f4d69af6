"""The labelled set of `ernie-sm evaluate`: train.tsv, dev.tsv and test.tsv of the eval channel.

The format of ERNIE's fine-tuning tasks (ChnSentiCorp, LCQMC, XNLI): `label<TAB>text` a
line, or `label<TAB>text_a<TAB>text_b` for sentence pairs; a first line whose first field
is literally `label` is a header and skipped, blank lines are skipped. Every line of the
three files has the same number of fields. The labels are the distinct labels of
train.tsv, sorted; a dev or test label not among them is an error, as are an empty split
and a train.tsv of one label (every model would score 1.0: nothing is measured).
Lines end at `\n` alone (as `csv` reads them; a trailing `\r` of CRLF files is dropped):
other line separators (U+2028, a form feed) are part of a text.

Texts are tokenised with the model's own vocab by `ernie-sm prepare`'s tokenizer
(text/encoder.py), into `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` (token types 0
then 1), cut to max_seq_len longest-first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ernie_sm.contract.errors import ConfigError, DataError
from ernie_sm.contract.textfile import read_text
from ernie_sm.text.vocab import Vocab

SPLITS = ("train", "dev", "test")
HEADER = "label"


@dataclass(frozen=True)
class Example:
    label: str
    texts: tuple[str, ...]  # one text, or a pair
    line: int  # in its file, for messages


@dataclass(frozen=True)
class LabelledSet:
    labels: tuple[str, ...]
    splits: dict[str, list[Example]]  # train, dev, test
    fields: int  # 2 (label, text) or 3 (label, text_a, text_b)


@dataclass(frozen=True)
class Encoded:
    """One split as token ids: each example's ids and token types, and its label index."""

    ids: list[list[int]]
    types: list[list[int]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def read_labelled_set(channel: Path) -> LabelledSet:
    """Read and check the three files of the eval channel."""
    splits: dict[str, list[Example]] = {}
    fields: dict[str, int] = {}
    for split in SPLITS:
        path = channel / f"{split}.tsv"
        if not path.is_file():
            raise ConfigError(
                f"the eval channel ({channel}) has no {split}.tsv: it needs train.tsv, dev.tsv "
                "and test.tsv (label<TAB>text or label<TAB>text_a<TAB>text_b a line)"
            )
        splits[split], fields[split] = _read_split(path)
    if len(set(fields.values())) > 1:
        counts = ", ".join(f"{split}.tsv {n}" for split, n in fields.items())
        raise DataError(
            f"the eval channel's files have different numbers of fields a line ({counts}): "
            "all single texts or all sentence pairs"
        )
    labels = tuple(sorted({e.label for e in splits["train"]}))
    if len(labels) < 2:
        raise DataError(
            f"{channel / 'train.tsv'} has one label ({labels[0]!r}): a classification set needs "
            "two or more, or every model scores 1.0 and nothing is measured"
        )
    for split in ("dev", "test"):
        path = channel / f"{split}.tsv"
        for example in splits[split]:
            if example.label not in labels:
                raise DataError(
                    f"{path} line {example.line}: label {example.label!r} never appears in train.tsv "
                    f"(its labels: {', '.join(labels)})"
                )
    return LabelledSet(labels, splits, fields["train"])


def _read_split(path: Path) -> tuple[list[Example], int]:
    examples: list[Example] = []
    fields = 0
    first = True
    text = read_text(path, "eval file", DataError)
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        if first and parts[0].strip() == HEADER:
            first = False  # the header: only the first line may be one
            continue
        first = False
        if len(parts) not in (2, 3):
            raise DataError(
                f"{path} line {number}: {len(parts)} tab-separated field(s), expected "
                "label<TAB>text or label<TAB>text_a<TAB>text_b"
            )
        if fields and len(parts) != fields:
            raise DataError(
                f"{path} line {number}: {len(parts)} fields where the lines before have {fields}"
            )
        fields = len(parts)
        label, *texts = (p.strip() for p in parts)
        if not label:
            raise DataError(f"{path} line {number}: the label is empty")
        for i, text in enumerate(texts):
            if not text:
                which = "text" if len(texts) == 1 else ("text_a", "text_b")[i]
                raise DataError(f"{path} line {number}: {which} is empty")
        examples.append(Example(label, tuple(texts), number))
    if not examples:
        raise DataError(f"{path} holds no examples (label<TAB>text lines)")
    return examples, fields


def encode_split(
    examples: list[Example], labels: tuple[str, ...], encoder, vocab: Vocab, max_seq_len: int
) -> Encoded:
    """Token ids and types of each example with `encoder` (a dataprep SentenceEncoder)."""
    index = {label: i for i, label in enumerate(labels)}
    texts = sorted({t for e in examples for t in e.texts})
    tokens = dict(zip(texts, (ids for ids, _ in encoder.encode(texts)), strict=True))
    ids, types = [], []
    for example in examples:
        segments = truncate([list(tokens[t]) for t in example.texts], max_seq_len)
        sequence, kinds = [vocab.cls_id], [0]
        for kind, segment in enumerate(segments):
            sequence += [*segment, vocab.sep_id]
            kinds += [kind] * (len(segment) + 1)
        ids.append(sequence)
        types.append(kinds)
    return Encoded(ids, types, np.asarray([index[e.label] for e in examples], dtype=np.int64))


def truncate(segments: list[list[int]], max_seq_len: int) -> list[list[int]]:
    """Cut the segments to fit max_seq_len with [CLS] and a [SEP] each, longest first (the
    later one on a tie, as ERNIE's readers do)."""
    budget = max_seq_len - 1 - len(segments)
    segments = [list(s) for s in segments]
    while sum(len(s) for s in segments) > max(budget, 0):
        longest = max(range(len(segments)), key=lambda i: (len(segments[i]), i))
        segments[longest].pop()
    return segments


def padded(encoded: Encoded, rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, ...]:
    """(src_ids, sent_ids, pos_ids, labels) of the examples `rows`, padded to the longest."""
    length = max(len(encoded.ids[r]) for r in rows)
    src = np.full((len(rows), length), pad_id, dtype=np.int64)
    sent = np.zeros((len(rows), length), dtype=np.int64)
    pos = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        n = len(encoded.ids[r])
        src[i, :n] = encoded.ids[r]
        sent[i, :n] = encoded.types[r]
        pos[i, :n] = np.arange(n)
    return src, sent, pos, encoded.labels[rows]


def scores(gold: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(accuracy, macro-F1). Macro-F1 is scikit-learn's f1_score(average="macro"), what
    results are compared against: the mean of 2·TP / (2·TP + FP + FN) over the labels
    present in the gold labels or the predictions; a label in neither is left out (it
    would otherwise count 1.0 and lift a constant predictor's score)."""
    accuracy = float(np.mean(gold == predicted))
    f1s = []
    for label in np.union1d(gold, predicted):
        tp = int(np.sum((predicted == label) & (gold == label)))
        fp = int(np.sum((predicted == label) & (gold != label)))
        fn = int(np.sum((predicted != label) & (gold == label)))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return accuracy, float(np.mean(f1s))
