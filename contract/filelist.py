"""Filelists: one shard a line, `PATH<TAB>MASK_WORD_PROB`, PATH relative to the filelist."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ernie_sm.contract.errors import DataError
from ernie_sm.contract.textfile import read_text


@dataclass(frozen=True)
class Shard:
    """One gzip shard; `index` (its position in the filelist) seeds its randomness."""

    path: Path
    mask_word_prob: float
    index: int


def read_filelist(path: str | Path) -> list[Shard]:
    """Read and check a filelist eagerly, so a bad entry fails the job before training starts."""
    path = Path(path)
    if not _is_file(path):
        raise DataError(f"filelist {path} does not exist")
    shards: list[Shard] = []
    for lineno, line in enumerate(read_text(path, "filelist", DataError).splitlines(), 1):
        if line.strip():
            shards.append(_parse_line(path, lineno, line, index=len(shards)))
    if not shards:
        raise DataError(f"filelist {path} lists no shards")
    return shards


def _parse_line(filelist: Path, lineno: int, line: str, index: int) -> Shard:
    where = f"filelist {filelist} line {lineno}"
    columns = line.split("\t")
    if len(columns) != 2:
        raise DataError(
            f"{where}: expected PATH<TAB>MASK_WORD_PROB (2 tab-separated columns), "
            f"found {len(columns)} column(s): {line!r}"
        )
    name, prob_text = columns[0].strip(), columns[1].strip()
    try:
        prob = float(prob_text)
    except ValueError:
        raise DataError(f"{where}: MASK_WORD_PROB {prob_text!r} is not a number") from None
    if not prob >= 0:  # also rejects NaN
        raise DataError(f"{where}: MASK_WORD_PROB {prob_text!r} must be >= 0")
    shard_path = filelist.parent / name  # an absolute name replaces the folder
    if not _is_file(shard_path):
        raise DataError(f"{where}: shard {shard_path} does not exist")
    return Shard(path=shard_path, mask_word_prob=prob, index=index)


def _is_file(path: Path) -> bool:
    """Path.is_file, False too for a path no file can have (a name too long, a NUL)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
