"""`ernie-sm prepare-topics`: a folder of per-topic text files to a labelled set for `ernie-sm evaluate`.

    CORPUS_DIR/<topic>.txt   one file per topic; documents are blank-line-separated blocks
    OUTPUT/train.tsv, dev.tsv, test.tsv   `label<TAB>text_a`, with that header line

The label is the file's stem without surrounding whitespace (as `ernie-sm evaluate` reads
labels); each text is a chunk of a document: whole sentences (text/sentences.py)
joined up to about CHUNK_CHARS characters (a longer sentence is a chunk of its own). The
split is by document, never a document's chunks in two splits: each topic's documents are
shuffled with the seed, and DEV_FRACTION and TEST_FRACTION of them (at least one each,
while the topic keeps at least one for train) go to dev and test, so that every split
holds every topic. Refused, before anything is written: a topic of fewer than
MIN_DOCUMENTS documents, a file name whose label would be empty or hold a tab, a line
break or another control character, and two files of the same label (" a .txt" and
"a.txt"). The output is the same for a seed.
"""

from __future__ import annotations

import argparse
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
from ernie_sm.text.documents import CorpusError, check_regular_file, read_documents
from ernie_sm.text.sentences import split_sentences

SPLITS = ("train", "dev", "test")
CHUNK_CHARS = 120
DEV_FRACTION = TEST_FRACTION = 0.15
HEADER = "label\ttext_a"
MIN_DOCUMENTS = 3  # one each for train, dev and test
# Characters a label cannot hold: they would end or split its TSV line (tab, line breaks).
_BAD_CATEGORIES = {"Cc": "a control character", "Zl": "a line break", "Zp": "a line break"}


def chunks(text: str, limit: int = CHUNK_CHARS) -> list[str]:
    """Consecutive whole sentences of `text`, joined while they fit `limit` characters."""
    out: list[str] = []
    current = ""
    for sentence in map(_one_line, split_sentences(text)):
        joined = f"{current}{_gap(current, sentence)}{sentence}" if current else sentence
        if current and len(joined) > limit:
            out.append(current)
            current = sentence
        else:
            current = joined
    if current:
        out.append(current)
    return out


def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def _gap(before: str, after: str) -> str:
    """Latin sentences keep a space between them; Chinese ones run on."""
    return " " if before[-1:].isascii() and after[:1].isascii() else ""


def topic_splits(corpus_dir: Path, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """(label, text) of each split, topics in file-name order, documents in file order."""
    if not corpus_dir.is_dir():
        raise CorpusError(f"corpus folder {corpus_dir} does not exist")
    files = sorted(corpus_dir.glob("*.txt"))
    if len(files) < 2:
        raise CorpusError(
            f"{corpus_dir} holds {len(files)} topic file(s) (*.txt): a labelled set needs two or more"
        )
    labels = _labels(files)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    for path in files:
        check_regular_file(path, "topic file")
        documents = [d.text for d in read_documents([path])]
        if len(documents) < MIN_DOCUMENTS:
            held = {0: "no document", 1: "1 document"}.get(len(documents), "2 documents")
            raise CorpusError(
                f"topic file {path} holds {held}: topic {labels[path]!r} needs at least "
                f"{MIN_DOCUMENTS}, one each for train, dev and test (documents are "
                "blank-line-separated blocks)"
            )
        order = rng.permutation(len(documents))
        n_dev, n_test = _held_out(len(documents))
        assigned = {
            "dev": order[:n_dev],
            "test": order[n_dev : n_dev + n_test],
            "train": order[n_dev + n_test :],
        }
        for split, indices in assigned.items():
            for i in sorted(indices):
                splits[split] += [(labels[path], chunk) for chunk in chunks(documents[i])]
    return splits


def _labels(files: list[Path]) -> dict[Path, str]:
    """The label of each topic file: its stem, stripped as `ernie-sm evaluate` strips labels;
    one that would be empty, hold a tab or line break, or be another file's fails."""
    labels: dict[Path, str] = {}
    owners: dict[str, Path] = {}
    for path in files:
        label = path.stem.strip()
        if not label:
            raise CorpusError(f"topic file {str(path)!r}: its name gives an empty label")
        bad = next((c for c in label if unicodedata.category(c) in _BAD_CATEGORIES), None)
        if bad is not None:
            raise CorpusError(
                f"topic file {str(path)!r}: its label holds {_BAD_CATEGORIES[unicodedata.category(bad)]} "
                f"({bad!r}), which would break its lines of the .tsv files; rename the file"
            )
        if label in owners:
            raise CorpusError(
                f"topic files {str(owners[label])!r} and {str(path)!r} give the same label "
                f"{label!r} (labels are stripped of surrounding whitespace); rename one"
            )
        labels[path], owners[label] = label, path
    return labels


def _held_out(n: int) -> tuple[int, int]:
    """Documents of a topic for dev and test: their fractions, at least one each while
    train keeps one; test before dev when there are too few for both."""
    n_test = max(1, round(n * TEST_FRACTION)) if n >= 2 else 0
    n_dev = max(1, round(n * DEV_FRACTION)) if n - n_test >= 2 else 0
    return n_dev, n_test


def write_topic_set(corpus_dir: Path, output: Path, seed: int = 0) -> dict[str, Counter]:
    """Write OUTPUT/{train,dev,test}.tsv; returns the examples per label of each split."""
    if output.exists() and not output.is_dir():
        raise CorpusError(f"--output {output} is a file, not a folder for the three .tsv files")
    splits = topic_splits(corpus_dir, seed)
    try:
        output.mkdir(parents=True, exist_ok=True)
        for split, examples in splits.items():
            lines = [HEADER, *(f"{label}\t{text}" for label, text in examples)]
            (output / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CorpusError(
            f"--output {output}: cannot write the .tsv files there: {exc.strerror or exc}"
        ) from None
    return {split: Counter(label for label, _ in examples) for split, examples in splits.items()}


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "prepare-topics",
        help="turn a folder of per-topic text files into the eval channel of `ernie-sm evaluate`",
        description=__doc__,
    )
    p.add_argument("corpus_dir", type=Path, help="folder of <topic>.txt files")
    p.add_argument("--output", "-o", type=Path, required=True, help="folder for the three .tsv")
    p.add_argument("--seed", type=int, default=0, help="seed of the split by document")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    try:
        counts = write_topic_set(args.corpus_dir, args.output, args.seed)
    except CorpusError as exc:
        console.print(f"[red]prepare-topics failed:[/red] {exc}", highlight=False)
        return 2
    labels = sorted(counts["train"])
    for split in SPLITS:
        console.print(
            f"{split}.tsv: {sum(counts[split].values())} examples, "
            f"{len(counts[split])} of {len(labels)} labels",
            highlight=False,
        )
    return 0
