"""The notebook route: the SageMaker Python SDK v3's ModelTrainer, set up as the stack's
state machine sets up a job.

    from ernie_sm.operations.notebook import model_trainer

    trainer = model_trainer({"dataset": "datasets/wiki-zh", "hyperparameters": {"use_fp16": True}},
                            run_name="wiki-zh-notebook-1")
    trainer.train(wait=True, logs=True)

The input is an execution input (docs/execution-input.md), checked by the same contract as
the Prepare step and merged over the stack's defaults; the request is the one Prepare would
build (`pipeline.handler.prepare`), from the Prepare function's own environment. This
module only translates that request into ModelTrainer's terms, so the two routes cannot
drift apart: tests/test_notebook.py sends both and compares them field by field.

ModelTrainer has every setting the request needs, metric definitions and the checkpoint
location through `with_metric_definitions` and `with_checkpoint_config`; nothing falls
back to sagemaker-core. It makes the job name itself (`<prefix>-<run>-<hash>-<timestamp>`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ernie_sm.operations.stack import (
    DEFAULT_STACK,
    OperationsError,
    aws_errors,
    client,
    make_session,
    stack_outputs,
)
from ernie_sm.pipeline.handler import prepare

if TYPE_CHECKING:
    from sagemaker.train import ModelTrainer

# ModelTrainer appends "-YYYYmmddHHMMSS" (15 characters) and cuts the name at 63.
BASE_NAME_MAX = 63 - 15


def model_trainer(
    execution_input: dict,
    run_name: str | None = None,
    stack: str = DEFAULT_STACK,
    boto_session: Any = None,
    sagemaker_session: Any = None,
    stage: int | None = None,
    previous_model: str | None = None,
) -> ModelTrainer:
    """A ModelTrainer for the deployed `stack` that starts the job an execution with this
    input would start. `run_name` names the checkpoint folder: the same name resumes. For
    an input with stages, `stage` picks the one job (and `previous_model`, the model.tar.gz
    of the stage before, is where a later stage starts from)."""
    boto_session = boto_session or make_session()
    settings = prepare_environment(stack, boto_session)
    request = training_request(execution_input, settings, run_name, stage, previous_model)
    if sagemaker_session is None:
        from sagemaker.core.helper.session_helper import Session

        sagemaker_session = Session(boto_session=boto_session)
    return trainer_for(request, sagemaker_session)


def prepare_environment(stack: str, boto_session: Any) -> dict[str, str]:
    """The Prepare function's environment variables: the stack's settings for every job."""
    name = stack_outputs(stack, boto_session).get("PrepareFunctionName")
    if not name:
        raise OperationsError(
            f"stack {stack} has no PrepareFunctionName output: deploy this version of it"
        )
    with aws_errors(f"reading the settings of {name}"):
        config = client(boto_session, "lambda").get_function_configuration(FunctionName=name)
    return dict(config.get("Environment", {}).get("Variables", {}))


def training_request(
    execution_input: dict,
    settings: Mapping[str, str],
    run_name: str | None = None,
    stage: int | None = None,
    previous_model: str | None = None,
) -> dict[str, Any]:
    """The CreateTrainingJob request the state machine would send (its first attempt); of
    stage `stage` for an input with stages, which a ModelTrainer runs one at a time."""
    stages = execution_input.get("stages") if isinstance(execution_input, dict) else None
    if stages and (stage is None or (stage > 0 and previous_model is None)):
        raise OperationsError(
            f"the input has {len(stages)} stage(s) and a ModelTrainer runs one job: pass "
            "stage=0 for the first, stage=i with previous_model=<stage i-1's model.tar.gz> "
            "for a later one, or start the state machine, which runs them all (ernie-sm start)"
        )
    run = run_name or "notebook-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    _, _, request = prepare(
        execution_input, settings, run, stage=stage, previous_model=previous_model
    )
    return request


def trainer_for(request: Mapping[str, Any], sagemaker_session: Any) -> ModelTrainer:
    """A ModelTrainer whose CreateTrainingJob request is `request`, but for the job name."""
    try:
        from sagemaker.core import shapes
        from sagemaker.train import ModelTrainer
        from sagemaker.train.configs import Compute, Networking
    except ImportError as exc:
        raise OperationsError(
            f"the SageMaker Python SDK v3 is not installed ({exc}): pip install 'ernie-sm[sdk]'"
        ) from None

    algorithm = request["AlgorithmSpecification"]
    resources = request["ResourceConfig"]
    stopping = request["StoppingCondition"]
    vpc = request.get("VpcConfig", {})
    settings = {
        "sagemaker_session": sagemaker_session,
        "role": request["RoleArn"],
        "base_job_name": base_job_name(request["TrainingJobName"]),
        "training_image": algorithm["TrainingImage"],
        "training_input_mode": algorithm["TrainingInputMode"],
        "hyperparameters": dict(request["HyperParameters"]),
        "compute": Compute(
            instance_type=resources["InstanceType"],
            instance_count=resources["InstanceCount"],
            volume_size_in_gb=resources["VolumeSizeInGB"],
            volume_kms_key_id=resources.get("VolumeKmsKeyId"),
            enable_managed_spot_training=request["EnableManagedSpotTraining"],
        ),
        "networking": Networking(
            enable_network_isolation=request["EnableNetworkIsolation"],
            enable_inter_container_traffic_encryption=request[
                "EnableInterContainerTrafficEncryption"
            ],
            subnets=vpc.get("Subnets"),
            security_group_ids=vpc.get("SecurityGroupIds"),
        ),
        "stopping_condition": shapes.StoppingCondition(
            max_runtime_in_seconds=stopping["MaxRuntimeInSeconds"],
            max_wait_time_in_seconds=stopping.get("MaxWaitTimeInSeconds"),
        ),
        "output_data_config": shapes.OutputDataConfig(
            s3_output_path=request["OutputDataConfig"]["S3OutputPath"],
            kms_key_id=request["OutputDataConfig"].get("KmsKeyId"),
        ),
        "input_data_config": [_channel(c, shapes) for c in request["InputDataConfig"]],
        "tags": [shapes.Tag(key=t["Key"], value=t["Value"]) for t in request.get("Tags", [])],
    }
    with _role_smoke_test_off():
        trainer = ModelTrainer(**settings)
    checkpoints = request["CheckpointConfig"]
    metrics = algorithm["MetricDefinitions"]
    return trainer.with_checkpoint_config(
        shapes.CheckpointConfig(s3_uri=checkpoints["S3Uri"], local_path=checkpoints["LocalPath"])
    ).with_metric_definitions(
        [shapes.MetricDefinition(name=d["Name"], regex=d["Regex"]) for d in metrics]
    )


@contextlib.contextmanager
def _role_smoke_test_off() -> Iterator[None]:
    """ModelTrainer simulates the job role's policy for actions on "*" and refuses a role
    that lacks one, ec2:CreateNetworkInterface among them. The stack's role has the ENI
    actions only on the subnets of a VPC it is given (a job without one needs none), so
    the check refuses a role that works; SAGEMAKER_VALIDATE_ROLE=false is the SDK's own
    switch for it."""
    before = os.environ.get("SAGEMAKER_VALIDATE_ROLE")
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ["SAGEMAKER_VALIDATE_ROLE"]
        else:
            os.environ["SAGEMAKER_VALIDATE_ROLE"] = before


def _channel(channel: Mapping[str, Any], shapes: Any) -> Any:
    s3 = channel["DataSource"]["S3DataSource"]
    return shapes.Channel(
        channel_name=channel["ChannelName"],
        content_type=channel.get("ContentType"),
        data_source=shapes.DataSource(
            s3_data_source=shapes.S3DataSource(
                s3_data_type=s3["S3DataType"],
                s3_uri=s3["S3Uri"],
                s3_data_distribution_type=s3["S3DataDistributionType"],
            )
        ),
    )


def base_job_name(job_name: str) -> str:
    """The state machine's job name without its attempt and time, short enough that
    ModelTrainer's timestamp fits: `ernie-run1-0a1b2c3d-a1-20250101120000` -> `ernie-run1-0a1b2c3d`."""
    base = re.sub(r"-a\d+-\d{14}$", "", job_name)[:BASE_NAME_MAX]
    return base.rstrip("-")
