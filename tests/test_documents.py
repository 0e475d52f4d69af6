"""The layouts a raw corpus comes in, read as their own tools read them: a line break
inside a document is a sentence boundary in every script, never glue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ernie_sm.dataprep.prepare import PrepareOptions, prepare
from ernie_sm.text.documents import CorpusError, read_documents
from ernie_sm.text.sentences import split_sentences

# The corpus: one sentence per line, documents separated by a blank line.
ONE_SENTENCE_PER_LINE = (
    "The river is wide.\nThe stone is old.\nThe road is long.\n\n"
    "A cat sat down.\nA dog ran off.\nA bird flew by.\n"
)


def bert_reference(text: str) -> list[list[str]]:
    """The documents and sentences of google-research/bert's create_pretraining_data.py
    (create_training_instances): "(1) One sentence per line ... (2) Blank lines between
    documents"; each stripped line a sentence, an empty line starts a new document."""
    documents: list[list[str]] = [[]]
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            documents.append([])
        else:
            documents[-1].append(line)
    return [d for d in documents if d]


def sentences_of(path: Path, layout: str = "auto") -> list[list[str]]:
    return [split_sentences(d.text) for d in read_documents([path], layout=layout)]


def test_one_sentence_per_line_is_split_as_berts_reader_splits_it(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(ONE_SENTENCE_PER_LINE)
    assert sentences_of(path) == bert_reference(ONE_SENTENCE_PER_LINE)
    assert sum(map(len, sentences_of(path))) == 6  # not 2: "wide.The" is never made


def test_a_line_break_never_joins_two_chinese_sentences_nor_two_latin_words(tmp_path):
    text = "北京是中国的首都\n上海是一座港口城市\n\nbert reads one\nsentence per line\n"
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    assert sentences_of(path) == bert_reference(text)
    assert sentences_of(path)[0] == ["北京是中国的首都", "上海是一座港口城市"]


def test_one_document_per_line_and_jsonl(tmp_path):
    lines = tmp_path / "docs.txt"
    lines.write_text("第一篇。它有两句。\n第二篇只有一句。\nThird one. Two sentences.\n")
    assert sentences_of(lines) == [
        ["第一篇。", "它有两句。"],
        ["第二篇只有一句。"],
        ["Third one.", "Two sentences."],
    ]
    assert sentences_of(lines, "blocks") == [  # told otherwise: one document of five
        ["第一篇。", "它有两句。", "第二篇只有一句。", "Third one.", "Two sentences."]
    ]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in ("一。二。", "a.\nb.")) + "\n")
    assert sentences_of(jsonl) == [["一。", "二。"], ["a.", "b."]]


def test_blank_lines_around_the_text_do_not_make_blocks(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("\n\nfirst document.\nsecond document.\n\n\n")
    assert sentences_of(path) == [["first document."], ["second document."]]


def test_an_unknown_layout_is_refused():
    with pytest.raises(CorpusError, match=r"layout 'csv' is not one of auto, blocks, lines"):
        list(read_documents([], layout="csv"))


def test_prepare_keeps_the_sentences_of_a_one_sentence_per_line_corpus(tmp_path):
    """The issue's corpus prepares into its 6 sentences: sentence_distance, which needs
    documents of two or more sentences, takes it."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((ONE_SENTENCE_PER_LINE + "\n") * 4)
    summary = prepare(
        PrepareOptions(
            inputs=[corpus],
            output=tmp_path / "dataset",
            vocab_size=60,
            valid_fraction=0.0,
            tasks=["sentence_distance"],
            workers=1,
        )
    )
    assert summary["documents"] == {"train": 8, "valid": 0} and summary["sentences"] == 24
