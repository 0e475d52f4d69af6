"""Any execution input gives ExecutionInputError or a request SageMaker's model accepts.

Hypothesis feeds parse_input + training_job_request arbitrary JSON: as the whole input,
under each field and under "hyperparameters". A ContractGapError (the request breaks a
constraint the contract should have caught) or any other exception fails the test.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

hypothesis = pytest.importorskip("hypothesis")
from ernie_sm.pipeline import sagemaker_api  # noqa: E402
from ernie_sm.pipeline.execution import (  # noqa: E402
    FIELDS,
    ExecutionInputError,
    StackEnvironment,
    parse_input,
    training_job_request,
)
from ernie_sm.training import hyperparams  # noqa: E402
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


def assert_refused_or_accepted(raw: object, execution_name: str = "run-1") -> None:
    try:
        request = training_job_request(parse_input(raw), ENV, execution_name, 1, NOW)
    except ExecutionInputError:
        return
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
