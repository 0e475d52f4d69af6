"""Dynamic masking: char-level and word-level statistics and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from ernie_sm.contract.errors import DataError
from ernie_sm.text.vocab import Vocab
from ernie_sm.training.data import TokenIds, mask_tokens

# Specials at both ends, so a wrong replacement range would show up.
VOCAB = Vocab(
    tokens=("[PAD]", "[CLS]", "[SEP]", "[MASK]", *(f"t{i}" for i in range(4, 60)), "[UNK]"),
    pad_id=0,
    cls_id=1,
    sep_id=2,
    mask_id=3,
    unk_id=60,
)
IDS = TokenIds.from_vocab(VOCAB)
REAL = np.arange(4, 60)


def random_batch(rng: np.random.Generator, rows: int = 600, width: int = 90):
    """[CLS] A [SEP] B [SEP] rows of random lengths, words of 1-4 tokens, padded."""
    src = np.zeros((rows, width), dtype=np.int64)
    seg = np.full((rows, width), -1, dtype=np.int64)
    for r in range(rows):
        n = rng.integers(20, width + 1)
        cut = rng.integers(2, n - 2)
        src[r, :n] = rng.choice(REAL, n)
        seg[r, :n] = (rng.random(n) < 0.4).astype(int)  # 1 = continues the word
        src[r, [0, cut, n - 1]] = VOCAB.cls_id, VOCAB.sep_id, VOCAB.sep_id
        seg[r, [0, cut, n - 1]] = -1
    return src, seg


def words(seg_row: np.ndarray) -> list[list[int]]:
    """Reference word split: starts at 0 (or a 1 after a non-word), runs through 1s."""
    found: list[list[int]] = []
    for col, label in enumerate(seg_row.tolist()):
        if label == 0 or (label == 1 and (col == 0 or seg_row[col - 1] == -1)):
            found.append([col])
        elif label == 1:
            found[-1].append(col)
    return found


def test_char_level_statistics():
    rng = np.random.default_rng(0)
    src, seg = random_batch(rng)
    masked, pos, labels = mask_tokens(src, seg, False, IDS, rng)
    maskable = (src > 3).ravel()
    assert maskable[pos].all()  # never [CLS], [SEP] or [PAD]
    assert abs(pos.size / maskable.sum() - 0.15) < 0.01
    assert (labels == src.ravel()[pos]).all()
    assert (pos == np.sort(pos)).all() and masked.dtype == np.int64
    out = masked.ravel()[pos]
    to_mask, unchanged = out == VOCAB.mask_id, out == labels
    randomised = ~to_mask & ~unchanged
    assert abs(to_mask.mean() - 0.8) < 0.02
    assert abs(randomised.mean() - 0.1) < 0.015
    assert abs(unchanged.mean() - 0.1) < 0.015
    assert np.isin(out[randomised], REAL).all()  # real tokens only, never specials
    untouched = np.ones(src.size, dtype=bool)
    untouched[pos] = False
    assert (masked.ravel()[untouched] == src.ravel()[untouched]).all()


def test_word_level_masks_whole_words():
    rng = np.random.default_rng(1)
    src, seg = random_batch(rng)
    masked, pos, _ = mask_tokens(src, seg, True, IDS, rng)
    chosen = np.zeros(src.shape, dtype=bool).ravel()
    chosen[pos] = True
    chosen = chosen.reshape(src.shape)
    picked = total = 0
    for row in range(src.shape[0]):
        for word in words(seg[row]):
            assert chosen[row, word].all() or not chosen[row, word].any()
            picked += chosen[row, word[0]]
            total += 1
    assert abs(picked / total - 0.15) < 0.01
    assert not chosen[src <= 3].any()
    replaced = masked.ravel()[pos]
    assert abs(np.mean(replaced == VOCAB.mask_id) - 0.8) < 0.02


def test_a_continuation_after_cls_or_sep_starts_its_own_word():
    row_src = np.array([1, 10, 11, 2, 12, 13, 14, 2, 0])
    row_seg = np.array([-1, 1, 1, -1, 1, 0, 1, -1, -1])
    src, seg = np.tile(row_src, (4000, 1)), np.tile(row_seg, (4000, 1))
    _, pos, _ = mask_tokens(src, seg, True, IDS, np.random.default_rng(2))
    chosen = np.zeros(src.size, dtype=bool)
    chosen[pos] = True
    patterns = {tuple(r) for r in chosen.reshape(src.shape).astype(int)}
    expected = [{1, 2}, {4}, {5, 6}]
    for pattern in patterns:
        cols = {c for c, hit in enumerate(pattern) if hit}
        assert cols == set().union(*(w for w in expected if w & cols))
    # all three words are chosen independently: every combination shows up
    assert len(patterns) == 8


def test_every_batch_gets_at_least_one_masked_token():
    src = np.array([[1, 20, 2, 0], [1, 21, 22, 2]])
    seg = np.array([[-1, 0, -1, -1], [-1, 0, 1, -1]])
    for seed in range(300):
        _, pos, labels = mask_tokens(src, seg, seed % 2 == 0, IDS, np.random.default_rng(seed))
        assert pos.size >= 1 and np.isin(labels, [20, 21, 22]).all()


def test_a_batch_with_nothing_to_mask_is_an_error():
    with pytest.raises(DataError, match="nothing to mask"):
        mask_tokens(
            np.array([[1, 2, 0]]), np.array([[-1, -1, -1]]), False, IDS, np.random.default_rng()
        )


def test_same_rng_same_masks():
    src, seg = random_batch(np.random.default_rng(3), rows=50)
    first = mask_tokens(src, seg, False, IDS, np.random.default_rng(7))
    again = mask_tokens(src, seg, False, IDS, np.random.default_rng(7))
    other = mask_tokens(src, seg, False, IDS, np.random.default_rng(8))
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])
