"""The Task states of a rehearsal, served locally: `python -m rehearsal.tasks`.

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
from pathlib import Path
from typing import Any

from rehearsal.local_sagemaker import ResourceInUse, ValidationException, run_training_job

LAMBDA_INVOKE = ":states:::lambda:invoke"
TRAINING_JOB = ":states:::sagemaker:createTrainingJob.sync"
SNS_PUBLISH = ":states:::sns:publish"


class TaskError(Exception):
    def __init__(self, name: str, cause: str) -> None:
        super().__init__(cause)
        self.name, self.cause = name, cause


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def invoke_prepare(parameters: dict, config: dict) -> dict:
    """The Prepare Lambda: its real handler, with the variables the stack gave it."""
    os.environ.update(config["prepare_environment"])
    from training.execution import handler

    try:
        payload = handler(parameters["Payload"], None)
    except Exception as exc:  # Lambda reports the exception's class name as the error
        raise TaskError(type(exc).__name__, str(exc)) from None
    _say(f"[prepare] job {payload['request']['TrainingJobName']} (attempt {payload['attempt']})")
    return {"StatusCode": 200, "Payload": payload}


def create_training_job(request: dict, config: dict) -> dict:
    """createTrainingJob.sync: run the job to its end; a failed job is States.TaskFailed."""
    if _simulated_capacity_error(config):
        _say(f"[rehearsal] {request['TrainingJobName']}: simulating a capacity shortage")
        job = {
            "TrainingJobName": request["TrainingJobName"],
            "TrainingJobStatus": "Failed",
            "SecondaryStatus": "Failed",
            "FailureReason": "CapacityError: Unable to provision requested ML compute capacity. "
            "(simulated by the rehearsal)",
        }
        raise TaskError("States.TaskFailed", json.dumps(job))
    try:
        job = run_training_job(
            request,
            Path(config["buckets"]),
            Path(config["jobs"]),
            on_line=lambda line: _say(f"  {line}"),
        )
    except ResourceInUse as exc:
        raise TaskError("SageMaker.ResourceInUseException", str(exc)) from None
    except ValidationException as exc:
        raise TaskError("SageMaker.ValidationException", str(exc)) from None
    if job["TrainingJobStatus"] != "Completed":
        # Step Functions' Cause for a failed .sync job is the DescribeTrainingJob JSON.
        raise TaskError("States.TaskFailed", json.dumps(job))
    return job


def _simulated_capacity_error(config: dict) -> bool:
    """Whether this job is one of the first `capacity_errors` of the rehearsal."""
    counter = Path(config["jobs"]) / ".capacity-errors-simulated"
    done = int(counter.read_text()) if counter.is_file() else 0
    if done >= config.get("capacity_errors", 0):
        return False
    counter.parent.mkdir(parents=True, exist_ok=True)
    counter.write_text(str(done + 1))
    return True


def publish(parameters: dict, config: dict) -> dict:
    """SNS: print what subscribers would receive."""
    _say(f"[sns] {parameters.get('Subject', '')}: {json.dumps(parameters.get('Message'))}")
    return {"MessageId": "local"}


SERVICES = {LAMBDA_INVOKE: invoke_prepare, TRAINING_JOB: create_training_job, SNS_PUBLISH: publish}


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
    print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
