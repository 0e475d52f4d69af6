"""Dynamic masked-LM masking of a padded batch, char-level or word-level (knowledge masking)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ernie_sm.contract.errors import DataError
from ernie_sm.text.vocab import Vocab

MASK_PROB = 0.15  # share of tokens (char-level) or words (word-level) chosen
TO_MASK, TO_RANDOM = 0.8, 0.1  # of chosen tokens; the remaining 10% stay unchanged


@dataclass(frozen=True, eq=False)
class TokenIds:
    """What masking needs from the vocab; small enough to ship to worker processes."""

    pad: int
    cls: int
    sep: int
    mask: int
    replacements: np.ndarray  # real, non-special ids a chosen token may become

    @classmethod
    def from_vocab(cls, vocab: Vocab) -> TokenIds:
        return cls(vocab.pad_id, vocab.cls_id, vocab.sep_id, vocab.mask_id, vocab.replacement_ids())


def mask_tokens(
    src: np.ndarray,
    seg: np.ndarray,
    word_level: bool,
    ids: TokenIds,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask a [B, L] batch (padding: ids.pad in src, -1 in seg).

    Returns the masked ids, the chosen positions as flat row-major indices into B*L
    and their original ids. At least one token is chosen so the MLM loss is defined.
    """
    maskable = (src != ids.pad) & (src != ids.cls) & (src != ids.sep)
    if word_level:
        chosen = _choose_words(maskable & (seg >= 0), seg, rng)
    else:
        chosen = maskable & (rng.random(src.shape) < MASK_PROB)
    positions = np.flatnonzero(chosen)
    if not positions.size:
        pool = np.flatnonzero(maskable)
        if not pool.size:
            raise DataError("a batch holds only [CLS]/[SEP]/[PAD] tokens: nothing to mask")
        positions = pool[rng.integers(pool.size, size=1)]
    labels = src.ravel()[positions]

    masked = src.copy()
    flat = masked.reshape(-1)
    action = rng.random(positions.size)
    flat[positions[action < TO_MASK]] = ids.mask
    randomised = positions[(action >= TO_MASK) & (action < TO_MASK + TO_RANDOM)]
    flat[randomised] = ids.replacements[rng.integers(ids.replacements.size, size=randomised.size)]
    return masked, positions, labels


def _choose_words(in_word: np.ndarray, seg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Choose whole words: a word starts at seg 0, or at any word token after a non-word one
    (so a 1 right after [CLS]/[SEP] starts its own word), and runs on through 1s."""
    after_word = np.zeros_like(in_word)
    after_word[:, 1:] = in_word[:, :-1]
    starts = in_word & ((seg == 0) | ~after_word)
    word = np.cumsum(starts).reshape(in_word.shape)  # 1-based word number of each token
    picked = rng.random(int(word[-1, -1]) + 1) < MASK_PROB  # [0]: no word yet, never used
    return in_word & picked[word]
