"""Read a raw corpus into documents: text files (blank-line-separated blocks) or JSONL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ernie_sm.training.textfile import read_text


class CorpusError(Exception):
    """The corpus cannot be read as given; the message names file and line."""


@dataclass(frozen=True)
class Document:
    source: str  # "file:line" of its first line, for messages
    text: str


def read_documents(paths: list[Path], text_field: str = "text") -> Iterator[Document]:
    """Documents of every file in order; `*.jsonl` / `*.json` files hold one JSON object a line."""
    for path in paths:
        if not path.is_file():
            raise CorpusError(f"corpus file {path} does not exist")
        lines = read_text(path, "corpus file", CorpusError).splitlines()
        if path.suffix in (".jsonl", ".json"):
            yield from _jsonl_documents(path, lines, text_field)
        else:
            yield from _text_documents(path, lines)


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
