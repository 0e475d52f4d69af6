"""Checkpoints that a restarted job (spot interruption, retry) resumes from.

Each checkpoint is a folder `step_<N>` written under a temporary name and renamed into
place, with `manifest.json` (size and SHA-256 of every file) written last. SageMaker
syncs the folder to S3 file by file and restores it the same way, so a restart may find a
torn or damaged copy: a checkpoint is trusted only when its files match its manifest and
it loads, and a restart resumes from the newest such one, logging why each newer one was
skipped. Manifests of earlier versions hold sizes only; those checkpoints are tried
unverified and skipped if they do not load. Folders are removed by moving them into a
`.deleting-*` folder first, so a removal cut short never leaves a half-deleted `step_<N>`; the
next save finishes it. One process writes a folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paddle

log = logging.getLogger(__name__)

NAME = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 2  # {"format": 2, "files": {name: {"size": int, "sha256": hex}}}
MODEL_FILE, TRAINER_FILE, META_FILE = "model.pdparams", "trainer.pdopt", "meta.json"
FILES = frozenset((MODEL_FILE, TRAINER_FILE, META_FILE))
LEFTOVERS = (".tmp-step_*", ".deleting-*")  # a save or removal that was cut short
SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
        for pattern in LEFTOVERS:
            for path in self.directory.glob(pattern):
                shutil.rmtree(path, ignore_errors=True)
        final = self.directory / f"step_{step:09d}"
        tmp = self.directory / f".tmp-step_{step:09d}-{os.getpid()}"
        tmp.mkdir()
        paddle.save(model, str(tmp / MODEL_FILE))
        paddle.save(trainer, str(tmp / TRAINER_FILE))
        (tmp / META_FILE).write_text(json.dumps({**meta, "step": step}, indent=2))
        files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in tmp.iterdir()}
        _fsync_files(tmp)
        (tmp / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}))
        if final.exists():  # a damaged one, skipped when the run resumed
            self._remove(final)
        os.replace(tmp, final)
        self._prune(step)
        log.info("saved checkpoint %s", final)
        return final

    def load_latest(
        self, check: Callable[[Checkpoint], str | None] | None = None
    ) -> Checkpoint | None:
        """The newest checkpoint that verifies, loads and passes `check` (what keeps a loaded
        one from being resumed from, or None), or None for a fresh start."""
        for path in reversed(self._folders()):
            problem = _problem(path)
            if problem is None:
                try:
                    checkpoint = _load(path)
                except Exception as exc:  # a damaged pickle raises whatever the unpickler meets
                    problem = f"it does not load ({type(exc).__name__}: {exc})"
                else:
                    problem = check(checkpoint) if check else None
                    if problem is None:
                        return checkpoint
            log.warning("skipping checkpoint %s: %s", path, problem)
        return None

    def _folders(self) -> list[Path]:
        """Every `step_<N>` folder, whatever its state, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if NAME.match(p.name) and p.is_dir()]
        return sorted(found, key=_step)

    def _prune(self, step: int) -> None:
        """Keep the newest `keep` up to `step`: any newer one is one the run could not resume from."""
        folders = self._folders()
        kept = [p for p in folders if _step(p) <= step][-self.keep :]
        for path in folders:
            if path not in kept:
                self._remove(path)

    def _remove(self, path: Path) -> None:
        doomed = Path(tempfile.mkdtemp(prefix=".deleting-", dir=self.directory))
        os.replace(path, doomed / path.name)  # atomic: gone from step_<N> before any file is
        shutil.rmtree(doomed, ignore_errors=True)


def _step(path: Path) -> int:
    return int(NAME.match(path.name).group(1))


def _problem(path: Path) -> str | None:
    """Why the files of the checkpoint at `path` cannot be trusted, or None."""
    try:
        files = _manifest_files(json.loads((path / MANIFEST).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return f"it has no {MANIFEST} (its save or its restore from S3 was cut short)"
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return f"its {MANIFEST} is unreadable ({exc})"
    if files is None:
        return f"its {MANIFEST} does not list the size and SHA-256 of {', '.join(sorted(FILES))}"
    for name, (size, _) in files.items():  # sizes first: a torn copy fails without hashing
        if not (path / name).is_file():
            return f"{name} is missing"
        if (path / name).stat().st_size != size:
            return f"{name} has {(path / name).stat().st_size} bytes, its manifest says {size}"
    for name, (_, digest) in files.items():
        if digest is not None and _sha256(path / name) != digest:
            return f"{name} does not match the SHA-256 in its manifest"
    if None in (digest for _, digest in files.values()):
        log.warning("checkpoint %s has no checksums (an earlier version saved it)", path)
    return None


def _manifest_files(manifest: object) -> dict[str, tuple[int, str | None]] | None:
    """{file: (size, SHA-256)} from a manifest, SHA-256 None in size-only ones; None if malformed."""
    if not isinstance(manifest, dict):
        return None
    if manifest.get("format") == MANIFEST_FORMAT:
        entries = manifest.get("files")
        if not isinstance(entries, dict) or not all(map(_is_entry, entries.values())):
            return None
        files = {name: (e["size"], e["sha256"]) for name, e in entries.items()}
    elif all(_is_size(size) for size in manifest.values()):  # earlier versions: {file: size}
        files = {name: (size, None) for name, size in manifest.items()}
    else:
        return None
    return files if set(files) == FILES else None


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_entry(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        return False
    return _is_size(entry.get("size")) and SHA256.match(entry["sha256"]) is not None


def _load(path: Path) -> Checkpoint:
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("step") != _step(path):
        raise ValueError(f"{META_FILE} does not hold step {_step(path)}")
    model = paddle.load(str(path / MODEL_FILE))
    trainer = paddle.load(str(path / TRAINER_FILE))
    if not isinstance(model, dict) or not isinstance(trainer, dict):
        raise ValueError(f"{MODEL_FILE} or {TRAINER_FILE} does not hold a state dict")
    return Checkpoint(path=path, model=model, trainer=trainer, meta=meta)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
