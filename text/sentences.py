"""Sentence splitting for Chinese and Latin punctuation."""

from __future__ import annotations

import re

# A sentence ends at Chinese 。！？； (and their runs, "！？"), at Latin ! ? ; and at a
# '.' followed by a space, plus any closing quotes or brackets right after.
_END = re.compile(r"""([。！？；!?;]+|\.(?=\s)|\.$)([”’"'」』）)\]]*)""")


def split_sentences(text: str) -> list[str]:
    sentences, start = [], 0
    for match in _END.finditer(text):
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences
