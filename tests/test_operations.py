"""`ernie-sm start`, `watch` and `ls` against moto's Step Functions, CloudFormation, SageMaker
and CloudWatch; nothing reaches the network."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from ernie_sm.operations import commands, executions
from ernie_sm.operations.stack import OUTPUTS, OperationsError, stack_outputs
from ernie_sm.pipeline.naming import job_name
from moto import mock_aws
from rich.console import Console

REGION = "us-east-1"
STACK = "ErniePretraining"
ROLE = "arn:aws:iam::123456789012:role/ernie-states"
BUCKET = "ernie-data"
JOB = "ernie-run1-0a1b2c3d-a1-20250101120000"
MODEL = f"s3://{BUCKET}/models/{JOB}/output/model.tar.gz"
NAMESPACE = "/aws/sagemaker/TrainingJobs"
# The shape of the stack's state machine, with Pass states where it calls Lambda and SageMaker.
DEFINITION = {
    "StartAt": "Prepare job",
    "States": {
        "Prepare job": {"Type": "Pass", "Next": "Train"},
        "Train": {
            "Type": "Pass",
            "Result": {
                "TrainingJobName": JOB,
                "ModelArtifacts": {"S3ModelArtifacts": MODEL},
            },
            "ResultPath": "$.training",
            "Next": "Model",
        },
        "Model": {
            "Type": "Pass",
            "Parameters": {
                "model.$": "$.training.ModelArtifacts.S3ModelArtifacts",
                "training_job.$": "$.training.TrainingJobName",
                "attempts": 1,
            },
            "End": True,
        },
    },
}


def _deploy(definition: dict = DEFINITION, outputs: dict[str, str] | None = None) -> str:
    """A state machine and a CloudFormation stack named ErniePretraining whose outputs name it."""
    machine = boto3.client("stepfunctions").create_state_machine(
        name="ernie-pretraining", definition=json.dumps(definition), roleArn=ROLE
    )["stateMachineArn"]
    if outputs is None:
        outputs = {name: f"fake-{name}" for name in OUTPUTS}
        outputs.update(StateMachineArn=machine, DatasetBucket=BUCKET)
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    boto3.client("cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(template))
    return machine


@pytest.fixture
def executing(aws_env) -> Iterator[str]:
    """moto runs the executions' Pass states: they end SUCCEEDED with the stack's output."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield _deploy()


@pytest.fixture
def running(aws_env) -> Iterator[str]:
    """moto's default: executions stay RUNNING and their history is a canned one."""
    with mock_aws():
        yield _deploy()


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ernie-sm")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(sub)
    args = parser.parse_args(argv)
    return args.run(args)


def put_loss(job: str, values: list[tuple[float, datetime]]) -> None:
    boto3.client("cloudwatch").put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": "Training-loss",
                "Dimensions": [{"Name": "TrainingJobName", "Value": job}],
                "Value": value,
                "Timestamp": stamp,
            }
            for value, stamp in values
        ],
    )


def create_training_job(name: str) -> None:
    boto3.client("sagemaker").create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "ernie:latest", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/ernie-job",
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/models/"},
        ResourceConfig={"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )


# ---------------------------------------------------------------------------------------
# The stack


def test_stack_outputs_reads_every_output(running: str) -> None:
    outputs = stack_outputs(STACK, boto3.Session(region_name=REGION))
    assert set(outputs) == set(OUTPUTS)
    assert outputs["StateMachineArn"] == running


def test_a_stack_missing_in_the_region_names_it_and_cdk_deploy(running: str, capsys) -> None:
    assert cli("ls", "--region", "eu-west-1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "stack ErniePretraining is not deployed in eu-west-1" in err
    assert "cdk deploy" in err


def test_a_stack_without_the_outputs_is_refused(aws_env, capsys) -> None:
    with mock_aws():
        _deploy(outputs={"DatasetBucket": BUCKET})
        assert cli("ls") == 2
    err = capsys.readouterr().err
    assert "has no output StateMachineArn" in err and "DatasetBucket" in err


def test_no_credentials_is_one_clear_line(running: str, monkeypatch, capsys) -> None:
    # Under mock_aws, so that even a regression could not reach AWS.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert cli("ls") == 2
    err = capsys.readouterr().err
    assert err.startswith("ernie-sm ls: error: no AWS credentials found")
    assert "--profile" in err and err.count("\n") == 1


def test_no_region_is_one_clear_line(running: str, monkeypatch, capsys) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert cli("watch", "some-run", "--once") == 2
    err = capsys.readouterr().err
    assert "no AWS region configured: pass --region" in err and err.count("\n") == 1


def test_an_unknown_profile_is_one_clear_line(aws_env, capsys) -> None:
    assert cli("ls", "--profile", "nobody") == 2
    assert "nobody" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# start


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--instance-count", "99"], "instance_count: expected an integer from 1 to 16"),
        (["--instance-count", "two"], "instance_count: expected an integer"),
        (["--hp", "batch_size=x"], "hyperparameters.batch_size: bad value 'x'"),
        (["--dataset", "s3://bucket/datasets/x"], "dataset: expected a key prefix"),
        (["--hp", "batch_size"], "--hp 'batch_size': expected name=value"),
    ],
)
def test_start_refuses_bad_input_before_any_aws_call(
    aws_env, monkeypatch, capsys, flags: list[str], field: str
) -> None:
    def no_aws(*args: object) -> None:
        raise AssertionError("AWS was called for an invalid input")

    monkeypatch.setattr(commands, "make_session", no_aws)
    monkeypatch.setattr(boto3, "Session", no_aws)
    assert cli("start", *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("ernie-sm start: error: ") and field in err


def test_start_refuses_an_unknown_field_of_the_input_file(aws_env, tmp_path, capsys) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps({"batch_size": 4096}))
    assert cli("start", "--input", str(path)) == 2
    assert "batch_size: unknown field" in capsys.readouterr().err


def test_start_sends_the_file_merged_with_the_flags(executing: str, tmp_path, capsys) -> None:
    path = tmp_path / "input.json"
    path.write_text(
        json.dumps(
            {
                "dataset": "datasets/a",
                "instance_count": 2,
                "hyperparameters": {"batch_size": 1024, "learning_rate": 0.001},
            }
        )
    )
    argv = ["--input", str(path), "--dataset", "datasets/b", "--hp", "batch_size=2048"]
    assert cli("start", *argv, "--no-spot", "--name", "run1") == 0
    out = capsys.readouterr().out
    arn = f"arn:aws:states:{REGION}:123456789012:execution:ernie-pretraining:run1"
    assert f"arn: {arn}" in out
    url = f"https://{REGION}.console.aws.amazon.com/states/home?region={REGION}#/v2/executions/details/{arn}"
    assert f"console: {url}" in out
    sfn = boto3.client("stepfunctions")
    listed = sfn.list_executions(stateMachineArn=executing)["executions"]
    assert [e["name"] for e in listed] == ["run1"]
    sent = json.loads(sfn.describe_execution(executionArn=arn)["input"])
    assert sent == {
        "dataset": "datasets/b",
        "instance_count": 2,
        "spot": False,
        "hyperparameters": {"batch_size": "2048", "learning_rate": 0.001},
    }


def test_start_names_the_execution_after_the_dataset(executing: str, capsys) -> None:
    assert cli("start", "--dataset", "datasets/wiki_zh") == 0
    (execution,) = boto3.client("stepfunctions").list_executions(stateMachineArn=executing)[
        "executions"
    ]
    assert execution["name"].startswith("wiki-zh-20")
    assert cli("start", "--dataset", "datasets/wiki_zh", "--name", execution["name"]) == 2
    assert "already exists: pass another --name" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# watch and ls


def test_watch_follows_to_the_model(executing: str, capsys) -> None:
    create_training_job(JOB)
    put_loss(JOB, [(2.5, datetime.now(timezone.utc))])
    assert cli("start", "--name", "run1") == 0
    capsys.readouterr()
    assert cli("watch", "run1", "--interval", "0.01") == 0
    out = capsys.readouterr().out
    assert f"SUCCEEDED: model {MODEL} (training job {JOB}, 1 attempt(s))" in out
    assert f"job {JOB} Completed/Completed" in out
    assert "Training-loss 2.5000" in out


def test_watch_once_on_a_running_execution_finds_its_job_by_name(running: str, capsys) -> None:
    job = job_name("ernie", "run2", 1, datetime(2025, 1, 1, 12, 0, 0))
    create_training_job(job)
    put_loss(job, [(3.25, datetime.now(timezone.utc))])
    assert cli("start", "--name", "run2") == 0
    capsys.readouterr()
    assert cli("watch", "run2", "--once") == 0
    out = capsys.readouterr().out
    assert f"run2: RUNNING, job {job} Completed/Completed, Training-loss 3.2500" in out
    assert "SUCCEEDED" not in out


def test_start_watch_on_a_terminal_draws_a_live_panel(executing: str, monkeypatch, capsys) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(
        commands, "_console", lambda: Console(file=screen, force_terminal=True, width=200)
    )
    create_training_job(JOB)
    assert cli("start", "--name", "run3", "--watch", "--interval", "0.01") == 0
    drawn = screen.getvalue()
    assert "training job" in drawn and JOB in drawn and "SUCCEEDED" in drawn
    assert f"SUCCEEDED: model {MODEL}" in capsys.readouterr().out


def test_watch_a_failed_execution_prints_error_and_cause(aws_env, capsys) -> None:
    cause = {
        "errorMessage": "invalid execution input: instance_count: expected ...",
        "errorType": "ExecutionInputError",
    }
    failing = {
        "StartAt": "Failed",
        "States": {
            "Failed": {"Type": "Fail", "Error": "ExecutionInputError", "Cause": json.dumps(cause)}
        },
    }
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        _deploy(failing)
        assert cli("start", "--name", "bad") == 0
        capsys.readouterr()
        assert cli("watch", "bad", "--interval", "0.01") == 1
    out = capsys.readouterr().out
    assert "FAILED: ExecutionInputError: invalid execution input: instance_count" in out


def test_watch_an_unknown_execution_is_one_clear_line(running: str, capsys) -> None:
    assert cli("watch", "nope", "--once") == 2
    err = capsys.readouterr().err
    assert (
        "no execution arn:aws:states:us-east-1:123456789012:execution:ernie-pretraining:nope" in err
    )
    assert err.count("\n") == 1


def test_ls_lists_the_executions_newest_first(executing: str, capsys) -> None:
    assert cli("start", "--name", "first") == 0
    assert cli("start", "--name", "second") == 0
    capsys.readouterr()
    assert cli("watch", "second", "--interval", "0.01") == 0
    capsys.readouterr()
    assert cli("ls", "--max", "5") == 0
    out = capsys.readouterr().out
    assert out.index("second") < out.index("first")
    row = next(line for line in out.splitlines() if "second" in line)
    assert "SUCCEEDED" in row and JOB in row and MODEL in row


def test_ls_with_no_executions(running: str, capsys) -> None:
    assert cli("ls") == 0
    assert "no executions" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# The pieces


def test_latest_loss_is_the_newest_datapoint_of_the_last_hour(running: str) -> None:
    now = datetime.now(timezone.utc)
    put_loss("ernie-job", [(4.0, now - timedelta(minutes=5)), (3.0, now - timedelta(minutes=1))])
    put_loss("ernie-job", [(9.0, now - timedelta(hours=3))])
    put_loss("other-job", [(1.0, now)])
    value, stamp = executions.latest_loss(boto3.client("cloudwatch"), "ernie-job", now)
    assert value == 3.0 and abs(stamp - (now - timedelta(minutes=1))) < timedelta(minutes=1)
    assert executions.latest_loss(boto3.client("cloudwatch"), "absent-job", now) is None


def test_the_training_job_comes_from_the_latest_train_task_in_the_history() -> None:
    def scheduled(event_id: int, name: str) -> dict:
        return {
            "id": event_id,
            "type": "TaskScheduled",
            "taskScheduledEventDetails": {
                "resourceType": "sagemaker",
                "resource": "createTrainingJob.sync",
                "region": REGION,
                "parameters": json.dumps({"TrainingJobName": name, "RoleArn": ROLE}),
            },
        }

    lambda_task = {
        "id": 9,
        "type": "TaskScheduled",
        "taskScheduledEventDetails": {
            "resourceType": "lambda",
            "resource": "invoke",
            "parameters": json.dumps({"FunctionName": "prepare"}),
        },
    }
    events = [scheduled(3, "ernie-x-a1"), scheduled(7, "ernie-x-a2"), lambda_task]
    assert executions.training_job_from_history(events) == "ernie-x-a2"
    assert executions.training_job_from_history([lambda_task]) is None


def test_the_job_name_marker_matches_the_contracts_job_names() -> None:
    for name in ("run1", "wiki-zh-20250101-120000", "a" * 80, "Ünïcode run"):
        for attempt in (1, 12):
            job = job_name("ernie-exp1", name, attempt, datetime(2025, 1, 1))
            assert executions.job_name_marker(name) + str(attempt) + "-" in job


def test_execution_arns_and_console_urls() -> None:
    machine = "arn:aws:states:eu-central-1:111122223333:stateMachine:ernie-pretraining"
    arn = executions.execution_arn(machine, "run1")
    assert arn == "arn:aws:states:eu-central-1:111122223333:execution:ernie-pretraining:run1"
    assert executions.execution_arn(machine, arn) == arn
    assert executions.console_url(arn).startswith(
        "https://eu-central-1.console.aws.amazon.com/states/home?region=eu-central-1#"
    )
    with pytest.raises(OperationsError):
        executions.execution_arn(machine, machine)


def test_a_lambda_cause_reads_as_its_message() -> None:
    cause = json.dumps({"errorMessage": "invalid execution input: spot: x", "errorType": "E"})
    assert executions.readable_cause(cause) == "invalid execution input: spot: x"
    assert executions.readable_cause("plain words") == "plain words"
