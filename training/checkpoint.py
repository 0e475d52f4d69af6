"""Checkpoints that a restarted job (spot interruption, retry) resumes from.

Each checkpoint is a folder `step_<N>` written under a temporary name and renamed
into place, with `manifest.json` (file sizes) written last: SageMaker syncs the
folder to S3 file by file, so a restore may bring back a torn copy, and only a
folder whose files match its manifest counts as complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paddle

log = logging.getLogger(__name__)

NAME = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"
MODEL_FILE, TRAINER_FILE, META_FILE = "model.pdparams", "trainer.pdopt", "meta.json"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    model: dict[str, Any]
    trainer: dict[str, Any]  # optimizer (with its LR schedule) and loss-scaler states
    meta: dict[str, Any]  # step, data position and anything else JSON can hold


class CheckpointManager:
    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = directory
        self.keep = keep

    def save(self, step: int, model: dict, trainer: dict, meta: dict) -> Path:
        """Write a checkpoint atomically and drop all but the newest `keep`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"step_{step:09d}"
        tmp = self.directory / f".tmp-step_{step:09d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        paddle.save(model, str(tmp / MODEL_FILE))
        paddle.save(trainer, str(tmp / TRAINER_FILE))
        (tmp / META_FILE).write_text(json.dumps({**meta, "step": step}, indent=2))
        sizes = {p.name: p.stat().st_size for p in tmp.iterdir()}
        _fsync_files(tmp)
        (tmp / MANIFEST).write_text(json.dumps(sizes))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self._prune()
        log.info("saved checkpoint %s", final)
        return final

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if NAME.match(p.name) and _is_complete(p)]
        return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))

    def load_latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, or None for a fresh start."""
        for path in reversed(self.complete()):
            meta = json.loads((path / META_FILE).read_text())
            return Checkpoint(
                path=path,
                model=paddle.load(str(path / MODEL_FILE)),
                trainer=paddle.load(str(path / TRAINER_FILE)),
                meta=meta,
            )
        return None

    def _prune(self) -> None:
        for path in self.complete()[: -self.keep]:
            shutil.rmtree(path, ignore_errors=True)
        for path in self.directory.glob(".tmp-step_*"):  # left by a killed writer
            if not path.name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(path, ignore_errors=True)


def _is_complete(path: Path) -> bool:
    try:
        sizes = json.loads((path / MANIFEST).read_text())
        return all((path / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError):
        log.warning("ignoring incomplete checkpoint %s", path)
        return False


def _fsync_files(folder: Path) -> None:
    for p in folder.iterdir():
        with p.open("rb") as f:
            os.fsync(f.fileno())


def rename_optimizer_state(state: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """Rename the parameters an optimizer state refers to.

    Paddle keys accumulators by the parameter's unique name (`linear_3.w_0_moment1_0`),
    which depends on how many layers the process built before; checkpoints store them
    by structured name (`ernie.pooler.weight`) so that any process can load them.
    """
    by_length = sorted(names, key=len, reverse=True)

    def rename(key: str) -> str:
        for old in by_length:
            if key == old or key.startswith(old + "_"):
                return names[old] + key[len(old) :]
        return key

    renamed = {}
    for key, value in state.items():
        if key == "master_weights":
            value = {rename(k): v for k, v in value.items()}
        renamed[key if key == "LR_Scheduler" else rename(key)] = value
    return renamed
