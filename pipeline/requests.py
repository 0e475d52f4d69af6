"""CreateTrainingJob requests of an execution's jobs: the training's (one job, or one a
stage) and the evaluation's, as the API and `createTrainingJob.sync` take them.

Any input gives either an ExecutionInputError or a request that meets every constraint
of SageMaker's API model: each request is checked against it before it is returned.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ernie_sm.contract.channels import BASELINE, CHECKPOINT_LOCAL_PATH, EVAL, MODEL, TRAIN, VALID
from ernie_sm.contract.metrics import EVAL_METRIC_DEFINITIONS, METRIC_DEFINITIONS
from ernie_sm.contract.s3_uri import S3_URI_PATTERN
from ernie_sm.pipeline import sagemaker_api
from ernie_sm.pipeline.execution_input import (
    MODEL_ARCHIVE,
    ExecutionInput,
    ExecutionInputError,
    plain_number,
    stage_hyperparameters,
)
from ernie_sm.pipeline.naming import EVAL_JOB_MARK, checkpoint_folder, job_name, stage_mark
from ernie_sm.pipeline.stack_environment import (
    EXECUTION_TAGS,
    StackEnvironment,
    execution_seconds,
    stack_tags,
)


class ContractGapError(Exception):
    """The contract built a request SageMaker would refuse: a bug here, not bad input."""

    def __init__(self, violations: list[sagemaker_api.Violation]) -> None:
        self.violations = violations
        fields = ", ".join(dict.fromkeys(v.path for v in violations))
        super().__init__(
            f"the CreateTrainingJob request breaks SageMaker's constraints at {fields}, which "
            "the execution-input contract should have refused: "
            + sagemaker_api.validation_message([v.message() for v in violations])
        )


def has_local_storage(instance_type: str) -> bool:
    """Whether the instance has NVMe instance storage, where VolumeKmsKeyId is refused.

    `d` in the family's attributes (g4dn, p3dn, p4d, r5d, m6id) or GPU/accelerator
    families from generation 5 on (g5, g6e, p5, p6-b200, trn1) have it. Erring towards
    "yes" only drops VolumeKmsKeyId, leaving SageMaker's default volume encryption.
    """
    family = instance_type.split(".")[1] if instance_type.count(".") == 2 else ""
    match = re.match(r"^([a-z]+?)(\d+)([a-z]*)", family)
    if not match:
        return True
    letters, generation, attributes = match.group(1), int(match.group(2)), match.group(3)
    if "d" in attributes or letters == "trn":
        return True
    return letters in ("g", "p") and generation >= 5


def check_against_stack(inp: ExecutionInput, env: StackEnvironment) -> dict[str, str]:
    """Problems only the stack's settings reveal: what its roles may not read or create,
    and stages that could outlast the execution's timeout."""
    problems: dict[str, str] = {}
    prefix = inp.job_name_prefix
    if (
        prefix is not None
        and prefix != env.name_prefix
        and not prefix.startswith(f"{env.name_prefix}-")
    ):
        problems["job_name_prefix"] = (
            f"must be {env.name_prefix!r} or start with '{env.name_prefix}-' "
            f"(the state machine may only create training jobs named {env.name_prefix}-*), "
            f"got {prefix!r}"
        )
    evaluation = inp.evaluation
    datasets = {"dataset": inp.dataset}
    models = {"warm_start_model": inp.warm_start_model}
    if evaluation is not None:
        datasets["evaluation.dataset"] = evaluation.dataset
        models["evaluation.baseline_model"] = evaluation.baseline_model
    for name, dataset in datasets.items():
        if not dataset.startswith(f"{env.dataset_prefix}/"):
            problems[name] = (
                f"must be under {env.dataset_prefix}/ (where the training role may read), "
                f"got {dataset!r}"
            )
    problems.update(_duration_problems(inp, env))
    for name, uri in models.items():
        if uri is not None and not _stack_model(uri, env):
            problems[name] = (
                f"must be under s3://{env.bucket}/{env.output_prefix}/ (where the training "
                f"role may read models), got {uri!r}"
            )
    return problems


def _duration_problems(inp: ExecutionInput, env: StackEnvironment) -> dict[str, str]:
    """{"stages": problem} when the stages could outlast the execution's timeout."""
    limits = env.limits
    if limits is None or inp.stages is None:
        return {}
    longest = execution_seconds(_job_seconds(inp), limits.max_attempts, limits.backoff_seconds)
    if longest <= limits.timeout_seconds:
        return {}
    return {
        "stages": f"{len(inp.stages)} stages of up to "
        f"{plain_number(_seconds_of_job(inp) / 3600)} hours a job, {limits.max_attempts} "
        f"attempts each, could take {longest / 86400:.0f} days, more than the execution's "
        f"limit of {limits.timeout_seconds / 86400:.0f} days: lower max_runtime_hours "
        "(and max_wait_hours) or run fewer stages"
    }


def _job_seconds(inp: ExecutionInput) -> list[int]:
    """How long SageMaker may let each job of the execution run, waiting for spot included."""
    training = [_seconds_of_job(inp)] * (1 if inp.stages is None else len(inp.stages))
    evaluation = [] if inp.evaluation is None else [inp.evaluation.max_runtime_seconds]
    return training + evaluation


def _seconds_of_job(inp: ExecutionInput) -> int:
    return inp.max_wait_seconds or inp.max_runtime_seconds


def _stack_model(uri: str, env: StackEnvironment) -> bool:
    match = S3_URI_PATTERN.fullmatch(uri)
    return (
        match is not None
        and match.group(1) == env.bucket
        and match.group(2).startswith(f"{env.output_prefix}/")
    )


def training_job_request(
    inp: ExecutionInput,
    env: StackEnvironment,
    execution_name: str,
    attempt: int,
    now: datetime,
    stage: int | None = None,
    previous_model: str | None = None,
) -> dict[str, Any]:
    """CreateTrainingJob parameters, as the API and `createTrainingJob.sync` take them.

    With `stages` in the input, `stage` (an index) picks the stage, and stage i > 0 needs
    `previous_model`: the model.tar.gz of stage i - 1, its warm start."""
    problems = check_against_stack(inp, env)
    if problems:
        raise ExecutionInputError(problems)
    if (stage is None) != (inp.stages is None):
        raise ValueError("a stage index goes with an input that has stages, and only with one")
    hyperparameters, model = inp.hyperparameters, inp.warm_start_model
    if stage is not None:
        hyperparameters = stage_hyperparameters(inp, stage)
        model = inp.warm_start_model if stage == 0 else _previous_model(previous_model, env)
    prefix = inp.job_name_prefix or env.name_prefix
    mark = "" if stage is None else stage_mark(stage)
    name = job_name(prefix, execution_name, attempt, now, mark=mark)
    request = _job_request(
        env,
        name=name,
        algorithm={"MetricDefinitions": [dict(d) for d in METRIC_DEFINITIONS]},
        hyperparameters=hyperparameters,
        channels=_training_channels(inp, env, model),
        resources=(inp.instance_type, inp.instance_count, inp.volume_size_gb),
        stopping=_training_stopping(inp),
        tags=_tags(env, execution_name, attempt, inp.dataset),
    )
    request["EnableManagedSpotTraining"] = inp.spot
    folder = checkpoint_folder(execution_name, stage)
    request["CheckpointConfig"] = {
        "S3Uri": f"s3://{env.bucket}/{env.checkpoint_prefix}/{folder}",
        "LocalPath": CHECKPOINT_LOCAL_PATH,
    }
    return _checked(request)


def _training_channels(
    inp: ExecutionInput, env: StackEnvironment, model: str | None
) -> list[dict[str, Any]]:
    """The dataset's train (and valid) folders, and the model to start from, if any."""
    data = f"s3://{env.bucket}/{inp.dataset}"
    channels = [_s3_channel(TRAIN, f"{data}/{TRAIN}/")]
    if inp.use_validation:
        channels.append(_s3_channel(VALID, f"{data}/{VALID}/"))
    if model is not None:
        channels.append(_model_channel(MODEL, model))
    return channels


def _training_stopping(inp: ExecutionInput) -> dict[str, int]:
    """The job's runtime and, with spot, its whole time (at least the runtime)."""
    stopping = {"MaxRuntimeInSeconds": inp.max_runtime_seconds}
    if inp.spot:
        wait = inp.max_wait_seconds
        stopping["MaxWaitTimeInSeconds"] = max(
            wait if wait is not None else 2 * inp.max_runtime_seconds, inp.max_runtime_seconds
        )
    return stopping


def _previous_model(uri: str | None, env: StackEnvironment) -> str:
    """The model the previous stage's job wrote: in the stack's bucket, where it writes."""
    if uri is None or not _stack_model(uri, env) or posixpath.basename(uri) != MODEL_ARCHIVE:
        raise ValueError(
            f"a stage after the first needs the previous stage's model, s3://{env.bucket}/"
            f"{env.output_prefix}/.../{MODEL_ARCHIVE}; got {uri!r}"
        )
    return uri


def evaluation_job_request(
    inp: ExecutionInput,
    env: StackEnvironment,
    execution_name: str,
    attempt: int,
    now: datetime,
    model_uri: str,
) -> dict[str, Any]:
    """CreateTrainingJob parameters of the evaluation of `model_uri` (the trained
    model.tar.gz): `ernie-sm evaluate` (ContainerArguments) with the channels model,
    eval and, when the input names one, baseline."""
    evaluation = inp.evaluation
    if evaluation is None:
        raise ExecutionInputError({"evaluation": "the execution input asks for no evaluation"})
    problems = check_against_stack(inp, env)
    if problems:
        raise ExecutionInputError(problems)
    prefix = inp.job_name_prefix or env.name_prefix
    name = job_name(prefix, execution_name, attempt, now, mark=EVAL_JOB_MARK)
    channels = [
        _model_channel(MODEL, model_uri),
        _s3_channel(EVAL, f"s3://{env.bucket}/{evaluation.dataset}/"),
    ]
    if evaluation.baseline_model is not None:
        channels.append(_model_channel(BASELINE, evaluation.baseline_model))
    request = _job_request(
        env,
        name=name,
        algorithm={
            "MetricDefinitions": [dict(d) for d in EVAL_METRIC_DEFINITIONS],
            "ContainerArguments": ["evaluate"],
        },
        hyperparameters=evaluation.hyperparameters,
        channels=channels,
        resources=(evaluation.instance_type, 1, inp.volume_size_gb),
        stopping={"MaxRuntimeInSeconds": evaluation.max_runtime_seconds},
        tags=_tags(env, execution_name, attempt, evaluation.dataset),
    )
    request["EnableManagedSpotTraining"] = False
    return _checked(request)


def _job_request(
    env: StackEnvironment,
    *,
    name: str,
    algorithm: dict[str, Any],
    hyperparameters: Mapping[str, str],
    channels: list[dict[str, Any]],
    resources: tuple[str, int, int],
    stopping: dict[str, int],
    tags: list[dict[str, str]],
) -> dict[str, Any]:
    """What every job of the stack's requests has: the image, role, output, encryption,
    isolation, tags and VPC; `resources` is (instance type, count, volume GB)."""
    instance_type, count, volume = resources
    output: dict[str, Any] = {"S3OutputPath": f"s3://{env.bucket}/{env.output_prefix}/"}
    resource_config: dict[str, Any] = {
        "InstanceType": instance_type,
        "InstanceCount": count,
        "VolumeSizeInGB": volume,
    }
    if env.kms_key_arn:
        output["KmsKeyId"] = env.kms_key_arn
        if not has_local_storage(instance_type):
            resource_config["VolumeKmsKeyId"] = env.kms_key_arn
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": env.image_uri,
            "TrainingInputMode": "File",
            **algorithm,
        },
        "RoleArn": env.role_arn,
        "HyperParameters": dict(hyperparameters),
        "InputDataConfig": channels,
        "OutputDataConfig": output,
        "ResourceConfig": resource_config,
        "StoppingCondition": stopping,
        "EnableNetworkIsolation": True,
        "EnableInterContainerTrafficEncryption": True,
        "Tags": tags,
    }
    if env.subnets:
        request["VpcConfig"] = {
            "SecurityGroupIds": list(env.security_groups),
            "Subnets": list(env.subnets),
        }
    return request


def _checked(request: dict[str, Any]) -> dict[str, Any]:
    violations = sagemaker_api.check_request(request)
    if violations:
        raise ContractGapError(violations)
    return request


def _model_channel(name: str, uri: str) -> dict[str, Any]:
    # An S3Prefix of the object's whole key: the channel holds exactly that archive.
    channel = _s3_channel(name, uri)
    channel["ContentType"] = "application/x-sagemaker-model"
    return channel


def _s3_channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }


def _tags(
    env: StackEnvironment, execution_name: str, attempt: int, dataset: str
) -> list[dict[str, str]]:
    tags = {tag["Key"]: tag["Value"] for tag in stack_tags(env)}
    values = (_tag_value(execution_name), str(attempt), _tag_value(dataset))
    tags.update(zip(EXECUTION_TAGS, values, strict=True))
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def _tag_value(text: str) -> str:
    """`text` with each character a tag value may not hold made "_", cut to fit."""
    allowed = sagemaker_api.regex("Tags.member.Value")
    value = "".join(c if allowed.fullmatch(c) else "_" for c in text)
    limit = sagemaker_api.member_shape("Tags.member.Value")["max"]
    value = value[:limit]
    while sagemaker_api.aws_length(value) > limit:  # characters past U+FFFF count twice
        value = value[:-1]
    return value


# ---------------------------------------------------------------------------------------
