"""`ernie-sm demo`: a tiny ERNIE trained on CPU on the synthetic corpus, through the real entrypoint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from training import layout, synthetic

HYPERPARAMETERS = {
    "ernie_config_path": "ernie-tiny",
    "max_seq_len": "128",
    "batch_size": "4096",
    "learning_rate": "0.001",
    "warmup_steps": "30",
    "num_train_steps": "300",
    "skip_steps": "20",
    "validation_steps": "100",
    "save_steps": "100",
    "num_workers": "1",
}


def run(folder: Path) -> int:
    """Lay out a SageMaker job under `folder` and run `ernie-sm train` on it as the image would."""
    base = folder.resolve() / "opt" / "ml"
    shutil.rmtree(base, ignore_errors=True)
    data = base / "input" / "data"
    synthetic.write_dataset(data / layout.TRAIN, data / layout.VALID)
    layout.write_local_job(base, HYPERPARAMETERS, [layout.TRAIN, layout.VALID])
    print(f"demo job laid out under {base}; training a tiny ERNIE on the CPU", flush=True)
    env = {**os.environ, layout.BASE_DIR_ENV: str(base)}
    status = subprocess.call([sys.executable, "-m", "training.cli", "train"], env=env)
    if status == 0:
        model = base / "model"
        print(f"\ndemo done: the model is in {model}", flush=True)
        for path in sorted(model.rglob("*")):
            if path.is_file():
                print(f"  {path.relative_to(model)}  ({path.stat().st_size:,} bytes)")
        print(f"checkpoints: {base / 'checkpoints'}")
    return status
