"""Throughput of `ernie-sm prepare`, end to end, in MB of raw text per second.

The demo corpus is repeated (documents shuffled, so that no chunk repeats another) to
--megabytes of text and prepared with 1..--workers worker processes; the figure per
worker shows how near to linear the scaling is.

    python benchmarks/bench_prepare.py [--megabytes 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from demo_data import DEMO, demo_text  # benchmarks/demo_data.py
from ernie_sm.dataprep.prepare import PrepareOptions, prepare
from rich.console import Console


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        size = demo_text(corpus, args.megabytes)
        print(f"corpus: {size / 1e6:.1f} MB of text")
        for workers in range(1, args.workers + 1):
            options = PrepareOptions(
                inputs=[corpus],
                output=Path(tmp) / f"out-{workers}",
                vocab="ernie-1.0",
                dictionaries=[DEMO / "entities.txt"],
                workers=workers,
            )
            start = time.perf_counter()
            prepare(options, console=Console(quiet=True))
            rate = size / 1e6 / (time.perf_counter() - start)
            print(f"{workers} worker(s): {rate:.2f} MB/s, {rate / workers:.2f} MB/s per worker")


if __name__ == "__main__":
    main()
