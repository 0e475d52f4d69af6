"""The execution input's documentation and JSON Schema, generated from its fields
(pipeline/execution_input.py, pipeline/schema.py): committed as generated, and the schema
refuses what Prepare refuses where it can express it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from ernie_sm.pipeline import schema
from ernie_sm.pipeline.execution_input import (
    EVALUATION_FIELDS,
    FIELDS,
    STAGE_FIELDS,
    EvaluationInput,
    ExecutionInput,
    ExecutionInputError,
    StageInput,
)
from ernie_sm.pipeline.parsing import parse_input

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = sorted((ROOT / "examples" / "inputs").glob("*.json"))
VALIDATOR = jsonschema.Draft202012Validator(schema.execution_input_schema())
STAGE = {"tasks": {"knowledge_masking": 1}, "steps": 10}
EVALUATION = {"dataset": "datasets/topics"}


def schema_errors(raw: object) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(raw)]


def test_every_field_is_documented_where_it_is_defined():
    for cls, names in (
        (ExecutionInput, FIELDS),
        (EvaluationInput, EVALUATION_FIELDS),
        (StageInput, STAGE_FIELDS),
    ):
        fields = dataclasses.fields(cls)
        assert tuple(f.name for f in fields) == names
        for item in fields:
            assert item.metadata["help"].strip(), item.name
            assert item.metadata["schema"], item.name


def test_the_doc_has_the_generated_tables():
    """A field added, removed, described or defaulted otherwise fails here until
    `python -m ernie_sm.pipeline.schema` has rewritten the tables."""
    doc = (DOCS / schema.DOC_FILE).read_text(encoding="utf-8")
    assert schema.doc_with_tables(doc) == doc
    tables = schema.field_tables()
    for name in (*FIELDS, *EVALUATION_FIELDS, *STAGE_FIELDS):
        assert f"| `{name}` |" in tables
    assert "| `max_runtime_hours` | number > 0, at most 672 | `24` |" in tables
    assert "| `dataset` | string (key prefix) | required |" in tables


def test_the_committed_schema_is_the_generated_one():
    committed = (DOCS / schema.SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == schema.schema_text()
    jsonschema.Draft202012Validator.check_schema(json.loads(committed))


def test_the_schema_describes_every_field_with_its_default():
    generated = schema.execution_input_schema()
    assert generated["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert list(generated["properties"]) == list(FIELDS)
    assert generated["properties"]["instance_count"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 16,
        "description": "Hosts; training is data-parallel over every GPU of every host.",
        "default": 1,
    }
    assert "default" not in generated["properties"]["max_wait_hours"]  # min(2 x runtime, 672)
    assert generated["$defs"]["evaluation"]["required"] == ["dataset"]
    assert generated["$defs"]["stage"]["required"] == ["tasks", "steps"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_input_meets_the_schema(path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert schema_errors(raw) == []
    parse_input(raw)  # and Prepare takes it


def test_there_are_examples():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize(
    "raw",
    [
        [],
        "{}",
        {"nope": 1},
        {"batch_size": 4096},
        {"hyperparameters": {"no_such_hyperparameter": 1}},
        {"hyperparameters": {"sagemaker_program": "x"}},
        {"hyperparameters": {"batch_size": [4096]}},
        {"hyperparameters": {"batch_size": "x" * 2501}},
        {"hyperparameters": []},
        {"dataset": 5},
        {"dataset": "s3://bucket/datasets/demo"},
        {"dataset": "datasets//demo"},
        {"dataset": ""},
        {"use_validation": "false"},
        {"instance_type": "ml.g5.2xlarg"},
        {"instance_count": 0},
        {"instance_count": 17},
        {"instance_count": 1.5},
        {"instance_count": "2"},
        {"instance_count": True},
        {"volume_size_gb": 16385},
        {"spot": "yes"},
        {"max_runtime_hours": 0},
        {"max_runtime_hours": 673},
        {"max_runtime_hours": "24"},
        {"max_wait_hours": -1},
        {"spot": False, "max_wait_hours": 5},
        {"warm_start_model": "s3://bucket/models/job/output/model.zip"},
        {"warm_start_model": "models/job/output/model.tar.gz"},
        {"job_name_prefix": "-ernie"},
        {"job_name_prefix": "ernie_exp"},
        {"job_name_prefix": "e" * 31},
        {"job_name_prefix": None},
        {"evaluation": {}},
        {"evaluation": []},
        {"evaluation": {**EVALUATION, "nope": 1}},
        {"evaluation": {**EVALUATION, "instance_type": "ml.nope"}},
        {"evaluation": {**EVALUATION, "max_runtime_hours": 0}},
        {"evaluation": {**EVALUATION, "hyperparameters": {"use_fp16": True}}},
        {"evaluation": {**EVALUATION, "baseline_model": "s3://bucket/model.tgz"}},
        {"stages": []},
        {"stages": [STAGE] * 9},
        {"stages": {"0": STAGE}},
        {"stages": [{"steps": 10}]},
        {"stages": [{"tasks": {"knowledge_masking": 1}}]},
        {"stages": [{**STAGE, "tasks": {}}]},
        {"stages": [{**STAGE, "tasks": {"knowledge_mask": 1}}]},
        {"stages": [{**STAGE, "tasks": {"knowledge_masking": 0}}]},
        {"stages": [{**STAGE, "tasks": {"knowledge_masking": True}}]},
        {"stages": [{**STAGE, "steps": 0}]},
        {"stages": [{**STAGE, "steps": 2**31}]},
        {"stages": [{**STAGE, "name": "Stage-1"}]},
        {"stages": [{**STAGE, "name": "s" * 33}]},
        {"stages": [{**STAGE, "nope": 1}]},
        {"stages": [{**STAGE, "hyperparameters": {"num_train_steps": 5}}]},
        {"stages": [STAGE], "hyperparameters": {"tasks": "knowledge_masking:1"}},
    ],
    ids=json.dumps,
)
def test_what_prepare_refuses_the_schema_refuses(raw):
    with pytest.raises(ExecutionInputError):
        parse_input(raw)
    assert schema_errors(raw)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {},
        {"hyperparameters": None, "evaluation": None, "stages": None, "max_wait_hours": None},
        {"instance_count": 2.0, "dataset": "/datasets/demo/"},
        {"spot": False, "max_wait_hours": None},
        {"stages": [STAGE], "hyperparameters": {"batch_size": 64}},
        {"evaluation": {**EVALUATION, "hyperparameters": None, "baseline_model": None}},
    ],
    ids=json.dumps,
)
def test_what_prepare_takes_the_schema_takes(raw):
    parse_input(raw)
    assert schema_errors(raw) == []
