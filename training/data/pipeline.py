"""Shard order, worker processes, resumable positions: the training and validation data streams.

All randomness comes from np.random.default_rng seeded with (seed, purpose, epoch,
shard.index), so any shard pass (and so any batch) can be rebuilt on its own: that is
what makes resuming from a DataPosition bit-identical to an uninterrupted run. Length
bucketing (batching.group_batches) draws from the same generator, after the sample
permutation and before masking.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from ernie_sm.contract.errors import DataError
from ernie_sm.contract.filelist import Shard
from ernie_sm.contract.hyperparams import Hyperparameters
from ernie_sm.contract.tasks import KNOWLEDGE_MASKING, Task
from ernie_sm.text.vocab import Vocab
from ernie_sm.training.config import ErnieConfig
from ernie_sm.training.data.batching import Batch, BatchConfig, group_batches, make_batch
from ernie_sm.training.data.masking import TokenIds
from ernie_sm.training.data.shard import ShardLimits, parse_shard

log = logging.getLogger(__name__)

# The purpose goes second in every seed so streams never coincide: SeedSequence treats
# trailing zeros as absent, so (seed, epoch) and (seed, epoch, 0) would be the same seed.
_ORDER, _TRAIN, _VALID = range(3)

_Meta = tuple[int, int, int]  # epoch, shard position in this rank's epoch order, shards in it


@dataclass(frozen=True)
class DataPosition:
    """Where a training stream stands: `batch` batches of the `shard`-th shard of this
    rank's `epoch` order have been consumed. Only meaningful for the same shards, seed,
    batching, rank and world_size."""

    epoch: int = 0
    shard: int = 0
    batch: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, int]) -> DataPosition:
        try:
            return cls(int(data["epoch"]), int(data["shard"]), int(data["batch"]))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"checkpoint data position {data!r} is unusable: {e!r}") from None


@dataclass(frozen=True)
class ReadConfig:
    """How shards become batches, for training and validation alike: the model's sizes
    that bound a sample, the batching and the seed; then what the training stream alone
    uses (in-batch NSP negatives, worker processes, passes at most: None is endless).
    A job builds it once, from its hyperparameters and model config (of_job)."""

    vocab_size: int
    max_seq_len: int
    max_position: int
    type_vocab_size: int
    batch_size: int
    in_tokens: bool
    seed: int = 0
    bucket_window: int = 0
    generate_neg_sample: bool = False
    num_workers: int = 0
    epochs: int | None = None

    @classmethod
    def of_job(cls, hp: Hyperparameters, config: ErnieConfig) -> ReadConfig:
        return cls(
            config.vocab_size,
            hp.max_seq_len,
            config.max_position_embeddings,  # max_position
            config.type_vocab_size,
            hp.batch_size,
            hp.in_tokens,
            hp.random_seed,  # seed
            hp.bucket_window,
            hp.generate_neg_sample,
            hp.num_workers,
            hp.epoch,  # epochs
        )

    def limits(self, task: Task) -> ShardLimits:
        """What a line of the task's shards must fit (shard.parse_shard)."""
        return ShardLimits(
            self.vocab_size, self.max_seq_len, self.max_position, self.type_vocab_size, task
        )

    def batch_config(self, vocab: Vocab, task: Task, negatives: bool = False) -> BatchConfig:
        """How the task's samples are batched; in-batch NSP negatives (`negatives`) belong
        to knowledge masking's sentence pairs only."""
        negatives = negatives and task == KNOWLEDGE_MASKING
        ids = TokenIds.from_vocab(vocab)
        return BatchConfig(
            ids, self.batch_size, self.in_tokens, negatives, task.masked, self.bucket_window
        )


@dataclass(frozen=True, eq=False)
class ShardTask:
    """Everything a worker process needs to turn one shard pass into batches."""

    shard: Shard
    limits: ShardLimits
    config: BatchConfig
    seed: tuple[int, ...]
    shuffle: bool
    skip: int = 0  # leading batches to drop (already consumed before a resume)


@dataclass(frozen=True, eq=False)
class ShardBatches:
    batches: list[Batch]
    skipped: int  # lines over max_seq_len left out of this shard


def load_shard_batches(task: ShardTask) -> ShardBatches:
    """Parse, shuffle, batch and mask one shard pass (runs in a worker process)."""
    shard = parse_shard(task.shard.path, task.limits)
    rng = np.random.default_rng(task.seed)
    word_level = bool(rng.random() < task.shard.mask_word_prob)
    order = rng.permutation(len(shard)) if task.shuffle else np.arange(len(shard))
    groups = group_batches(order, shard.lengths, task.config, rng if task.shuffle else None)
    # Skipped batches are still masked: they advance the rng the later batches use.
    batches = [make_batch(shard, rows, task.config, word_level, rng) for rows in groups]
    return ShardBatches(batches[task.skip :], shard.skipped)


def epoch_shards(
    shards: Sequence[Shard], seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> list[Shard]:
    """This rank's shards for `epoch`: a seeded permutation of all, dealt round-robin."""
    if len(shards) < world_size:
        raise DataError(
            f"{len(shards)} shard(s) cannot be split across {world_size} distributed workers: "
            "every rank needs at least one shard"
        )
    order = np.random.default_rng((seed, _ORDER, epoch)).permutation(len(shards))
    return [shards[i] for i in order[rank::world_size]]


class PretrainingData:
    """The training stream of one rank: shuffled shards, endless unless `epochs` is set;
    batches of similar lengths with bucket_window (batching.group_batches).

    With num_workers > 0 whole shards are prepared in 'spawn' worker processes (the
    trainer holds paddle threads, which fork would copy in a broken state), at most
    2 * num_workers shards ahead, consumed in order so results do not depend on timing.
    """

    def __init__(
        self,
        shards: Sequence[Shard],
        vocab: Vocab,
        read: ReadConfig,
        task: Task = KNOWLEDGE_MASKING,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        epoch_shards(shards, read.seed, 0, rank, world_size)  # fail now if there are too few
        self.shards = list(shards)
        self.limits = read.limits(task)
        self.config = read.batch_config(vocab, task, read.generate_neg_sample)
        self.seed, self.rank, self.world_size = read.seed, rank, world_size
        self.num_workers, self.epochs = read.num_workers, read.epochs
        self._skipped: dict[int, int] = {}  # lines over max_seq_len, by shard index
        self._pool: ProcessPoolExecutor | None = None

    def batches(self, start: DataPosition = DataPosition()) -> Iterator[tuple[Batch, DataPosition]]:
        """Yield each batch with the position after it; resuming there yields the next one.
        The stream ends early once every shard has given a whole pass of no batch before
        any batch came (no line fits max_seq_len): every later pass would give none too."""
        empty: set[int] = set()  # shards a whole pass of which gave no batch
        given = False
        for (epoch, k, n_shards), task, result in self._results(self._tasks(start)):
            self._skipped[task.shard.index] = result.skipped
            _warn_skipped(task.shard, result.skipped, self.limits.max_seq_len)
            given = given or bool(result.batches)
            if not given and task.skip == 0:
                empty.add(task.shard.index)
                if len(empty) == len(self.shards):
                    return
            last = task.skip + len(result.batches)
            for b, batch in enumerate(result.batches, start=task.skip + 1):
                if b < last:
                    yield batch, DataPosition(epoch, k, b)
                elif k + 1 < n_shards:
                    yield batch, DataPosition(epoch, k + 1, 0)
                else:
                    yield batch, DataPosition(epoch + 1, 0, 0)

    @property
    def skipped_over_length(self) -> int:
        """Lines over max_seq_len in the shards read so far, each counted once however many
        passes read its shard."""
        return sum(self._skipped.values())

    def close(self) -> None:
        """Stop the worker processes; queued shards are cancelled, not waited for."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> PretrainingData:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _tasks(self, start: DataPosition) -> Iterator[tuple[_Meta, ShardTask]]:
        for epoch in itertools.count(start.epoch):
            if self.epochs is not None and epoch >= self.epochs:
                return
            shards = epoch_shards(self.shards, self.seed, epoch, self.rank, self.world_size)
            first = start.shard if epoch == start.epoch else 0
            for k in range(first, len(shards)):
                skip = start.batch if (epoch, k) == (start.epoch, start.shard) else 0
                seed = (self.seed, _TRAIN, epoch, shards[k].index)
                task = ShardTask(shards[k], self.limits, self.config, seed, True, skip)
                yield (epoch, k, len(shards)), task

    def _results(
        self, tasks: Iterator[tuple[_Meta, ShardTask]]
    ) -> Iterator[tuple[_Meta, ShardTask, ShardBatches]]:
        """(meta, task, result) in task order, computed inline or by the worker pool."""
        if not self.num_workers:
            for meta, task in tasks:
                yield meta, task, load_shard_batches(task)
            return
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.num_workers, mp_context=context)
        pool = self._pool
        pending: deque[tuple[_Meta, ShardTask, Future]] = deque()

        def submit(n: int) -> None:
            for meta, task in itertools.islice(tasks, n):
                pending.append((meta, task, pool.submit(load_shard_batches, task)))

        try:
            submit(2 * self.num_workers)
            while pending:
                meta, task, future = pending.popleft()
                submit(1)  # keep the pool busy while this result is consumed
                yield meta, task, future.result()
        finally:  # an abandoned stream must not leave shards queued in the pool
            for _, _, future in pending:
                future.cancel()


def validation_batches(
    shards: Sequence[Shard], vocab: Vocab, read: ReadConfig, task: Task = KNOWLEDGE_MASKING
) -> Iterator[Batch]:
    """One pass in filelist order, unshuffled, with masks fixed by `read.seed`, so every
    validation pass scores the same inputs (no in-batch negatives, no workers). With
    bucket_window, samples are sorted by length within windows as in training (less
    padding to compute every validation), and the batches stay in that order: the losses
    are sums over all samples either way."""
    limits, config = read.limits(task), read.batch_config(vocab, task)
    for shard in shards:
        result = load_shard_batches(
            ShardTask(shard, limits, config, (read.seed, _VALID, shard.index), shuffle=False)
        )
        _warn_skipped(shard, result.skipped, read.max_seq_len)
        yield from result.batches


# (shard, max_seq_len) whose over-long lines were told: once a process, not once a pass.
_TOLD: set[tuple[str, int]] = set()


def _warn_skipped(shard: Shard, skipped: int, max_seq_len: int) -> None:
    if skipped and (str(shard.path), max_seq_len) not in _TOLD:
        _TOLD.add((str(shard.path), max_seq_len))
        log.warning(
            "shard %s: skipped %d line(s) longer than max_seq_len %d",
            shard.path,
            skipped,
            max_seq_len,
        )
