import json
from pathlib import Path

import pytest
from ernie_sm.contract.errors import ConfigError
from ernie_sm.training import layout


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


def test_a_long_failure_reason_is_cut_to_what_sagemaker_keeps(tmp_path):
    layout.write_failure(tmp_path, "shard x.gz line 7 is malformed: " + "[1, 2] " * 500_000)
    text = (tmp_path / "failure").read_text(encoding="utf-8")
    assert len(text) == 1025 and text.endswith("\n")  # FailureReason holds 1,024 characters
    assert text.startswith("shard x.gz line 7 is malformed: [1, 2] [1, 2]")
    assert text.rstrip().endswith("cut to 1,024 characters; the job's log has the whole reason]")


def _sagemaker_job(tmp_path: Path, sm_env) -> Path:
    base = sm_env(tmp_path)
    layout.write_local_job(base, {"batch_size": "16"}, ["train"])
    return base / "input" / "config"


@pytest.mark.parametrize(
    "name", ["hyperparameters.json", "resourceconfig.json", "inputdataconfig.json"]
)
def test_config_files_not_utf8_or_unreadable_are_named(tmp_path, sm_env, monkeypatch, name):
    path = _sagemaker_job(tmp_path, sm_env) / name
    path.write_bytes(b'{\n"current_host": "\xe4\xb8"}')
    with pytest.raises(ConfigError, match=f"{path} line 2: bytes .* are not UTF-8"):
        layout.from_environment()
    real_read_bytes = Path.read_bytes

    def refused(self: Path) -> bytes:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refused)
    with pytest.raises(ConfigError, match=f"{path} cannot be read: Permission denied"):
        layout.from_environment()


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("resourceconfig.json", "{", "is not valid JSON"),
        ("resourceconfig.json", "[]", "must hold a JSON object, not []"),
        ("resourceconfig.json", {"current_host": "algo-1"}, '"hosts" must be a non-empty list'),
        ("resourceconfig.json", {"hosts": [], "current_host": "a"}, '"hosts" must be a non-empty'),
        ("resourceconfig.json", {"hosts": ["algo-1", 2]}, '"hosts" must be a non-empty list'),
        (
            "resourceconfig.json",
            {"hosts": ["algo-1"], "current_host": "algo-2"},
            '"current_host" must be one of "hosts" (algo-1), got "algo-2"',
        ),
        ("inputdataconfig.json", '"train"', 'must hold a JSON object, not "train"'),
        ("inputdataconfig.json", {"train": "File"}, "channel 'train' must be a JSON object"),
    ],
)
def test_malformed_sagemaker_config_files_are_named(tmp_path, sm_env, name, content, problem):
    path = _sagemaker_job(tmp_path, sm_env) / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ConfigError) as error:
        layout.from_environment()
    assert str(path) in str(error.value) and problem in str(error.value)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_and_evaluate_outside_a_job_refuse_and_write_nothing(
    command, tmp_path, monkeypatch, capsys
):
    """On a laptop without SAGEMAKER_BASE_DIR, /opt/ml is not there: no failure file is
    written into the host's root; one line says where the command runs and what to do."""
    from ernie_sm.training import evaluate, train

    absent = tmp_path / "opt" / "ml"
    monkeypatch.delenv(layout.BASE_DIR_ENV, raising=False)
    monkeypatch.setattr(layout, "DEFAULT_BASE_DIR", str(absent))
    main = train.main if command == "train" else evaluate.main
    assert main() == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {absent} does not exist: this runs inside a SageMaker job")
    assert "set SAGEMAKER_BASE_DIR" in error and "ernie-sm rehearse" in error
    assert not (tmp_path / "opt").exists()


def test_a_jobs_log_does_not_open_with_paddles_ccache_warning():
    """`import paddle` warns when ccache is missing (as on these machines); the trainer's
    modules import it without that line."""
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "default"}

    def stderr(code: str) -> str:
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return run.stderr

    assert "No ccache found" in stderr("import paddle"), "precondition: a machine without ccache"
    assert "No ccache found" not in stderr("import ernie_sm.training.model, paddle")
