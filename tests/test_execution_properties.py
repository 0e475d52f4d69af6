"""Any execution input gives ExecutionInputError or a request SageMaker's model accepts.

Hypothesis feeds parse_input + training_job_request (each stage's when the input has
stages, and evaluation_job_request when it asks for an evaluation) arbitrary JSON: as the
whole input, under each field, under "hyperparameters", under each field of "evaluation"
and of a stage. A ContractGapError (the request breaks a constraint the contract should
have caught) or any other exception fails the test; so does an input Prepare takes that
the JSON Schema (docs/execution-input.schema.json) refuses.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

hypothesis = pytest.importorskip("hypothesis")
jsonschema = pytest.importorskip("jsonschema")
from ernie_sm.contract import hyperparams, tasks  # noqa: E402
from ernie_sm.pipeline import sagemaker_api, schema  # noqa: E402
from ernie_sm.pipeline.execution_input import (  # noqa: E402
    EVALUATION_FIELDS,
    FIELDS,
    STAGE_FIELDS,
    ExecutionInputError,
)
from ernie_sm.pipeline.parsing import parse_input  # noqa: E402
from ernie_sm.pipeline.requests import evaluation_job_request, training_job_request  # noqa: E402
from ernie_sm.pipeline.stack_environment import StackEnvironment  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BUCKET = "ernie-data-123456789012"
ENV = StackEnvironment(
    image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/ernie:latest",
    role_arn="arn:aws:iam::123456789012:role/ernie-training",
    bucket=BUCKET,
    kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    subnets=("subnet-1a",),
    security_groups=("sg-1",),
    tags={"Project": "ernie"},
)
NOW = datetime(2026, 3, 1, 12, 30, 45, tzinfo=timezone.utc)
FAST = settings(max_examples=150, deadline=None)
SCHEMA = jsonschema.Draft202012Validator(schema.execution_input_schema())

# Valid values with endings that break them, so the search reaches past the first check.
NEAR_VALID = st.builds(
    str.__add__,
    st.sampled_from(
        [
            "datasets/demo",
            "ml.g5.2xlarge",
            "ernie-exp1",
            f"s3://{BUCKET}/models/j/output/model.tar.gz",
            "ernie-tiny",
            "/opt/ml/checkpoints",
            "8192",
            "0.0001",
            "true",
        ]
    ),
    st.sampled_from(["", "\n", "\r", "\x85", "\u2028", "\t", "/", "/..", "名前", "\U00020000"]),
)
TEXT = st.text() | NEAR_VALID | st.sampled_from(["", "x" * 2501, "😀" * 1251])
NUMBER = (
    st.integers()
    | st.floats()
    | st.sampled_from([0, 1, 16, 17, 672, 673, 2**63, 2**64, 10**400, -(10**400), 1e-9])
)
SCALAR = st.none() | st.booleans() | NUMBER | TEXT
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
HYPERPARAMETER_NAMES = st.sampled_from(sorted(hyperparams.SPECS)) | TEXT
EVAL_HYPERPARAMETER_NAMES = st.sampled_from(sorted(hyperparams.EVAL_SPECS)) | TEXT
TRAINED = f"s3://{BUCKET}/models/ernie-run-1-1a2b3c4d-a1-20260301123045/output/model.tar.gz"


def assert_refused_or_accepted(raw: object, execution_name: str = "run-1") -> None:
    try:
        inp = parse_input(raw)
        # Every stage's, each from the model of the stage before.
        stages = (
            [()]
            if inp.stages is None
            else [(0,), *((i, TRAINED) for i in range(1, len(inp.stages)))]
        )
        requests = [training_job_request(inp, ENV, execution_name, 1, NOW, *s) for s in stages]
    except ExecutionInputError:
        return
    assert [e.message for e in SCHEMA.iter_errors(raw)] == []  # the schema takes it too
    if inp.evaluation is not None:  # what the same input gives Prepare evaluation
        requests.append(evaluation_job_request(inp, ENV, execution_name, 3, NOW, TRAINED))
    for request in requests:
        assert sagemaker_api.check_request(request) == []
        json.dumps(request, allow_nan=False)  # the Lambda's answer is JSON


@FAST
@given(JSON)
def test_any_json_as_the_input(raw):
    assert_refused_or_accepted(raw)


@FAST
@given(st.dictionaries(st.sampled_from(FIELDS) | TEXT, JSON, max_size=4))
def test_any_json_in_each_field(raw):
    assert_refused_or_accepted(raw)


@FAST
@given(st.dictionaries(HYPERPARAMETER_NAMES, SCALAR | JSON, max_size=6))
def test_any_json_under_hyperparameters(hyperparameters):
    assert_refused_or_accepted({"hyperparameters": hyperparameters})


@FAST
@given(st.text(min_size=1, max_size=80), st.dictionaries(st.sampled_from(FIELDS), SCALAR))
def test_any_execution_name(execution_name, raw):
    assert_refused_or_accepted(raw, execution_name)


@FAST
@given(
    st.fixed_dictionaries({"dataset": st.just("datasets/topics") | TEXT})
    | st.dictionaries(st.sampled_from(EVALUATION_FIELDS) | TEXT, JSON, max_size=4)
)
def test_any_json_in_each_evaluation_field(evaluation):
    assert_refused_or_accepted({"evaluation": evaluation})


@FAST
@given(st.dictionaries(EVAL_HYPERPARAMETER_NAMES, SCALAR | JSON, max_size=6))
def test_any_json_under_evaluation_hyperparameters(hyperparameters):
    evaluation = {"dataset": "datasets/topics", "hyperparameters": hyperparameters}
    assert_refused_or_accepted({"evaluation": evaluation})


TASK_NAMES = st.sampled_from(sorted(tasks.TASKS)) | TEXT
STAGE = st.fixed_dictionaries(
    {"tasks": st.dictionaries(TASK_NAMES, NUMBER | SCALAR, max_size=4), "steps": NUMBER},
    optional={
        "name": TEXT,
        "hyperparameters": st.dictionaries(HYPERPARAMETER_NAMES, SCALAR | JSON, max_size=4),
    },
)


@FAST
@given(st.lists(STAGE | st.dictionaries(st.sampled_from(STAGE_FIELDS) | TEXT, JSON), max_size=9))
def test_any_json_in_each_stage_field(stages):
    assert_refused_or_accepted({"stages": stages})


@FAST
@given(
    st.dictionaries(HYPERPARAMETER_NAMES, SCALAR, max_size=4),
    st.lists(STAGE, min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(FIELDS), SCALAR, max_size=3),
)
def test_any_stages_with_any_top_level_fields(hyperparameters, stages, fields):
    assert_refused_or_accepted({**fields, "hyperparameters": hyperparameters, "stages": stages})
