"""Read a raw corpus into documents: text files (blank-line-separated blocks) or JSONL."""

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


def read_documents(paths: list[Path], text_field: str = "text") -> Iterator[Document]:
    """Documents of every file in order; `*.jsonl` / `*.json` files hold one JSON object a line."""
    for path in paths:
        check_regular_file(path, "corpus file")
    for path in paths:
        lines = read_text(path, "corpus file", CorpusError).splitlines()
        if path.suffix in (".jsonl", ".json"):
            yield from _jsonl_documents(path, lines, text_field)
        else:
            yield from _text_documents(path, lines)


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


def _text_documents(path: Path, lines: list[str]) -> Iterator[Document]:
    block: list[str] = []
    start = 0
    for number, line in enumerate([*lines, ""], 1):
        if line.strip():
            if not block:
                start = number
            block.append(line.strip())
        elif block:
            yield Document(f"{path}:{start}", join_lines(block))
            block = []


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


def join_lines(lines: list[str]) -> str:
    """Join wrapped lines: Chinese runs on directly, Latin words keep a space between them."""
    text = lines[0]
    for line in lines[1:]:
        latin = text[-1:].isascii() and text[-1:].isalnum() and line[:1].isascii()
        text += (" " if latin else "") + line
    return text
