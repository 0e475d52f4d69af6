"""SageMaker's training service played locally (rehearsal/local_sagemaker.py), on a tiny model."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from ernie_sm.pipeline import sagemaker_api
from ernie_sm.pipeline.parsing import parse_input
from ernie_sm.pipeline.requests import training_job_request
from ernie_sm.pipeline.stack_environment import StackEnvironment
from ernie_sm.rehearsal import local_sagemaker
from ernie_sm.rehearsal.local_sagemaker import ResourceInUse, ValidationException, run_training_job

from tests.helpers import TINY_HYPERPARAMETERS, make_job

ENV = StackEnvironment(
    image_uri="local", role_arn="arn:aws:iam::000000000000:role/job", bucket="data"
)
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
LOSS = re.compile(r"\[train\] step=(\d+) .*loss: ([0-9.]+)")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The tiny synthetic train and valid channels (with ernie_config.json), made once."""
    return make_job(tmp_path_factory.mktemp("made")) / "input" / "data"


@pytest.fixture
def buckets(tmp_path, dataset) -> Path:
    """S3 as a folder, holding the dataset where an execution's default input looks."""
    root = tmp_path / "buckets"
    for channel in ("train", "valid"):
        shutil.copytree(dataset / channel, root / "data" / "datasets" / "demo" / channel)
    return root


def request(execution: str = "run-1", attempt: int = 1, **hyperparameters: str) -> dict:
    raw = {"hyperparameters": {**TINY_HYPERPARAMETERS, **hyperparameters}}
    return training_job_request(parse_input(raw), ENV, execution, attempt, NOW)


class Lines(list):
    """What the caller is shown, line by line."""

    def losses(self) -> dict[int, float]:
        found = (LOSS.search(line) for line in self)
        return {int(m.group(1)): float(m.group(2)) for m in found if m}


def run(req: dict, buckets: Path, tmp_path: Path, lines: Lines | None = None) -> dict:
    sink = Lines() if lines is None else lines
    return run_training_job(req, buckets, tmp_path / "jobs", sink.append)


def test_a_job_completes_with_sagemakers_outputs(tmp_path, buckets):
    req, lines = request(), Lines()
    job = run(req, buckets, tmp_path, lines)
    assert job["TrainingJobStatus"] == "Completed", job
    assert job["SecondaryStatus"] == "Completed" and "FailureReason" not in job
    name = req["TrainingJobName"]
    assert job["TrainingJobArn"] == f"arn:aws:sagemaker:local:000000000000:training-job/{name}"
    for field in ("HyperParameters", "RoleArn", "InputDataConfig", "CheckpointConfig"):
        assert job[field] == req[field]
    json.dumps(job)  # what Step Functions passes on must be JSON

    uri = f"s3://data/models/{name}/output/model.tar.gz"
    assert job["ModelArtifacts"] == {"S3ModelArtifacts": uri}
    with tarfile.open(buckets / "data" / "models" / name / "output" / "model.tar.gz") as tar:
        top = {member.split("/")[0] for member in tar.getnames()}
    assert {
        "inference",
        "serving",
        "serving.json",
        "model.pdparams",
        "vocab.txt",
        "ernie_config.json",
    } <= top

    losses = lines.losses()
    assert sorted(losses) == list(range(1, 9))
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert metrics["Training-loss"] == losses[8]
    assert "Validation-loss" in metrics

    base = Path(job["LocalJobDir"])
    assert base == tmp_path / "jobs" / name / "opt" / "ml"
    config = base / "input" / "config"
    hyperparameters = json.loads((config / "hyperparameters.json").read_text())
    assert hyperparameters == req["HyperParameters"] == TINY_HYPERPARAMETERS
    assert all(isinstance(v, str) for v in hyperparameters.values())
    resources = json.loads((config / "resourceconfig.json").read_text())
    assert (resources["current_host"], resources["hosts"]) == ("algo-1", ["algo-1"])
    channels = json.loads((config / "inputdataconfig.json").read_text())
    assert channels["train"]["TrainingInputMode"] == "File"
    assert channels.keys() == {"train", "valid"}
    assert (base / "input" / "data" / "train" / "ernie_config.json").is_file()
    # Checkpoints went to the execution's S3 folder.
    assert any((buckets / "data" / "checkpoints" / "run-1").glob("step_*"))


def test_a_trainer_failure_is_the_jobs_failure_reason(tmp_path, buckets):
    shard = buckets / "data" / "datasets" / "demo" / "train" / "part-00000.gz"
    with gzip.open(shard, "rt") as f:
        rows = f.read().splitlines()
    rows[1] = rows[1].rsplit(";", 1)[0]  # four fields instead of five
    with gzip.open(shard, "wt") as f:
        f.write("\n".join(rows) + "\n")
    job = run(request(), buckets, tmp_path)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Failed", "Failed")
    assert "part-00000.gz line 2" in job["FailureReason"]
    assert "ModelArtifacts" not in job


def test_missing_channel_data_fails_before_the_container_starts(tmp_path, buckets):
    shutil.rmtree(buckets / "data" / "datasets" / "demo" / "valid")
    lines = Lines()
    job = run(request(), buckets, tmp_path, lines)
    assert job["TrainingJobStatus"] == "Failed"
    assert "'valid'" in job["FailureReason"]
    assert "s3://data/datasets/demo/valid/" in job["FailureReason"]
    assert all(line.startswith(local_sagemaker.NOTE) for line in lines)  # no container output
    assert not (tmp_path / "jobs" / job["TrainingJobName"] / "algo-1.log").exists()
    assert not (Path(job["LocalJobDir"]) / "output" / "failure").exists()


def test_a_retried_attempt_resumes_from_the_executions_checkpoints(tmp_path, buckets):
    first = run(request(attempt=1, num_train_steps="4"), buckets, tmp_path)
    assert first["TrainingJobStatus"] == "Completed", first
    lines = Lines()
    second = run(request(attempt=2, num_train_steps="6"), buckets, tmp_path, lines)
    assert second["TrainingJobStatus"] == "Completed", second
    assert second["TrainingJobName"] != first["TrainingJobName"]
    assert any("resumed from" in line and "step_000000004" in line for line in lines)
    assert sorted(lines.losses()) == [5, 6]


def test_an_interrupt_stops_the_job_with_a_checkpoint(tmp_path, buckets):
    lines = Lines()
    before = signal.getsignal(signal.SIGINT)

    def interrupt_at_step_2(line: str) -> None:
        lines.append(line)
        if " [train] step=2 " in line:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C of whoever runs the rehearsal

    req = request(num_train_steps="100000", save_steps="100000", validation_steps="100000")
    job = run_training_job(req, buckets, tmp_path / "jobs", interrupt_at_step_2)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped"), job
    assert signal.getsignal(signal.SIGINT) is before
    assert any("SIGTERM received" in line for line in lines)
    saved = list((buckets / "data" / "checkpoints" / "run-1").glob("step_*"))
    assert len(saved) == 1 and int(saved[0].name.split("_")[1]) >= 2


def test_max_runtime_stops_the_job(tmp_path, buckets):
    req = request(num_train_steps="100000")
    req["StoppingCondition"]["MaxRuntimeInSeconds"] = 1
    job = run(req, buckets, tmp_path)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert "MaxRuntimeExceeded" in job["FailureReason"]


def test_requests_sagemaker_would_refuse(tmp_path, buckets):
    req = request()
    shutil.rmtree(buckets / "data" / "datasets")  # fails fast: no container
    assert run(req, buckets, tmp_path)["TrainingJobStatus"] == "Failed"
    with pytest.raises(ResourceInUse, match="already exists"):
        run(req, buckets, tmp_path)

    no_role = request(attempt=2)
    del no_role["RoleArn"]
    with pytest.raises(ValidationException, match="'roleArn'"):
        run(no_role, buckets, tmp_path)
    assert not (tmp_path / "jobs" / no_role["TrainingJobName"]).exists()  # name not taken

    numbers = {**request(attempt=3), "HyperParameters": {"batch_size": 512}}
    with pytest.raises(ValidationException, match="hyperParameters"):
        run(numbers, buckets, tmp_path)


def _subnets(req: dict, count: int) -> None:
    req["VpcConfig"] = {
        "Subnets": [f"subnet-{i}" for i in range(count)],
        "SecurityGroupIds": ["sg-1"],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda req: req["ResourceConfig"].update(InstanceType="ml.g5.2xlarg"),
            "1 validation error detected: Value 'ml.g5.2xlarg' at 'resourceConfig.instanceType' "
            "failed to satisfy constraint: Member must satisfy enum value set: [ml.m4.xlarge, ",
        ),
        (
            lambda req: req.update(TrainingJobName="a" * 64),
            f"2 validation errors detected: Value '{'a' * 64}' at 'trainingJobName' failed to "
            "satisfy constraint: Member must have length less than or equal to 63; "
            f"Value '{'a' * 64}' at 'trainingJobName' failed to satisfy constraint: Member must "
            "satisfy regular expression pattern: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
        ),
        (
            lambda req: req.update(HyperParameters={"epoch": "1\n"}),
            "1 validation error detected: Value '{epoch=1\n}' at 'hyperParameters' failed to "
            "satisfy constraint: Map value must satisfy constraint: [Member must have length "
            "less than or equal to 2500, Member must have length greater than or equal to 0, "
            "Member must satisfy regular expression pattern: .*]",
        ),
        (
            lambda req: _subnets(req, 17),
            "at 'vpcConfig.subnets' failed to satisfy constraint: Member must have length less "
            "than or equal to 16",
        ),
        (
            lambda req: req["InputDataConfig"][1].update(ChannelName="valid data"),
            "Value 'valid data' at 'inputDataConfig.2.member.channelName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: [A-Za-z0-9\\.\\-_]+",
        ),
        (
            lambda req: req["Tags"][0].update(Value="tab\there"),
            "at 'tags.1.member.value' failed to satisfy constraint: Member must satisfy regular "
            "expression pattern: ([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)",
        ),
        (
            lambda req: req["StoppingCondition"].update(MaxRuntimeInSeconds=0),
            "Value '0' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1",
        ),
        (
            lambda req: req["ResourceConfig"].update(InstanceTyp="ml.g5.2xlarge"),
            "at 'resourceConfig.instanceTyp' failed to satisfy constraint: Member is not in the "
            "CreateTrainingJob model",
        ),
    ],
)
def test_what_the_old_player_took_and_sagemaker_refuses(tmp_path, buckets, change, message):
    req = request()
    change(req)
    with pytest.raises(ValidationException) as refused:
        run(req, buckets, tmp_path)
    assert message in str(refused.value)
    assert not (tmp_path / "jobs" / req["TrainingJobName"]).exists()  # no job, name not taken


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda req: req["InputDataConfig"][0]["DataSource"]["S3DataSource"].update(
                S3DataType="ManifestFile"
            ),
            "channel 'train': the local SageMaker plays only S3DataSource channels",
        ),
        (
            lambda req: req["CheckpointConfig"].update(LocalPath="/tmp/checkpoints"),
            "relocates only folders under /opt/ml/",
        ),
        (
            lambda req: req["OutputDataConfig"].update(S3OutputPath="https://data/models/"),
            "maps only s3://bucket/key URIs",
        ),
        (lambda req: req.pop("StoppingCondition"), "plays only requests with StoppingCondition"),
        (
            lambda req: req["InputDataConfig"][1].update(ChannelName="train"),
            "Channel names must be unique",
        ),
        (
            lambda req: req["AlgorithmSpecification"].update(ContainerEntrypoint=["python3"]),
            "plays only the image's own entrypoint, ['ernie-sm']",
        ),
    ],
)
def test_what_sagemaker_takes_but_the_local_player_cannot_play(tmp_path, buckets, change, message):
    req = request()
    change(req)
    assert sagemaker_api.check_request(req) == []
    with pytest.raises(ValidationException, match="1 validation error detected: ") as refused:
        run(req, buckets, tmp_path)
    assert message in str(refused.value)


def test_channels_hold_what_the_s3_uri_selects(tmp_path):
    bucket = tmp_path / "buckets" / "data"
    for key in ("models/job-1/output/model.tar.gz", "ds/train/a.gz", "ds/train/sub/b.gz"):
        (bucket / key).parent.mkdir(parents=True, exist_ok=True)
        (bucket / key).write_text(key)
    (bucket / "ds" / "train2").mkdir()
    (bucket / "ds" / "train2" / "c.gz").write_text("c")

    def channel(uri: str) -> dict[str, str]:
        return dict(local_sagemaker._objects(tmp_path / "buckets", uri))

    # A whole key (the warm-start model channel) is that one object, by its base name.
    assert channel("s3://data/models/job-1/output/model.tar.gz").keys() == {"model.tar.gz"}
    assert channel("s3://data/ds/train/").keys() == {"a.gz", "sub/b.gz"}
    # A prefix is a prefix of keys, not a folder: as in S3.
    assert channel("s3://data/ds/train").keys() == {"train/a.gz", "train/sub/b.gz", "train2/c.gz"}
    assert channel("s3://data/nothing/") == {}
    assert local_sagemaker.s3_path(tmp_path, "s3://data/a/b") == tmp_path / "data" / "a" / "b"
    with pytest.raises(ValueError):
        local_sagemaker.s3_path(tmp_path, "s3://data/../etc")


def test_container_arguments_replace_train_as_sagemaker_passes_them(tmp_path, buckets):
    req = request()
    req["AlgorithmSpecification"]["ContainerArguments"] = ["hyperparameters"]
    lines = Lines()
    job = run(req, buckets, tmp_path, lines)
    assert job["TrainingJobStatus"] == "Completed"  # `ernie-sm hyperparameters` ran, not train
    assert any("played by `python -m ernie_sm.cli hyperparameters`" in line for line in lines)
    assert any(line.startswith("learning_rate ") for line in lines) and not lines.losses()
