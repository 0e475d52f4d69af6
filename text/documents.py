"""Read a raw corpus into documents, in the layouts pretraining corpora come in.

- blocks: documents separated by blank lines, one sentence (or paragraph) per line, as
  BERT's create_pretraining_data.py reads its input and Wikipedia dumps are written;
- lines: one document per line (no blank lines);
- jsonl: one JSON object per line, the text in a field (`*.jsonl` / `*.json` files).

`auto` (the default) takes jsonl by the file's suffix, else blocks when the file has a
blank line, else lines. A line break inside a document is never dropped: it stays in the
document's text and sentence splitting (text/sentences.py) ends a sentence there, so
"wide.\nThe" is two sentences and two Chinese lines never run into one.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ernie_sm.contract.textfile import read_text


class CorpusError(Exception):
    """The corpus cannot be read as given; the message names file and line."""


@dataclass(frozen=True)
class Document:
    source: str  # "file:line" of its first line, for messages
    text: str


LAYOUTS = ("auto", "blocks", "lines", "jsonl")


def read_documents(
    paths: list[Path], text_field: str = "text", layout: str = "auto"
) -> Iterator[Document]:
    """Documents of every file in order, each file read in `layout` (one of LAYOUTS)."""
    if layout not in LAYOUTS:
        raise CorpusError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    for path in paths:
        check_regular_file(path, "corpus file")
    for path in paths:
        lines = read_text(path, "corpus file", CorpusError).splitlines()
        found = file_layout(path, lines) if layout == "auto" else layout
        if found == "jsonl":
            yield from _jsonl_documents(path, lines, text_field)
        elif found == "lines":
            yield from _line_documents(path, lines)
        else:
            yield from _block_documents(path, lines)


def file_layout(path: Path, lines: list[str]) -> str:
    """The layout `auto` takes for a file: by its suffix, else by its blank lines."""
    if path.suffix in (".jsonl", ".json"):
        return "jsonl"
    filled = [number for number, line in enumerate(lines) if line.strip()]
    inside = lines[filled[0] : filled[-1]] if filled else []
    return "blocks" if any(not line.strip() for line in inside) else "lines"


_SPECIAL_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def check_regular_file(path: Path, what: str) -> None:
    """Raise CorpusError unless `path` is a regular file (a FIFO would block the read forever)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CorpusError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise CorpusError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = _SPECIAL_KINDS.get(stat.S_IFMT(mode), "a special file")
        raise CorpusError(f"{what} {path} is {kind}, not a regular file")


def _block_documents(path: Path, lines: list[str]) -> Iterator[Document]:
    block: list[str] = []
    start = 0
    for number, line in enumerate([*lines, ""], 1):
        if line.strip():
            if not block:
                start = number
            block.append(line.strip())
        elif block:
            yield Document(f"{path}:{start}", "\n".join(block))
            block = []


def _line_documents(path: Path, lines: list[str]) -> Iterator[Document]:
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield Document(f"{path}:{number}", line.strip())


def _jsonl_documents(path: Path, lines: list[str], field: str) -> Iterator[Document]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path} line {number}: not a JSON object ({exc.msg})") from None
        except RecursionError:
            raise CorpusError(f"{path} line {number}: JSON nested too deeply to read") from None
        text = record.get(field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise CorpusError(f"{path} line {number}: no string field {field!r}")
        yield Document(f"{path}:{number}", text)
