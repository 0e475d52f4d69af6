"""A small synthetic corpus in ERNIE's pretraining format, for the training tests.

A made-up language with structure a tiny model can learn in a minute on a CPU:
multi-character words (so word-level masking has something to hide), topics with
their own words and word-to-word habits (so masked tokens are guessable), and
documents of one topic (so the next sentence is recognisable). Made here, no download.

learnable_task_corpus writes raw text instead, for `ernie-sm prepare --tasks`: see there.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]
CLS, SEP = 1, 2
FIRST_CHAR = 0x4E00  # CJK unified ideographs


def _language(rng: np.random.Generator, n_chars: int, n_words: int, n_topics: int):
    first_id = len(SPECIALS)
    words = [
        tuple(rng.integers(first_id, first_id + n_chars, size=rng.integers(2, 4)))
        for _ in range(n_words)
    ]
    topics = [rng.choice(n_words, size=n_words // 4, replace=False) for _ in range(n_topics)]
    habits = rng.integers(0, n_words // 4, size=(n_topics, n_words // 4))  # preferred next word
    return words, topics, habits


def _sentence(rng, words, topic_words, habit) -> list[tuple[int, ...]]:
    k = int(rng.integers(len(topic_words)))
    out = []
    for _ in range(int(rng.integers(4, 10))):
        out.append(words[topic_words[k]])
        k = int(habit[k]) if rng.random() < 0.9 else int(rng.integers(len(topic_words)))
    return out


def _encode(a: list, b: list, nsp_label: int) -> str:
    tokens, sent, seg = [CLS], [0], [-1]
    for sentence_type, segment in ((0, a), (1, b)):
        for word in segment:
            tokens += word
            sent += [sentence_type] * len(word)
            seg += [0] + [1] * (len(word) - 1)
        tokens.append(SEP)
        sent.append(sentence_type)
        seg.append(-1)
    fields = (tokens, sent, list(range(len(tokens))), seg)
    return ";".join(" ".join(map(str, f)) for f in fields) + f";{nsp_label}"


def samples(n: int, seed: int = 0, n_chars: int = 120, n_topics: int = 6) -> list[str]:
    """`n` lines of the 5-field format, about half NSP negatives."""
    rng = np.random.default_rng(seed)
    words, topics, habits = _language(np.random.default_rng(1234), n_chars, 160, n_topics)
    lines = []
    for _ in range(n):
        topic = int(rng.integers(n_topics))
        a = _sentence(rng, words, topics[topic], habits[topic])
        is_next = rng.random() < 0.5
        other = topic if is_next else (topic + int(rng.integers(1, n_topics))) % n_topics
        b = _sentence(rng, words, topics[other], habits[other])
        lines.append(_encode(a, b, int(is_next)))
    return lines


def vocab_tokens(n_chars: int = 120) -> list[str]:
    return SPECIALS + [chr(FIRST_CHAR + i) for i in range(n_chars)]


def write_dataset(
    train_dir: Path,
    valid_dir: Path,
    train_shards: int = 2,
    lines_per_shard: int = 1000,
    seed: int = 0,
) -> None:
    """Write vocab.txt, shards and filelists into train and valid channel folders."""
    for folder in (train_dir, valid_dir):
        folder.mkdir(parents=True, exist_ok=True)
    (train_dir / "vocab.txt").write_text(
        "".join(f"{t}\t{i}\n" for i, t in enumerate(vocab_tokens())), encoding="utf-8"
    )
    entries = []
    for shard in range(train_shards):
        name = f"part-{shard:05d}.gz"
        write_shard(train_dir / name, samples(lines_per_shard, seed=seed + 1 + shard))
        entries.append(f"{name}\t0.5\n")  # half the passes word-level
    (train_dir / "train_filelist").write_text("".join(entries))
    write_shard(valid_dir / "part-00000.gz", samples(lines_per_shard // 4, seed=seed + 10_000))
    (valid_dir / "valid_filelist").write_text("part-00000.gz\t1.1\n")


def write_shard(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


# Sample lengths (tokens with [CLS] and [SEP]) of the original ERNIE demo shard
# (demo_valid_set.gz, 6,000 lines): counts per 8-token bin from 8 up to 136. Mean 95,
# median 104, 9 to 130: mostly near the 128 the shard was cut at, with a long short tail.
REFERENCE_LENGTH_BINS = np.arange(8, 137, 8)
REFERENCE_LENGTH_COUNTS = np.array(
    [31, 90, 133, 144, 156, 182, 224, 248, 308, 353, 468, 626, 765, 1006, 1120, 146]
)


def reference_lengths(n: int, seed: int = 0) -> np.ndarray:
    """`n` sample lengths drawn from the demo shard's length histogram."""
    rng = np.random.default_rng(seed)
    probabilities = REFERENCE_LENGTH_COUNTS / REFERENCE_LENGTH_COUNTS.sum()
    bins = rng.choice(len(probabilities), size=n, p=probabilities)
    lengths = rng.integers(REFERENCE_LENGTH_BINS[bins], REFERENCE_LENGTH_BINS[bins + 1])
    return np.clip(lengths, 9, 130)


# learnable_task_corpus's characters, offsets from FIRST_CHAR in three disjoint ranges.
MARKERS = 13  # sentence k starts with marker k and ends with k + 1, up to 12 sentences
TOPIC_CHARS = range(MARKERS, MARKERS + 80)
OWN_CHARS = range(TOPIC_CHARS.stop, TOPIC_CHARS.stop + 400)


def learnable_task_corpus(path: Path, docs: int = 200, seed: int = 0) -> Path:
    """Write `docs` documents of raw text to `path` (blank-line separated, one sentence a
    line, CJK characters: each a token of a vocab built with `prepare --vocab-size`, whose
    size the corpus caps at its 500-odd characters) such that a tiny model learns each of
    ERNIE 2.0's sentence and document tasks well above chance in a hundred or so steps:

    - sentence k of a document starts with the k-th of MARKERS ordinal characters and
      ends with the (k+1)-th, the next sentence's first: the order of segments
      (sentence_reordering) and whether B comes right after A (sentence_distance 0 vs 1)
      show as a character A ends with and B starts with, which attention matches easily;
    - a document has 3 topic characters of its own, drawn from TOPIC_CHARS, and every
      sentence holds them all: B of another document (sentence_distance 2) shows other
      topic characters, and topic characters (with the final 。) appear in all the
      document's segments (token_document_relation 1);
    - every sentence also holds 3 to 5 characters of OWN_CHARS that no other sentence of
      its document has (token_document_relation 0).

    Documents have 6 to 12 sentences of 10 to 12 tokens (with the 。), so 60 to 144: with
    --max-seq-len 64 or less most span two segments or more, which
    token_document_relation needs.
    """
    rng = np.random.default_rng(seed)
    blocks = [_task_document(rng) for _ in range(docs)]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def _task_document(rng: np.random.Generator) -> str:
    topic = rng.choice(TOPIC_CHARS, size=3, replace=False)
    count = int(rng.integers(6, MARKERS))
    own = iter(rng.choice(OWN_CHARS, size=5 * count, replace=False))
    sentences = []
    for k in range(count):
        body = [*topic, *(next(own) for _ in range(int(rng.integers(3, 6))))]
        chars = [k, *rng.permutation(body), k + 1]
        sentences.append("".join(chr(FIRST_CHAR + int(c)) for c in chars) + "。")
    return "\n".join(sentences)
