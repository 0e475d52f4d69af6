"""Sentence splitting for Chinese and Latin punctuation; a line break always ends one."""

from __future__ import annotations

import re

# A sentence ends at Chinese 。！？； (and their runs, "！？"), at Latin ! ? ; and at a
# '.' followed by a space, plus any closing quotes or brackets right after.
_END = re.compile(r"""([。！？；!?;]+|\.(?=\s)|\.$)([”’"'」』）)\]]*)""")


def split_sentences(text: str) -> list[str]:
    return [sentence for line in text.splitlines() for sentence in _line_sentences(line)]


def _line_sentences(line: str) -> list[str]:
    sentences, start = [], 0
    for match in _END.finditer(line):
        sentence = line[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = line[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences
