"""An execution input at toy size, for rehearsing any input on a laptop in seconds.

`ernie-sm rehearse --toy` keeps what the input says about the pipeline (dataset, stages
and their tasks, evaluation, warm start, spot, instance type and count, names) and
replaces what makes it big: the model becomes ernie-tiny, training and fine-tuning a few
steps, float32 on the CPU. A model the input warm-starts from (or evaluates as the
baseline) is looked for in the rehearsal's own bucket: under the same key, a randomly
initialised ernie-tiny of the dataset's vocab stands for it there, said so in the log.
"""

from __future__ import annotations

import copy
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ernie_sm.contract.s3_uri import S3_URI_PATTERN

# The sizes of a toy run: seconds per job on two cores.
TRAINING = {
    "ernie_config_path": "ernie-tiny",
    "max_seq_len": "128",
    "batch_size": "1024",
    "num_train_steps": "12",
    "warmup_steps": "2",
    "skip_steps": "4",
    "validation_steps": "6",
    "save_steps": "6",
    "num_workers": "0",
    "use_fp16": "false",
}
STAGE_STEPS = 6  # each stage's `steps`
# What a stage's own hyperparameters may set that is a size (the rest, e.g. its learning
# rate, is the input's).
STAGE_SIZES = ("warmup_steps", "batch_size", "max_seq_len", "use_fp16")
EVALUATION = {
    "num_train_steps": "12",
    "batch_size": "16",
    "max_seq_len": "64",
    "eval_steps": "6",
    "patience": "0",
    "use_cuda": "false",
}


def toy_input(execution_input: dict[str, Any], bucket: str) -> dict[str, Any]:
    """The input at toy size, its model URIs moved into `bucket` (the rehearsal's)."""
    toy = copy.deepcopy(execution_input)
    hyperparameters = {**toy.get("hyperparameters", {}), **TRAINING}
    if toy.get("stages"):
        hyperparameters.pop("num_train_steps")  # stages set their own steps
        for stage in toy["stages"]:
            stage["steps"] = min(int(stage.get("steps", STAGE_STEPS)), STAGE_STEPS)
            own = stage.get("hyperparameters") or {}
            stage["hyperparameters"] = {
                **own,
                **{k: TRAINING[k] for k in STAGE_SIZES if k in own},
            }
            if not stage["hyperparameters"]:
                del stage["hyperparameters"]
    toy["hyperparameters"] = hyperparameters
    if isinstance(toy.get("evaluation"), dict):
        evaluation = toy["evaluation"]
        evaluation["hyperparameters"] = {**evaluation.get("hyperparameters", {}), **EVALUATION}
    for holder, field in _model_fields(toy):
        holder[field] = _in_bucket(holder[field], bucket)
    return toy


def model_keys(toy: dict[str, Any]) -> list[str]:
    """The bucket keys of the models the toy input reads (warm start, baseline)."""
    return [S3_URI_PATTERN.fullmatch(h[f]).group(2) for h, f in _model_fields(toy)]


def stage_toy_model(vocab: Path, archive: Path) -> None:
    """A randomly initialised ernie-tiny of `vocab`, packed as a job's model.tar.gz."""
    import paddle
    from ernie_sm.text.vocab import load_vocab
    from ernie_sm.training.config import load_config
    from ernie_sm.training.export import export_model
    from ernie_sm.training.model import ErnieForPretraining

    tokens = load_vocab(vocab)
    paddle.seed(0)
    config = load_config("ernie-tiny", vocab.parent, len(tokens))
    with tempfile.TemporaryDirectory() as tmp:
        export_model(ErnieForPretraining(config, tokens.pad_id), config, vocab, Path(tmp))
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(Path(tmp).iterdir()):
                tar.add(path, arcname=path.name)
    print(
        f"[rehearsal] toy size: {archive} is a randomly initialised ernie-tiny, standing "
        "for the model the input names",
        file=sys.stderr,
    )


def _model_fields(toy: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    found: list[tuple[dict[str, Any], str]] = []
    if isinstance(toy.get("warm_start_model"), str):
        found.append((toy, "warm_start_model"))
    evaluation = toy.get("evaluation")
    if isinstance(evaluation, dict) and isinstance(evaluation.get("baseline_model"), str):
        found.append((evaluation, "baseline_model"))
    return [(h, f) for h, f in found if S3_URI_PATTERN.fullmatch(h[f])]


def _in_bucket(uri: str, bucket: str) -> str:
    match = S3_URI_PATTERN.fullmatch(uri)
    return f"s3://{bucket}/{match.group(2)}" if match else uri
