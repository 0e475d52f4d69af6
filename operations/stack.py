"""Finding the deployed stack: an AWS session, the stack's CloudFormation outputs, clear errors.

A notebook reads the same outputs the commands do:

    import boto3
    from ernie_sm.operations.stack import stack_outputs

    outputs = stack_outputs("ErniePretraining", boto3.Session(region_name="us-east-1"))
    outputs["ImageUri"], outputs["ExecutionRoleArn"], outputs["DatasetBucket"]

Every AWS failure becomes an `OperationsError` whose one-line message says what to do
(configure credentials, pass --region, `cdk deploy`), never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

DEFAULT_STACK = "ErniePretraining"
# The outputs stacks/outputs.py `add_outputs` gives a stack (ErnieTrainingStack's too).
OUTPUTS = (
    "DatasetBucket",
    "ImageRepository",
    "ImageUri",
    "StateMachineArn",
    "PrepareFunctionName",
    "ExecutionRoleArn",
    "NotificationTopicArn",
    "DashboardUrl",
)
_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
_EXPIRED_CODES = {
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
}


class OperationsError(Exception):
    """A problem with the AWS account, the stack or an execution, meant for the user."""


def make_session(region: str | None = None, profile: str | None = None) -> Any:
    """A boto3 session from the default credential chain, or from a named profile."""
    try:
        import boto3
    except ImportError:
        raise OperationsError("boto3 is not installed: pip install 'ernie-sm[prepare]'") from None
    with aws_errors("creating an AWS session"):
        return boto3.Session(profile_name=profile, region_name=region)


def client(session: Any, service: str) -> Any:
    """A client of the session's region; a missing region becomes an OperationsError."""
    with aws_errors(f"creating a {service} client"):
        return session.client(service)


def region_of(session: Any) -> str:
    region = session.region_name
    if not region:
        raise OperationsError(_no_region())
    return region


def error_message(error: Exception, doing: str) -> str:
    """A one-line, user-facing message for a boto3/botocore failure while `doing`."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return (
            f"no AWS credentials found while {doing}: configure them (`aws configure`, "
            "`aws sso login`, AWS_PROFILE) or pass --profile"
        )
    if isinstance(error, NoRegionError):
        return _no_region()
    if isinstance(error, ProfileNotFound):
        return f"{error}: pass an existing --profile (`aws configure list-profiles`)"
    if isinstance(error, EndpointConnectionError):
        return f"cannot reach AWS while {doing}: {error}"
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        message = str(error.response.get("Error", {}).get("Message", error))
        if code in _DENIED_CODES:
            return f"access denied while {doing}: {message}"
        if code in _EXPIRED_CODES:
            return (
                f"AWS rejected the credentials while {doing} ({code}): refresh them "
                "(`aws sso login`) or pass another --profile"
            )
        return f"{doing} failed ({code}): {message}"
    return f"{doing} failed: {error}"


def _no_region() -> str:
    return "no AWS region configured: pass --region or set one (`aws configure`, AWS_REGION)"


@contextlib.contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """Turn boto3/botocore failures into an OperationsError saying what was being done."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as e:
        raise OperationsError(error_message(e, doing)) from e


def stack_outputs(stack_name: str, session: Any) -> dict[str, str]:
    """The stack's CloudFormation outputs as {OutputKey: OutputValue}.

    Raises OperationsError when the stack is not deployed in the session's region, and for
    missing credentials or region.
    """
    from botocore.exceptions import ClientError

    cloudformation = client(session, "cloudformation")
    region = region_of(session)
    with aws_errors(f"reading stack {stack_name} in {region}"):
        try:
            stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
        except ClientError as e:
            error = e.response.get("Error", {})
            if error.get("Code") == "ValidationError" and "does not exist" in str(
                error.get("Message", "")
            ):
                raise OperationsError(
                    f"stack {stack_name} is not deployed in {region}: deploy it with "
                    "`cdk deploy`, or pass the --stack and --region it was deployed with"
                ) from None
            raise
    if not stacks:
        raise OperationsError(f"stack {stack_name} is not deployed in {region}: run `cdk deploy`")
    stack = stacks[0]
    status = str(stack.get("StackStatus", ""))
    if status in ("CREATE_IN_PROGRESS", "CREATE_FAILED", "ROLLBACK_COMPLETE", "DELETE_COMPLETE"):
        raise OperationsError(
            f"stack {stack_name} in {region} is {status}: wait for `cdk deploy` to finish, "
            "or deploy it again"
        )
    return {
        str(output["OutputKey"]): str(output["OutputValue"])
        for output in stack.get("Outputs", [])
        if "OutputKey" in output and "OutputValue" in output
    }


def require(outputs: dict[str, str], names: Iterable[str], stack_name: str) -> list[str]:
    """The values of the named outputs, in order; OperationsError naming any that are missing."""
    names = list(names)
    missing = [name for name in names if not outputs.get(name)]
    if missing:
        has = ", ".join(sorted(outputs)) or "none"
        raise OperationsError(
            f"stack {stack_name} has no output {', '.join(missing)} (it has: {has}): is it "
            "this project's stack? Pass --stack, or redeploy it with `cdk deploy` (a stack "
            "of your own gets them from ernie_sm.stacks.outputs.add_outputs)"
        )
    return [outputs[name] for name in names]


def state_machine_arn(stack_name: str, session: Any) -> str:
    """The ARN of the stack's pretraining state machine."""
    (arn,) = require(stack_outputs(stack_name, session), ["StateMachineArn"], stack_name)
    return arn
