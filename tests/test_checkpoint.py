import json
import logging
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest
from ernie_sm.training.checkpoint import CheckpointManager


def _state(value: float) -> dict:
    return {"w": paddle.to_tensor(np.full([3], value, dtype="float32"))}


def test_save_load_latest_and_keep_last_k(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 30):
        manager.save(step, _state(step), {"optimizer": {"lr": step}}, {"position": {"epoch": 0}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000020", "step_000000030"]
    latest = manager.load_latest()
    assert latest.meta["step"] == 30 and latest.trainer["optimizer"]["lr"] == 30
    assert np.all(np.asarray(latest.model["w"]) == 30)


def test_torn_and_half_written_checkpoints_are_skipped(tmp_path):
    manager = CheckpointManager(tmp_path, keep=5)
    manager.save(10, _state(1), {}, {})
    newest = manager.save(20, _state(2), {}, {})
    # A torn S3 restore: a file shorter than the manifest says.
    with (newest / "model.pdparams").open("r+b") as f:
        f.truncate(5)
    # A writer killed before the rename.
    (tmp_path / ".tmp-step_000000030-1").mkdir()
    assert manager.load_latest().meta["step"] == 10
    no_manifest = tmp_path / "step_000000040"
    no_manifest.mkdir()
    (no_manifest / "meta.json").write_text(json.dumps({"step": 40}))
    assert manager.load_latest().meta["step"] == 10
    manager.save(50, _state(5), {}, {})
    assert not (tmp_path / ".tmp-step_000000030-1").exists()


def test_empty_or_missing_directory_means_fresh_start(tmp_path):
    assert CheckpointManager(tmp_path / "none", keep=1).load_latest() is None


def _zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


DAMAGES = {
    "zeroed weights": (lambda c: _zero(c / "model.pdparams"), "model.pdparams does not match"),
    "torn meta": (lambda c: (c / "meta.json").write_text("{" * 20), "meta.json has 20 bytes"),
    "garbage meta": (
        lambda c: (c / "meta.json").write_text("x" * (c / "meta.json").stat().st_size),
        "meta.json does not match the SHA-256",
    ),
    "missing file": (lambda c: (c / "trainer.pdopt").unlink(), "trainer.pdopt is missing"),
    "manifest a list": (
        lambda c: (c / "manifest.json").write_text("[1, 2]"),
        "manifest.json does not list",
    ),
    "manifest null": (lambda c: (c / "manifest.json").write_text("null"), "does not list"),
    "manifest short": (
        lambda c: (c / "manifest.json").write_text('{"format": 2, "files": {"meta.json": 5}}'),
        "manifest.json does not list the size and SHA-256 of meta.json, model.pdparams",
    ),
    "manifest not UTF-8": (
        lambda c: (c / "manifest.json").write_bytes(b"\xff{"),
        "manifest.json is unreadable",
    ),
    "no manifest": (lambda c: (c / "manifest.json").unlink(), "no manifest.json"),
}


@pytest.mark.parametrize(("damage", "reason"), DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog, damage, reason):
    manager = CheckpointManager(tmp_path, keep=5)
    manager.save(10, _state(1), {}, {})
    damage(manager.save(20, _state(2), {}, {}))
    with caplog.at_level(logging.WARNING, logger="ernie_sm.training.checkpoint"):
        assert manager.load_latest().meta["step"] == 10
    assert f"skipping checkpoint {tmp_path / 'step_000000020'}: " in caplog.text
    assert reason in caplog.text


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda c: _zero(c / "model.pdparams"), "does not load (ValueError"),
        (lambda c: _zero(c / "meta.json"), "does not load (JSONDecodeError"),
    ],
    ids=["zeroed weights", "zeroed meta"],
)
def test_checkpoints_without_checksums_load_unverified_or_are_skipped(
    tmp_path, caplog, damage, reason
):
    """Earlier versions wrote {file: size}: such a checkpoint is tried, and skipped if it fails."""
    manager = CheckpointManager(tmp_path, keep=5)
    for step in (10, 20):
        folder = manager.save(step, _state(step), {}, {})
        files = json.loads((folder / "manifest.json").read_text())["files"]
        sizes = {name: entry["size"] for name, entry in files.items()}
        (folder / "manifest.json").write_text(json.dumps(sizes))
    with caplog.at_level(logging.WARNING, logger="ernie_sm.training.checkpoint"):
        assert manager.load_latest().meta["step"] == 20
        assert "step_000000020 has no checksums" in caplog.text
        damage(folder)
        assert manager.load_latest().meta["step"] == 10
    assert f"skipping checkpoint {folder}: it {reason}" in caplog.text


def test_a_save_never_yields_to_a_newer_checkpoint_the_run_could_not_resume_from(tmp_path):
    first = CheckpointManager(tmp_path, keep=2)
    first.save(10, _state(1), {}, {})
    _zero(first.save(30, _state(3), {}, {}) / "model.pdparams")
    manager = CheckpointManager(tmp_path, keep=1)  # the restarted job
    assert manager.load_latest().meta["step"] == 10
    manager.save(20, _state(2), {}, {})
    assert [p.name for p in tmp_path.iterdir()] == ["step_000000020"]
    manager.save(30, _state(3), {}, {})
    latest = manager.load_latest()
    assert latest.meta["step"] == 30 and np.all(np.asarray(latest.model["w"]) == 3)


class Killed(BaseException):
    """The process dying in the middle of a removal."""


def test_a_prune_cut_short_is_finished_by_the_next_save(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save(10, _state(1), {}, {})
    manager.save(20, _state(2), {}, {})
    real_rmtree = shutil.rmtree

    def killed_midway(path, ignore_errors=False):
        weights = sorted(Path(path).rglob("*.pdparams"))
        if not weights:  # not a checkpoint's removal
            return real_rmtree(path, ignore_errors=ignore_errors)
        weights[0].unlink()
        raise Killed

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(Killed):
        manager.save(30, _state(3), {}, {})  # pruning step 10 dies half-way
    monkeypatch.undo()
    assert not (tmp_path / "step_000000010").exists()
    assert manager.load_latest().meta["step"] == 30
    manager.save(40, _state(4), {}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000030", "step_000000040"]
