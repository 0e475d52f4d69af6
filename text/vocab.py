"""ERNIE's vocab file: `token<TAB>id` per line, id = line number."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ernie_sm.contract.errors import ConfigError
from ernie_sm.contract.textfile import read_text

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int | None

    def __len__(self) -> int:
        return len(self.tokens)

    def replacement_ids(self) -> np.ndarray:
        """Ids a masked token may be replaced by: real tokens, none of the `[...]` specials."""
        ids = [i for i, t in enumerate(self.tokens) if not (t.startswith("[") and t.endswith("]"))]
        return np.asarray(ids, dtype=np.int64)


def load_vocab(path: str | Path) -> Vocab:
    """Read a vocab, checking ids are the line numbers, tokens unique and the specials present."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"vocab file {path} does not exist")
    tokens = _read_tokens(path)
    index = {t: i for i, t in enumerate(tokens)}
    missing = [t for t in SPECIAL_TOKENS if t not in index]
    if missing:
        raise ConfigError(f"vocab {path} lacks the special tokens {', '.join(missing)}")
    return Vocab(
        tokens=tuple(tokens),
        pad_id=index["[PAD]"],
        cls_id=index["[CLS]"],
        sep_id=index["[SEP]"],
        mask_id=index["[MASK]"],
        unk_id=index.get("[UNK]"),
    )


def _read_tokens(path: Path) -> list[str]:
    tokens: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(read_text(path, "vocab", ConfigError).splitlines(), 1):
        if not line:
            continue
        token, _, idx = line.partition("\t")
        if idx and idx.strip() != str(len(tokens)):
            raise ConfigError(
                f"{path} line {lineno}: id {idx.strip()!r} for token {token!r} should be "
                f"{len(tokens)} (ids must be the line numbers, counting from 0)"
            )
        if token in first_line:  # the later one would silently take over its id, [MASK]'s say
            raise ConfigError(
                f"{path} line {lineno}: token {token!r} is already on line {first_line[token]} "
                "(each token must appear once)"
            )
        first_line[token] = lineno
        tokens.append(token)
    return tokens
