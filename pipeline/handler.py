"""The state machine's Prepare step (a Lambda function): an execution input and the
stack's environment -> the next job's CreateTrainingJob request.

The Prepare function's bundle holds the packages LAMBDA_PACKAGES of
stacks/training_pipeline.py names (ernie_sm.contract, ernie_sm.pipeline): standard library
only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ernie_sm.contract.s3_uri import S3_URI_PATTERN
from ernie_sm.pipeline.execution_input import ExecutionInput, stage_of
from ernie_sm.pipeline.parsing import parse_input
from ernie_sm.pipeline.requests import evaluation_job_request, training_job_request
from ernie_sm.pipeline.stack_environment import StackEnvironment


def prepare(
    raw: object,
    environ: Mapping[str, str],
    execution: str,
    attempt: int = 1,
    model: str | None = None,
    stage: int | None = None,
    previous_model: str | None = None,
) -> tuple[ExecutionInput, StackEnvironment, dict[str, Any]]:
    """What the Prepare step makes of an execution input, given the Prepare function's
    environment variables: the input (the stack's defaults under it), and the request:
    the training job's, or with `model` (the trained model.tar.gz) the evaluation's. An
    input with stages gets stage `stage`'s (the first when None; see training_job_request)."""
    env = StackEnvironment.from_environ(environ)
    if isinstance(raw, dict):  # the stack's defaults (instance type, ...) under the user's input
        raw = {**json.loads(environ.get("INPUT_DEFAULTS") or "{}"), **raw}
    inp = parse_input(raw)
    now = datetime.now(timezone.utc)
    if model is not None:
        return inp, env, evaluation_job_request(inp, env, execution, attempt, now, model)
    if inp.stages is not None and stage is None:
        stage = 0
    return inp, env, training_job_request(inp, env, execution, attempt, now, stage, previous_model)


def stage_summary(inp: ExecutionInput, index: int) -> dict[str, Any]:
    """What the state machine needs of stage `index`: its index and name, and the index
    of the next stage unless it is the last."""
    stage = stage_of(inp, index)
    summary: dict[str, Any] = {"index": index, "name": stage.name}
    if inp.stages is not None and index + 1 < len(inp.stages):
        summary["next"] = index + 1
    return summary


def handler(event: dict, context: object) -> dict:
    """The Prepare step: {"input", "execution", "attempt"} -> {"request", "attempt"}.

    With "model" (the S3 URI of the trained model.tar.gz) in the event, the request is the
    evaluation job's (the state machine's "Prepare evaluation"); without it, the training
    job's. For an input with stages, "stage" ({"index": i, "model": the model.tar.gz of
    stage i - 1}, from "Prepare stage"; the first stage without it) picks the stage, and
    the answer has "stage", stage_summary's. Bad input raises ExecutionInputError, which Step
    Functions sees as that error type with the message naming the fields.
    """
    execution, attempt, model, stage = _read_event(event)
    index, previous = stage.get("index"), stage.get("model")
    inp, _, request = prepare(
        event.get("input"), os.environ, execution, attempt, model, index, previous
    )
    # Only what the state machine selects from the answer (Prepare's ResultSelector): each
    # state's data is held to 256 KiB (Step Functions quotas), and the normalised input
    # beside the request would take a two-stage input past it.
    answer: dict[str, Any] = {"request": request, "attempt": attempt}
    if inp.stages is not None and model is None:
        answer["stage"] = stage_summary(inp, index or 0)
    return answer


def _read_event(event: dict) -> tuple[str, int, str | None, dict[str, Any]]:
    """The event's execution name, attempt, model and stage; a bad one is the state
    machine's mistake (ValueError), not the input's."""
    execution = event.get("execution")
    if not isinstance(execution, str) or not execution:
        raise ValueError(f"the event needs the execution name in 'execution', got {execution!r}")
    attempt = event.get("attempt", 1)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"'attempt' must be an integer >= 1, got {attempt!r}")
    model = event.get("model")
    if model is not None and not (isinstance(model, str) and S3_URI_PATTERN.fullmatch(model)):
        raise ValueError(f"'model' must be the S3 URI of a model.tar.gz, got {model!r}")
    stage = event.get("stage") or {}
    if not isinstance(stage, dict) or not set(stage) <= {"index", "model"}:
        raise ValueError(f"'stage' must be an object of index and model, or null, got {stage!r}")
    return execution, attempt, model, stage
