"""Contract 1: execution input -> CreateTrainingJob request (pipeline/)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from ernie_sm.contract import channels, hyperparams, metrics
from ernie_sm.contract.errors import TrainingError
from ernie_sm.pipeline import (
    execution_input,
    handler,
    limits,
    naming,
    requests,
    sagemaker_api,
    stack_environment,
)
from ernie_sm.pipeline.execution_input import ExecutionInput, ExecutionInputError
from ernie_sm.pipeline.naming import job_name
from ernie_sm.pipeline.parsing import parse_input
from ernie_sm.pipeline.requests import training_job_request
from ernie_sm.pipeline.stack_environment import StackEnvironment
from ernie_sm.training import layout

NOW = datetime(2026, 3, 1, 12, 30, 45, tzinfo=timezone.utc)
BUCKET = "ernie-data-123456789012"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ENVIRON = {
    "IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ernie:latest",
    "ROLE_ARN": "arn:aws:iam::123456789012:role/ernie-training",
    "BUCKET": BUCKET,
    "KMS_KEY_ARN": KEY,
}
ENV = StackEnvironment.from_environ(ENVIRON)
NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")  # fullmatch
MODEL = f"s3://{BUCKET}/models/ernie-old-1a2b3c4d-a1-20260101000000/output/model.tar.gz"


def request(raw: object = None, execution_name: str = "run-1", attempt: int = 1, env=ENV):
    return training_job_request(parse_input(raw or {}), env, execution_name, attempt, NOW)


def problems(raw: object) -> dict[str, str]:
    with pytest.raises(ExecutionInputError) as caught:
        parse_input(raw)
    return caught.value.problems


# --- defaults -----------------------------------------------------------------------


def test_empty_input_gives_the_default_request():
    req = request({})
    assert req["TrainingJobName"] == "ernie-run-1-" + naming._digest("run-1") + (
        "-a1-20260301123045"
    )
    assert req["AlgorithmSpecification"] == {
        "TrainingImage": ENVIRON["IMAGE_URI"],
        "TrainingInputMode": "File",
        "MetricDefinitions": list(metrics.METRIC_DEFINITIONS),
    }
    assert req["RoleArn"] == ENVIRON["ROLE_ARN"]
    assert req["HyperParameters"] == {}
    assert [c["ChannelName"] for c in req["InputDataConfig"]] == ["train", "valid"]
    train, valid = (c["DataSource"]["S3DataSource"] for c in req["InputDataConfig"])
    assert train == {
        "S3DataType": "S3Prefix",
        "S3Uri": f"s3://{BUCKET}/datasets/demo/train/",
        "S3DataDistributionType": "FullyReplicated",
    }
    assert valid["S3Uri"] == f"s3://{BUCKET}/datasets/demo/valid/"
    assert req["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/models/", "KmsKeyId": KEY}
    # ml.g5 has NVMe instance storage, where SageMaker refuses VolumeKmsKeyId.
    assert req["ResourceConfig"] == {
        "InstanceType": "ml.g5.2xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 100,
    }
    assert req["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 24 * 3600,
        "MaxWaitTimeInSeconds": 48 * 3600,
    }
    assert req["EnableManagedSpotTraining"] is True
    assert req["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/checkpoints/run-1/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert req["EnableNetworkIsolation"] is True
    assert req["EnableInterContainerTrafficEncryption"] is True
    assert "VpcConfig" not in req
    assert {"Key": "ExecutionName", "Value": "run-1"} in req["Tags"]
    json.dumps(req)  # what the Lambda returns must be JSON


def test_none_is_the_empty_input_and_defaults_match_the_dataclass():
    assert parse_input(None) == parse_input({}) == ExecutionInput()
    assert execution_input.FIELDS == (
        "hyperparameters",
        "dataset",
        "use_validation",
        "instance_type",
        "instance_count",
        "volume_size_gb",
        "spot",
        "max_runtime_hours",
        "max_wait_hours",
        "warm_start_model",
        "job_name_prefix",
        "evaluation",
        "stages",
    )


def test_channel_names_are_the_containers():
    # One definition, contract/channels.py, for the requests and the container.
    names = [c["ChannelName"] for c in request({"warm_start_model": MODEL})["InputDataConfig"]]
    assert names == [channels.TRAIN, channels.VALID, channels.MODEL]
    assert not {"TRAIN", "VALID", "MODEL"} & set(vars(layout))


def test_request_fields_match_the_sagemaker_api_model():
    botocore_session = pytest.importorskip("botocore.session")
    from botocore.validate import ParamValidator

    shape = (
        botocore_session.get_session()
        .get_service_model("sagemaker")
        .operation_model("CreateTrainingJob")
        .input_shape
    )
    env = StackEnvironment(
        **{**ENV.__dict__, "subnets": ("subnet-1a",), "security_groups": ("sg-1",)}
    )
    for raw in (
        {},
        {"spot": False, "use_validation": False, "instance_type": "ml.p3.2xlarge"},
        {"warm_start_model": MODEL, "hyperparameters": {"batch_size": 4096, "use_fp16": True}},
    ):
        req = request(raw, env=env)
        report = ParamValidator().validate(req, shape)
        assert not report.has_errors(), report.generate_report()
        assert sagemaker_api.check_request(req) == []


# --- overrides ------------------------------------------------------------------------


def test_each_field_lands_in_its_request_field():
    req = request(
        {
            "hyperparameters": {"batch_size": 4096, "ernie_config_path": "ernie-tiny"},
            "dataset": "datasets/wiki/",
            "use_validation": False,
            "instance_type": "ml.p3.8xlarge",
            "instance_count": 4,
            "volume_size_gb": 500,
            "spot": True,
            "max_runtime_hours": 1.5,
            "max_wait_hours": 10,
            "warm_start_model": MODEL,
            "job_name_prefix": "ernie-exp1",
        }
    )
    assert req["HyperParameters"] == {"batch_size": "4096", "ernie_config_path": "ernie-tiny"}
    assert [c["ChannelName"] for c in req["InputDataConfig"]] == ["train", "model"]
    train, model = req["InputDataConfig"]
    assert train["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/datasets/wiki/train/"
    assert model["DataSource"]["S3DataSource"] == {
        "S3DataType": "S3Prefix",
        "S3Uri": MODEL,
        "S3DataDistributionType": "FullyReplicated",
    }
    assert req["ResourceConfig"] == {
        "InstanceType": "ml.p3.8xlarge",
        "InstanceCount": 4,
        "VolumeSizeInGB": 500,
        "VolumeKmsKeyId": KEY,  # EBS-only instance: the stack's key encrypts the volume
    }
    assert req["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 5400,
        "MaxWaitTimeInSeconds": 36000,
    }
    assert req["TrainingJobName"].startswith("ernie-exp1-run-1-")
    assert {"Key": "Dataset", "Value": "datasets/wiki"} in req["Tags"]


def test_on_demand_has_no_wait_time():
    req = request({"spot": False, "max_runtime_hours": 2})
    assert req["EnableManagedSpotTraining"] is False
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert parse_input({"spot": False}).max_wait_hours is None
    assert parse_input({"spot": False, "max_wait_hours": None}).max_wait_hours is None


def test_default_wait_is_twice_the_runtime_within_28_days():
    assert parse_input({"max_runtime_hours": 10}).max_wait_hours == 20
    assert parse_input({"max_runtime_hours": 500}).max_wait_hours == 672
    assert parse_input({"max_runtime_hours": 672}).max_wait_seconds == 28 * 24 * 3600
    assert parse_input({"max_wait_hours": None}).max_wait_hours == 48


def test_no_kms_key_means_no_kms_fields():
    env = StackEnvironment.from_environ({k: v for k, v in ENVIRON.items() if k != "KMS_KEY_ARN"})
    req = request({"instance_type": "ml.p3.2xlarge"}, env=env)
    assert "KmsKeyId" not in req["OutputDataConfig"]
    assert "VolumeKmsKeyId" not in req["ResourceConfig"]


@pytest.mark.parametrize(
    ("instance_type", "local"),
    [
        ("ml.g5.2xlarge", True),
        ("ml.g4dn.xlarge", True),
        ("ml.g6e.12xlarge", True),
        ("ml.p3dn.24xlarge", True),
        ("ml.p4d.24xlarge", True),
        ("ml.p5.48xlarge", True),
        ("ml.p6-b200.48xlarge", True),
        ("ml.trn1.32xlarge", True),
        ("ml.r5d.large", True),
        ("ml.p3.2xlarge", False),
        ("ml.p2.xlarge", False),
        ("ml.m5.xlarge", False),
        ("ml.c5n.2xlarge", False),
        ("ml.m7i-flex.large", False),
    ],
)
def test_instance_storage(instance_type, local):
    assert requests.has_local_storage(instance_type) is local


def test_vpc_only_with_subnets():
    env = StackEnvironment.from_environ(
        {**ENVIRON, "SUBNETS": "subnet-a, subnet-b", "SECURITY_GROUPS": "sg-1"}
    )
    assert request(env=env)["VpcConfig"] == {
        "SecurityGroupIds": ["sg-1"],
        "Subnets": ["subnet-a", "subnet-b"],
    }
    with pytest.raises(stack_environment.StackEnvironmentError, match="SECURITY_GROUPS"):
        StackEnvironment.from_environ({**ENVIRON, "SUBNETS": "subnet-a"})


def test_stack_environment_from_environ():
    env = StackEnvironment.from_environ(
        {
            **ENVIRON,
            "NAME_PREFIX": "team-a",
            "OUTPUT_PREFIX": "out/",
            "CHECKPOINT_PREFIX": "ckpt",
            "TAGS": '{"Project": "ernie"}',
        }
    )
    assert (env.name_prefix, env.output_prefix, env.checkpoint_prefix) == ("team-a", "out", "ckpt")
    assert env.subnets == () and env.kms_key_arn == KEY
    req = request(env=env)
    assert req["TrainingJobName"].startswith("team-a-")
    assert req["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/out/"
    assert req["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/ckpt/run-1/"
    assert {"Key": "Project", "Value": "ernie"} in req["Tags"]
    with pytest.raises(stack_environment.StackEnvironmentError, match="IMAGE_URI, BUCKET"):
        StackEnvironment.from_environ({"ROLE_ARN": "x"})
    with pytest.raises(stack_environment.StackEnvironmentError, match="TAGS"):
        StackEnvironment.from_environ({**ENVIRON, "TAGS": "[1]"})


# --- hyperparameters ------------------------------------------------------------------


def test_hyperparameter_values_become_sagemaker_strings():
    inp = parse_input(
        {
            "hyperparameters": {
                "use_fp16": True,
                "weight_sharing": False,
                "learning_rate": 0.0001,
                "batch_size": 8192,
                "warmup_steps": "500",
                "ernie_config_path": "ernie-tiny",
            }
        }
    )
    assert inp.hyperparameters == {
        "use_fp16": "true",
        "weight_sharing": "false",
        "learning_rate": "0.0001",
        "batch_size": "8192",
        "warmup_steps": "500",
        "ernie_config_path": "ernie-tiny",
    }
    assert not hyperparams.validate(inp.hyperparameters)
    parsed = hyperparams.parse(inp.hyperparameters)
    assert parsed.use_fp16 is True and parsed.learning_rate == pytest.approx(1e-4)


def test_bad_and_unknown_hyperparameters_are_named():
    found = problems({"hyperparameters": {"batch_size": "x", "batch_sise": 1, "epoch": [1]}})
    assert found["hyperparameters.batch_size"] == "bad value 'x': expected an integer"
    assert found["hyperparameters.batch_sise"].startswith("unknown hyperparameter")
    assert "did you mean batch_size?" in found["hyperparameters.batch_sise"]
    assert "got an array" in found["hyperparameters.epoch"]
    with pytest.raises(
        ExecutionInputError,
        match=r"hyperparameters\.batch_size: bad value 'x': expected an integer",
    ):
        parse_input({"hyperparameters": {"batch_size": "x"}})


def test_hyperparameter_edge_cases():
    assert "expected a JSON object" in problems({"hyperparameters": [1]})["hyperparameters"]
    assert "null" in problems({"hyperparameters": {"epoch": None}})["hyperparameters.epoch"]
    assert (
        "reserved"
        in problems({"hyperparameters": {"sagemaker_program": "x"}})[
            "hyperparameters.sagemaker_program"
        ]
    )
    assert (
        "expected an integer"
        in problems({"hyperparameters": {"epoch": 2.5}})["hyperparameters.epoch"]
    )
    assert parse_input({"hyperparameters": None}).hyperparameters == {}


@pytest.mark.parametrize("value", ["", "/opt/ml/checkpoints", "./checkpoints", "checkpoints"])
def test_checkpoints_hyperparameter_may_only_name_the_synced_folder(value):
    parse_input({"hyperparameters": {"checkpoints": value}})


@pytest.mark.parametrize(
    ("hyperparameters", "name", "text"),
    [
        ({"ernie_config_path": "ernie-tiny\n"}, "ernie_config_path", "has a line break"),
        ({"vocab_path": "vocab.txt\r"}, "vocab_path", "has a line break"),
        ({"batch_size": "8192\u2028"}, "batch_size", "has a line break"),
        ({"epoch": "3\x85"}, "epoch", "has a line break"),
        (
            {"vocab_path": "v" * 2501},
            "vocab_path",
            "SageMaker refuses the value: Member must have length less than or equal to 2500",
        ),
        (
            {"vocab_path": "😀" * 1251},  # Java counts UTF-16 units: two each
            "vocab_path",
            "less than or equal to 2500",
        ),
        (
            {"k" * 257: "1"},
            "k" * 257,
            "SageMaker refuses the key: Member must have length less than or equal to 256",
        ),
        ({"epoch": 10**5000}, "epoch", "number of 16610 bits is too long"),
        (
            {"random_seed": 2**64},
            "random_seed",
            "expected an integer from 0 to 18446744073709551615",
        ),
    ],
)
def test_hyperparameters_sagemaker_or_the_trainer_would_refuse(hyperparameters, name, text):
    found = problems({"hyperparameters": hyperparameters})
    assert text in found[f"hyperparameters.{name}"]


def test_the_largest_seed_paddle_takes_is_accepted():
    inp = parse_input({"hyperparameters": {"random_seed": 2**64 - 1}})
    assert inp.hyperparameters == {"random_seed": str(2**64 - 1)}
    # 2,500 UTF-16 units, SageMaker's limit, in names of 240 bytes (a file system's is 255).
    longest = "/".join(["😀" * 60] * 20 + ["😀" * 40])
    assert request({"hyperparameters": {"vocab_path": longest}})


def test_checkpoints_elsewhere_would_not_be_synced():
    found = problems({"hyperparameters": {"checkpoints": "/tmp/ckpt"}})
    assert "only that folder is synced" in found["hyperparameters.checkpoints"]


# --- bad fields -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "text"),
    [
        ({"dataset": 3}, "dataset", "expected a string, got number 3"),
        ({"dataset": ""}, "dataset", "expected a key prefix"),
        ({"dataset": "datasets//x"}, "dataset", "expected a key prefix"),
        ({"dataset": "datasets/../x"}, "dataset", "expected a key prefix"),
        ({"dataset": "s3://b/datasets/x"}, "dataset", "not an s3:// URI"),
        ({"dataset": "datasets/x\n"}, "dataset", "expected a key prefix"),
        ({"dataset": "datasets/" + "x" * 504}, "dataset", "up to 512"),
        ({"use_validation": "true"}, "use_validation", "expected true or false, got string"),
        ({"instance_type": "g5.2xlarge"}, "instance_type", "instance type"),
        ({"instance_type": "ml.G5.2xlarge"}, "instance_type", "did you mean ml.g5.2xlarge?"),
        ({"instance_type": "ml.g5.2xlarg"}, "instance_type", "did you mean ml.g5.2xlarge?"),
        ({"instance_type": "ml.p4d.24xlarge\n"}, "instance_type", "did you mean ml.p4d.24xl"),
        ({"instance_type": "ml.g9.huge"}, "instance_type", "not a SageMaker training instance"),
        ({"instance_type": "x"}, "instance_type", "(e.g. ml.g5.2xlarge)"),
        ({"instance_count": 0}, "instance_count", "from 1 to 16, got number 0"),
        ({"instance_count": 17}, "instance_count", "from 1 to 16"),
        ({"instance_count": 1.5}, "instance_count", "from 1 to 16"),
        ({"instance_count": "2"}, "instance_count", "got string '2'"),
        ({"instance_count": True}, "instance_count", "got boolean true"),
        ({"volume_size_gb": 0}, "volume_size_gb", "from 1 to 16384"),
        ({"volume_size_gb": 16385}, "volume_size_gb", "from 1 to 16384"),
        ({"spot": 1}, "spot", "expected true or false, got number 1"),
        ({"spot": None}, "spot", "got null"),
        ({"max_runtime_hours": 0}, "max_runtime_hours", "> 0 and <= 672"),
        ({"max_runtime_hours": -1}, "max_runtime_hours", "> 0"),
        ({"max_runtime_hours": 673}, "max_runtime_hours", "<= 672"),
        ({"max_runtime_hours": float("inf")}, "max_runtime_hours", "> 0"),
        ({"max_runtime_hours": "24"}, "max_runtime_hours", "got string '24'"),
        ({"max_runtime_hours": 1e-5}, "max_runtime_hours", "shorter than one second"),
        ({"max_runtime_hours": 10**400}, "max_runtime_hours", "<= 672, got number 1000"),
        ({"max_runtime_hours": -(10**400)}, "max_runtime_hours", "> 0"),
        ({"max_runtime_hours": float("nan")}, "max_runtime_hours", "got number nan"),
        ({"max_wait_hours": 10**400}, "max_wait_hours", "<= 672"),
        ({"instance_count": 10**400}, "instance_count", "from 1 to 16"),
        ({"volume_size_gb": 10**5000}, "volume_size_gb", "got number of 16610 bits"),
        ({"max_wait_hours": 673}, "max_wait_hours", "<= 672"),
        (
            {"max_runtime_hours": 10, "max_wait_hours": 5},
            "max_wait_hours",
            "5 is less than max_runtime_hours (10)",
        ),
        ({"spot": False, "max_wait_hours": 5}, "max_wait_hours", "only to spot training"),
        ({"warm_start_model": "models/x/model.tar.gz"}, "warm_start_model", "s3://<bucket>"),
        ({"warm_start_model": "s3://b/models/x/"}, "warm_start_model", "model.tar.gz"),
        ({"warm_start_model": "s3://B_ad/model.tar.gz"}, "warm_start_model", "s3://<bucket>"),
        ({"warm_start_model": 1}, "warm_start_model", "expected a string"),
        ({"warm_start_model": MODEL + "\n"}, "warm_start_model", "s3://<bucket>"),
        (
            {"warm_start_model": f"s3://{BUCKET}/models/j\r/model.tar.gz"},
            "warm_start_model",
            "SageMaker refuses it as an S3Uri: Member must satisfy regular expression pattern",
        ),
        (
            {"warm_start_model": f"s3://{BUCKET}/models/{'j/' * 500}model.tar.gz"},
            "warm_start_model",
            "Member must have length less than or equal to 1024",
        ),
        ({"job_name_prefix": ""}, "job_name_prefix", "1 to 30"),
        ({"job_name_prefix": "a" * 31}, "job_name_prefix", "1 to 30"),
        ({"job_name_prefix": "ernie_x"}, "job_name_prefix", "'ernie_x'"),
        ({"job_name_prefix": "-ernie"}, "job_name_prefix", "starting and ending"),
        ({"job_name_prefix": "ernie-"}, "job_name_prefix", "starting and ending"),
        ({"job_name_prefix": "ernie-x\n"}, "job_name_prefix", "starting and ending"),
        ({"job_name_prefix": "ernie\u0663"}, "job_name_prefix", "letters, digits and hyphens"),
        ({"instnce_type": "x"}, "instnce_type", "unknown field (did you mean instance_type?)"),
        ({"spto": True}, "spto", "did you mean spot?"),
        ({"batch_size": 1}, "batch_size", 'put it under "hyperparameters"'),
        ({"zzz": 1}, "zzz", "unknown field (the fields are hyperparameters, dataset"),
    ],
)
def test_bad_fields_are_named(raw, field, text):
    found = problems(raw)
    assert field in found, found
    assert text in found[field]
    assert str(ExecutionInputError(found)).count(f"{field}: ") >= 1


def test_not_an_object():
    assert problems([1]) == {"(input)": "expected a JSON object, got an array"}
    assert "got string" in problems("{}")["(input)"]


def test_several_problems_are_reported_at_once():
    with pytest.raises(ExecutionInputError) as caught:
        parse_input(
            {
                "hyperparameters": {"batch_size": "x"},
                "instance_count": 0,
                "spot": "yes",
                "warm_start_model": "nope",
                "dataset_prefix": "x",
            }
        )
    error = caught.value
    assert set(error.problems) == {
        "hyperparameters.batch_size",
        "instance_count",
        "spot",
        "warm_start_model",
        "dataset_prefix",
    }
    message = str(error)
    assert message.startswith("invalid execution input: ")
    assert message.count("; ") == 4
    for name in error.problems:
        assert f"{name}: " in message
    assert type(error).__name__ == "ExecutionInputError"
    assert isinstance(error, TrainingError)


@pytest.mark.parametrize(
    ("settings", "text"),
    [
        (
            {"SUBNETS": ",".join(f"subnet-{i}" for i in range(17)), "SECURITY_GROUPS": "sg-1"},
            "subnets: Value '[subnet-0, ",
        ),
        (
            {"SUBNETS": "subnet-1", "SECURITY_GROUPS": ",".join(f"sg-{i}" for i in range(6))},
            "at 'vpcConfig.securityGroupIds' failed to satisfy constraint: Member must have "
            "length less than or equal to 5",
        ),
        ({"SUBNETS": "subnet_1", "SECURITY_GROUPS": "sg-1"}, "at 'vpcConfig.subnets'"),
        (
            {"ROLE_ARN": "arn:aws:iam::1234:role/job"},
            "role_arn: Value 'arn:aws:iam::1234:role/job' at 'roleArn' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern",
        ),
        ({"KMS_KEY_ARN": "my key"}, "at 'outputDataConfig.kmsKeyId'"),
        ({"IMAGE_URI": "image\n"}, "at 'algorithmSpecification.trainingImage'"),
        ({"IMAGE_URI": "i" * 256}, "less than or equal to 255"),
        ({"BUCKET": "My_Bucket"}, "bucket: 'My_Bucket' is not an S3 bucket name"),
        ({"OUTPUT_PREFIX": "models//x"}, "output_prefix: 'models//x' is not a key prefix"),
        ({"TAGS": '{"Team\\t": "ml"}'}, "at 'tags.1.member.key'"),
        ({"TAGS": json.dumps({"Team": "v" * 257})}, "at 'tags.1.member.value'"),
        (
            {"TAGS": json.dumps({f"Tag{i}": "x" for i in range(48)})},
            "tags: at most 47 (each job adds ExecutionName, Attempt, Dataset)",
        ),
    ],
)
def test_stack_settings_sagemaker_would_refuse(settings, text):
    with pytest.raises(stack_environment.StackEnvironmentError) as caught:
        StackEnvironment.from_environ({**ENVIRON, **settings})
    assert "SageMaker would refuse the stack's settings" in str(caught.value)
    assert text in str(caught.value)


def test_the_stacks_limits_are_accepted():
    env = StackEnvironment.from_environ(
        {
            **ENVIRON,
            "SUBNETS": ",".join(f"subnet-{i}" for i in range(16)),
            "SECURITY_GROUPS": ",".join(f"sg-{i}" for i in range(5)),
            "TAGS": json.dumps({f"Tag{i}": "x" for i in range(47)} | {"aws:cdk": "dropped"}),
        }
    )
    tags = request(env=env)["Tags"]
    assert len(tags) == 50 and {"Key": "Tag0", "Value": "x"} in tags


def test_tag_values_hold_what_sagemaker_takes_within_its_length():
    tags = request(execution_name="名前\U00020000" * 100 + "!")["Tags"]
    value = next(t["Value"] for t in tags if t["Key"] == "ExecutionName")
    assert value.startswith("名前\U00020000名前") and sagemaker_api.aws_length(value) <= 256
    assert request(execution_name="a b\tc!")["Tags"][0] == {
        "Key": "ExecutionName",
        "Value": "a b_c_",
    }


def test_a_request_the_contract_should_have_refused_is_a_contract_gap():
    unchecked = ExecutionInput(instance_type="ml.g5.2xlarg", hyperparameters={"epoch": "1\n"})
    with pytest.raises(requests.ContractGapError) as caught:
        training_job_request(unchecked, ENV, "run-1", 1, NOW)
    assert not isinstance(caught.value, ExecutionInputError)
    message = str(caught.value)
    assert message.startswith(
        "the CreateTrainingJob request breaks SageMaker's constraints at hyperParameters, "
        "resourceConfig.instanceType, which the execution-input contract should have refused: "
        "2 validation errors detected: Value '{epoch=1\n}' at 'hyperParameters' "
    )


def test_what_the_stack_cannot_allow_is_named_before_a_job_exists():
    with pytest.raises(ExecutionInputError) as caught:
        request(
            {
                "job_name_prefix": "bert",
                "dataset": "data/wiki",
                "warm_start_model": "s3://other-bucket/models/j/output/model.tar.gz",
            }
        )
    found = caught.value.problems
    assert "ernie-*" in found["job_name_prefix"]
    assert "under datasets/" in found["dataset"]
    assert f"s3://{BUCKET}/models/" in found["warm_start_model"]
    with pytest.raises(ExecutionInputError, match="warm_start_model"):
        request({"warm_start_model": f"s3://{BUCKET}/datasets/model.tar.gz"})
    request({"job_name_prefix": "ernie"})  # the stack's own prefix is fine


# --- job names ------------------------------------------------------------------------


def test_job_names_are_valid_deterministic_and_fresh_per_attempt():
    first = job_name("ernie", "run-1", 1, NOW)
    assert first == job_name("ernie", "run-1", 1, NOW)
    assert first != job_name("ernie", "run-1", 2, NOW)
    assert first != job_name("ernie", "run-2", 1, NOW)
    assert first != job_name("ernie", "run-1", 1, NOW + timedelta(seconds=1))
    for name in (first, job_name("ernie", "run-1", 2, NOW)):
        assert len(name) <= 63 and NAME.fullmatch(name)


def test_naive_and_aware_times_agree_in_utc():
    naive = NOW.replace(tzinfo=None)
    other_zone = NOW.astimezone(timezone(timedelta(hours=9)))
    assert job_name("e", "x", 1, naive) == job_name("e", "x", 1, other_zone)
    assert job_name("e", "x", 1, NOW).endswith("-a1-20260301123045")


@pytest.mark.parametrize(
    "execution_name",
    [
        "a" * 80,
        "Ünïcode_名前.run!(1)",
        "---",
        "名前",
        "2026-03-01T12:30:45.123Z_retry=1",
        "x",
    ],
)
def test_odd_and_long_execution_names_are_sanitised(execution_name):
    for prefix in ("ernie", "p" * 30):
        for attempt in (1, 99, 1234567):
            name = job_name(prefix, execution_name, attempt, NOW)
            assert len(name) <= 63, name
            assert NAME.fullmatch(name), name
            assert name.startswith(f"{prefix}-")
    assert job_name("ernie", execution_name, 1, NOW) != job_name(
        "ernie", execution_name + "x", 1, NOW
    )


def test_names_that_sanitise_alike_stay_apart():
    assert job_name("ernie", "a.b", 1, NOW) != job_name("ernie", "a_b", 1, NOW)
    assert naming.execution_key("a.b") != naming.execution_key("a_b")
    assert naming.execution_key("名前") != naming.execution_key("名字")


def test_job_name_rejects_bad_arguments():
    with pytest.raises(ValueError, match="prefix"):
        job_name("bad_prefix", "x", 1, NOW)
    with pytest.raises(ValueError, match="attempt"):
        job_name("ernie", "x", 0, NOW)


# --- checkpoints ----------------------------------------------------------------------


def test_checkpoints_are_per_execution_not_per_attempt():
    first, second = request(attempt=1), request(attempt=2)
    assert first["TrainingJobName"] != second["TrainingJobName"]
    assert first["CheckpointConfig"] == second["CheckpointConfig"]
    other = request(execution_name="run-2")
    assert other["CheckpointConfig"]["S3Uri"] != first["CheckpointConfig"]["S3Uri"]


def test_checkpoint_folder_of_odd_execution_names_is_a_clean_key():
    uri = request(execution_name="Ünïcode name:1")["CheckpointConfig"]["S3Uri"]
    assert re.fullmatch(rf"s3://{BUCKET}/checkpoints/[A-Za-z0-9_.-]+/", uri), uri


# --- metrics and Lambda ---------------------------------------------------------------


def test_metric_definitions_are_exactly_the_metrics_modules():
    assert request()["AlgorithmSpecification"]["MetricDefinitions"] == [
        dict(d) for d in metrics.METRIC_DEFINITIONS
    ]


def test_handler(monkeypatch):
    for key, value in ENVIRON.items():
        monkeypatch.setenv(key, value)
    out = handler.handler(
        {"input": {"hyperparameters": {"epoch": 3}}, "execution": "run-9", "attempt": 2}, None
    )
    # What the state machine selects (Prepare job's ResultSelector), nothing more.
    assert set(out) == {"request", "attempt"}
    assert out["attempt"] == 2
    assert out["request"]["HyperParameters"] == {"epoch": "3"}
    assert re.search(r"-a2-\d{14}$", out["request"]["TrainingJobName"])
    assert out["request"]["TrainingJobName"].startswith("ernie-")
    assert out["request"]["StoppingCondition"]["MaxWaitTimeInSeconds"] == 48 * 3600
    json.dumps(out)
    assert handler.handler({"input": {}, "execution": "run-9"}, None)["attempt"] == 1
    with pytest.raises(ExecutionInputError, match=r"instance_count: "):
        handler.handler({"input": {"instance_count": 0}, "execution": "run-9"}, None)


def test_handler_puts_the_stack_defaults_under_the_users_input(monkeypatch):
    for name, value in {
        "IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ernie-training:abc",
        "ROLE_ARN": "arn:aws:iam::123456789012:role/job",
        "BUCKET": "data",
        "INPUT_DEFAULTS": '{"instance_type": "ml.p4d.24xlarge", "instance_count": 2}',
    }.items():
        monkeypatch.setenv(name, value)
    event = {"input": {}, "execution": "run-1"}
    resources = handler.handler(event, None)["request"]["ResourceConfig"]
    assert (resources["InstanceType"], resources["InstanceCount"]) == ("ml.p4d.24xlarge", 2)
    event["input"] = {"instance_count": 1}
    assert handler.handler(event, None)["request"]["ResourceConfig"]["InstanceCount"] == 1


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "examples" / "inputs").glob("*.json"))
)
def test_example_inputs_are_valid_as_pasted_into_the_console(path):
    inp = parse_input(json.loads(path.read_text()))
    env = StackEnvironment(
        image_uri="img", role_arn="arn:aws:iam::123456789012:role/job", bucket="my-dataset-bucket"
    )
    assert requests.check_against_stack(inp, env) == {}


def test_an_input_with_ever_so_many_problems_gives_a_message_a_cause_can_hold():
    """Lambda's Cause (message, type, stack trace) is parsed by the state machine, and Step
    Functions holds a Cause to 32,768 characters: the message stays within MAX_MESSAGE."""
    raw = {f"unknown_{i:04d}_" + "x" * 200: "y" * 2000 for i in range(400)}
    raw["hyperparameters"] = {f"nope_{i}": "z" * 2500 for i in range(100)}
    with pytest.raises(ExecutionInputError) as refused:
        parse_input(raw)
    message = str(refused.value)
    assert len(refused.value.problems) == 500
    assert len(message) <= limits.MAX_MESSAGE
    assert message.startswith("invalid execution input: ")
    assert re.search(r"; \.\.\. and \d+ more$", message)
    long_one = ExecutionInputError({"dataset": "d" * 20000})
    assert len(str(long_one)) <= limits.MAX_MESSAGE and str(long_one).endswith("...")
    assert str(ExecutionInputError({"a": "b", "c": "d"})) == "invalid execution input: a: b; c: d"
