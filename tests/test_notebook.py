"""The notebook route: SageMaker Python SDK v3's ModelTrainer, set up by
operations/notebook.py, sends the request the state machine sends, and that request trains.

The SDK really runs: its CreateTrainingJob goes to moto (no network) and the request it
sent is taken from botocore's own event; or it goes to the rehearsal's local SageMaker
(rehearsal/sdk.py), which trains it. examples/notebook.ipynb runs top to bottom.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from ernie_sm.operations import notebook
from ernie_sm.operations.stack import OperationsError
from ernie_sm.pipeline import sagemaker_api
from ernie_sm.pipeline.execution_input import ExecutionInputError
from ernie_sm.rehearsal import definition
from ernie_sm.rehearsal.local_sagemaker import s3_path
from ernie_sm.rehearsal.rehearse import ROOT, STACK
from ernie_sm.rehearsal.sdk import SDK_CONFIG, rehearsal_trainer
from moto import mock_aws

from tests.helpers import make_job, tiny_input


@pytest.fixture
def settings(cdk_out) -> dict[str, str]:
    """The Prepare function's environment, as the synthesized stack gives it."""
    return dict(definition.load(cdk_out / f"{STACK}.template.json").prepare_environment)


@pytest.fixture
def aws(aws_env) -> Iterator[boto3.Session]:
    with mock_aws():
        yield boto3.Session(region_name="us-east-1")


def sdk_session(boto_session: boto3.Session):
    from sagemaker.core.helper.session_helper import Session

    return Session(boto_session=boto_session, sagemaker_config=SDK_CONFIG)


def sent_by_sdk(boto_session: boto3.Session, trainer_of) -> tuple[dict, list[str]]:
    """Build a ModelTrainer with `trainer_of(sagemaker_session)` and train(wait=False); the
    CreateTrainingJob parameters botocore received, and every API call made."""
    sent: list[dict] = []
    calls: list[str] = []
    boto_session.events.register(
        "provide-client-params.sagemaker.CreateTrainingJob",
        lambda params, **_: sent.append(json.loads(json.dumps(params))),
    )
    boto_session.events.register(
        "before-call.*.*", lambda event_name, **_: calls.append(event_name)
    )
    trainer = trainer_of(sdk_session(boto_session))
    trainer.train(wait=False, logs=False)
    assert len(sent) == 1
    return sent[0], calls


INPUTS = {
    "tiny": tiny_input(),
    "spot, warm start": {
        **tiny_input(),
        "spot": True,
        "max_runtime_hours": 2,
        "max_wait_hours": 3,
        "warm_start_model": "s3://rehearsal-data/models/earlier/output/model.tar.gz",
    },
    "p4d, no validation": {
        "dataset": "datasets/wiki",
        "instance_type": "ml.p4d.24xlarge",
        "use_validation": False,
        "hyperparameters": {"use_fp16": True, "batch_size": 16384},
    },
}


@pytest.mark.parametrize("name", INPUTS)
def test_the_sdk_sends_the_request_the_state_machine_sends(aws, settings, name):
    request = notebook.training_request(INPUTS[name], settings, run_name="nb-1")
    sent, calls = sent_by_sdk(aws, lambda session: notebook.trainer_for(request, session))
    assert {k: v for k, v in sent.items() if k != "TrainingJobName"} == {
        k: v for k, v in request.items() if k != "TrainingJobName"
    }
    # Its own fresh name: the state machine's without attempt and time, then the SDK's time.
    assert sent["TrainingJobName"].startswith(notebook.base_job_name(request["TrainingJobName"]))
    assert sagemaker_api.check_request(sent) == []
    # The SDK's IAM smoke test is off (it refuses the stack's least-privilege role).
    assert not [c for c in calls if ".iam." in c]
    assert "SAGEMAKER_VALIDATE_ROLE" not in os.environ


def test_a_vpc_goes_into_the_sdk_request(aws, settings):
    settings = {**settings, "SUBNETS": "subnet-0abc,subnet-0def", "SECURITY_GROUPS": "sg-0123"}
    request = notebook.training_request(tiny_input(), settings, run_name="nb-vpc")
    sent, _ = sent_by_sdk(aws, lambda session: notebook.trainer_for(request, session))
    assert sent["VpcConfig"] == {
        "SecurityGroupIds": ["sg-0123"],
        "Subnets": ["subnet-0abc", "subnet-0def"],
    }


def test_a_staged_input_gives_the_request_of_the_stage_asked_for(settings):
    staged = {
        **tiny_input(),
        "stages": [
            {"tasks": {"knowledge_masking": 1}, "steps": 4},
            {"tasks": {"sentence_distance": 1}, "steps": 2},
        ],
    }
    del staged["hyperparameters"]["num_train_steps"]
    with pytest.raises(OperationsError, match=r"the input has 2 stage\(s\) .* pass stage=0"):
        notebook.training_request(staged, settings)
    first = notebook.training_request(staged, settings, "nb-s", stage=0)
    assert first["HyperParameters"]["tasks"] == "knowledge_masking:1"
    with pytest.raises(OperationsError, match="previous_model"):
        notebook.training_request(staged, settings, "nb-s", stage=1)
    bucket = first["OutputDataConfig"]["S3OutputPath"].split("/")[2]
    model = f"s3://{bucket}/models/{first['TrainingJobName']}/output/model.tar.gz"
    second = notebook.training_request(staged, settings, "nb-s", 1, model)
    assert second["HyperParameters"]["tasks"] == "sentence_distance:1"
    (channel,) = [c for c in second["InputDataConfig"] if c["ChannelName"] == "model"]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == model


def test_bad_input_is_refused_by_the_contract_before_the_sdk(settings):
    with pytest.raises(ExecutionInputError, match=r"instance_count: "):
        notebook.training_request({**tiny_input(), "instance_count": 99}, settings)
    with pytest.raises(ExecutionInputError, match=r"hyperparameters\.learning_rate"):
        notebook.training_request({"hyperparameters": {"learning_rate": "fast"}}, settings)


def _rehearsal(tmp_path: Path, cdk_out: Path, **hyperparameters: str):
    dataset = make_job(tmp_path / "job") / "input" / "data"
    return rehearsal_trainer(
        tiny_input(**hyperparameters), tmp_path / "r", "nb-train", dataset, cdk_out=cdk_out,
        on_line=lambda line: None,
    )  # fmt: skip


def test_the_sdk_trains_in_the_local_sagemaker_and_reads_the_job_back(tmp_path, cdk_out):
    trainer = _rehearsal(tmp_path, cdk_out)
    trainer.train(wait=True, logs=False)
    job = trainer._latest_training_job  # sagemaker-core's TrainingJob, as the SDK documents
    job.refresh()
    assert job.training_job_status == "Completed"
    assert {"Training-loss", "Validation-loss"} <= {
        m.metric_name for m in job.final_metric_data_list
    }
    archive = s3_path(tmp_path / "r" / "buckets", job.model_artifacts.s3_model_artifacts)
    assert archive.parts[-3:] == (job.training_job_name, "output", "model.tar.gz")
    with tarfile.open(archive) as tar:
        assert {"model.pdparams", "vocab.txt", "ernie_config.json"} <= set(tar.getnames())


def test_a_failed_job_fails_the_sdks_wait_with_its_reason(tmp_path, cdk_out):
    trainer = _rehearsal(tmp_path, cdk_out, ernie_config_path="missing.json")
    with pytest.raises(Exception, match=r"missing\.json"):
        trainer.train(wait=True, logs=False)
    assert trainer._latest_training_job.training_job_status == "Failed"


def test_what_sagemaker_refuses_is_the_sdks_client_error(tmp_path, cdk_out):
    from botocore.exceptions import ClientError

    trainer = _rehearsal(tmp_path, cdk_out)
    trainer.hyperparameters["notes"] = "x" * 2501  # past HyperParameters' value length
    with pytest.raises(ClientError, match=r"ValidationException.*hyperParameters"):
        trainer.train(wait=False, logs=False)


def test_the_example_notebook_runs_top_to_bottom_without_credentials(
    tmp_path, aws_env, monkeypatch
):
    notebook_file = ROOT / "examples" / "notebook.ipynb"
    cells = json.loads(notebook_file.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)  # stripped
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    source = "\n\n".join("".join(c["source"]) for c in code)
    env = {**os.environ, "SAGEMAKER_USER_CONFIG_OVERRIDE": str(tmp_path / "sdk.yaml")}
    (tmp_path / "sdk.yaml").write_text(json.dumps(SDK_CONFIG))
    # `python -c`, as a kernel runs cells: no main file for prepare's spawned workers to rerun.
    done = subprocess.run(
        [sys.executable, "-c", source],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rehearsing locally" in done.stdout
    assert re.search(r"^Training-loss +\d", done.stdout, re.MULTILINE), done.stdout


def _deploy(boto_session: boto3.Session, settings: dict[str, str], outputs: bool = True) -> None:
    """A stack whose Prepare function holds `settings`, as `cdk deploy` leaves it."""
    role = boto_session.client("iam").create_role(
        RoleName="prepare",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    boto_session.client("lambda").create_function(
        FunctionName="ernie-prepare", Runtime="python3.12", Role=role, Handler="index.handler",
        Code={"ZipFile": b"PK\\x05\\x06" + b"\\0" * 18}, Environment={"Variables": settings},
    )  # fmt: skip
    values = {"StateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:x"}
    if outputs:
        values["PrepareFunctionName"] = "ernie-prepare"
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {k: {"Value": v} for k, v in values.items()},
    }
    boto_session.client("cloudformation").create_stack(
        StackName=STACK, TemplateBody=json.dumps(template)
    )


def test_model_trainer_reads_the_deployed_stacks_settings(aws, settings):
    _deploy(aws, {**settings, "NAME_PREFIX": "team"})
    trainer = notebook.model_trainer(
        tiny_input(), run_name="nb-2", boto_session=aws, sagemaker_session=sdk_session(aws)
    )
    assert trainer.base_job_name.startswith("team-nb-2-")
    assert trainer.training_image == settings["IMAGE_URI"]
    assert trainer.compute.instance_type == "ml.g5.2xlarge"  # the stack's INPUT_DEFAULTS


def test_a_stack_without_the_prepare_output_says_to_redeploy(aws, settings):
    _deploy(aws, settings, outputs=False)
    with pytest.raises(OperationsError, match="no PrepareFunctionName output: deploy this version"):
        notebook.model_trainer(tiny_input(), boto_session=aws, sagemaker_session=sdk_session(aws))


def test_without_the_sdk_installed_the_error_says_how_to_get_it(settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "sagemaker.train", None)  # import fails as if absent
    request = notebook.training_request(tiny_input(), settings)
    with pytest.raises(OperationsError, match=r"pip install 'ernie-sm\[sdk\]'"):
        notebook.trainer_for(request, sagemaker_session=None)
