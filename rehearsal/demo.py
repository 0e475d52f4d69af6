"""`ernie-sm demo`: the whole product on the CPU in about a minute.

Prepares the demo corpus into a dataset (once), synthesizes the stack, and rehearses one
execution of its state machine with examples/inputs/demo.json: validation, job naming,
a tiny ERNIE trained by the image's entrypoint, the model URI in the output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ernie_sm.rehearsal.rehearse import ROOT, rehearse, report

VOCAB_SIZE = 1700  # what the demo corpus can make: its characters alone are 1,625
INPUT = ROOT / "examples" / "inputs" / "demo.json"


def run(folder: Path, corpus: Path, entities: Path) -> int:
    dataset = folder / "dataset"
    execution_input = json.loads(INPUT.read_text())
    prepare_dataset(
        corpus, entities, dataset, int(execution_input["hyperparameters"]["max_seq_len"])
    )
    print(f"[demo] rehearsing one execution with {INPUT.relative_to(ROOT)}", file=sys.stderr)
    result = rehearse(execution_input, folder / "rehearsal", dataset_dir=dataset)
    status = report(result)
    if status == 0:
        model = result["output"]["model"]
        print(
            f"[demo] done: the model is {model} (S3 is the folder {folder / 'rehearsal' / 'buckets'})"
        )
    return status


def prepare_dataset(corpus: Path, entities: Path, dataset: Path, max_seq_len: int) -> None:
    """The demo corpus as a dataset in `dataset`, unless it is there already."""
    from ernie_sm.dataprep.prepare import PrepareOptions, prepare

    if (dataset / "train" / "train_filelist").is_file():
        return
    print(f"[demo] preparing the demo corpus {corpus} into {dataset}", file=sys.stderr, flush=True)
    options = PrepareOptions(
        inputs=[corpus],
        output=dataset,
        vocab_size=VOCAB_SIZE,
        dictionaries=[entities],
        max_seq_len=max_seq_len,
        valid_fraction=0.1,
        lines_per_shard=50,
        overwrite=True,
    )
    prepare(options)
