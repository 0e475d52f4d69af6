"""Group a parsed shard's samples into padded, masked batches."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from ernie_sm.contract.tasks import IGNORE
from ernie_sm.training.data.masking import TokenIds, mask_tokens
from ernie_sm.training.data.shard import ParsedShard


@dataclass(frozen=True, eq=False)
class BatchConfig:
    ids: TokenIds
    batch_size: int  # padded tokens if in_tokens, else samples
    in_tokens: bool
    generate_neg_sample: bool = False
    masked: bool = True  # mask for the masked-LM loss (knowledge masking's batches)
    bucket_window: int = 0  # batches per length-sorting window; 0: no length bucketing


@dataclass(frozen=True, eq=False)
class Batch:
    """Model inputs: [B, L] ids padded with [PAD] (L = longest row), masked positions flat
    row-major into B*L with their original ids (none in an unmasked batch), and labels:
    one per row (NSP, or a sentence-level task's class) or [B, L] for a token-level task,
    IGNORE in padding."""

    src_ids: np.ndarray
    sent_ids: np.ndarray
    pos_ids: np.ndarray
    mask_pos: np.ndarray
    mask_label: np.ndarray
    label: np.ndarray
    num_tokens: int  # non-pad tokens


class _Rows(NamedTuple):
    src: np.ndarray
    sent: np.ndarray
    pos: np.ndarray
    seg: np.ndarray  # -1 in padding, so padding never joins a word
    lengths: np.ndarray
    label: np.ndarray


def split_batches(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, in_tokens: bool
) -> list[np.ndarray]:
    """Cut `order` (sample indices) into consecutive batches.

    in_tokens: add a sample while (samples + 1) * longest <= batch_size, so padded
    size stays within budget; a sample longer than the budget goes alone.
    """
    if in_tokens:
        starts: list[int] = []
        longest = 0
        for i, n in enumerate(lengths[order].tolist()):
            longest = max(longest, n)
            if not starts or (i - starts[-1] + 1) * longest > batch_size:
                starts.append(i)
                longest = n
    else:
        starts = list(range(0, len(order), batch_size))
    return [order[a:b] for a, b in itertools.pairwise([*starts, len(order)])]


def group_batches(
    order: np.ndarray,
    lengths: np.ndarray,
    config: BatchConfig,
    rng: np.random.Generator | None,
) -> list[np.ndarray]:
    """The batches (sample indices) of one shard pass over `order`.

    With config.bucket_window, samples are first sorted by length within windows of about
    that many batches, so a batch pads little; `rng` (None: keep the order, as validation
    does) then shuffles the batches so that consecutive steps still mix lengths. Without
    it, `order` is cut as it comes, as the original ERNIE reader did, and rng is unused.
    """
    if not config.bucket_window:
        return split_batches(order, lengths, config.batch_size, config.in_tokens)
    mean_length = float(lengths[order].mean()) if len(order) else 1.0
    per_batch = config.batch_size / mean_length if config.in_tokens else config.batch_size
    window = max(1, round(config.bucket_window * per_batch))
    groups = split_batches(
        _by_length(order, lengths, window), lengths, config.batch_size, config.in_tokens
    )
    return groups if rng is None else [groups[i] for i in rng.permutation(len(groups))]


def _by_length(order: np.ndarray, lengths: np.ndarray, window: int) -> np.ndarray:
    """`order` sorted by length within consecutive windows of `window` samples, alternately
    ascending and descending so that the seams between windows join similar lengths too.
    The sort is stable: equal lengths keep their (shuffled) order, so batches differ from
    one pass to the next."""
    windows = [order[start : start + window] for start in range(0, len(order), window)]
    ranked = [w[np.argsort(lengths[w], kind="stable")] for w in windows]
    return np.concatenate(
        [order[:0], *(w if k % 2 == 0 else w[::-1] for k, w in enumerate(ranked))]
    )


def make_batch(
    shard: ParsedShard,
    rows: np.ndarray,
    config: BatchConfig,
    word_level: bool,
    rng: np.random.Generator,
) -> Batch:
    """Pad the samples `rows` of `shard` (plus NSP negatives if configured) and mask them."""
    batch = _pad(shard, rows, config.ids.pad)
    if config.generate_neg_sample and len(rows) >= 2:
        negatives = _negatives(batch, config.ids)
        batch = _Rows(*(np.concatenate(pair) for pair in zip(batch, negatives, strict=True)))
    if config.masked:
        src, mask_pos, mask_label = mask_tokens(batch.src, batch.seg, word_level, config.ids, rng)
    else:
        src, mask_pos, mask_label = batch.src, np.zeros(0, np.int64), np.zeros(0, np.int64)
    return Batch(
        src_ids=src,
        sent_ids=batch.sent,
        pos_ids=batch.pos,
        mask_pos=mask_pos,
        mask_label=mask_label,
        label=batch.label,
        num_tokens=int(batch.lengths.sum()),
    )


def _pad(shard: ParsedShard, rows: np.ndarray, pad_id: int) -> _Rows:
    lengths = shard.lengths[rows]
    cols = np.arange(lengths.max())
    real = cols < lengths[:, None]
    index = (shard.offsets[rows][:, None] + cols)[real]  # row-major, like boolean assignment

    def padded(values: np.ndarray, pad: int) -> np.ndarray:
        out = np.full(real.shape, pad, dtype=np.int64)
        out[real] = values[index]
        return out

    return _Rows(
        src=padded(shard.tokens, pad_id),
        sent=padded(shard.sent, 0),
        pos=padded(shard.pos, 0),
        seg=padded(shard.seg, -1),
        lengths=lengths,
        label=padded(shard.label, IGNORE) if shard.token_labels else shard.label[rows],
    )


def _negatives(batch: _Rows, ids: TokenIds) -> _Rows:
    """NSP negatives (label 0): segment A of row i + segment B of row i+1 (mod n) + [SEP].

    B is cut so the pair fits the batch's longest row (hence max_seq_len and the batch's
    L); a pair with no B token left is dropped. A batch of n samples grows to <= 2n rows.
    """
    n, width = batch.src.shape
    cols = np.arange(width)
    a = np.count_nonzero((batch.sent == 0) & (cols < batch.lengths[:, None]), axis=1)
    partner = np.roll(np.arange(n), -1)
    b = np.minimum(batch.lengths[partner] - a[partner] - 1, width - a - 1)
    i = np.flatnonzero(b >= 1)
    j, a_i, b = partner[i], a[i][:, None], b[i][:, None]

    in_a = cols < a_i
    body = cols < a_i + b
    closing = cols == a_i + b  # the new final [SEP]
    src_row = np.where(in_a, i[:, None], j[:, None])
    src_col = np.clip(np.where(in_a, cols, cols - a_i + a[j][:, None]), 0, width - 1)
    src = np.where(body, batch.src[src_row, src_col], ids.pad)
    return _Rows(
        src=np.where(closing, ids.sep, src),
        sent=(~in_a & (body | closing)).astype(np.int64),
        pos=np.where(body | closing, cols, 0),
        seg=np.where(body, batch.seg[src_row, src_col], -1),
        lengths=(a_i + b + 1)[:, 0],
        label=np.zeros(i.size, dtype=np.int64),
    )
