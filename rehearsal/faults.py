"""SageMaker's failures, played as AWS reports them to `createTrainingJob.sync`.

`ernie-sm rehearse --fault NAME` (repeatable) makes the next training jobs of a rehearsal
fail one way each, in order, so that every route of the state machine can be rehearsed:

  capacity        the job starts, finds no instances and fails (FailureReason CapacityError)
  resource-limit  CreateTrainingJob is refused: an account quota is used up
  throttled       CreateTrainingJob is throttled
  access-denied   the state machine's role may not call CreateTrainingJob
  invalid-request the request reaches the local SageMaker with an instance type that does
                  not exist, which refuses it as the API would
  stopped         the job stops at MaxRuntimeInSeconds, with no FailureReason
  interrupted     the spot job is interrupted again and again (SecondaryStatusTransitions
                  grow with each), then fails with an internal error: a Cause longer than
                  the 32,768 characters Step Functions holds

What Step Functions gives the definition: an API error is named "SageMaker." + the Java
SDK's exception class (ResourceLimitExceededException has its own, every other error code
is AmazonSageMakerException) with the SDK's plain-text message as Cause; a job that ends
Failed or Stopped is States.TaskFailed with its DescribeTrainingJob JSON as Cause.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone


class TaskError(Exception):
    """A Task state's failure: the error name and Cause that the definition's Catch sees."""

    def __init__(self, name: str, cause: str) -> None:
        super().__init__(cause)
        self.name, self.cause = name, cause


# SageMaker error codes with an exception class of their own in the Java SDK.
OWN_CLASSES = {
    "ResourceLimitExceeded": "ResourceLimitExceededException",
    "ResourceInUse": "ResourceInUseException",
    "ResourceNotFound": "ResourceNotFoundException",
}


def api_error(code: str, message: str) -> TaskError:
    """A SageMaker API error, named and worded as the integration reports it."""
    return TaskError(
        "SageMaker." + OWN_CLASSES.get(code, "AmazonSageMakerException"),
        f"{message} (Service: AmazonSageMaker; Status Code: 400; Error Code: {code}; "
        f"Request ID: {uuid.uuid4()}; Proxy: null)",
    )


def job_ended(job: dict) -> TaskError:
    """A job that ended Failed or Stopped, as `.sync` reports it."""
    return TaskError("States.TaskFailed", json.dumps(job, default=str))


def _described(request: dict, status: str, secondary: str, reason: str | None) -> dict:
    name = request["TrainingJobName"]
    job = {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:local:000000000000:training-job/{name.lower()}",
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "StoppingCondition": request.get("StoppingCondition", {}),
        "ModelArtifacts": {"S3ModelArtifacts": ""},
        "CreationTime": datetime.now(timezone.utc).isoformat(),
    }
    return {**job, "FailureReason": reason} if reason else job


def _capacity(request: dict) -> dict:
    reason = (
        "CapacityError: Unable to provision requested ML compute capacity. Please retry "
        "using a different ML instance type."
    )
    raise job_ended(_described(request, "Failed", "Failed", reason))


def _resource_limit(request: dict) -> dict:
    kind = request.get("ResourceConfig", {}).get("InstanceType", "?")
    raise api_error(
        "ResourceLimitExceeded",
        f"The account-level service limit '{kind} for training job usage' is 0 Instances, "
        "with current utilization of 0 Instances and a request delta of 1 Instances. Please "
        "use AWS Service Quotas to request an increase for this quota.",
    )


def _throttled(request: dict) -> dict:
    raise api_error("ThrottlingException", "Rate exceeded")


def _access_denied(request: dict) -> dict:
    raise api_error(
        "AccessDeniedException",
        "User: arn:aws:sts::000000000000:assumed-role/rehearsal/states is not authorized to "
        "perform: sagemaker:CreateTrainingJob on resource: arn:aws:sagemaker:local:"
        f"000000000000:training-job/{request['TrainingJobName']} because no identity-based "
        "policy allows the sagemaker:CreateTrainingJob action",
    )


def _invalid_request(request: dict) -> dict:
    """A request the local SageMaker itself refuses: the caller runs it (see `bend`)."""
    return {**request, "ResourceConfig": {**request["ResourceConfig"], "InstanceType": "ml.x9"}}


def _stopped(request: dict) -> dict:
    raise job_ended(_described(request, "Stopped", "MaxRuntimeExceeded", None))


SPOT_INTERRUPTIONS = 150  # each adds its transitions to the job's description


def _interrupted(request: dict) -> dict:
    job = _described(
        request,
        "Failed",
        "Failed",
        "InternalServerError: We encountered an internal error. Please try again.",
    )
    now = datetime.now(timezone.utc).isoformat()
    job["SecondaryStatusTransitions"] = [
        {"Status": status, "StartTime": now, "EndTime": now, "StatusMessage": message}
        for _ in range(SPOT_INTERRUPTIONS)
        for status, message in (
            ("Starting", "Starting the training job"),
            ("Training", "Training image download completed. Training in progress."),
            ("Interrupted", "The spot instance was interrupted; waiting for capacity."),
        )
    ]
    raise job_ended(job)


def _none(request: dict) -> dict:
    """No fault: the job runs as asked (to play a fault on a later job of the execution,
    e.g. ["none", "capacity"] for its evaluation)."""
    return request


FAULTS: dict[str, Callable[[dict], dict]] = {
    "none": _none,
    "capacity": _capacity,
    "resource-limit": _resource_limit,
    "throttled": _throttled,
    "access-denied": _access_denied,
    "invalid-request": _invalid_request,
    "stopped": _stopped,
    "interrupted": _interrupted,
}


def bend(fault: str, request: dict) -> dict:
    """Play `fault` on a CreateTrainingJob request: raise its TaskError, or return the
    request to hand to the local SageMaker instead."""
    return FAULTS[fault](request)
