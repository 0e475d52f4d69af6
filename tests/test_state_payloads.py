"""No input that Prepare accepts makes any state's data pass Step Functions' 256 KiB.

Step Functions ends an execution with States.DataLimitExceeded when a state's input or
output, or a task's result, is over 262,144 bytes of UTF-8 (Step Functions quotas), and no
Catch takes it: the execution fails without a notice. The rehearsal's interpreter fails
so too (rehearsal/run_state_machine.mjs); this test proves no accepted input gets there.

It builds, without running anything, the data of the states that hold the most, as the
definition (stacks/training_pipeline.py) makes them from Prepare's answer (the real
handler's), a DescribeTrainingJob answer for each job (every field the request echoes,
one FinalMetricDataList entry for each metric definition, a spot job's
SecondaryStatusTransitions) and the stages list so far, for maximal inputs: 8 stages and
an evaluation, each job's hyperparameters as large as Prepare takes, the longest names,
prefixes and model URIs, and a stack in a VPC of 16 subnets with as many tags as jobs may
carry. The largest states are the last stage's (its request, its description and the list
of the stages before it), a job's failure (its Cause, cut at 32,768 characters or whole,
beside its description) and the evaluation's (every stage's outcome beside the
evaluation's request and description).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from ernie_sm.contract import hyperparams  # noqa: E402
from ernie_sm.contract import tasks as job_tasks  # noqa: E402
from ernie_sm.contract.metrics import EVAL_METRIC_DEFINITIONS, METRIC_DEFINITIONS  # noqa: E402
from ernie_sm.pipeline import handler, limits, naming, parsing, stack_environment  # noqa: E402
from ernie_sm.pipeline.execution_input import ExecutionInputError  # noqa: E402
from ernie_sm.pipeline.limits import MAX_HYPERPARAMETERS_BYTES, MAX_STAGES  # noqa: E402
from ernie_sm.pipeline.stack_environment import StackEnvironment  # noqa: E402
from ernie_sm.rehearsal.local_sagemaker import ECHOED  # noqa: E402
from ernie_sm.stacks.network import MAX_SECURITY_GROUPS, MAX_SUBNETS  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

LIMIT = 262_144  # bytes of UTF-8 (Step Functions quotas: 256 KiB)
CAUSE_LIMIT = 32_768  # characters of an error's Cause (Step Functions API reference)
MAX_INTERRUPTIONS = 100  # spot interruptions of one job, each adding its transitions
ACCOUNT, REGION = "123456789012", "us-east-1"
BUCKET = "b" * 63
ENV = StackEnvironment(
    image_uri=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{'r' * 180}:{'t' * 20}",
    # IAM's longest: a path of 510 characters and a name of 64.
    role_arn=f"arn:aws:iam::{ACCOUNT}:role/{'p' * 509}/{'n' * 64}",
    bucket=BUCKET,
    kms_key_arn=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    subnets=tuple(f"subnet-{i:017x}" for i in range(MAX_SUBNETS)),
    security_groups=tuple(f"sg-{i:017x}" for i in range(MAX_SECURITY_GROUPS)),
    # As many tags as a job may carry beside the execution's, each as long as SageMaker takes.
    tags={
        f"{i:02d}{'k' * 126}": "v" * 256 for i in range(50 - len(stack_environment.EXECUTION_TAGS))
    },
)
EXECUTION = "e" * 80  # Step Functions' longest execution name
EXECUTION_ID = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{'m' * 80}:{EXECUTION}"
PREFIX = "ernie-" + "p" * (naming.JOB_NAME_PREFIX_MAX - 6)
DATASET = "datasets/" + "/".join(["d" * 100] * 5)[: limits.MAX_PREFIX - 9].rstrip("/")
MODEL_KEY = f"models/{'m' * 900}/output/model.tar.gz"
MODEL = f"s3://{BUCKET}/{MODEL_KEY}"
STAGE_NAME = "s" * 32
TIME = "2026-03-01T12:30:45.123000+00:00"
# Lambda's answer around the function's: the invoke integration's raw result.
LAMBDA_METADATA = {
    "ExecutedVersion": "$LATEST",
    "SdkHttpMetadata": {
        "AllHttpHeaders": {f"Header-{i}": ["h" * 100] for i in range(8)},
        "HttpHeaders": {f"Header-{i}": "h" * 100 for i in range(8)},
        "HttpStatusCode": 200,
    },
    "SdkResponseMetadata": {"RequestId": "r" * 36},
    "StatusCode": 200,
}
# Fields of a DescribeTrainingJob answer beyond what this model lists, generously.
OTHER_FIELDS = {"Other": "o" * 4096}


def size(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _filled(names: list[str], char: str, extra: dict[str, str], budget: int) -> dict[str, str]:
    """Hyperparameters of `names` (text ones, each at most 2500 characters) filled with
    `char` until they and `extra` take `budget` bytes as JSON."""
    values = dict(extra)
    for name in names:
        values[name] = ""
        room = budget - size(values)
        if room <= 0:
            del values[name]
            break
        count = min(2500 // (2 if ord(char) > 0xFFFF else 1), room // len(char.encode()))
        # Every 61st a "/": names of at most 240 bytes, as a file system takes (255).
        values[name] = "".join("/" if i % 61 == 60 else char for i in range(count))
    for name in extra:
        del values[name]
    return values


TEXT_HYPERPARAMETERS = ["train_filelist", "valid_filelist", "vocab_path", "ernie_config_path"]
NUMBER_HYPERPARAMETERS = sorted(
    name for name in hyperparams.SPECS if name not in {*TEXT_HYPERPARAMETERS, "checkpoints"}
)
EVAL_HYPERPARAMETERS = sorted(hyperparams.EVAL_SPECS)


def maximal_input(stages: int, char: str, evaluation: bool, stage_share: float) -> dict:
    """The largest input of its kind Prepare takes: each job's hyperparameters just within
    MAX_HYPERPARAMETERS_BYTES (numbers padded with spaces, which the trainer's parsers
    strip, to SageMaker's 2500 characters; text filled with `char`), `stage_share` of them
    each stage's own."""
    tasks = {"knowledge_masking": 1, "sentence_reordering": 1, "sentence_distance": 1}
    steps = limits.MAX_STEPS
    merged_extra = {
        "tasks": job_tasks.format_weights(tasks),
        "num_train_steps": str(steps),
    }
    budget = MAX_HYPERPARAMETERS_BYTES - 64  # the braces and commas the split adds
    own_budget = int(budget * stage_share)
    numbers = {
        name: " " * 2490 + "1"
        for name in NUMBER_HYPERPARAMETERS
        if name not in ("tasks", "task_loss_weights", "num_train_steps", "random_seed")
        and hyperparams.SPECS[name].default.replace(".", "", 1).isdigit()
    }
    own = dict(list(numbers.items())[: max(0, own_budget // 2560)])
    common = _filled(TEXT_HYPERPARAMETERS, char, {**merged_extra, **own}, budget)
    raw: dict[str, Any] = {
        "hyperparameters": common,
        "dataset": DATASET,
        "instance_type": "ml.p4d.24xlarge",
        "instance_count": 16,
        "warm_start_model": MODEL,
        "job_name_prefix": PREFIX,
        "stages": [
            {
                "name": STAGE_NAME[:-1] + str(i),
                "tasks": tasks,
                "steps": steps,
                "hyperparameters": own,
            }
            for i in range(stages)
        ],
    }
    if evaluation:
        raw["evaluation"] = {
            "dataset": DATASET,
            "baseline_model": MODEL,
            "hyperparameters": {
                name: " " * (2500 - len(v)) + v
                for name, v in (
                    (n, hyperparams.EVAL_SPECS[n].default) for n in EVAL_HYPERPARAMETERS
                )
                if name != "random_seed"
            },
        }
        while size(raw["evaluation"]["hyperparameters"]) > budget:
            raw["evaluation"]["hyperparameters"].popitem()
    return raw


def describe(request: dict, status: str, interruptions: int, metrics: tuple) -> dict:
    """A DescribeTrainingJob answer for `request`, as the API (and local_sagemaker) gives it."""
    name = request["TrainingJobName"]
    job: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/models/{name}/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": "Completed" if status == "Completed" else "Failed",
        **{field: request[field] for field in ECHOED if field in request},
        "CreationTime": TIME,
        "TrainingStartTime": TIME,
        "TrainingEndTime": TIME,
        "LastModifiedTime": TIME,
        "SecondaryStatusTransitions": [
            {"Status": status, "StartTime": TIME, "EndTime": TIME, "StatusMessage": "m" * 120}
            for _ in range(interruptions)
            for status in ("Starting", "Training", "Interrupted")
        ],
        "FinalMetricDataList": [
            {"MetricName": d["Name"], "Value": -1.2345678901234567e-300, "Timestamp": TIME}
            for d in metrics
        ],
        "TrainingTimeInSeconds": 2**31,
        "BillableTimeInSeconds": 2**31,
        **OTHER_FIELDS,
    }
    if status != "Completed":
        job["FailureReason"] = "AlgorithmError: " + "f" * 1008  # 1024, SageMaker's longest
    return job


def _cause(job: dict, cut: bool) -> str:
    text = json.dumps(job, ensure_ascii=False)
    return text[:CAUSE_LIMIT] if cut else text


def state_data(raw: dict, interruptions: int, cut: bool) -> dict[str, object]:
    """{what: its data} for the largest states of an execution of `raw` (see the module's
    docstring), each stage's and the evaluation's, their job succeeding or failing."""
    environ = {
        "IMAGE_URI": ENV.image_uri,
        "ROLE_ARN": ENV.role_arn,
        "BUCKET": ENV.bucket,
        "KMS_KEY_ARN": ENV.kms_key_arn,
        "SUBNETS": ",".join(ENV.subnets),
        "SECURITY_GROUPS": ",".join(ENV.security_groups),
        "TAGS": json.dumps(ENV.tags),
    }
    states: dict[str, object] = {}
    stages_text, outcomes = "", []
    for index in range(len(raw["stages"])):
        stage = {"index": index} if index == 0 else {"index": index, "model": MODEL}
        event = {"input": raw, "execution": EXECUTION, "attempt": 3, "stage": stage}
        states[f"Prepare stage {index} (parameters)"] = {
            "FunctionName": "f" * 140,
            "Payload": event,
        }
        answer = _handler(event, environ)
        states[f"Prepare stage {index} (result)"] = {**LAMBDA_METADATA, "Payload": answer}
        prepared = {
            "attempt": 3,
            "stage": stage,
            "stages": {"text": stages_text, "comma": ","},
            "job": answer,
        }
        completed = describe(answer["request"], "Completed", interruptions, METRIC_DEFINITIONS)
        states[f"Train stage {index}"] = {**prepared, "training": completed}
        failed = describe(answer["request"], "Failed", interruptions, METRIC_DEFINITIONS)
        error = {"Error": "States.TaskFailed", "Cause": _cause(failed, cut)}
        states[f"Job ended? (stage) {index}"] = {**prepared, "error": error}
        states[f"Read job (stage) {index}"] = {**prepared, "error": failed}
        outcome = {
            "name": answer["stage"]["name"],
            "training_job": completed["TrainingJobName"],
            "model": completed["ModelArtifacts"]["S3ModelArtifacts"],
            "attempts": 3,
            "metrics": completed["FinalMetricDataList"],
        }
        states[f"Stage outcome {index}"] = {**prepared, "training": completed, "outcome": outcome}
        stages_text += ("," if stages_text else "") + json.dumps(outcome, ensure_ascii=False)
        states[f"Record stage {index}"] = {
            **prepared,
            "training": completed,
            "outcome": outcome,
            "stages": {"text": stages_text, "comma": ","},
        }
        outcomes.append(outcome)
    trained = {
        "model": outcomes[-1]["model"],
        "training_job": outcomes[-1]["training_job"],
        "attempts": 3,
        "stages": outcomes,
    }
    states["Stages"] = trained
    if "evaluation" in raw:
        event = {"input": raw, "execution": EXECUTION, "attempt": 3, "model": trained["model"]}
        answer = _handler(event, environ)
        states["Prepare evaluation (result)"] = {**LAMBDA_METADATA, "Payload": answer}
        prepared = {"attempt": 3, "trained": trained, "job": answer}
        completed = describe(answer["request"], "Completed", 0, EVAL_METRIC_DEFINITIONS)
        states["Evaluate"] = {**prepared, "evaluation": completed}
        failed = describe(answer["request"], "Failed", interruptions, EVAL_METRIC_DEFINITIONS)
        error = {"Error": "States.TaskFailed", "Cause": _cause(failed, cut)}
        states["Job ended? (evaluation)"] = {**prepared, "error": error}
        states["Read job (evaluation)"] = {**prepared, "error": failed}
        output = {
            **trained,
            "evaluation": {
                "training_job": completed["TrainingJobName"],
                "attempts": 3,
                "metrics": completed["FinalMetricDataList"],
                "report": completed["ModelArtifacts"]["S3ModelArtifacts"],
            },
        }
        states["Evaluation"] = output
        states["NotifySuccess (parameters)"] = {
            "TopicArn": "t" * 256,
            "Subject": "ernie pretraining succeeded",
            "Message": {"execution": EXECUTION_ID, "outcome": "succeeded", "detail": output},
        }
    return states


def _handler(event: dict, environ: dict[str, str]) -> dict:
    previous = dict(os.environ)
    try:
        os.environ.update(environ)
        return handler.handler(event, None)
    finally:
        os.environ.clear()
        os.environ.update(previous)


def assert_within_the_limit(raw: dict, interruptions: int, cut: bool) -> None:
    try:
        parsing.parse_input(raw)
    except ExecutionInputError as exc:  # the builder's mistake, not a finding
        pytest.fail(f"the maximal input is refused: {exc}")
    sizes = {what: size(data) for what, data in state_data(raw, interruptions, cut).items()}
    largest = max(sizes, key=sizes.__getitem__)
    assert sizes[largest] <= LIMIT, f"{largest}: {sizes[largest]} bytes"


def test_the_maximal_input_fits_with_room_to_spare():
    raw = maximal_input(MAX_STAGES, "😀", evaluation=True, stage_share=0.5)
    sizes = {w: size(d) for w, d in state_data(raw, MAX_INTERRUPTIONS, cut=False).items()}
    # The model is what it says: the largest states are large, and each job's
    # hyperparameters take the budget.
    answer = _handler(
        {"input": raw, "execution": EXECUTION, "stage": {"index": 7, "model": MODEL}},
        {"IMAGE_URI": ENV.image_uri, "ROLE_ARN": ENV.role_arn, "BUCKET": ENV.bucket},
    )
    assert size(answer["request"]["HyperParameters"]) > MAX_HYPERPARAMETERS_BYTES - 3000
    assert max(sizes.values()) > 100_000
    assert max(sizes.values()) <= LIMIT, max(sizes.items(), key=lambda item: item[1])


@settings(max_examples=25, deadline=None)
@given(
    stages=st.integers(1, MAX_STAGES),
    char=st.sampled_from(["x", "é", "中", "😀"]),
    evaluation=st.booleans(),
    stage_share=st.floats(0, 0.9),
    interruptions=st.integers(0, MAX_INTERRUPTIONS),
    cut=st.booleans(),
)
def test_no_state_of_a_maximal_input_passes_256_kib(
    stages, char, evaluation, stage_share, interruptions, cut
):
    raw = maximal_input(stages, char, evaluation, stage_share)
    assert_within_the_limit(raw, interruptions, cut)
