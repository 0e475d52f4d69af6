"""The execution input's `evaluation` field and the evaluation job's request
(pipeline/requests.py): what the state machine's "Prepare evaluation" builds."""

from __future__ import annotations

import json
import re

import pytest
from ernie_sm.contract import metrics
from ernie_sm.pipeline import execution_input, handler, sagemaker_api
from ernie_sm.pipeline.execution_input import EvaluationInput, ExecutionInputError
from ernie_sm.pipeline.parsing import parse_input
from ernie_sm.pipeline.requests import evaluation_job_request, training_job_request
from ernie_sm.pipeline.stack_environment import StackEnvironment
from ernie_sm.stacks.training_pipeline import EVALUATION_REQUEST_FIELDS, REQUEST_FIELDS

from tests.test_execution import BUCKET, ENV, ENVIRON, KEY, MODEL, NOW, problems

TRAINED = f"s3://{BUCKET}/models/ernie-run-1-1a2b3c4d-a1-20260301123045/output/model.tar.gz"
EVALUATION = {"dataset": "datasets/topics", "hyperparameters": {"num_train_steps": 50}}


def eval_request(evaluation: dict | None = None, env=ENV, attempt: int = 1, **fields) -> dict:
    inp = parse_input({**fields, "evaluation": evaluation or EVALUATION})
    return evaluation_job_request(inp, env, "run-1", attempt, NOW, TRAINED)


def test_no_evaluation_by_default_and_null_is_none():
    assert parse_input({}).evaluation is None
    assert parse_input({"evaluation": None}).evaluation is None
    assert parse_input({}).to_dict()["evaluation"] is None


def test_evaluation_defaults_and_round_trip():
    inp = parse_input({"instance_type": "ml.g5.12xlarge", "evaluation": {"dataset": "datasets/t"}})
    assert inp.evaluation == EvaluationInput(
        dataset="datasets/t",
        hyperparameters={},
        baseline_model=None,
        instance_type="ml.g5.12xlarge",  # the training's
        max_runtime_hours=execution_input.DEFAULT_EVAL_RUNTIME_HOURS,
    )
    full = {
        "dataset": "datasets/t/",
        "hyperparameters": {"learning_rate": 0.0001, "use_cuda": False},
        "baseline_model": MODEL,
        "instance_type": "ml.g4dn.xlarge",
        "max_runtime_hours": 2.5,
    }
    inp = parse_input({"evaluation": full})
    assert inp.evaluation.dataset == "datasets/t"
    assert inp.evaluation.hyperparameters == {"learning_rate": "0.0001", "use_cuda": "false"}
    # The normalised field is an input that gives the same (the handler returns it).
    again = parse_input({"evaluation": inp.to_dict()["evaluation"]})
    assert again.evaluation == inp.evaluation
    assert json.loads(json.dumps(inp.to_dict()))["evaluation"]["baseline_model"] == MODEL


@pytest.mark.parametrize(
    ("evaluation", "field", "text"),
    [
        ([], "evaluation", "expected a JSON object or null, got an array"),
        ("datasets/t", "evaluation", "expected a JSON object or null, got string"),
        ({}, "evaluation.dataset", "required"),
        ({"dataset": 3}, "evaluation.dataset", "expected a string, got number 3"),
        ({"dataset": "s3://b/datasets/t"}, "evaluation.dataset", "not an s3:// URI"),
        ({"dataset": "datasets//t"}, "evaluation.dataset", "expected a key prefix"),
        (
            {"dataset": "datasets/t", "hyperparameters": []},
            "evaluation.hyperparameters",
            "expected a JSON object",
        ),
        (
            {"dataset": "datasets/t", "hyperparameters": {"batch_size": "x"}},
            "evaluation.hyperparameters.batch_size",
            "bad value 'x'",
        ),
        (
            {"dataset": "datasets/t", "hyperparameters": {"mask_prob": 0.1}},
            "evaluation.hyperparameters.mask_prob",
            "unknown hyperparameter",
        ),
        (
            {"dataset": "datasets/t", "hyperparameters": {"sagemaker_x": "1"}},
            "evaluation.hyperparameters.sagemaker_x",
            "reserved",
        ),
        (
            {"dataset": "datasets/t", "hyperparameters": {"patience": [1]}},
            "evaluation.hyperparameters.patience",
            "expected a string, number or boolean",
        ),
        (
            {"dataset": "datasets/t", "baseline_model": "s3://b/models/x/"},
            "evaluation.baseline_model",
            "model.tar.gz",
        ),
        ({"dataset": "datasets/t", "baseline_model": 1}, "evaluation.baseline_model", "string"),
        (
            {"dataset": "datasets/t", "instance_type": "ml.g5.2xlarg"},
            "evaluation.instance_type",
            "did you mean ml.g5.2xlarge?",
        ),
        ({"dataset": "datasets/t", "max_runtime_hours": 0}, "evaluation.max_runtime_hours", "> 0"),
        (
            {"dataset": "datasets/t", "max_runtime_hours": 673},
            "evaluation.max_runtime_hours",
            "<= 672",
        ),
        (
            {"dataset": "datasets/t", "max_runtime_hours": "4"},
            "evaluation.max_runtime_hours",
            "got string '4'",
        ),
        ({"dataset": "datasets/t", "datset": "x"}, "evaluation.datset", "did you mean dataset?"),
        ({"dataset": "datasets/t", "zzz": 1}, "evaluation.zzz", "the fields are dataset, hyper"),
    ],
)
def test_bad_evaluation_fields_are_named(evaluation, field, text):
    found = problems({"evaluation": evaluation})
    assert field in found, found
    assert text in found[field]
    assert f"{field}: " in str(ExecutionInputError(found))


def test_evaluation_problems_come_with_the_others():
    found = problems({"instance_count": 0, "evaluation": {"max_runtime_hours": 0}})
    assert set(found) == {"instance_count", "evaluation.dataset", "evaluation.max_runtime_hours"}


def test_what_the_stack_cannot_allow_in_the_evaluation_is_named():
    elsewhere = f"s3://{BUCKET}/checkpoints/x/model.tar.gz"
    with pytest.raises(ExecutionInputError) as caught:
        eval_request({"dataset": "other/t", "baseline_model": elsewhere})
    assert set(caught.value.problems) == {"evaluation.dataset", "evaluation.baseline_model"}
    assert "must be under datasets/" in caught.value.problems["evaluation.dataset"]
    # The training request refuses it too: the execution fails at the first Prepare.
    with pytest.raises(ExecutionInputError, match=r"evaluation\.dataset: "):
        training_job_request(
            parse_input({"evaluation": {"dataset": "other/t"}}), ENV, "run-1", 1, NOW
        )


def test_evaluation_request_runs_evaluate_on_the_trained_model():
    req = eval_request(
        {**EVALUATION, "baseline_model": MODEL, "max_runtime_hours": 2},
        instance_type="ml.m5.xlarge",
        volume_size_gb=30,
        spot=True,
    )
    assert sagemaker_api.check_request(req) == []
    algorithm = req["AlgorithmSpecification"]
    assert algorithm["ContainerArguments"] == ["evaluate"]
    assert algorithm["TrainingImage"] == ENVIRON["IMAGE_URI"]
    assert algorithm["TrainingInputMode"] == "File"
    assert algorithm["MetricDefinitions"] == [dict(d) for d in metrics.EVAL_METRIC_DEFINITIONS]
    channels = {c["ChannelName"]: c for c in req["InputDataConfig"]}
    assert list(channels) == ["model", "eval", "baseline"]
    source = {name: c["DataSource"]["S3DataSource"]["S3Uri"] for name, c in channels.items()}
    assert source == {
        "model": TRAINED,
        "eval": f"s3://{BUCKET}/datasets/topics/",
        "baseline": MODEL,
    }
    assert channels["model"]["ContentType"] == "application/x-sagemaker-model"
    assert channels["baseline"]["ContentType"] == "application/x-sagemaker-model"
    assert req["HyperParameters"] == {"num_train_steps": "50"}
    assert req["ResourceConfig"] == {
        "InstanceType": "ml.m5.xlarge",  # the training's, as the evaluation names none
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
        "VolumeKmsKeyId": KEY,
    }
    assert req["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/models/", "KmsKeyId": KEY}
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert req["EnableManagedSpotTraining"] is False and "CheckpointConfig" not in req
    assert req["EnableNetworkIsolation"] and req["EnableInterContainerTrafficEncryption"]
    tags = {t["Key"]: t["Value"] for t in req["Tags"]}
    assert tags["ExecutionName"] == "run-1" and tags["Dataset"] == "datasets/topics"
    assert "VpcConfig" not in req
    # What the state machine's Evaluate passes on is exactly what the request holds.
    assert set(req) == set(EVALUATION_REQUEST_FIELDS)
    assert set(EVALUATION_REQUEST_FIELDS) < set(REQUEST_FIELDS)


def test_evaluation_job_names_are_marked_fresh_per_attempt_and_within_the_grant():
    first, second = eval_request()["TrainingJobName"], eval_request(attempt=2)["TrainingJobName"]
    assert first.startswith("ernie-eval-run-1-") and "-a1-" in first and "-a2-" in second
    longest = "x" * 30
    env = StackEnvironment.from_environ({**ENVIRON, "NAME_PREFIX": longest})
    inp = parse_input({"evaluation": EVALUATION})
    name = evaluation_job_request(inp, env, "e" * 80, 9, NOW, TRAINED)["TrainingJobName"]
    assert len(name) <= 63 and name.startswith(f"{longest}-eval-")
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", name)


def test_evaluation_request_without_baseline_in_a_vpc_without_a_key():
    env = StackEnvironment.from_environ(
        {
            **{k: v for k, v in ENVIRON.items() if k != "KMS_KEY_ARN"},
            "SUBNETS": "subnet-1",
            "SECURITY_GROUPS": "sg-1",
        }
    )
    req = eval_request(env=env)
    assert [c["ChannelName"] for c in req["InputDataConfig"]] == ["model", "eval"]
    assert req["VpcConfig"] == {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]}
    assert "KmsKeyId" not in req["OutputDataConfig"]
    assert "VolumeKmsKeyId" not in req["ResourceConfig"]


def test_an_input_without_evaluation_has_no_evaluation_request():
    with pytest.raises(ExecutionInputError, match=r"evaluation: "):
        evaluation_job_request(parse_input({}), ENV, "run-1", 1, NOW, TRAINED)


def test_handler_builds_the_evaluation_request_when_given_the_model(monkeypatch):
    for key, value in ENVIRON.items():
        monkeypatch.setenv(key, value)
    event = {"input": {"evaluation": EVALUATION}, "execution": "run-1", "attempt": 2}
    out = handler.handler({**event, "model": TRAINED}, None)
    assert set(out) == {"request", "attempt"} and out["attempt"] == 2
    assert out["request"]["AlgorithmSpecification"]["ContainerArguments"] == ["evaluate"]
    assert out["request"]["InputDataConfig"][1]["DataSource"]["S3DataSource"]["S3Uri"].endswith(
        "/datasets/topics/"
    )
    json.dumps(out)
    # Without the model, the same input gives the training request.
    trained = handler.handler(event, None)["request"]
    assert "ContainerArguments" not in trained["AlgorithmSpecification"]
    with pytest.raises(ValueError, match=r"'model' must be the S3 URI"):
        handler.handler({**event, "model": "models/x"}, None)
    with pytest.raises(ExecutionInputError, match=r"evaluation\.hyperparameters\.batch_size: "):
        bad = {"evaluation": {"dataset": "datasets/t", "hyperparameters": {"batch_size": 0}}}
        handler.handler({**event, "input": bad, "model": TRAINED}, None)
