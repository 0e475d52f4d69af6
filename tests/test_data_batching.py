"""Batching: the in_tokens rule, length bucketing, padding, mask positions and NSP negatives."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ernie_sm.contract import hyperparams
from ernie_sm.training.data import (
    BatchConfig,
    ParsedShard,
    TokenIds,
    group_batches,
    make_batch,
    split_batches,
)

from tests.helpers import TOY_VOCAB as VOCAB
from tests.synthetic import reference_lengths

IDS = TokenIds.from_vocab(VOCAB)
WINDOW = int(hyperparams.SPECS["bucket_window"].default)


def make_shard(rng: np.random.Generator, lengths: list[int]) -> ParsedShard:
    """Samples [CLS] A [SEP] B [SEP] with distinct token ids, so rows can be traced."""
    tokens, sent, seg, nsp = [], [], [], []
    for n in lengths:
        cut = int(rng.integers(2, n - 2))
        ids = rng.integers(4, 100, n)
        ids[[0, cut, n - 1]] = 1, 2, 2
        tokens.append(ids)
        sent.append((np.arange(n) > cut).astype(int))
        labels = rng.integers(0, 2, n)
        labels[[0, cut, n - 1]] = -1
        seg.append(labels)
        nsp.append(int(rng.integers(0, 2)))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return ParsedShard(
        tokens=np.concatenate(tokens),
        sent=np.concatenate(sent),
        pos=np.concatenate([np.arange(n) for n in lengths]),
        seg=np.concatenate(seg),
        offsets=offsets,
        label=np.array(nsp),
        skipped=0,
    )


def unmasked(batch) -> np.ndarray:
    src = batch.src_ids.copy()
    src.ravel()[batch.mask_pos] = batch.mask_label
    return src


def test_in_tokens_batches_fill_the_token_budget_and_no_more():
    lengths = np.random.default_rng(0).integers(5, 120, 500)
    order = np.random.default_rng(1).permutation(500)
    groups = split_batches(order, lengths, 1000, in_tokens=True)
    assert (np.concatenate(groups) == order).all()
    for group, following in itertools.pairwise(groups):
        assert len(group) * lengths[group].max() <= 1000
        longest = max(lengths[group].max(), lengths[following[0]])
        assert (len(group) + 1) * longest > 1000  # the next sample would not have fitted


def test_a_sample_longer_than_the_budget_goes_alone():
    groups = split_batches(np.arange(4), np.array([10, 300, 10, 10]), 100, in_tokens=True)
    assert [g.tolist() for g in groups] == [[0], [1], [2, 3]]


def test_in_samples_batches_and_empty_order():
    groups = split_batches(np.arange(10), np.full(10, 7), 4, in_tokens=False)
    assert [len(g) for g in groups] == [4, 4, 2]
    assert split_batches(np.arange(0), np.zeros(0, int), 4, in_tokens=True) == []


def padding_efficiency(groups: list[np.ndarray], lengths: np.ndarray) -> float:
    """Real tokens over the padded tokens the model computes on."""
    return sum(lengths[g].sum() for g in groups) / sum(len(g) * lengths[g].max() for g in groups)


@pytest.mark.parametrize("batch_size", [4096, 8192, 16384])
def test_bucketing_pads_little_on_the_demo_shards_length_distribution(batch_size):
    lengths = reference_lengths(6000)
    order = np.random.default_rng(0).permutation(6000)
    plain = split_batches(order, lengths, batch_size, in_tokens=True)
    config = BatchConfig(IDS, batch_size, True, bucket_window=WINDOW)
    bucketed = group_batches(order, lengths, config, np.random.default_rng(1))
    assert padding_efficiency(plain, lengths) < 0.78  # as the real shards: 74-75%
    assert padding_efficiency(bucketed, lengths) >= 0.95
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(6000))
    assert all(len(g) * lengths[g].max() <= batch_size for g in bucketed)


def test_bucketing_off_cuts_the_order_as_it_comes_and_draws_nothing():
    lengths = reference_lengths(500)
    order = np.random.default_rng(2).permutation(500)
    rng = np.random.default_rng(3)
    for in_tokens, batch_size in ((True, 1000), (False, 16)):
        groups = group_batches(order, lengths, BatchConfig(IDS, batch_size, in_tokens), rng)
        expected = split_batches(order, lengths, batch_size, in_tokens)
        assert [g.tolist() for g in groups] == [g.tolist() for g in expected]
    assert rng.random() == np.random.default_rng(3).random()  # rng untouched


def test_unshuffled_bucketing_keeps_the_window_order_ascending_then_descending():
    lengths = reference_lengths(600)
    config = BatchConfig(IDS, 20, in_tokens=False, bucket_window=10)  # 200-sample windows
    groups = group_batches(np.arange(600), lengths, config, None)
    flat = lengths[np.concatenate(groups)]
    assert (np.diff(flat[:200]) >= 0).all() and (np.diff(flat[200:400]) <= 0).all()
    assert (np.diff(flat[400:]) >= 0).all()
    assert [sorted(g.tolist()) for g in groups[:10]] != [
        list(range(k, k + 20)) for k in range(0, 200, 20)
    ]
    assert sorted(np.concatenate(groups[:10]).tolist()) == list(range(200))


def test_bucketed_batches_follow_the_rng_and_mix_lengths_across_steps():
    lengths = reference_lengths(3000)
    order = np.random.default_rng(4).permutation(3000)
    config = BatchConfig(IDS, 8192, True, bucket_window=WINDOW)
    first = group_batches(order, lengths, config, np.random.default_rng(5))
    again = group_batches(order, lengths, config, np.random.default_rng(5))
    other = group_batches(order, lengths, config, np.random.default_rng(6))
    assert [g.tolist() for g in first] == [g.tolist() for g in again]
    assert [g.tolist() for g in first] != [g.tolist() for g in other]
    widths = np.array([lengths[g].max() for g in first])
    steps = np.sign(np.diff(widths))
    assert (steps > 0).sum() > len(steps) / 4 and (steps < 0).sum() > len(steps) / 4


def test_batch_rows_are_the_padded_samples_with_flat_mask_positions():
    rng = np.random.default_rng(2)
    shard = make_shard(rng, [12, 30, 7, 19])
    rows = np.array([2, 0, 3])
    batch = make_batch(shard, rows, BatchConfig(IDS, 1000, True), False, rng)
    assert batch.src_ids.shape == (3, 19)
    for array in (batch.src_ids, batch.sent_ids, batch.pos_ids, batch.mask_pos, batch.label):
        assert array.dtype == np.int64
    src = unmasked(batch)
    for r, sample in enumerate(rows):
        span = slice(shard.offsets[sample], shard.offsets[sample + 1])
        n = shard.lengths[sample]
        assert (src[r, :n] == shard.tokens[span]).all() and (src[r, n:] == 0).all()
        assert (batch.sent_ids[r, :n] == shard.sent[span]).all()
        assert (batch.pos_ids[r, :n] == np.arange(n)).all() and (batch.pos_ids[r, n:] == 0).all()
    assert batch.label.tolist() == shard.label[rows].tolist()
    assert batch.num_tokens == 7 + 12 + 19
    assert batch.mask_pos.size >= 1
    assert (batch.src_ids.ravel()[batch.mask_pos] != src.ravel()[batch.mask_pos]).any()


def test_negative_samples_pair_segment_a_with_the_next_rows_segment_b():
    rng = np.random.default_rng(3)
    shard = make_shard(rng, [20, 9, 14, 30])
    rows = np.arange(4)
    config = BatchConfig(IDS, 1000, True, generate_neg_sample=True)
    batch = make_batch(shard, rows, config, False, rng)
    src, width = unmasked(batch), 30
    n_neg = len(batch.label) - 4
    assert batch.src_ids.shape == (4 + n_neg, width) and n_neg == 4  # every B has a token
    assert batch.label[4:].tolist() == [0] * n_neg
    for k in range(n_neg):
        row, i, j = src[4 + k], k, (k + 1) % 4
        sample_i, sample_j = (shard.tokens[shard.offsets[s] : shard.offsets[s + 1]] for s in (i, j))
        a = sample_i[: list(sample_i).index(2) + 1]
        b = sample_j[list(sample_j).index(2) + 1 : -1][: width - len(a) - 1]
        expected = np.concatenate([a, b, [2]])
        n = len(expected)
        assert (row[:n] == expected).all() and (row[n:] == 0).all()
        assert (batch.sent_ids[4 + k, :n] == (np.arange(n) >= len(a))).all()
        assert (batch.pos_ids[4 + k, :n] == np.arange(n)).all()
    assert batch.num_tokens == sum(shard.lengths) + int((src[4:] != 0).sum())


def test_no_negatives_for_a_single_sample_batch():
    shard = make_shard(np.random.default_rng(4), [10])
    config = BatchConfig(IDS, 1000, True, generate_neg_sample=True)
    batch = make_batch(shard, np.array([0]), config, False, np.random.default_rng(4))
    assert batch.src_ids.shape == (1, 10)


@pytest.mark.parametrize("word_level", [False, True])
def test_masked_batches_never_touch_special_tokens(word_level):
    rng = np.random.default_rng(5)
    shard = make_shard(rng, list(rng.integers(6, 40, 64)))
    config = BatchConfig(IDS, 1000, True, generate_neg_sample=True)
    batch = make_batch(shard, np.arange(64), config, word_level, rng)
    assert np.isin(batch.mask_label, np.arange(4, 100)).all()  # never [CLS]/[SEP]/[PAD]
    assert 0.05 < batch.mask_pos.size / batch.num_tokens < 0.25
