"""The Task states of a rehearsal, served locally: `python -m ernie_sm.rehearsal.tasks`.

Reads {"state", "resource", "input"} on stdin (input: the state's effective parameters,
as the service integration would receive them) and writes {"result": ...} or
{"error": NAME, "cause": TEXT} on stdout; progress goes to stderr. The rehearsal's
settings (the Prepare function's variables, the local bucket and jobs folders) come in
the file named by REHEARSAL_CONFIG.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import uuid
from pathlib import Path
from typing import Any

from ernie_sm.rehearsal import authorization, faults
from ernie_sm.rehearsal.authorization import AccessDenied, Request
from ernie_sm.rehearsal.definition import ACCOUNT, REGION
from ernie_sm.rehearsal.faults import TaskError
from ernie_sm.rehearsal.local_sagemaker import ResourceInUse, ValidationException, run_training_job

LAMBDA_INVOKE = ":states:::lambda:invoke"
TRAINING_JOB = ":states:::sagemaker:createTrainingJob.sync"
SNS_PUBLISH = ":states:::sns:publish"
DESCRIBE_JOB = ":states:::aws-sdk:sagemaker:describeTrainingJob"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def invoke_prepare(parameters: dict, config: dict) -> dict:
    """The Prepare Lambda: its real handler, with the variables the stack gave it, invoked
    as the state machine's role."""
    invoke = Request(
        config["state_machine_role"], "lambda:InvokeFunction", parameters["FunctionName"]
    )
    try:
        authorization.require([invoke], config["policies"])
    except AccessDenied as exc:  # Lambda's AccessDeniedException has no class of its own
        raise TaskError(
            "Lambda.AWSLambdaException", _sdk_cause(exc, "AWSLambda", 403, "AccessDeniedException")
        ) from None
    _warn_denied(
        _prepare_calls(config), config, "the function runs, but its logs and traces are lost"
    )
    os.environ.update(config["prepare_environment"])
    from ernie_sm.pipeline.handler import handler

    try:
        payload = handler(parameters["Payload"], None)
    except Exception as exc:  # the function's error, as Lambda hands it to Step Functions
        raise TaskError(type(exc).__name__, _lambda_error(exc)) from None
    _say(f"[prepare] job {payload['request']['TrainingJobName']} (attempt {payload['attempt']})")
    return {"StatusCode": 200, "Payload": payload}


def _lambda_error(exc: Exception) -> str:
    """Lambda's Cause for a function error: a JSON object, not the bare message."""
    return json.dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "requestId": str(uuid.uuid4()),
            "stackTrace": traceback.format_tb(exc.__traceback__),
        }
    )


def create_training_job(request: dict, config: dict) -> dict:
    """createTrainingJob.sync: run the job to its end, failing as the integration fails.
    The job's description is kept for DescribeTrainingJob (describe_training_job)."""
    try:
        job = _run_job(request, config)
    except TaskError as exc:
        if exc.name == "States.TaskFailed":  # a job that ended: its description is the Cause
            _remember(json.loads(exc.cause), config)
        raise
    _remember(job, config)
    return job


def _described_file(name: str, config: dict) -> Path:
    return Path(config["jobs"]) / f".described-{name}.json"


def _remember(job: dict, config: dict) -> None:
    path = _described_file(job["TrainingJobName"], config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job, default=str))


def describe_training_job(parameters: dict, config: dict) -> dict:
    """The AWS SDK integration's DescribeTrainingJob: a job this rehearsal ran or played,
    else SageMaker's answer for a name it does not know."""
    name = parameters["TrainingJobName"]
    job = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name.lower()}"
    describe = Request(config["state_machine_role"], "sagemaker:DescribeTrainingJob", job)
    try:  # the SDK integrations name errors by the AWS SDK for Java 2.x's classes
        authorization.require([describe], config["policies"])
    except AccessDenied as exc:
        raise TaskError(
            "SageMaker.SageMakerException",
            f"{exc} (Service: SageMaker, Status Code: 400, Request ID: {uuid.uuid4()})",
        ) from None
    path = _described_file(name, config)
    if not path.is_file():
        raise TaskError(
            "SageMaker.SageMakerException",
            f"Requested resource not found. (Service: SageMaker, Status Code: 400, "
            f"Request ID: {uuid.uuid4()})",
        )
    return json.loads(path.read_text())


def _run_job(request: dict, config: dict) -> dict:
    fault = _next_fault(config)
    if fault and fault != "none":
        _say(f"[rehearsal] {request['TrainingJobName']}: playing the fault {fault!r}")
        request = faults.bend(fault, request)
    try:
        authorization.require(
            _create_calls(request, config["state_machine_role"]), config["policies"]
        )
    except AccessDenied as exc:
        raise faults.api_error("AccessDeniedException", str(exc)) from None
    try:
        job = run_training_job(
            request,
            Path(config["buckets"]),
            Path(config["jobs"]),
            on_line=lambda line: _say(f"  {line}"),
            policies=config["policies"],
        )
    except ResourceInUse as exc:
        raise faults.api_error("ResourceInUse", str(exc)) from None
    except ValidationException as exc:
        raise faults.api_error("ValidationException", str(exc)) from None
    if job["TrainingJobStatus"] != "Completed":
        raise faults.job_ended(job)
    return job


def _next_fault(config: dict) -> str | None:
    """The fault this job plays: the rehearsal's faults are used up one per job, in order."""
    counter = Path(config["jobs"]) / ".faults-played"
    played = int(counter.read_text()) if counter.is_file() else 0
    if played >= len(config.get("faults", [])):
        return None
    counter.parent.mkdir(parents=True, exist_ok=True)
    counter.write_text(str(played + 1))
    return config["faults"][played]


def _create_calls(request: dict, role: str) -> list[Request]:
    """What createTrainingJob.sync asks of the state machine's role: CreateTrainingJob with
    the request's condition keys (SageMaker's "Actions, resources, and condition keys"),
    AddTags for its Tags, PassRole of the job's role to SageMaker, and DescribeTrainingJob
    while it waits."""
    job = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{request['TrainingJobName'].lower()}"
    tags = {t["Key"]: t["Value"] for t in request.get("Tags", [])}
    resources, output = request.get("ResourceConfig", {}), request.get("OutputDataConfig", {})
    vpc = request.get("VpcConfig", {})
    context: dict[str, str | list[str]] = {
        **{f"aws:RequestTag/{k}": v for k, v in tags.items()},
        "aws:TagKeys": list(tags),
        "sagemaker:InstanceTypes": [resources.get("InstanceType", "")],
        "sagemaker:NetworkIsolation": str(request.get("EnableNetworkIsolation", False)).lower(),
        "sagemaker:InterContainerTrafficEncryption": str(
            request.get("EnableInterContainerTrafficEncryption", False)
        ).lower(),
        "sagemaker:VolumeKmsKey": resources.get("VolumeKmsKeyId", ""),
        "sagemaker:OutputKmsKey": output.get("KmsKeyId", ""),
        "sagemaker:VpcSubnets": vpc.get("Subnets", []),
        "sagemaker:VpcSecurityGroupIds": vpc.get("SecurityGroupIds", []),
    }
    context = {k: v for k, v in context.items() if v not in ("", [])}
    calls = [Request(role, "sagemaker:CreateTrainingJob", job, context)]
    if tags:
        calls.append(Request(role, "sagemaker:AddTags", job, context))
    calls.append(
        Request(
            role,
            "iam:PassRole",
            request["RoleArn"],
            {"iam:PassedToService": "sagemaker.amazonaws.com", "iam:AssociatedResourceArn": job},
        )
    )
    return [*calls, Request(role, "sagemaker:DescribeTrainingJob", job)]


def _prepare_calls(config: dict) -> list[Request]:
    """What the Lambda service does as the Prepare function's role: its log and traces."""
    role, group = config["prepare_role"], config["prepare_log_group"]
    stream = f"{group}:log-stream:rehearsal"
    return [
        Request(role, "logs:CreateLogStream", stream),
        Request(role, "logs:PutLogEvents", stream),
        Request(role, "xray:PutTraceSegments", "*"),
    ]


def _warn_denied(calls: list[Request], config: dict, consequence: str) -> None:
    """Calls whose refusal AWS does not turn into a failure, only into something missing."""
    for denial in authorization.decide(calls, config["policies"]):
        if denial is not None:
            _say(f"[rehearsal] AWS would refuse: {denial.message()}: {consequence}")


def _sdk_cause(exc: Exception, service: str, status: int, code: str) -> str:
    """An AWS Java SDK error message, as Step Functions gives it as Cause."""
    return (
        f"{exc} (Service: {service}; Status Code: {status}; Error Code: {code}; "
        f"Request ID: {uuid.uuid4()}; Proxy: null)"
    )


def publish(parameters: dict, config: dict) -> dict:
    """SNS Publish as the state machine's role: the topic's policy and, for a topic with SSE,
    the KMS calls SNS makes with the publisher's credentials (SNS developer guide, "Key
    management": a publisher needs kms:GenerateDataKey* and kms:Decrypt); then print what
    subscribers would receive. Where the rehearsal's settings say publishing fails
    ("publish_error": [error name, cause]), it fails so."""
    if config.get("publish_error"):
        name, cause = config["publish_error"]
        _say(f"[sns] not published ({name}): {parameters.get('Subject', '')}")
        raise TaskError(name, cause)
    role, topic = config["state_machine_role"], parameters["TopicArn"]
    try:
        authorization.require([Request(role, "sns:Publish", topic)], config["policies"])
    except AccessDenied as exc:
        raise TaskError(
            "SNS.AuthorizationErrorException",
            _sdk_cause(exc, "AmazonSNS", 403, "AuthorizationError"),
        ) from None
    key = config["policies"]["encryption"].get(topic)
    if key:
        context = {"kms:EncryptionContext:aws:sns:topicArn": topic}
        calls = [
            authorization.kms(role, a, key, "sns", context)
            for a in ("kms:GenerateDataKey", "kms:Decrypt")
        ]
        try:
            authorization.require(calls, config["policies"])
        except AccessDenied as exc:
            kms_error = _sdk_cause(exc, "AWSKMS", 400, "AccessDeniedException")
            raise TaskError(
                "SNS.KMSAccessDeniedException",
                _sdk_cause(kms_error, "AmazonSNS", 400, "KMSAccessDenied"),
            ) from None
    _say(f"[sns] {parameters.get('Subject', '')}: {json.dumps(parameters.get('Message'))}")
    return {"MessageId": "local"}


SERVICES = {
    LAMBDA_INVOKE: invoke_prepare,
    TRAINING_JOB: create_training_job,
    SNS_PUBLISH: publish,
    DESCRIBE_JOB: describe_training_job,
}


def serve(task: dict[str, Any], config: dict) -> dict:
    for suffix, serve_task in SERVICES.items():
        if task["resource"].endswith(suffix):
            return serve_task(task["input"], config)
    raise TaskError("States.Runtime", f"a rehearsal cannot run {task['resource']}")


def main() -> None:
    task = json.load(sys.stdin)
    config = json.loads(Path(os.environ["REHEARSAL_CONFIG"]).read_text())
    try:
        reply = {"result": serve(task, config)}
    except TaskError as exc:
        reply = {"error": exc.name, "cause": exc.cause}
    try:
        print(json.dumps(reply), flush=True)
    except BrokenPipeError:  # the interpreter is gone (the rehearsal was interrupted)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
