"""Benchmark data made from the demo corpus: the benchmarks read nothing outside the repository.

The corpus is repeated (documents shuffled, so that no chunk repeats another) to the size
asked for, and prepared with the bundled ERNIE 1.0 vocab into the original shard format.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from ernie_sm.dataprep.prepare import PrepareOptions, prepare
from rich.console import Console

DEMO = Path(__file__).resolve().parents[1] / "demo"


def demo_text(path: Path, megabytes: float) -> int:
    """Write the demo corpus, repeated to `megabytes` of text, to path; returns its size."""
    blocks = [
        b for f in sorted((DEMO / "corpus").glob("*.txt")) for b in f.read_text().split("\n\n")
    ]
    rng = random.Random(0)
    out, size = [], 0
    while size < megabytes * 1e6:
        rng.shuffle(blocks)
        out += blocks
        size += sum(len(b.encode()) + 2 for b in blocks)
    path.write_text("\n\n".join(out) + "\n", encoding="utf-8")
    return path.stat().st_size


def demo_dataset(folder: Path, megabytes: float, max_seq_len: int, lines_per_shard: int) -> Path:
    """A prepared dataset (train channel only) in folder/dataset: its train/ folder."""
    corpus = folder / "corpus.txt"
    demo_text(corpus, megabytes)
    options = PrepareOptions(
        inputs=[corpus],
        output=folder / "dataset",
        vocab="ernie-1.0",
        dictionaries=[DEMO / "entities.txt"],
        max_seq_len=max_seq_len,
        valid_fraction=0.0,
        lines_per_shard=lines_per_shard,
        workers=os.cpu_count() or 1,
    )
    prepare(options, console=Console(quiet=True))
    return folder / "dataset" / "train"
