"""Executions of the pretraining state machine: build and start one, and read how one is doing.

Where an execution stands comes from three services: Step Functions (its status, input,
output or error), SageMaker (the training job of its current attempt) and CloudWatch (the
job's latest `Training-loss`). The current job is found, in this order, in the execution's
output (once it succeeded), in its history (the latest createTrainingJob task the Train
state scheduled carries the TrainingJobName in its parameters), and by name: every
attempt's job name holds a hash of the execution name (ernie_sm.pipeline.naming.job_name).
Nothing here prints; operations.commands renders.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ernie_sm.operations.stack import OperationsError, aws_errors
from ernie_sm.pipeline.execution_input import ExecutionInputError
from ernie_sm.pipeline.parsing import parse_input

LOSS_METRIC = "Training-loss"
METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"
LOSS_WINDOW = timedelta(hours=1)
ENDED = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
EXECUTION_NAME_MAX = 80
_TRAIN_RESOURCE = "createTrainingJob"
_HISTORY_EVENTS_MAX = 1000  # how far back to look for the Train task (a few dozen per attempt)


class InputError(OperationsError):
    """The execution input (file or flags) is unusable; nothing was sent to AWS."""


# ---------------------------------------------------------------------------------------
# The input


def read_input_file(path: str) -> dict[str, Any]:
    """The JSON object in `path` ("-" reads standard input)."""
    import sys

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read the input file {path}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object (the execution input), not {text[:40]!r}")
    return data


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """`--hp name=value` items as {name: value} (values stay strings; the contract parses them)."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--hp {item!r}: expected name=value, e.g. --hp batch_size=4096")
        values[name.strip()] = value
    return values


def build_input(
    base: Mapping[str, Any] | None = None,
    *,
    dataset: str | None = None,
    instance_type: str | None = None,
    instance_count: int | None = None,
    spot: bool | None = None,
    hyperparameters: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The input file's object with the flags given over it (flags win, hyperparameters by name).

    Validated with ernie_sm.pipeline.parsing.parse_input, the contract the Prepare step applies;
    InputError names every bad field. Returns what the user gave, not the defaults filled
    in, so the stack's own defaults (instance type and count) still apply in the Prepare step.
    """
    raw: dict[str, Any] = dict(base or {})
    flags = {
        "dataset": dataset,
        "instance_type": instance_type,
        "instance_count": instance_count,
        "spot": spot,
    }
    raw.update({name: value for name, value in flags.items() if value is not None})
    if hyperparameters:
        given = raw.get("hyperparameters")
        merged = dict(given) if isinstance(given, Mapping) else {}
        merged.update(hyperparameters)
        raw["hyperparameters"] = merged
    try:
        parse_input(raw)
    except ExecutionInputError as e:
        raise InputError(str(e)) from None
    return raw


def default_execution_name(raw: Mapping[str, Any], now: datetime) -> str:
    """`<dataset name>-<UTC yyyymmdd-HHMMSS>`, e.g. wiki-zh-20250101-120000."""
    dataset = str(raw.get("dataset") or "demo").strip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", dataset).strip("-")[:40] or "ernie"
    return f"{slug}-{now.astimezone(timezone.utc):%Y%m%d-%H%M%S}"


# ---------------------------------------------------------------------------------------
# Names and addresses


def execution_arn(state_machine_arn: str, name_or_arn: str) -> str:
    """An execution's ARN from its ARN or its name (an execution of this state machine)."""
    if name_or_arn.startswith("arn:"):
        if ":execution:" not in name_or_arn:
            raise OperationsError(f"{name_or_arn} is not the ARN of a Step Functions execution")
        return name_or_arn
    if ":stateMachine:" not in state_machine_arn:
        raise OperationsError(f"{state_machine_arn} is not the ARN of a state machine")
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name_or_arn}"


def console_url(arn: str) -> str:
    """The Step Functions console page of an execution (its region comes from the ARN)."""
    region = arn.split(":")[3]
    return (
        f"https://{region}.console.aws.amazon.com/states/home?region={region}"
        f"#/v2/executions/details/{arn}"
    )


def job_name_marker(execution_name: str) -> str:
    """The part every attempt's training-job name holds: `-<hash of the execution name>-a`.

    Mirrors ernie_sm.pipeline.naming.job_name (`<prefix>-<slug>-<hash>-a<n>-<time>`);
    tests/test_operations.py checks the two agree.
    """
    return f"-{hashlib.sha256(execution_name.encode('utf-8')).hexdigest()[:8]}-a"


# ---------------------------------------------------------------------------------------
# Starting


def start_execution(sfn: Any, state_machine_arn: str, raw: Mapping[str, Any], name: str) -> str:
    """Start an execution; return its ARN."""
    from botocore.exceptions import ClientError

    with aws_errors(f"starting execution {name}"):
        try:
            response = sfn.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(raw)
            )
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code == "ExecutionAlreadyExists":
                raise OperationsError(
                    f"an execution named {name} already exists: pass another --name"
                ) from None
            if code == "InvalidName":
                raise OperationsError(
                    f"{name!r} is not a valid execution name: 1 to {EXECUTION_NAME_MAX} letters, "
                    "digits, - and _"
                ) from None
            if code == "StateMachineDoesNotExist":
                raise OperationsError(
                    f"the state machine {state_machine_arn} does not exist: redeploy the "
                    "stack with `cdk deploy`"
                ) from None
            raise
    return str(response["executionArn"])


# ---------------------------------------------------------------------------------------
# Reading


@dataclass
class Progress:
    """Where one execution stands."""

    arn: str
    name: str
    status: str
    started: datetime | None = None
    stopped: datetime | None = None
    training_job: str | None = None
    job_status: str | None = None
    secondary_status: str | None = None
    failure_reason: str | None = None
    loss: float | None = None
    loss_time: datetime | None = None
    model: str | None = None
    attempts: int | None = None
    error: str | None = None
    cause: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


def describe_execution(sfn: Any, arn: str) -> dict[str, Any]:
    from botocore.exceptions import ClientError

    with aws_errors(f"reading execution {arn}"):
        try:
            return sfn.describe_execution(executionArn=arn)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("ExecutionDoesNotExist", "InvalidArn"):
                raise OperationsError(
                    f"no execution {arn}: check the name (`ernie-sm ls`), --stack and --region"
                ) from None
            raise


def from_description(description: Mapping[str, Any]) -> Progress:
    """The Step Functions part of Progress: status, times, output (model) or error."""
    progress = Progress(
        arn=str(description["executionArn"]),
        name=str(description.get("name") or description["executionArn"].rsplit(":", 1)[-1]),
        status=str(description.get("status", "")),
        started=description.get("startDate"),
        stopped=description.get("stopDate"),
    )
    output = _json_object(description.get("output"))
    if output:
        progress.model = _text(output.get("model"))
        progress.training_job = _text(output.get("training_job"))
        attempts = output.get("attempts")
        progress.attempts = attempts if isinstance(attempts, int) else None
    progress.error = _text(description.get("error"))
    progress.cause = readable_cause(description.get("cause"))
    return progress


def readable_cause(cause: object) -> str | None:
    """A failure's cause; a Lambda error's JSON ({"errorMessage": ...}) becomes its message."""
    if not isinstance(cause, str) or not cause:
        return None
    data = _json_object(cause)
    if data and isinstance(data.get("errorMessage"), str):
        return data["errorMessage"]
    return cause


def training_job_from_history(events: Sequence[Mapping[str, Any]]) -> str | None:
    """The TrainingJobName of the latest createTrainingJob task in the events, or None."""
    for event in sorted(events, key=lambda e: e.get("id", 0), reverse=True):
        if event.get("type") not in ("TaskScheduled", "TaskSubmitted"):
            continue
        details = event.get("taskScheduledEventDetails") or event.get("taskSubmittedEventDetails")
        if not details or details.get("resourceType") != "sagemaker":
            continue
        if not str(details.get("resource", "")).startswith(_TRAIN_RESOURCE):
            continue
        name = _text((_json_object(details.get("parameters")) or {}).get("TrainingJobName"))
        if name is None:  # TaskSubmitted carries the service's answer instead
            output = _json_object(details.get("output")) or {}
            name = _text(output.get("TrainingJobName")) or _arn_name(output.get("TrainingJobArn"))
        if name:
            return name
    return None


def _history_events(sfn: Any, arn: str) -> list[dict[str, Any]]:
    """The execution's newest events first, up to _HISTORY_EVENTS_MAX or the first Train task."""
    events: list[dict[str, Any]] = []
    paginator = sfn.get_paginator("get_execution_history")
    pages = paginator.paginate(
        executionArn=arn,
        reverseOrder=True,
        includeExecutionData=True,
        PaginationConfig={"MaxItems": _HISTORY_EVENTS_MAX, "PageSize": 100},
    )
    for page in pages:
        events.extend(page.get("events", []))
        if training_job_from_history(page.get("events", [])):
            break
    return events


def find_training_job(sfn: Any, sagemaker: Any, progress: Progress) -> str | None:
    """The training job of the execution's latest attempt, or None if there is none yet."""
    from botocore.exceptions import BotoCoreError, ClientError

    if progress.training_job:
        return progress.training_job
    try:
        name = training_job_from_history(_history_events(sfn, progress.arn))
    except (BotoCoreError, ClientError):
        name = None  # no states:GetExecutionHistory: look the job up by name instead
    if name:
        return name
    try:
        pages = sagemaker.get_paginator("list_training_jobs").paginate(
            NameContains=job_name_marker(progress.name),
            SortBy="CreationTime",
            SortOrder="Descending",
            PaginationConfig={"MaxItems": 1},
        )
        for page in pages:
            for job in page.get("TrainingJobSummaries", []):
                return str(job["TrainingJobName"])
    except (BotoCoreError, ClientError):
        pass
    return None


def describe_training_job(sagemaker: Any, name: str) -> dict[str, Any] | None:
    """DescribeTrainingJob's answer, or None while SageMaker does not know the job yet."""
    from botocore.exceptions import ClientError

    with aws_errors(f"reading training job {name}"):
        try:
            return sagemaker.describe_training_job(TrainingJobName=name)
        except ClientError as e:
            error = e.response.get("Error", {})
            message = str(error.get("Message", "")).lower()
            if error.get("Code") in ("ValidationException", "ResourceNotFound") and (
                "not found" in message or "could not find" in message
            ):
                return None
            raise


def latest_loss(
    cloudwatch: Any, job: str, now: datetime | None = None
) -> tuple[float, datetime] | None:
    """The job's newest `Training-loss` datapoint of the last hour (one-minute average)."""
    now = now or datetime.now(timezone.utc)
    with aws_errors(f"reading {LOSS_METRIC} of {job}"):
        response = cloudwatch.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "loss",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": METRIC_NAMESPACE,
                            "MetricName": LOSS_METRIC,
                            "Dimensions": [{"Name": "TrainingJobName", "Value": job}],
                        },
                        "Period": 60,
                        "Stat": "Average",
                    },
                    "ReturnData": True,
                }
            ],
            StartTime=now - LOSS_WINDOW,
            EndTime=now + timedelta(minutes=1),
            ScanBy="TimestampDescending",
            MaxDatapoints=10,
        )
    points = [
        (float(value), stamp)
        for result in response.get("MetricDataResults", [])
        for stamp, value in zip(
            result.get("Timestamps", []), result.get("Values", []), strict=False
        )
    ]
    return max(points, key=lambda point: point[1]) if points else None


@dataclass
class Clients:
    sfn: Any
    sagemaker: Any
    cloudwatch: Any


def progress_of(clients: Clients, arn: str, now: datetime | None = None) -> Progress:
    """Everything `watch` shows about one execution, read now."""
    progress = from_description(describe_execution(clients.sfn, arn))
    if not progress.error and progress.status in ("FAILED", "TIMED_OUT", "ABORTED"):
        progress.error, progress.cause = _failure_from_history(clients.sfn, arn)
    job = find_training_job(clients.sfn, clients.sagemaker, progress)
    progress.training_job = job
    if job:
        described = describe_training_job(clients.sagemaker, job)
        if described:
            progress.job_status = _text(described.get("TrainingJobStatus"))
            progress.secondary_status = _text(described.get("SecondaryStatus"))
            progress.failure_reason = _text(described.get("FailureReason"))
        loss = latest_loss(clients.cloudwatch, job, now)
        if loss:
            progress.loss, progress.loss_time = loss
    return progress


def _failure_from_history(sfn: Any, arn: str) -> tuple[str | None, str | None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        page = sfn.get_execution_history(executionArn=arn, reverseOrder=True, maxResults=20)
    except (BotoCoreError, ClientError):
        return None, None
    for event in page.get("events", []):
        for key in (
            "executionFailedEventDetails",
            "executionTimedOutEventDetails",
            "executionAbortedEventDetails",
        ):
            details = event.get(key)
            if details:
                return _text(details.get("error")), readable_cause(details.get("cause"))
    return None, None


def recent_executions(clients: Clients, state_machine_arn: str, limit: int) -> list[Progress]:
    """The newest `limit` executions, newest first, with model or error and training job."""
    with aws_errors(f"listing the executions of {state_machine_arn}"):
        pages = clients.sfn.get_paginator("list_executions").paginate(
            stateMachineArn=state_machine_arn, PaginationConfig={"MaxItems": limit}
        )
        listed = [item for page in pages for item in page.get("executions", [])]
    listed.sort(key=lambda item: item["startDate"].timestamp(), reverse=True)
    found = []
    for item in listed[:limit]:
        progress = from_description(describe_execution(clients.sfn, item["executionArn"]))
        if progress.status == "RUNNING":
            progress.training_job = find_training_job(clients.sfn, clients.sagemaker, progress)
        found.append(progress)
    return found


def _json_object(text: object) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _arn_name(value: object) -> str | None:
    return value.rsplit("/", 1)[-1] if isinstance(value, str) and "/" in value else None
