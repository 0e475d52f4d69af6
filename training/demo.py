"""`ernie-sm demo`: the demo corpus prepared into shards, then a tiny ERNIE trained on the CPU
through the real entrypoint, as the training image would run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from training import layout

HYPERPARAMETERS = {
    "ernie_config_path": "ernie-tiny",
    "max_seq_len": "128",
    "batch_size": "2048",
    "learning_rate": "0.002",
    "warmup_steps": "30",
    "num_train_steps": "300",
    "skip_steps": "20",
    "validation_steps": "100",
    "save_steps": "100",
    "num_workers": "1",
}
VOCAB_SIZE = 3000


def run(folder: Path, corpus: Path, entities: Path) -> int:
    """Prepare the corpus (once), lay out a SageMaker job under `folder` and train on it."""
    dataset = folder / "dataset"
    if not (dataset / "train" / "train_filelist").is_file():
        _prepare(corpus, entities, dataset)
    base = folder.resolve() / "opt" / "ml"
    shutil.rmtree(base, ignore_errors=True)
    for channel in (layout.TRAIN, layout.VALID):
        shutil.copytree(dataset / channel, base / "input" / "data" / channel)
    layout.write_local_job(base, HYPERPARAMETERS, [layout.TRAIN, layout.VALID])
    print(f"demo job laid out under {base}; training a tiny ERNIE on the CPU", flush=True)
    env = {**os.environ, layout.BASE_DIR_ENV: str(base)}
    status = subprocess.call([sys.executable, "-m", "training.cli", "train"], env=env)
    if status == 0:
        _show_outputs(base)
    return status


def _prepare(corpus: Path, entities: Path, dataset: Path) -> None:
    from dataprep.prepare import PrepareOptions, prepare

    print(f"preparing the demo corpus {corpus} into {dataset}", flush=True)
    options = PrepareOptions(
        inputs=[corpus],
        output=dataset,
        vocab_size=VOCAB_SIZE,
        dictionaries=[entities],
        max_seq_len=int(HYPERPARAMETERS["max_seq_len"]),
        valid_fraction=0.1,
        lines_per_shard=50,
        overwrite=True,
    )
    prepare(options)


def _show_outputs(base: Path) -> None:
    model = base / "model"
    print(f"\ndemo done: the model is in {model}", flush=True)
    for path in sorted(model.rglob("*")):
        if path.is_file():
            print(f"  {path.relative_to(model)}  ({path.stat().st_size:,} bytes)")
    print(f"checkpoints: {base / 'checkpoints'}")
