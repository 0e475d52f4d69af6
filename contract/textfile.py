"""Reading the text files a user hands in (configs, vocabs, filelists, dictionaries, corpora).

A file that cannot be read or is not UTF-8 fails with the caller's error class and a
message naming the file and, for bad bytes, the line: a bare UnicodeDecodeError names
neither. Shared by the trainer (`training/`, all the image holds) and `dataprep/`.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_text(path: Path, what: str, error: type[Exception]) -> str:
    """The UTF-8 text of `path` (a leading BOM dropped); `what` ("vocab", ...) starts any message."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{what} {path} line {line}: bytes {data[exc.start : exc.end]!r} are not UTF-8 "
            "(convert the file, e.g. iconv -f GB18030 -t UTF-8)"
        ) from None


def read_json_object(path: Path, what: str, error: type[Exception]) -> dict:
    """The JSON object in `path`; anything else (bad JSON, a list) fails naming the file."""
    try:
        value = json.loads(read_text(path, what, error))
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise error(f"{what} {path} must hold a JSON object, not {json.dumps(value)[:80]}")
    return value
