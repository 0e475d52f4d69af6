"""The training and validation streams: determinism, resume, rank sharding, worker processes."""

from __future__ import annotations

import gzip
import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
from ernie_sm.contract import hyperparams
from ernie_sm.contract.errors import DataError
from ernie_sm.contract.filelist import Shard
from ernie_sm.training.config import ErnieConfig
from ernie_sm.training.data import (
    Batch,
    BatchConfig,
    DataPosition,
    PretrainingData,
    ReadConfig,
    ShardLimits,
    TokenIds,
    epoch_shards,
    make_batch,
    parse_shard,
    read_filelist,
    split_batches,
    validation_batches,
)

from tests.helpers import TOY_VOCAB as VOCAB
from tests.synthetic import reference_lengths

LIMITS = dict(vocab_size=100, max_seq_len=40, max_position=64, type_vocab_size=2)
WINDOW = int(hyperparams.SPECS["bucket_window"].default)  # length bucketing as trained
BAND = 12  # shard s draws its word ids from [4 + BAND*s, 4 + BAND*(s+1)), so rows name it


def sample_line(rng: np.random.Generator, shard: int, length: int, one_word: bool) -> str:
    """[CLS] A [SEP] B [SEP]; with one_word each segment is a single word."""
    cut = int(rng.integers(2, length - 2))
    ids = rng.integers(4 + BAND * shard, 4 + BAND * (shard + 1), length)
    ids[[0, cut, length - 1]] = 1, 2, 2
    seg = np.ones(length, int) if one_word else rng.integers(0, 2, length)
    seg[[1, cut + 1]] = 0
    seg[[0, cut, length - 1]] = -1
    fields = (ids, np.arange(length) > cut, np.arange(length), seg, [rng.integers(0, 2)])
    return ";".join(" ".join(str(int(v)) for v in field) for field in fields)


def write_dataset(
    folder: Path,
    shards: int = 5,
    lines: int = 30,
    prob: float = 0.5,
    one_word: bool = False,
    lengths: tuple[int, int] = (6, 41),
    reference: bool = False,
) -> list[Shard]:
    """Shards of `lines` samples of lengths in `lengths`, or with reference=True those of
    the original demo shard (tests/synthetic.py)."""
    rng = np.random.default_rng(shards * 100 + lines)
    entries = []
    for s in range(shards):
        sizes = reference_lengths(lines, s) if reference else rng.integers(*lengths, lines)
        text = "\n".join(sample_line(rng, s, int(n), one_word) for n in sizes)
        (folder / f"part-{s}.gz").write_bytes(gzip.compress(text.encode() + b"\n"))
        entries.append(f"part-{s}.gz\t{prob}\n")
    (folder / "filelist").write_text("".join(entries))
    return read_filelist(folder / "filelist")


def stream(shards: list[Shard], rank: int = 0, world_size: int = 1, **overrides) -> PretrainingData:
    options = dict(batch_size=200, in_tokens=True, seed=1, epochs=2, bucket_window=WINDOW)
    read = ReadConfig(**LIMITS, **{**options, **overrides})
    return PretrainingData(shards, VOCAB, read, rank=rank, world_size=world_size)


def valid(shards: list[Shard], **options) -> list[Batch]:
    return list(validation_batches(shards, VOCAB, ReadConfig(**LIMITS, **options)))


def same(a: Batch, b: Batch) -> bool:
    fields = ("src_ids", "sent_ids", "pos_ids", "mask_pos", "mask_label", "label")
    arrays_equal = all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields)
    return arrays_equal and a.num_tokens == b.num_tokens


def unmasked(batch: Batch) -> np.ndarray:
    src = batch.src_ids.copy()
    src.ravel()[batch.mask_pos] = batch.mask_label
    return src


def shard_of(row: np.ndarray) -> int:
    return int((row[row > 3][0] - 4) // BAND)


@pytest.mark.parametrize("window", [WINDOW, 0])
def test_same_seed_same_batches_different_seed_different_batches(tmp_path, window):
    shards = write_dataset(tmp_path)
    first = list(stream(shards, bucket_window=window).batches())
    again = list(stream(shards, bucket_window=window).batches())
    assert len(first) == len(again) > 10
    assert all(same(a, b) and p == q for (a, p), (b, q) in zip(first, again, strict=True))
    other = [b for b, _ in stream(shards, seed=2, bucket_window=window).batches()]
    assert not all(same(a, b) for (a, _), b in zip(first, other, strict=False))


@pytest.mark.parametrize("window", [WINDOW, 0])
def test_resume_from_any_position_continues_bit_identically(tmp_path, window):
    shards = write_dataset(tmp_path)
    full = list(stream(shards, bucket_window=window).batches())
    positions = [p for _, p in full]
    assert positions[-1] == DataPosition(2, 0, 0)
    epoch_end = positions.index(DataPosition(1, 0, 0))
    shard_end = positions.index(DataPosition(0, 1, 0))
    for cut in (0, 1, shard_end - 1, shard_end, epoch_end, epoch_end + 2, len(full) - 2):
        saved = DataPosition.from_dict(positions[cut].to_dict())
        resumed = list(stream(shards, bucket_window=window).batches(saved))
        assert len(resumed) == len(full) - cut - 1
        tail = full[cut + 1 :]
        assert all(same(a, b) and p == q for (a, p), (b, q) in zip(resumed, tail, strict=True))
    assert list(stream(shards).batches(positions[-1])) == []


def test_bucketing_off_gives_the_original_order_exactly(tmp_path):
    # The reader before length bucketing, written out: shuffle, cut in order, mask.
    shards = write_dataset(tmp_path, shards=2)
    config = BatchConfig(TokenIds.from_vocab(VOCAB), 200, in_tokens=True)
    expected = []
    for epoch in range(2):
        for shard in epoch_shards(shards, 1, epoch):
            parsed = parse_shard(shard.path, ShardLimits(**LIMITS))
            rng = np.random.default_rng((1, 1, epoch, shard.index))  # seed, _TRAIN, ...
            word_level = bool(rng.random() < shard.mask_word_prob)
            order = rng.permutation(len(parsed))
            for rows in split_batches(order, parsed.lengths, 200, in_tokens=True):
                expected.append(make_batch(parsed, rows, config, word_level, rng))
    batches = [b for b, _ in stream(shards, bucket_window=0).batches()]
    assert len(batches) == len(expected)
    assert all(same(a, b) for a, b in zip(batches, expected, strict=True))


def padding_efficiency(batches: list[Batch]) -> float:
    return sum(b.num_tokens for b in batches) / sum(b.src_ids.size for b in batches)


def test_bucketed_batches_pad_little_and_still_mix_lengths_across_steps(tmp_path):
    shards = write_dataset(tmp_path, shards=1, lines=3000, reference=True)
    limits = {**LIMITS, "max_seq_len": 512, "max_position": 513}
    options = dict(batch_size=8192, in_tokens=True, seed=1, epochs=2)
    data = PretrainingData(shards, VOCAB, ReadConfig(**limits, **options, bucket_window=WINDOW))
    batches = [b for b, _ in data.batches()]
    plain = PretrainingData(shards, VOCAB, ReadConfig(**limits, **options, bucket_window=0))
    assert padding_efficiency([b for b, _ in plain.batches()]) < 0.78
    assert padding_efficiency(batches) >= 0.95
    epochs = [batches[: len(batches) // 2], batches[len(batches) // 2 :]]
    for epoch in epochs:
        steps = np.sign(np.diff([b.src_ids.shape[1] for b in epoch]))
        assert (steps > 0).sum() > len(steps) / 4 and (steps < 0).sum() > len(steps) / 4
    # Each epoch draws other batches, not the same ones reordered.
    contents = [{tuple(sorted(map(tuple, unmasked(b)))) for b in epoch} for epoch in epochs]
    assert len(contents[0] & contents[1]) < len(contents[0]) / 4


def test_bucketed_validation_is_fixed_and_covers_the_file(tmp_path):
    shards = write_dataset(tmp_path, shards=2, lines=300)
    options = dict(batch_size=200, in_tokens=True, seed=3)
    plain = valid(shards, **options)
    first = valid(shards, **options, bucket_window=WINDOW)
    again = valid(shards, **options, bucket_window=WINDOW)
    assert all(same(a, b) for a, b in zip(first, again, strict=True))

    def rows(batches: list[Batch]) -> list[tuple[int, ...]]:
        return [tuple(r[r > 0]) for batch in batches for r in unmasked(batch)]

    assert sorted(rows(first)) == sorted(rows(plain)) and rows(first) != rows(plain)
    assert padding_efficiency(first) > padding_efficiency(plain)


def test_positions_count_batches_within_this_ranks_shard_order(tmp_path):
    shards = write_dataset(tmp_path)
    data = stream(shards, rank=1, world_size=2, in_tokens=False, batch_size=10, epochs=1)
    positions = [p for _, p in data.batches()]
    # 30 lines a shard -> 3 batches; rank 1 of 2 holds 2 of the 5 shards
    assert positions == [
        DataPosition(0, 0, 1),
        DataPosition(0, 0, 2),
        DataPosition(0, 1, 0),
        DataPosition(0, 1, 1),
        DataPosition(0, 1, 2),
        DataPosition(1, 0, 0),
    ]


def test_ranks_read_disjoint_shards_covering_all(tmp_path):
    shards = write_dataset(tmp_path, shards=7)
    for epoch in range(3):
        dealt = [epoch_shards(shards, 5, epoch, rank, 3) for rank in range(3)]
        indices = [s.index for part in dealt for s in part]
        assert sorted(indices) == list(range(7))
        assert [len(part) for part in dealt] == [3, 2, 2]
    orders = {tuple(s.index for s in epoch_shards(shards, 5, e)) for e in range(5)}
    assert len(orders) > 1  # reshuffled every epoch

    seen = []
    for rank in range(3):
        data = stream(shards, rank=rank, world_size=3, epochs=1)
        read = [shard_of(row) for batch, _ in data.batches() for row in unmasked(batch)]
        expected = [s.index for s in epoch_shards(shards, 1, 0, rank, 3)]
        assert list(dict.fromkeys(read)) == expected  # whole shards, in the epoch's order
        seen += expected
    assert sorted(seen) == list(range(7))


def test_fewer_shards_than_workers_is_an_error(tmp_path):
    shards = write_dataset(tmp_path, shards=3)
    with pytest.raises(
        DataError, match=r"3 shard\(s\) cannot be split across 4 distributed workers"
    ):
        stream(shards, world_size=4)


def test_samples_are_shuffled_within_a_shard_pass(tmp_path):
    shards = write_dataset(tmp_path, shards=1)
    data = stream(shards, in_tokens=False, batch_size=100, epochs=2)
    rows = [unmasked(batch) for batch, _ in data.batches()]
    in_file_order = unmasked(valid(shards, batch_size=100, in_tokens=False)[0])
    file_order = [tuple(r[r > 0]) for r in in_file_order]
    for epoch_rows in rows:
        order = [tuple(r[r > 0]) for r in epoch_rows]
        assert sorted(order) == sorted(file_order) and order != file_order
    assert [tuple(r[r > 0]) for r in rows[0]] != [tuple(r[r > 0]) for r in rows[1]]


@pytest.mark.parametrize("window", [WINDOW, 0])
def test_worker_processes_give_the_inline_batches(tmp_path, window):
    shards = write_dataset(tmp_path)
    options = dict(generate_neg_sample=True, bucket_window=window)
    inline = list(stream(shards, **options).batches())
    with stream(shards, **options, num_workers=2) as data:
        pooled = list(data.batches())
        partial = list(itertools.islice(data.batches(inline[4][1]), 3))  # a second stream
    assert len(pooled) == len(inline)
    assert all(same(a, b) and p == q for (a, p), (b, q) in zip(pooled, inline, strict=True))
    assert all(same(a, b) for (a, _), (b, _) in zip(partial, inline[5:8], strict=True))


def test_a_data_error_in_a_worker_reaches_the_caller(tmp_path):
    shards = write_dataset(tmp_path, shards=2)
    good = gzip.decompress(shards[1].path.read_bytes()).decode().splitlines()
    good[2] = good[2].rsplit(";", 1)[0] + ";7"
    shards[1].path.write_bytes(gzip.compress("\n".join(good).encode()))
    with stream(shards, num_workers=1) as data, pytest.raises(DataError) as error:
        list(data.batches())
    assert str(error.value) == f"{shards[1].path} line 3, field nsp_label: value 7 not in {{0, 1}}"


def test_over_length_lines_are_counted_and_logged(tmp_path, caplog):
    shards = write_dataset(tmp_path, shards=2, lengths=(30, 51))
    lengths = [
        len(line.split(";")[0].split())
        for s in shards
        for line in gzip.decompress(s.path.read_bytes()).decode().splitlines()
    ]
    too_long = sum(n > 40 for n in lengths)
    assert too_long > 0
    data = stream(shards, epochs=1)
    with caplog.at_level(logging.WARNING, logger="ernie_sm.training.data.pipeline"):
        rows = sum(len(batch.label) for batch, _ in data.batches())
    assert data.skipped_over_length == too_long and rows == len(lengths) - too_long
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(shards[0].path) in m and "skipped" in m for m in messages)
    assert not any("loss: " in m for m in messages)


def test_over_length_lines_are_told_and_counted_once_however_many_passes(tmp_path, caplog):
    """Training that runs over its data for many epochs, and every validation pass, read
    the same shards again: each shard's over-long lines are one warning and one count."""
    shards = write_dataset(tmp_path, shards=2, lengths=(30, 51))
    once = stream(shards, epochs=1)
    list(once.batches())
    caplog.clear()
    data = stream(shards, epochs=5)
    with caplog.at_level(logging.WARNING, logger="ernie_sm.training.data.pipeline"):
        list(data.batches())
        for _ in range(3):
            valid(shards, batch_size=200, in_tokens=True)
    assert data.skipped_over_length == once.skipped_over_length > 0
    assert not [r for r in caplog.records if "skipped" in r.getMessage()]  # told already


@pytest.mark.parametrize(("prob", "whole_segments"), [(1.1, True), (0.0, False)])
def test_mask_word_prob_picks_word_level_masking(tmp_path, prob, whole_segments):
    # Each segment is one word: word-level masking takes a segment whole or not at all
    # (bar a lone fallback token in a batch where no word was drawn).
    shards = write_dataset(tmp_path, shards=1, lines=200, prob=prob, one_word=True)
    partial = 0
    for batch, _ in stream(shards, epochs=1).batches():
        if batch.mask_pos.size == 1:
            continue
        chosen = np.zeros(batch.src_ids.size, dtype=bool)
        chosen[batch.mask_pos] = True
        chosen = chosen.reshape(batch.src_ids.shape)
        for row, hits in zip(unmasked(batch), chosen, strict=True):
            a_end, b_end = np.flatnonzero(row == 2)
            for segment in (hits[1:a_end], hits[a_end + 1 : b_end]):
                partial += 0 < segment.sum() < len(segment)
    assert (partial == 0) == whole_segments


def test_validation_batches_are_fixed_and_in_file_order(tmp_path):
    shards = write_dataset(tmp_path, shards=3)
    options = dict(batch_size=7, in_tokens=False, seed=3)
    first = valid(shards, **options)
    again = valid(shards, **options)
    assert len(first) == 3 * 5  # 30 lines a shard, 7 a batch
    assert all(same(a, b) for a, b in zip(first, again, strict=True))
    rows = [tuple(r[r > 0]) for batch in first for r in unmasked(batch)]
    lines = [
        tuple(int(t) for t in line.split(";")[0].split())
        for s in shards
        for line in gzip.decompress(s.path.read_bytes()).decode().splitlines()
    ]
    assert rows == lines


def test_endless_stream_keeps_going_through_epochs(tmp_path):
    shards = write_dataset(tmp_path, shards=2, lines=10)
    data = stream(shards, epochs=None)
    positions = [p for _, p in itertools.islice(data.batches(), 60)]
    assert positions[-1].epoch >= 5


def test_data_position_round_trip_and_bad_dicts():
    position = DataPosition(3, 1, 7)
    assert DataPosition.from_dict(position.to_dict()) == position
    assert position.to_dict() == {"epoch": 3, "shard": 1, "batch": 7}
    with pytest.raises(DataError, match="checkpoint data position"):
        DataPosition.from_dict({"epoch": 1, "shard": 0})


def test_the_read_config_takes_each_setting_from_its_hyperparameter_or_the_model():
    hp = hyperparams.parse(
        {
            "max_seq_len": "77",
            "batch_size": "333",
            "in_tokens": "false",
            "random_seed": "9",
            "bucket_window": "5",
            "generate_neg_sample": "true",
            "num_workers": "3",
            "epoch": "4",
        }
    )
    config = ErnieConfig(vocab_size=1234, max_position_embeddings=99, type_vocab_size=7)
    assert ReadConfig.of_job(hp, config) == ReadConfig(
        vocab_size=1234,
        max_seq_len=77,
        max_position=99,
        type_vocab_size=7,
        batch_size=333,
        in_tokens=False,
        seed=9,
        bucket_window=5,
        generate_neg_sample=True,
        num_workers=3,
        epochs=4,
    )
