"""The deployed stack's settings, as the Prepare function reads them from its environment.

They are checked against SageMaker's API model when read: a stack that SageMaker would
refuse fails every execution with a StackEnvironmentError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ernie_sm.contract import bucket_layout
from ernie_sm.contract.errors import TrainingError
from ernie_sm.contract.s3_uri import BUCKET_PATTERN
from ernie_sm.pipeline import sagemaker_api
from ernie_sm.pipeline.limits import valid_key_prefix
from ernie_sm.pipeline.naming import name_prefix_problem

EXECUTION_TAGS = ("ExecutionName", "Attempt", "Dataset")  # added to the stack's tags
# {field: environment variable} of the optional S3 folders, given without slashes.
FOLDER_VARIABLES = {
    "name_prefix": "NAME_PREFIX",
    "dataset_prefix": "DATASET_PREFIX",
    "output_prefix": "OUTPUT_PREFIX",
    "checkpoint_prefix": "CHECKPOINT_PREFIX",
}


class StackEnvironmentError(TrainingError):
    """The Prepare function was deployed without the settings it needs, or with ones
    SageMaker would refuse."""


@dataclass(frozen=True)
class ExecutionLimits:
    """How the state machine retries jobs and how long it lets an execution run."""

    max_attempts: int
    backoff_seconds: tuple[int, ...]  # before attempt 2, 3, ...
    timeout_seconds: int


def execution_seconds(job_seconds: list[int], max_attempts: int, backoffs: tuple[int, ...]) -> int:
    """How long an execution of these jobs may take: every attempt of every job as long as
    SageMaker lets it run, the back-offs between them and an hour for the steps around."""
    return max_attempts * sum(job_seconds) + len(job_seconds) * sum(backoffs) + 3600


@dataclass(frozen=True)
class StackEnvironment:
    """What the deployed stack tells the Prepare function (its environment variables)."""

    image_uri: str
    role_arn: str
    bucket: str
    kms_key_arn: str | None = None
    name_prefix: str = "ernie"
    dataset_prefix: str = bucket_layout.DATASETS
    output_prefix: str = bucket_layout.MODELS
    checkpoint_prefix: str = bucket_layout.CHECKPOINTS
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    limits: ExecutionLimits | None = None  # None: no input is too long for the execution

    def __post_init__(self) -> None:
        missing = [n for n in ("image_uri", "role_arn", "bucket") if not getattr(self, n)]
        if missing:
            raise StackEnvironmentError(f"stack environment lacks {', '.join(missing)}")
        if bool(self.subnets) != bool(self.security_groups):
            raise StackEnvironmentError(
                "a VPC needs both subnets and security groups (SUBNETS, SECURITY_GROUPS)"
            )
        problem = name_prefix_problem(self.name_prefix)
        if problem:
            raise StackEnvironmentError(f"NAME_PREFIX {problem}")
        problems = _environment_problems(self)
        if problems:
            raise StackEnvironmentError(
                "SageMaker would refuse the stack's settings: " + "; ".join(problems)
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> StackEnvironment:
        """Read IMAGE_URI, ROLE_ARN, BUCKET (required); KMS_KEY_ARN, FOLDER_VARIABLES,
        SUBNETS and SECURITY_GROUPS (comma-separated), TAGS (a JSON object) and
        EXECUTION_LIMITS (ExecutionLimits as a JSON object) are optional."""
        missing = [n for n in ("IMAGE_URI", "ROLE_ARN", "BUCKET") if not environ.get(n)]
        if missing:
            raise StackEnvironmentError(
                f"the Prepare function's environment lacks {', '.join(missing)}"
            )
        folders = {
            name: environ[var].strip("/")
            for name, var in FOLDER_VARIABLES.items()
            if environ.get(var)
        }
        return cls(
            image_uri=environ["IMAGE_URI"],
            role_arn=environ["ROLE_ARN"],
            bucket=environ["BUCKET"],
            kms_key_arn=environ.get("KMS_KEY_ARN") or None,
            subnets=_split(environ.get("SUBNETS", "")),
            security_groups=_split(environ.get("SECURITY_GROUPS", "")),
            tags=_read_tags(environ.get("TAGS")),
            limits=_read_limits(environ.get("EXECUTION_LIMITS")),
            **folders,
        )


def stack_tags(env: StackEnvironment) -> list[dict[str, str]]:
    """The stack's tags as a request's Tags; aws: is reserved for AWS's own, which
    SageMaker refuses in a request."""
    return [{"Key": k, "Value": v} for k, v in env.tags.items() if not k.startswith("aws:")]


def _read_tags(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        tags: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StackEnvironmentError(f"TAGS is not JSON: {exc}") from None
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise StackEnvironmentError("TAGS must be a JSON object of strings")
    return tags


def _read_limits(text: str | None) -> ExecutionLimits | None:
    if not text:
        return None
    try:
        given = json.loads(text)
        return ExecutionLimits(
            int(given["max_attempts"]),
            tuple(int(s) for s in given["backoff_seconds"]),
            int(given["timeout_seconds"]),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise StackEnvironmentError(f"EXECUTION_LIMITS is unreadable: {exc!r}") from None


def _environment_problems(env: StackEnvironment) -> list[str]:
    """What in the stack's settings S3 or SageMaker would refuse, setting by setting."""
    problems = (
        []
        if BUCKET_PATTERN.fullmatch(env.bucket)
        else [f"bucket: {env.bucket!r} is not an S3 bucket name"]
    )
    for name in ("dataset_prefix", "output_prefix", "checkpoint_prefix"):
        if not valid_key_prefix(getattr(env, name)):
            problems.append(f"{name}: {getattr(env, name)!r} is not a key prefix")
    room = sagemaker_api.member_shape("Tags")["max"] - len(EXECUTION_TAGS)
    if len(stack_tags(env)) > room:
        problems.append(f"tags: at most {room} (each job adds {', '.join(EXECUTION_TAGS)})")
    return problems + _refused_settings(env)


def _refused_settings(env: StackEnvironment) -> list[str]:
    """The settings that go into the request as they are, checked as the request's members."""
    members = {
        "image_uri": ("AlgorithmSpecification.TrainingImage", env.image_uri),
        "role_arn": ("RoleArn", env.role_arn),
        "kms_key_arn": ("OutputDataConfig.KmsKeyId", env.kms_key_arn),
        "subnets": ("VpcConfig.Subnets", list(env.subnets)),
        "security_groups": ("VpcConfig.SecurityGroupIds", list(env.security_groups)),
        "tags": ("Tags", stack_tags(env)),
    }
    return [
        f"{name}: {violation.message()}"
        for name, (member, value) in members.items()
        if value  # absent optional settings leave their member out of the request
        for violation in sagemaker_api.check_member(member, value)
    ]


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())
