"""`ernie-sm demo`: the whole product on the CPU in about two minutes.

Prepares the demo corpus into a dataset and a labelled topic set (once), synthesizes the
stack, and rehearses one execution of its state machine with examples/inputs/demo.json:
validation, job naming, a tiny ERNIE trained by the image's entrypoint, then its
evaluation (`ernie-sm evaluate`: the model and a randomly initialised baseline fine-tuned
on the topics), the model URI and both test scores in the output.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ernie_sm.rehearsal.rehearse import ROOT, rehearse, report

VOCAB_SIZE = 1700  # what the demo corpus can make: its characters alone are 1,625
# ERNIE 2.0's tasks the demo dataset carries besides knowledge masking, for a rehearsal's
# later stages.
TASKS = ["sentence_reordering", "sentence_distance", "token_document_relation"]
INPUT = ROOT / "examples" / "inputs" / "demo.json"


def run(folder: Path, corpus: Path, entities: Path) -> int:
    dataset = folder / "dataset"
    execution_input = json.loads(INPUT.read_text())
    prepare_dataset(
        corpus, entities, dataset, int(execution_input["hyperparameters"]["max_seq_len"])
    )
    folders = {}
    evaluation = execution_input.get("evaluation")
    if evaluation:
        topics = folder / "topics"
        prepare_topics(corpus, topics)
        folders[evaluation["dataset"]] = topics
    print(f"[demo] rehearsing one execution with {INPUT.relative_to(ROOT)}", file=sys.stderr)
    try:
        result = rehearse(
            execution_input, folder / "rehearsal", dataset_dir=dataset, folders=folders
        )
    except KeyboardInterrupt:
        return 130  # the rehearsal stopped what it started and said so
    status = report(result)
    if status == 0:
        output = result["output"]
        print(
            f"[demo] done: the model is {output['model']} "
            f"(S3 is the folder {folder / 'rehearsal' / 'buckets'})"
        )
        if "evaluation" in output:
            for line in scores(output["evaluation"]):
                print(f"[demo] {line}")
    return status


def scores(evaluation: dict) -> list[str]:
    """The evaluation's test scores as they came, pretrained vs baseline, and what the
    difference is; nothing is rounded up or explained away."""
    metrics = {m["MetricName"]: m["Value"] for m in evaluation.get("metrics", [])}
    lines = []
    for model, prefix in (("pretrained", "eval"), ("baseline", "baseline")):
        accuracy, f1 = metrics.get(f"{prefix}_accuracy"), metrics.get(f"{prefix}_f1")
        if accuracy is None:
            lines.append(f"{model:>10}: no test scores reported")
        else:
            f1_text = "n/a" if f1 is None else f"{f1:.3f}"
            lines.append(f"{model:>10}: test accuracy {accuracy:.3f}, macro-F1 {f1_text}")
    if "eval_accuracy" in metrics and "baseline_accuracy" in metrics:
        gain = metrics["eval_accuracy"] - metrics["baseline_accuracy"]
        lines.append(
            f"pretraining changed test accuracy by {gain:+.3f} on a tiny test set "
            f"(the report: {evaluation.get('report')})"
        )
    return lines


def prepare_topics(corpus: Path, topics: Path) -> None:
    """The demo corpus's topics as a labelled set (`ernie-sm prepare-topics`), unless it
    is there already: one <topic>.txt per label."""
    from ernie_sm.dataprep.topics import SPLITS, write_topic_set

    if all((topics / f"{split}.tsv").is_file() for split in SPLITS):
        return
    print(f"[demo] preparing the labelled topic set into {topics}", file=sys.stderr, flush=True)
    write_topic_set(corpus, topics)


def prepare_dataset(corpus: Path, entities: Path, dataset: Path, max_seq_len: int) -> None:
    """The demo corpus as a dataset in `dataset` with TASKS, unless it is there already
    (one prepared before the demo carried them is prepared again)."""
    from ernie_sm.contract.tasks import KNOWLEDGE_MASKING, dataset_tasks
    from ernie_sm.dataprep.prepare import PrepareOptions, prepare

    train = dataset / "train"
    declared = [KNOWLEDGE_MASKING.name, *TASKS]
    if (train / "train_filelist").is_file() and dataset_tasks(train)[1] == declared:
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
        tasks=TASKS,
    )
    start = time.monotonic()
    prepare(options)
    print(f"[demo] prepared in {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
