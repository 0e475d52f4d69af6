"""`ernie-sm prepare --tasks`: ERNIE 2.0's sentence and document tasks, lines checked against
the documents they came from."""

from __future__ import annotations

import gzip
import io
import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ernie_sm.contract.tasks import (
    DATASET_FILE,
    IGNORE,
    KNOWLEDGE_MASKING,
    REORDERINGS,
    SENTENCE_DISTANCE,
    SENTENCE_REORDERING,
    TASKS,
    TOKEN_DOCUMENT_RELATION,
    dataset_tasks,
    describe_dataset,
)
from ernie_sm.dataprep import prepare as prepare_module
from ernie_sm.dataprep.prepare import prepare
from ernie_sm.dataprep.samples import split_long
from ernie_sm.dataprep.task_samples import TaskSettings, task_lines
from ernie_sm.text.documents import CorpusError, Document
from ernie_sm.training.data import read_filelist
from rich.console import Console

from tests import synthetic
from tests.test_prepare import options, write_corpus

CLS, SEP = 1, 2
NEW_TASKS = [SENTENCE_REORDERING.name, SENTENCE_DISTANCE.name, TOKEN_DOCUMENT_RELATION.name]


def make_docs(rng, count, sentences=(1, 9), length=(1, 12), vocab=None):
    """Encoded documents; token ids unique in the chunk, or drawn from `vocab` ids."""
    docs, next_id = [], 5
    for _ in range(count):
        doc = []
        for _ in range(int(rng.integers(*sentences))):
            n = int(rng.integers(*length))
            if vocab is None:
                ids, next_id = list(range(next_id, next_id + n)), next_id + n
            else:
                ids = [int(i) for i in rng.integers(5, 5 + vocab, size=n)]
            doc.append((ids, [0, *(int(s) for s in rng.integers(0, 2, size=n - 1))]))
        docs.append(doc)
    return docs


def parse(line: str, max_seq_len: int) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """The segments (ids, seg labels) between [CLS]/[SEP] and the last field, after
    checking the line's form."""
    fields = [[int(v) for v in field.split()] for field in line.split(";")]
    assert len(fields) == 5, line
    tokens, sent, pos, seg, label = fields
    assert 3 <= len(tokens) <= max_seq_len
    assert len(sent) == len(seg) == len(tokens) and pos == list(range(len(tokens)))
    assert tokens[0] == CLS and tokens[-1] == SEP and seg[0] == -1
    segments, start = [], 1
    for at in [i for i, t in enumerate(tokens) if t == SEP]:
        assert seg[at] == -1 and at > start, line  # no empty segment
        segments.append((tokens[start:at], seg[start:at]))
        start = at + 1
    return segments, label


def positions(docs):
    """token id -> (document, position in its token stream), for chunks of unique ids."""
    where = {}
    for d, doc in enumerate(docs):
        stream = [t for ids, _ in doc for t in ids]
        where.update({t: (d, p) for p, t in enumerate(stream)})
    return where


def streams(docs):
    return [[t for ids, _ in doc for t in ids] for doc in docs], [
        [g for _, seg in doc for g in seg] for doc in docs
    ]


def run(task, docs, max_seq_len, seed=0):
    stats: Counter = Counter()
    rng = np.random.default_rng(seed)
    return task_lines(task, docs, TaskSettings(max_seq_len), rng, stats), stats


def test_reordering_lines_decode_back_to_consecutive_paragraphs_of_their_documents():
    docs = make_docs(np.random.default_rng(1), 60)
    lines, stats = run(SENTENCE_REORDERING, docs, max_seq_len=24)
    ids, segs = streams(docs)
    where = positions(docs)
    starts = {where[ids[0]] for ids, _ in (s for doc in docs for s in doc)}  # sentence starts
    rebuilt, rebuilt_seg = [], []
    for line in lines:
        shown, (label,) = parse(line, 24)
        order = REORDERINGS[label]
        assert len(order) == len(shown)
        original = [shown[order.index(i)] for i in range(len(shown))]
        # Where the paragraph had enough sentences, each segment starts one.
        sentences = {where[t] for ids, _ in original for t in ids} & starts
        if len(sentences) >= len(original):
            assert all(where[ids[0]] in starts for ids, _ in original), line
        sent = [int(v) for v in line.split(";")[1].split()]
        assert set(sent) == {0}
        rebuilt += [t for ids, _ in original for t in ids]
        rebuilt_seg += [g for _, seg in original for g in seg]
    # Paragraphs in order, every token once: the labels undo exactly the shuffles shown.
    assert rebuilt == [t for doc in ids for t in doc]
    assert rebuilt_seg == [g for doc in segs for g in doc]
    assert stats["cut_inside_sentences"] > 0  # the token-boundary cut is exercised


def test_sentence_distance_labels_are_true_of_the_source_documents():
    docs = make_docs(np.random.default_rng(2), 40, length=(1, 20))
    docs[5] = docs[5][:1]  # a one-sentence document: B of others only
    lines, stats = run(SENTENCE_DISTANCE, docs, max_seq_len=24)
    where = positions(docs)
    _, segs = streams(docs)
    labels = Counter()
    for line in lines:
        (a, b), (label,) = parse(line, 24)
        sent = [int(v) for v in line.split(";")[1].split()]
        assert sent == [0] * (len(a[0]) + 2) + [1] * (len(b[0]) + 1)
        (doc_a, end_a), (doc_b, start_b) = where[a[0][-1]], where[b[0][0]]
        for ids, seg in (a, b):  # each a contiguous run of one document, seg labels carried
            doc, first = where[ids[0]]
            assert [where[t] for t in ids] == [(doc, first + k) for k in range(len(ids))]
            assert seg == segs[doc][first : first + len(ids)]
        expected = 2 if doc_a != doc_b else 0 if start_b == end_a + 1 else 1
        assert label == expected, line
        labels[label] += 1
    assert set(labels) == {0, 1, 2}
    assert stats["long_sentences_split"] > 0  # sentences over (24 - 3) // 2 were cut
    lone = [doc for doc in docs if len(split_long(doc, (24 - 3) // 2, Counter())) == 1]
    assert stats["documents_without_lines"] == len(lone) >= 1


def test_token_document_relation_labels_are_recomputed_from_the_other_segments():
    docs = make_docs(np.random.default_rng(3), 40, vocab=30)
    ones = zeros = 0
    for doc in docs:
        lines, stats = run(TOKEN_DOCUMENT_RELATION, [doc], max_seq_len=20)
        parsed = [parse(line, 20) for line in lines]
        segments = [segs[0] for segs, _ in parsed]
        assert all(len(segs) == 1 for segs, _ in parsed)
        (stream,), (seg_stream,) = streams([doc])
        if len(stream) <= 18:  # one segment: nothing to relate to
            assert not lines and stats["single_segment_documents"] == 1
            continue
        assert [t for ids, _ in segments for t in ids] == stream
        assert [g for _, seg in segments for g in seg] == seg_stream
        for i, ((ids, _), (_, label)) in enumerate(zip(segments, parsed, strict=True)):
            elsewhere = {t for j, (other, _) in enumerate(segments) if j != i for t in other}
            assert label == [IGNORE, *(int(t in elsewhere) for t in ids), IGNORE]
            ones += sum(t in elsewhere for t in ids)
            zeros += sum(t not in elsewhere for t in ids)
    assert ones > 100 and zeros > 100


def test_class_balance_is_as_designed_on_a_larger_corpus():
    docs = make_docs(np.random.default_rng(4), 400, sentences=(3, 10), length=(3, 12))
    lines, stats = run(SENTENCE_REORDERING, docs, max_seq_len=40)
    shares = np.bincount([int(line.rsplit(";", 1)[1]) for line in lines]) / len(lines)
    # n uniform in 1..3, then the n! orders uniform: 1/3, 1/6 each, 1/18 each.
    expected = np.array([1 / 3] + [1 / 6] * 2 + [1 / 18] * 6)
    assert np.abs(shares - expected).max() < 0.04, shares
    lines, stats = run(SENTENCE_DISTANCE, docs, max_seq_len=40)
    shares = np.bincount([int(line.rsplit(";", 1)[1]) for line in lines]) / len(lines)
    assert np.abs(shares - 1 / 3).max() < 0.03, shares
    assert stats["classes_unavailable"] == 0


def test_sentence_distance_draws_among_the_classes_a_document_allows():
    pair = make_docs(np.random.default_rng(5), 1, sentences=(2, 3), length=(1, 8))
    lines, stats = run(SENTENCE_DISTANCE, pair, max_seq_len=24)
    assert [line.rsplit(";", 1)[1] for line in lines] == ["0"]  # no other sentence or document
    assert stats["classes_unavailable"] == 1
    lone = make_docs(np.random.default_rng(5), 1, sentences=(1, 2))
    lines, stats = run(SENTENCE_DISTANCE, lone, max_seq_len=24)
    assert lines == [] and stats["documents_without_lines"] == 1


def _quadratic_distance_lines(doc, docs, settings, rng, stats):
    """sentence_distance's lines as first written, listing the far sentences per A: the
    reference its linear form must match line for line and draw for draw."""
    from ernie_sm.dataprep.task_samples import _line

    sentences = docs[doc]
    others = [d for d in range(len(docs)) if d != doc and docs[d]]
    lines = []
    for a in range(len(sentences) - 1):
        far = [b for b in range(len(sentences)) if b not in (a, a + 1)]
        possible = [label for label, ok in ((0, True), (1, far), (2, others)) if ok]
        stats["classes_unavailable"] += len(possible) < 3
        label = possible[int(rng.integers(len(possible)))]
        if label == 2:
            other = docs[others[int(rng.integers(len(others)))]]
            b = other[int(rng.integers(len(other)))]
        else:
            b = sentences[a + 1 if label == 0 else far[int(rng.integers(len(far)))]]
        stats[f"label_{label}"] += 1
        lines.append(_line([sentences[a], b], [0, 1], [label], settings))
    return lines


def test_sentence_distance_lines_are_those_of_the_quadratic_reference(monkeypatch):
    from ernie_sm.dataprep import task_samples

    docs = make_docs(np.random.default_rng(6), 30, sentences=(1, 40), length=(1, 14))
    docs[3] = docs[3][:2]  # a pair: no far sentence
    for only in ([docs[0]], [docs[3]], docs):  # one document (no others), and a chunk
        for seed in range(3):
            ours, our_stats = run(SENTENCE_DISTANCE, only, max_seq_len=24, seed=seed)
            with monkeypatch.context() as m:
                budget, _ = task_samples._MAKERS[SENTENCE_DISTANCE.name]
                m.setitem(
                    task_samples._MAKERS,
                    SENTENCE_DISTANCE.name,
                    (budget, _quadratic_distance_lines),
                )
                theirs, their_stats = run(SENTENCE_DISTANCE, only, max_seq_len=24, seed=seed)
            assert ours == theirs and our_stats == their_stats
    assert len(ours) > 300 and {line[-1] for line in ours} == {"0", "1", "2"}


def test_sentence_distance_is_linear_in_the_sentences_of_a_document():
    doc = [([5 + i % 100], [0]) for i in range(20_000)]
    start = time.perf_counter()
    lines, _ = run(SENTENCE_DISTANCE, [doc], max_seq_len=16)
    # 0.1 s here; listing the far sentences per sentence took about 50 s.
    assert len(lines) == 19_999 and time.perf_counter() - start < 5


def test_reordering_of_a_one_token_paragraph_has_one_segment():
    lines, _ = run(SENTENCE_REORDERING, [[([7], [0])]], max_seq_len=8)
    assert lines == ["1 7 2;0 0 0;0 1 2;-1 0 -1;0"]


def read_task_lines(channel: Path, task: str) -> list[str]:
    folder = channel if task == KNOWLEDGE_MASKING.name else channel / task
    lines = []
    for shard in read_filelist(folder / f"{channel.name}_filelist"):
        assert shard.path.parent == folder and shard.path.is_file()
        with gzip.open(shard.path, "rt") as f:
            lines += f.read().splitlines()
    return lines


def test_tasks_are_written_in_their_folders_with_dataset_json(tmp_path):
    summary = prepare(options(tmp_path, tasks=NEW_TASKS))
    names = [KNOWLEDGE_MASKING.name, *NEW_TASKS]
    for channel in ("train", "valid"):
        folder = tmp_path / "dataset" / channel
        assert (folder / DATASET_FILE).read_text() == describe_dataset(names)
        assert dataset_tasks(folder) == (2, names)
        for name in NEW_TASKS:
            lines = read_task_lines(folder, name)
            assert len(lines) == summary["tasks"][name]["samples"][channel] > 0
            for line in lines:
                _, label = parse(line, 64)
                if TASKS[name].token_level:
                    assert len(label) == len(line.split(";")[0].split())
                    assert set(label) <= {IGNORE, 0, 1} and label[0] == label[-1] == IGNORE
                else:
                    assert len(label) == 1 and 0 <= label[0] < TASKS[name].num_classes
    on_disk = json.loads((tmp_path / "dataset" / "summary.json").read_text())
    assert on_disk["tasks"] == summary["tasks"]
    assert "tasks" not in on_disk["options"]
    distance = summary["tasks"][SENTENCE_DISTANCE.name]
    assert distance["label_0"] + distance["label_1"] + distance["label_2"] == sum(
        distance["samples"].values()
    )


def dataset_files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "summary.json"  # it names the output
    }


def test_knowledge_masking_output_is_the_same_bytes_with_or_without_tasks(tmp_path):
    plain = prepare(options(tmp_path / "a"))
    tasks = prepare(options(tmp_path / "b", tasks=[SENTENCE_DISTANCE.name]))
    a, b = dataset_files(tmp_path / "a" / "dataset"), dataset_files(tmp_path / "b" / "dataset")
    assert not any(DATASET_FILE in name for name in a)
    assert all(b[name] == content for name, content in a.items())
    added = {name.split("/", 1)[1].split("/")[0] for name in set(b) - set(a)}
    assert added == {DATASET_FILE, SENTENCE_DISTANCE.name}
    assert "tasks" not in plain
    assert {k: v for k, v in tasks.items() if k != "tasks"} == {
        **plain,
        "options": {**plain["options"], "output": str(tmp_path / "b" / "dataset")},
    }


def test_tasks_output_is_the_same_bytes_whatever_the_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "DOCS_PER_TASK", 4)  # chunks for the workers to share
    prepare(options(tmp_path / "a", tasks=NEW_TASKS, workers=1))
    prepare(options(tmp_path / "b", tasks=NEW_TASKS, workers=2))
    a, b = dataset_files(tmp_path / "a" / "dataset"), dataset_files(tmp_path / "b" / "dataset")
    assert len(a) > 10 and a == b


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            ["sentence_order"],
            "--tasks names 'sentence_order', which is no task: did you mean sentence_reordering?",
        ),
        (["bogus"], "--tasks names 'bogus', which is no task: the tasks are "),
        ([SENTENCE_DISTANCE.name] * 2, "--tasks names sentence_distance twice"),
    ],
)
def test_a_bad_task_list_is_refused_by_name_before_any_work(tmp_path, tasks, message):
    opts = options(tmp_path, tasks=tasks)
    with pytest.raises(CorpusError, match=message):
        prepare(opts)
    assert not opts.output.exists()


def test_cli_tasks_option(tmp_path, capsys):
    from ernie_sm import cli

    corpus = write_corpus(tmp_path / "raw")
    args = ["prepare", str(corpus), "-o", str(tmp_path / "out"), "--vocab", "ernie-1.0"]
    args += ["--workers", "1", "--max-seq-len", "64"]
    assert cli.main([*args, "--tasks", "sentence_reordering,bogus"]) == 2
    err = capsys.readouterr().err
    assert "'bogus', which is no task" in err and "Traceback" not in err
    assert cli.main([*args, "--tasks", "sentence_reordering, sentence_distance"]) == 0
    declared = dataset_tasks(tmp_path / "out" / "train")
    assert declared == (2, [KNOWLEDGE_MASKING.name, "sentence_reordering", "sentence_distance"])


def test_a_task_without_training_samples_is_named(tmp_path):
    # Every test document fits one segment of 512 tokens: nothing to relate tokens to.
    opts = options(tmp_path, max_seq_len=512, tasks=[TOKEN_DOCUMENT_RELATION.name])
    with pytest.raises(CorpusError, match="no token_document_relation training samples") as no:
        prepare(opts)
    assert not opts.output.exists()
    # What to change is said: the segment's length and that a smaller --max-seq-len cuts
    # shorter ones; and so it does, on the same corpus.
    assert "one segment (510 tokens: --max-seq-len less 2)" in str(no.value)
    assert "a smaller --max-seq-len cuts shorter segments" in str(no.value)
    prepare(options(tmp_path / "short", max_seq_len=32, tasks=[TOKEN_DOCUMENT_RELATION.name]))


def test_the_learnable_corpus_holds_the_cues_its_docstring_promises(tmp_path):
    corpus = synthetic.learnable_task_corpus(tmp_path / "learnable.txt", docs=60, seed=1)
    opts = options(
        tmp_path, inputs=[corpus], vocab=None, vocab_size=1000, dictionaries=[], tasks=NEW_TASKS
    )
    prepare(opts, Console(quiet=True))
    train = tmp_path / "dataset" / "train"
    tokens = [line.split("\t")[0] for line in (train / "vocab.txt").read_text().splitlines()]
    char = {i: t for i, t in enumerate(tokens)}
    offset = {i: ord(t) - synthetic.FIRST_CHAR for i, t in char.items() if len(t) == 1}
    markers = {i for i, o in offset.items() if 0 <= o < synthetic.MARKERS}
    for line in read_task_lines(train, TOKEN_DOCUMENT_RELATION.name):
        (ids, _), *_ = parse(line, 64)[0]
        labels = parse(line, 64)[1][1:-1]
        for token, label in zip(ids, labels, strict=True):
            if offset.get(token) in synthetic.TOPIC_CHARS:
                assert label == 1
            elif offset.get(token) in synthetic.OWN_CHARS:
                assert label == 0
    distance = read_task_lines(train, SENTENCE_DISTANCE.name)
    for line in distance:
        (a, _), (b, _) = parse(line, 64)[0]
        assert a[0] in markers and b[0] in markers
        if line.endswith(";0"):
            assert offset[b[0]] == offset[a[0]] + 1 == offset[a[-2]]  # A ends with B's marker
    assert len(distance) > 200


def test_a_task_without_validation_samples_is_left_out_of_the_valid_channel(tmp_path):
    from tests.test_prepare import SENTENCES

    long_doc, short_doc = "".join(SENTENCES), SENTENCES[0] + SENTENCES[1]
    opts = options(tmp_path, valid_fraction=0.1, tasks=NEW_TASKS)
    # Which of 10 documents goes to valid depends on the count and seed only.
    _, (valid,) = prepare_module._split([Document("", str(i)) for i in range(10)], opts)
    texts = [short_doc if str(i) == valid else long_doc for i in range(10)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    out = Console(file=io.StringIO(), width=200)
    summary = prepare(replace(opts, inputs=[corpus]), out)
    # The short document fits one segment: no token_document_relation line in valid.
    assert "no token_document_relation validation samples" in out.file.getvalue()
    folder = tmp_path / "dataset" / "valid"
    assert dataset_tasks(folder)[1] == [KNOWLEDGE_MASKING.name, *NEW_TASKS[:2]]
    assert not (folder / TOKEN_DOCUMENT_RELATION.name).exists()
    assert summary["tasks"][TOKEN_DOCUMENT_RELATION.name]["samples"]["valid"] == 0
    assert all(read_task_lines(folder, name) for name in NEW_TASKS[:2])
