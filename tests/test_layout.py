from pathlib import Path

import pytest

from training import layout
from training.errors import ConfigError


def test_layout_from_sagemaker_files_via_the_toolkit(tmp_path, sm_env):
    base = sm_env(tmp_path)
    (base / "input" / "data" / "train").mkdir(parents=True)
    layout.write_local_job(base, {"batch_size": "16"}, ["train"])
    job = layout.from_environment()
    assert job.hyperparameters == {"batch_size": "16"}
    assert job.channels["train"] == base / "input" / "data" / "train"
    assert job.model_dir == base / "model" and job.output_dir == base / "output"
    assert (job.hosts, job.current_host, job.num_gpus) == (("algo-1",), "algo-1", 0)
    assert job.checkpoint_dir("") == base / "checkpoints"
    assert job.checkpoint_dir("/ckpt") == Path("/ckpt")
    assert job.checkpoint_dir("ckpt") == base / "ckpt"
    assert job.checkpoint_dir("/opt/ml/checkpoints") == base / "checkpoints"


def test_sm_variables_already_set_win(tmp_path, sm_env, monkeypatch):
    base = sm_env(tmp_path)
    layout.write_local_job(base, {}, ["train"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(elsewhere))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "m"))
    job = layout.from_environment()
    assert job.channel("train") == elsewhere and job.model_dir == tmp_path / "m"


def test_missing_channel_and_bad_config_json_are_named(tmp_path, sm_env):
    base = sm_env(tmp_path)
    job = layout.from_environment()
    with pytest.raises(ConfigError, match="the 'train' channel is missing"):
        job.channel("train")
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"hyperparameters\.json is not valid JSON"):
        layout.from_environment()


def test_failure_file_is_one_paragraph(tmp_path, sm_env):
    sm_env(tmp_path)
    job = layout.from_environment()
    layout.write_failure(job.output_dir, "bad\nthings\n  happened")
    assert (tmp_path / "output" / "failure").read_text() == "bad things happened\n"
