import json

import numpy as np
import paddle

from training.checkpoint import CheckpointManager


def _state(value: float) -> dict:
    return {"w": paddle.to_tensor(np.full([3], value, dtype="float32"))}


def test_save_load_latest_and_keep_last_k(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 30):
        manager.save(step, _state(step), {"optimizer": {"lr": step}}, {"position": {"epoch": 0}})
    assert [p.name for p in manager.complete()] == ["step_000000020", "step_000000030"]
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
