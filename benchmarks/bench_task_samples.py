"""Scaling of `ernie-sm prepare --tasks` in sentences per document: seconds at each size.

A corpus of --documents documents, each one line of N sentences of the demo corpus, is
prepared with ERNIE 2.0's sentence and document tasks (one worker) for each N; the time
per 1k sentences stays flat where the work is linear in the sentences of a document
(it grew with N while sentence_distance listed the far sentences anew per sentence:
0.5/1.9/7.7 s for documents of 2k/4k/8k sentences).

    python benchmarks/bench_task_samples.py [--sentences 2000 4000 8000 16000] [--documents 2]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from demo_data import DEMO  # benchmarks/demo_data.py
from ernie_sm.dataprep.prepare import PrepareOptions, prepare
from ernie_sm.dataprep.task_samples import SAMPLE_TASKS
from rich.console import Console


def demo_sentences() -> list[str]:
    text = " ".join(f.read_text() for f in sorted((DEMO / "corpus").glob("*.txt")))
    return [s for s in re.split(r"(?<=[.!?。！？])\s*", " ".join(text.split())) if s]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, nargs="+", default=[2000, 4000, 8000, 16000])
    parser.add_argument("--documents", type=int, default=2)
    parser.add_argument("--max-seq-len", type=int, default=128)
    args = parser.parse_args()
    pool = demo_sentences()
    print(f"tasks: {', '.join(SAMPLE_TASKS)}; {args.documents} documents of N sentences each")
    with tempfile.TemporaryDirectory() as tmp:

        def timed(n: int) -> tuple[float, int]:
            """Seconds to prepare the documents of n sentences each, and the sentences read."""
            corpus = Path(tmp) / f"corpus-{n}.txt"
            docs = [
                " ".join(pool[(d * 7919 + i) % len(pool)] for i in range(n))
                for d in range(args.documents)
            ]
            corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
            options = PrepareOptions(
                inputs=[corpus],
                output=Path(tmp) / f"out-{n}",
                vocab="ernie-1.0",
                max_seq_len=args.max_seq_len,
                valid_fraction=0.0,
                workers=1,
                tasks=list(SAMPLE_TASKS),
            )
            start = time.perf_counter()
            summary = prepare(options, console=Console(quiet=True))
            return time.perf_counter() - start, summary["sentences"]

        fixed, _ = timed(10)  # vocab, worker start and files: the cost of any corpus
        print(f"fixed cost (documents of 10 sentences): {fixed:.2f} s")
        for n in args.sentences:
            seconds, sentences = timed(n)
            print(
                f"{n:>6} sentences/document: {seconds:6.2f} s, "
                f"{(seconds - fixed) / sentences * 1e3:.3f} s per 1k sentences beyond the "
                f"fixed cost ({sentences} sentences)"
            )


if __name__ == "__main__":
    main()
