"""Reader throughput on an ERNIE shard: read + parse + mask + batch, in tokens/s.

    python benchmarks/bench_reader.py [--workers N] [--passes P] [--filelist F --vocab V]

By default the shard is the demo corpus prepared with the ERNIE 1.0 vocab into 6,000
lines of up to 128 tokens, like the original release's demo shard; --filelist reads any
filelist instead (e.g. `data/valid_filelist` of PaddlePaddle/ERNIE, with --vocab ernie-1.0).

Prints the single-process rate (one core) with and without length bucketing, the rate
through PretrainingData with N worker processes, and a naive per-line Python parse
(parse only) for comparison; beside each batching rate, the padding efficiency: real
tokens over the padded tokens the model computes on.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from demo_data import demo_dataset  # benchmarks/demo_data.py
from ernie_sm.contract import hyperparams, presets
from ernie_sm.text.vocab import Vocab, load_vocab
from ernie_sm.training.data import (
    Batch,
    BatchConfig,
    PretrainingData,
    ReadConfig,
    Shard,
    ShardLimits,
    ShardTask,
    TokenIds,
    load_shard_batches,
    read_filelist,
)

T = TypeVar("T")
LIMITS = ShardLimits(vocab_size=18000, max_seq_len=512, max_position=513, type_vocab_size=2)


def naive_parse(path: Path) -> int:
    """The original reader's approach: int() on every value of every line."""
    tokens = 0
    with gzip.open(path, "rt") as f:
        for line in f:
            fields = [[int(v) for v in field.split()] for field in line.split(";")]
            tokens += len(fields[0])
    return tokens


def rate(tokens: int, seconds: list[float]) -> str:
    return (
        f"median {tokens / statistics.median(seconds) / 1e6:.2f} M tokens/s, "
        f"best {tokens / min(seconds) / 1e6:.2f} M tokens/s over {len(seconds)} passes"
    )


def padding(batches: list[Batch]) -> str:
    real = sum(batch.num_tokens for batch in batches)
    return f"padding efficiency {real / sum(batch.src_ids.size for batch in batches):.3f}"


def timed(fn: Callable[..., T], *args: object) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filelist", type=Path, help="shards to read (default: demo data)")
    parser.add_argument("--vocab", default="ernie-1.0", help="vocab file or preset")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8192, help="padded tokens a batch")
    parser.add_argument(
        "--bucket-window",
        type=int,
        default=int(hyperparams.SPECS["bucket_window"].default),
        help="length bucketing window in batches (0: the original order)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        filelist = args.filelist or demo_dataset(Path(folder), 2.5, 128, 6000) / "train_filelist"
        shard = read_filelist(filelist)[0]
        vocab = load_vocab(presets.locate(args.vocab, Path.cwd(), presets.VOCABS, "--vocab"))
        measure(shard, vocab, args)


def measure(shard: Shard, vocab: Vocab, args: argparse.Namespace) -> None:
    ids = TokenIds.from_vocab(vocab)
    for window in dict.fromkeys((args.bucket_window, 0)):
        config = BatchConfig(ids, args.batch_size, in_tokens=True, bucket_window=window)
        times, tokens, batches = [], 0, []
        for seed in range(args.passes + 1):  # the first pass warms caches, not counted
            task = ShardTask(shard, LIMITS, config, (seed,), shuffle=True)
            seconds, result = timed(load_shard_batches, task)
            tokens = sum(batch.num_tokens for batch in result.batches)
            times += [seconds] if seed else []
            batches += result.batches if seed else []
        print(
            f"single process, read+parse+mask+batch, bucket_window {window}: "
            f"{rate(tokens, times)}, {padding(batches)}"
        )

    naive = [timed(naive_parse, shard.path)[0] for _ in range(2)]
    print(f"naive per-line Python, parse only:     {rate(tokens, naive)}")

    with tempfile.TemporaryDirectory() as folder:
        copies = max(args.passes, 2 * args.workers)
        filelist = Path(folder) / "filelist"
        filelist.write_text(f"{shard.path.resolve()}\t{shard.mask_word_prob}\n" * copies)
        shards = read_filelist(filelist)
        options = dict(batch_size=args.batch_size, in_tokens=True, seed=0, epochs=1)
        read = ReadConfig(
            LIMITS.vocab_size,
            LIMITS.max_seq_len,
            LIMITS.max_position,
            LIMITS.type_vocab_size,
            **options,
            num_workers=args.workers,
            bucket_window=args.bucket_window,
        )
        with PretrainingData(shards, vocab, read) as data:
            # The first pass starts the worker processes; the second shows the steady rate.
            for label in ("cold (incl. worker start-up)", "warm"):
                seconds, batches = timed(lambda: [b for b, _ in data.batches()])
                total = sum(b.num_tokens for b in batches)
                print(
                    f"PretrainingData, {args.workers} worker process(es), {copies} shards, "
                    f"bucket_window {args.bucket_window}, {label}: "
                    f"{total / seconds / 1e6:.2f} M tokens/s, {padding(batches)}"
                )


if __name__ == "__main__":
    main()
