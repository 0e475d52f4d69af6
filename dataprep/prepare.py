"""`ernie-sm prepare`: a raw corpus to the train and valid channels of a pretraining dataset.

    OUTPUT/train/  vocab.txt, train_filelist, part-00000.gz, ...
    OUTPUT/valid/  valid_filelist, part-00000.gz, ...
    OUTPUT/summary.json

With --tasks (ERNIE 2.0's, contract/tasks.py), each channel also holds

    OUTPUT/CHANNEL/dataset.json          format version and tasks, knowledge_masking first
    OUTPUT/CHANNEL/TASK/CHANNEL_filelist, part-00000.gz, ...   for each task given

Documents are split into train and valid (never a document in both), encoded and paired
in worker processes a chunk of documents at a time. Every chunk's randomness comes from
(seed, split, chunk), each task's from a stream of its own, so the output is
byte-for-byte the same for a seed whatever the number of workers, and knowledge
masking's shards the same whatever --tasks. The dataset is written under a temporary
name and renamed into place when complete: a failed run leaves no half-written dataset
behind, and the next run clears what a killed one left.
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import json
import multiprocessing
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ernie_sm.contract import presets
from ernie_sm.contract.names import hint
from ernie_sm.contract.tasks import (
    DATASET_FILE,
    KNOWLEDGE_MASKING,
    TASKS,
    describe_dataset,
    task_folder,
)
from ernie_sm.dataprep.samples import PairSettings, Sentence, document_pairs
from ernie_sm.dataprep.task_samples import SAMPLE_TASKS, TASK_NEEDS, TaskSettings, task_lines
from ernie_sm.text.documents import (
    LAYOUTS,
    CorpusError,
    Document,
    check_regular_file,
    read_documents,
)
from ernie_sm.text.sentences import split_sentences
from ernie_sm.text.vocab import SPECIAL_TOKENS, load_vocab
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

SPLITS = ("train", "valid")
DOCS_PER_TASK = 64
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 2  # with [UNK] and one character
MAX_VOCAB_SIZE = 2**31 - 1  # far beyond any corpus; the trainer overflows past 2**64
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # Linux <fcntl.h>, <linux/fs.h>


@dataclass(frozen=True)
class PrepareOptions:
    inputs: list[Path]
    output: Path
    vocab: str | Path | None = None  # an ERNIE vocab file or preset (ernie-1.0), or
    vocab_size: int | None = None  # build one of this size from the corpus
    dictionaries: list[Path] = field(default_factory=list)
    max_seq_len: int = 512
    negative_ratio: float = 0.5
    valid_fraction: float = 0.05
    lines_per_shard: int = 10_000
    mask_word_prob: float = 0.8
    seed: int = 0
    workers: int = max(1, os.cpu_count() or 1)
    text_field: str = "text"
    layout: str = "auto"  # text/documents.py LAYOUTS
    overwrite: bool = False
    tasks: list[str] = field(default_factory=list)  # ERNIE 2.0 tasks besides knowledge masking


@dataclass(frozen=True)
class _Chunk:
    split: int
    chunk: int
    texts: list[str]


def prepare(options: PrepareOptions, console: Console | None = None) -> dict:
    """Write the dataset; returns its summary."""
    console = console or Console(stderr=True)
    _recover(options.output)  # first: it may put back the dataset _check then judges
    _check(options)
    documents = list(
        read_documents(_corpus_files(options.inputs), options.text_field, options.layout)
    )
    if not documents:
        raise CorpusError("the corpus holds no documents")
    tmp = _aside(options.output, "tmp")
    try:
        (tmp / "train").mkdir(parents=True)
        vocab = tmp / "train" / "vocab.txt"
        vocab_size = _write_vocab(options, documents, vocab, console)
        splits = _split(documents, options)
        stats, task_stats = _encode_and_write(splits, vocab, options, tmp, console)
        summary = _summary(stats, task_stats, splits, vocab_size, options)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        _move_into_place(tmp, options.output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _print_summary(summary, options.output, console)
    return summary


def _check(options: PrepareOptions) -> None:
    """Refuse unusable options before any work, naming the option."""
    if (options.vocab is None) == (options.vocab_size is None):
        raise CorpusError("give either --vocab FILE|ernie-1.0 or --vocab-size N (to build one)")
    size = options.vocab_size
    # NaN fails every comparison, so the range checks refuse it too.
    for name, value, ok, requirement in (
        ("--max-seq-len", options.max_seq_len, options.max_seq_len >= 8, "at least 8"),
        (
            "--vocab-size",
            size,
            size is None or MIN_VOCAB_SIZE <= size <= MAX_VOCAB_SIZE,
            f"from {MIN_VOCAB_SIZE} (the special tokens, [UNK], a character) to {MAX_VOCAB_SIZE}",
        ),
        ("--lines-per-shard", options.lines_per_shard, options.lines_per_shard >= 1, "at least 1"),
        ("--workers", options.workers, options.workers >= 1, "at least 1"),
        ("--seed", options.seed, options.seed >= 0, "0 or more"),
        ("--negative-ratio", options.negative_ratio, 0 <= options.negative_ratio <= 1, "in [0, 1]"),
        ("--valid-fraction", options.valid_fraction, 0 <= options.valid_fraction < 1, "in [0, 1)"),
        ("--mask-word-prob", options.mask_word_prob, 0 <= options.mask_word_prob <= 1, "in [0, 1]"),
    ):
        if not ok:
            raise CorpusError(f"{name} must be {requirement}, not {value}")
    _check_tasks(options.tasks)
    for dictionary in options.dictionaries:
        check_regular_file(dictionary, "--dict")
    _check_output(options.output, options.overwrite)


def _check_tasks(names: list[str]) -> None:
    for name in names:
        if name not in SAMPLE_TASKS and name != KNOWLEDGE_MASKING.name:
            raise CorpusError(
                f"--tasks names {name!r}, which is no task: {hint(name, TASKS, 'tasks')}"
            )
        if names.count(name) > 1:
            raise CorpusError(f"--tasks names {name} twice")


def _sample_tasks(options: PrepareOptions) -> list[str]:
    """The tasks given, but knowledge masking, whose shards are always written."""
    return [name for name in options.tasks if name != KNOWLEDGE_MASKING.name]


def _check_output(output: Path, overwrite: bool) -> None:
    if not os.path.lexists(output):
        return
    if not overwrite:
        raise CorpusError(f"{output} exists: choose another --output or pass --overwrite")
    # --overwrite replaces a dataset, never a file or a folder of something else.
    if output.is_symlink() or not output.is_dir():
        raise CorpusError(
            f"--output {output} is not a folder: remove it or choose another --output"
        )
    if any(output.iterdir()) and not (output / "summary.json").is_file():
        raise CorpusError(
            f"--output {output} holds no summary.json, so it is no dataset of `prepare` that "
            "--overwrite may replace: remove it or choose another --output"
        )


def _corpus_files(inputs: list[Path]) -> list[Path]:
    """The inputs, with each folder replaced by the text and JSONL files under it."""
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files += sorted(
                p
                for p in path.rglob("*")
                if p.suffix in (".txt", ".jsonl", ".json") and not p.is_dir()  # rglob enters it
            )
        else:
            files.append(path)
    return files


def _write_vocab(
    options: PrepareOptions, documents: list[Document], path: Path, console: Console
) -> int:
    """Copy or build the vocab at `path`, checked with the dictionaries; returns its size."""
    from ernie_sm.text.encoder import SentenceEncoder, build_vocab  # tokenizers loads only here

    if options.vocab is None:
        build_vocab((d.text for d in documents), options.vocab_size, path)
        source = path
    else:
        source = presets.locate(options.vocab, Path.cwd(), presets.VOCABS, "--vocab")
        shutil.copyfile(source, path)
    # Check here, on the file the user gave so that errors name it: a worker's failing
    # initializer would hang the pool.
    SentenceEncoder(source, options.dictionaries)
    size = len(load_vocab(path))
    if options.vocab_size is not None:
        _check_built_size(size, options.vocab_size, console)
    return size


def _check_built_size(size: int, requested: int, console: Console) -> None:
    # The WordPiece trainer keeps every character of the corpus whatever size is asked
    # for, and stops short of it when no pair is left to merge.
    if size > requested:
        raise CorpusError(
            f"--vocab-size {requested} is too small for this corpus: its special tokens and "
            f"characters alone make {size} tokens"
        )
    if size < requested:
        console.print(
            f"[yellow]the corpus yields only {size:,} tokens: the vocab has {size:,}, "
            f"not --vocab-size {requested:,}[/yellow]"
        )


def _split(documents: list[Document], options: PrepareOptions) -> list[list[str]]:
    """Train and valid texts, split by document with a seeded shuffle."""
    order = np.random.default_rng((options.seed, 0)).permutation(len(documents))
    n_valid = round(len(documents) * options.valid_fraction)
    if options.valid_fraction and len(documents) > 1:
        n_valid = max(n_valid, 1)
    valid, train = sorted(order[:n_valid]), sorted(order[n_valid:])
    return [[documents[i].text for i in train], [documents[i].text for i in valid]]


def _chunks(splits: list[list[str]]) -> Iterator[_Chunk]:
    for split, texts in enumerate(splits):
        for chunk, start in enumerate(range(0, len(texts), DOCS_PER_TASK)):
            yield _Chunk(split, chunk, texts[start : start + DOCS_PER_TASK])


def _encode_and_write(
    splits: list[list[str]], vocab: Path, options: PrepareOptions, out: Path, console: Console
) -> tuple[Counter, dict[str, Counter]]:
    """Write every task's shards; returns the corpus and knowledge-masking counts, and
    each other task's."""
    settings = PairSettings(options.max_seq_len, options.negative_ratio)
    tasks = _sample_tasks(options)
    writers = {
        name: [_ShardWriter(task_folder(out / s, TASKS[name]), s, options) for s in SPLITS]
        for name in (KNOWLEDGE_MASKING.name, *tasks)
    }
    stats: Counter = Counter()
    task_stats: dict[str, Counter] = {name: Counter() for name in tasks}
    context = multiprocessing.get_context("spawn")
    init = (str(vocab), [str(d) for d in options.dictionaries], settings, options.seed, tasks)
    with (
        context.Pool(options.workers, initializer=_start_worker, initargs=init) as pool,
        Progress(console=console, transient=True) as progress,
    ):
        bar = progress.add_task("encoding documents", total=sum(len(s) for s in splits))
        for chunk, lines, counts, task_counts in pool.imap(_encode_chunk, _chunks(splits)):
            for name, chunk_lines in lines.items():
                writers[name][chunk.split].add(chunk_lines)
            stats.update(counts)
            for name, counted in task_counts.items():
                task_stats[name].update(counted)
            progress.advance(bar, len(chunk.texts))
    for name, channel_writers in writers.items():
        counts = task_stats.get(name, stats)
        for writer in channel_writers:
            writer.close()
            counts[f"{writer.name}_shards"] = writer.shards
            counts[f"{writer.name}_samples"] = writer.lines
    _check_channels(writers, out, console, options.max_seq_len)
    if options.tasks:
        _describe_channels(writers, out)
    return stats, task_stats


def _check_channels(
    writers: dict[str, list[_ShardWriter]], out: Path, console: Console, max_seq_len: int
) -> None:
    """Refuse a task without training samples; drop what has no validation samples."""
    train, valid = writers[KNOWLEDGE_MASKING.name]
    tasks = {name: pair for name, pair in writers.items() if name != KNOWLEDGE_MASKING.name}
    if not train.lines:
        raise CorpusError(
            "the corpus gave no training samples: it needs documents of two or more sentences"
        )
    for name, (task_train, _) in tasks.items():
        if not task_train.lines:
            raise CorpusError(
                f"the corpus gave no {name} training samples: "
                + TASK_NEEDS[name].format(segment=max_seq_len - 2)
            )
    if not valid.lines:  # an empty channel would fail the job; no channel skips validation
        shutil.rmtree(out / "valid")
        console.print("[yellow]no validation samples: the dataset has no valid channel[/yellow]")
        return
    for name, (_, task_valid) in tasks.items():
        if not task_valid.lines:
            shutil.rmtree(task_valid.folder)
            console.print(f"[yellow]no {name} validation samples: valid leaves it out[/yellow]")


def _describe_channels(writers: dict[str, list[_ShardWriter]], out: Path) -> None:
    """DATASET_FILE in each channel, naming the tasks it holds shards of."""
    for split, channel in enumerate(SPLITS):
        if (out / channel).is_dir():
            names = [name for name, pair in writers.items() if pair[split].lines]
            (out / channel / DATASET_FILE).write_text(describe_dataset(names))


# Worker-process state, built once per worker by _start_worker.
_worker: dict = {}


def _start_worker(
    vocab: str, dictionaries: list[str], settings: PairSettings, seed: int, tasks: list[str]
) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the pool is the parallelism
    from ernie_sm.text.encoder import SentenceEncoder

    encoder = SentenceEncoder(Path(vocab), [Path(d) for d in dictionaries])
    _worker.update(encoder=encoder, settings=settings, seed=seed, tasks=tasks)


def _encode_chunk(
    chunk: _Chunk,
) -> tuple[_Chunk, dict[str, list[str]], Counter, dict[str, Counter]]:
    """The chunk's lines of each task; the corpus and knowledge-masking counts, and each
    other task's."""
    settings, seed = _worker["settings"], _worker["seed"]
    stats: Counter = Counter()
    docs = _encode_documents(chunk.texts, stats)
    rng = np.random.default_rng((seed, 1, chunk.split, chunk.chunk))
    lines = {
        KNOWLEDGE_MASKING.name: [
            line for d in range(len(docs)) for line in document_pairs(d, docs, settings, rng, stats)
        ]
    }
    task_settings = TaskSettings(settings.max_seq_len, settings.cls_id, settings.sep_id)
    task_stats: dict[str, Counter] = {}
    for name in _worker["tasks"]:
        task = TASKS[name]
        # A stream per task: adding a task changes no other task's lines.
        task_rng = np.random.default_rng((seed, 2, task.id, chunk.split, chunk.chunk))
        task_stats[name] = Counter()
        lines[name] = task_lines(task, docs, task_settings, task_rng, task_stats[name])
    return chunk, lines, stats, task_stats


def _encode_documents(texts: list[str], stats: Counter) -> list[list[Sentence]]:
    """Each text's non-empty sentences, encoded; counts documents, sentences and tokens."""
    encoder = _worker["encoder"]
    per_doc = [split_sentences(text) for text in texts]
    encoded = iter(encoder.encode([s for sentences in per_doc for s in sentences]))
    docs = [[s for s in (next(encoded) for _ in sentences) if s[0]] for sentences in per_doc]
    for doc in docs:
        stats["documents"] += 1
        stats["empty_documents"] += not doc
        stats["single_sentence_documents"] += len(doc) == 1
        stats["sentences"] += len(doc)
        stats["tokens"] += sum(len(ids) for ids, _ in doc)
        stats["unk_tokens"] += sum(ids.count(encoder.unk_id) for ids, _ in doc)
    return docs


class _ShardWriter:
    """gzip shards of `lines_per_shard` lines and the filelist naming them."""

    def __init__(self, folder: Path, name: str, options: PrepareOptions) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.name, self.options = folder, name, options
        self.pending: list[str] = []
        self.shards = self.lines = 0

    def add(self, lines: list[str]) -> None:
        self.pending += lines
        while len(self.pending) >= self.options.lines_per_shard:
            self._flush(self.options.lines_per_shard)

    def close(self) -> None:
        if self.pending:
            self._flush(len(self.pending))
        entries = "".join(
            f"part-{i:05d}.gz\t{self.options.mask_word_prob}\n" for i in range(self.shards)
        )
        (self.folder / f"{self.name}_filelist").write_text(entries)

    def _flush(self, count: int) -> None:
        lines, self.pending = self.pending[:count], self.pending[count:]
        data = ("\n".join(lines) + "\n").encode()
        path = self.folder / f"part-{self.shards:05d}.gz"
        with (
            path.open("wb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as f,
        ):
            f.write(data)  # mtime 0 and no name: the same corpus and seed give the same bytes
        self.shards += 1
        self.lines += count


def _summary(
    stats: Counter,
    task_stats: dict[str, Counter],
    splits: list[list[str]],
    vocab_size: int,
    options: PrepareOptions,
) -> dict:
    pairs = stats["positive"] + stats["negative"]
    summary = {
        "vocab_size": vocab_size,
        "documents": {"train": len(splits[0]), "valid": len(splits[1])},
        "empty_documents": stats["empty_documents"],
        "single_sentence_documents": stats["single_sentence_documents"],
        "sentences": stats["sentences"],
        "tokens": stats["tokens"],
        "unk_rate": stats["unk_tokens"] / max(stats["tokens"], 1),
        "samples": {"train": stats["train_samples"], "valid": stats["valid_samples"]},
        "shards": {"train": stats["train_shards"], "valid": stats["valid_shards"]},
        "nsp_positive_share": stats["positive"] / max(pairs, 1),
        "long_sentences_split": stats["long_sentences_split"],
        "unpaired_chunks": stats["unpaired_chunks"],
    }
    if task_stats:  # only then: without --tasks the summary is what it always was
        summary["tasks"] = {name: _task_summary(counts) for name, counts in task_stats.items()}
    summary["options"] = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in asdict(options).items()
        if k not in ("inputs", "dictionaries", "tasks")
    }
    return summary


def _task_summary(counts: Counter) -> dict:
    """A task's samples and shards per channel, then its other counts by name."""
    summary = {kind: {s: counts[f"{s}_{kind}"] for s in SPLITS} for kind in ("samples", "shards")}
    channel_keys = {f"{s}_{kind}" for s in SPLITS for kind in summary}
    summary.update(sorted((k, v) for k, v in counts.items() if k not in channel_keys))
    return summary


def _aside(output: Path, kind: str) -> Path:
    """Where this process keeps a dataset beside `output`: the one it writes (tmp), or the
    one --overwrite replaces (old); the pid lets a later run tell whether it is left over."""
    return output.with_name(f".{output.name}.{kind}-{os.getpid()}")


def _recover(output: Path) -> None:
    """Clear what runs killed before their end left beside `output`; an old dataset that
    --overwrite had moved aside goes back into place if nothing replaced it."""
    if not output.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(output.name)}\.(tmp|old)-(\d+)")
    for path in sorted(output.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if not match or _running(int(match[2])):
            continue
        if match[1] == "old" and not os.path.lexists(output):
            os.replace(path, output)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether another process with this pid runs (a prepare then may still be writing)."""
    if pid == os.getpid():
        return False  # one prepare at a time in a process: its leftovers are from an earlier one
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass  # it runs, as another user
    return True


def _move_into_place(tmp: Path, output: Path) -> None:
    """Put the finished dataset at `output`; an old one stays there until the new one is."""
    if not os.path.lexists(output):
        os.replace(tmp, output)
    elif _exchange(tmp, output):
        shutil.rmtree(tmp)  # the old dataset now
    else:  # a kill between the two renames leaves the old dataset for _recover to put back
        old = _aside(output, "old")
        os.replace(output, old)
        os.replace(tmp, output)
        shutil.rmtree(old)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where the system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _print_summary(summary: dict, output: Path, console: Console) -> None:
    table = Table(title=f"dataset written to {output}", show_header=False)
    for key, value in summary.items():
        if key == "tasks":
            for name, counts in value.items():
                table.add_row(f"{name.replace('_', ' ')} samples", _format(counts["samples"]))
        elif key != "options":
            table.add_row(key.replace("_", " "), _format(value))
    console.print(table)


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:,}" for k, v in value.items())
    return f"{value:,}"


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "prepare",
        help="turn raw text into ERNIE pretraining shards (train and valid channels)",
        description=__doc__,
    )
    p.add_argument("inputs", nargs="+", type=Path, help="text or JSONL files, or folders of them")
    p.add_argument("--output", "-o", type=Path, required=True, help="dataset folder to create")
    vocab = p.add_mutually_exclusive_group(required=True)
    vocab.add_argument(
        "--vocab",
        help="an ERNIE vocab (token<TAB>id) to encode with, or ernie-1.0 (the released one)",
    )
    vocab.add_argument("--vocab-size", type=int, help="build a WordPiece vocab of this size")
    p.add_argument(
        "--dict",
        dest="dictionaries",
        type=Path,
        action="append",
        default=[],
        help="entity/phrase dictionary, one entry a line; kept whole (repeatable)",
    )
    defaults = PrepareOptions(inputs=[], output=Path())
    p.add_argument(
        "--max-seq-len",
        type=int,
        default=defaults.max_seq_len,
        help="tokens per example, [CLS] and [SEP]s included; train with a max_seq_len "
        "hyperparameter at least this, or the longer samples are skipped "
        "(examples/inputs/demo.json trains at 128: prepare at 128 for it)",
    )
    p.add_argument(
        "--negative-ratio",
        type=float,
        default=defaults.negative_ratio,
        help="share of NSP negatives, B drawn from another document",
    )
    p.add_argument(
        "--valid-fraction",
        type=float,
        default=defaults.valid_fraction,
        help="share of documents held out for the valid channel",
    )
    p.add_argument(
        "--lines-per-shard",
        type=int,
        default=defaults.lines_per_shard,
        help="examples per shard file",
    )
    p.add_argument(
        "--mask-word-prob",
        type=float,
        default=defaults.mask_word_prob,
        help="written to the filelists: share of passes with word-level masking",
    )
    p.add_argument(
        "--seed", type=int, default=defaults.seed, help="the same seed, the same dataset"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="worker processes; the output does not depend on them "
        "(default: one per CPU, %(default)s here)",
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=defaults.layout,
        help="how the files hold documents: blocks (blank lines between documents, a "
        "sentence or paragraph a line, as BERT's pretraining data), lines (a document a "
        "line), jsonl (a JSON object a line, the text in --text-field); auto: jsonl for "
        "*.jsonl/*.json, else blocks when a file has blank lines between text, else lines. "
        "A line break inside a document always ends a sentence",
    )
    p.add_argument("--text-field", default=defaults.text_field, help="JSONL field with the text")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument(
        "--tasks",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=[],
        help=f"ERNIE 2.0 tasks to write shards for besides knowledge masking, comma-separated: "
        f"{', '.join(SAMPLE_TASKS)} (default: none, an ERNIE 1.0 dataset)",
    )
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from ernie_sm.contract.errors import ConfigError

    names = {f for f in PrepareOptions.__dataclass_fields__}
    options = PrepareOptions(**{k: v for k, v in vars(args).items() if k in names})
    try:
        prepare(options)
    except (CorpusError, ConfigError) as exc:
        Console(stderr=True).print(f"[red]prepare failed:[/red] {exc}", highlight=False)
        return 2
    return 0
