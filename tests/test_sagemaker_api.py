"""SageMaker's CreateTrainingJob model, bundled from botocore and checked without it
(pipeline/sagemaker_api.py)."""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from pathlib import Path

import pytest
from ernie_sm.pipeline import sagemaker_api
from ernie_sm.pipeline.sagemaker_api import (
    UnsupportedPattern,
    Violation,
    check_request,
    java_to_python,
)

BUNDLED = json.loads(sagemaker_api.SHAPES_FILE.read_text(encoding="utf-8"))
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
REQUEST = {
    "TrainingJobName": "job-1",
    "RoleArn": "arn:aws:iam::123456789012:role/job",
    "AlgorithmSpecification": {"TrainingImage": "image", "TrainingInputMode": "File"},
    "OutputDataConfig": {"S3OutputPath": "s3://bucket/models/"},
    "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
    "VpcConfig": {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]},
}


def refused(**changes: object) -> list[str]:
    """The messages for REQUEST with some top-level members replaced (None: removed)."""
    request = copy.deepcopy(REQUEST)
    for name, value in changes.items():
        if value is None:
            del request[name]
        else:
            request[name] = value
    return [violation.message() for violation in check_request(request)]


def matches(member: str, text: str) -> bool:
    return sagemaker_api.regex(member).fullmatch(text) is not None


# --- the bundled file ------------------------------------------------------------------


def test_bundled_shapes_are_what_the_pinned_botocore_gives():
    botocore = pytest.importorskip("botocore")
    pin = re.search(r'"botocore==([^"]+)"', PYPROJECT.read_text(encoding="utf-8"))
    assert pin and pin.group(1) == botocore.__version__ == BUNDLED["botocore"]
    if BUNDLED["unicode"] != unicodedata.unidata_version:
        pytest.skip(
            f"\\p classes were expanded with Unicode {BUNDLED['unicode']}, this Python has "
            f"{unicodedata.unidata_version}"
        )
    assert sagemaker_api.extract_shapes() == BUNDLED, (
        "run: python -m ernie_sm.pipeline.sagemaker_api"
    )


def test_every_pattern_compiles_and_every_shape_is_there():
    for java, python in BUNDLED["patterns"].items():
        assert re.compile(python), java
    shapes = BUNDLED["shapes"]
    for name, shape in shapes.items():
        children = [shape.get(k) for k in ("member", "key", "value")]
        children += list(shape.get("members", {}).values())
        assert all(child in shapes for child in children if child), name
        assert shape.get("pattern") is None or shape["pattern"] in BUNDLED["patterns"]
    assert shapes[BUNDLED["input"]]["required"] == [
        "TrainingJobName",
        "RoleArn",
        "OutputDataConfig",
    ]


# --- Java's regexes in Python ----------------------------------------------------------


def test_p_z_is_unicode_separators_not_whitespace():
    for separator in (" ", "\u00a0", "\u3000", "\u2028", "\u2029"):
        assert matches("Tags.member.Value", f"a{separator}b"), repr(separator)
    for whitespace in ("\t", "\n", "\r", "\x0b", "\x0c", "\x85"):
        assert not matches("Tags.member.Value", f"a{whitespace}b"), repr(whitespace)


def test_p_l_and_p_n_are_unicode_letters_and_numbers():
    for text in ("Ünïcode", "名前", "\U00020000", "٣", "Ⅻ", "½", "_.:/=+-@"):
        assert matches("Tags.member.Key", text), text
    for text in ("😀", "a!b", "a&b", "a#b", "é\u0301"):  # symbols, punctuation, a mark
        assert not matches("Tags.member.Key", text), text


def test_p_alnum_and_backslash_classes_are_ascii_as_in_java():
    lambda_arn = "TrainingImageConfig.TrainingRepositoryAuthConfig"
    member = f"AlgorithmSpecification.{lambda_arn}.TrainingRepositoryCredentialsProviderArn"
    assert matches(member, "arn:aws:lambda:us-east-1:123456789012:function:f")
    assert not matches(member, "arn:awsé:lambda:us-east-1:123456789012:function:f")
    assert matches("RoleArn", "arn:aws:iam::123456789012:role/job")
    assert not matches("RoleArn", "arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/job")  # \d is ASCII


@pytest.mark.parametrize("terminator", list(sagemaker_api.LINE_TERMINATORS))
def test_dot_matches_no_java_line_terminator(terminator):
    assert not matches("HyperParameters.value", f"a{terminator}b")
    assert not matches("HyperParameters.value", f"ab{terminator}")  # fullmatch: no $ leeway
    assert not matches("TrainingJobName", f"job{terminator}")
    assert matches("HyperParameters.value", "a\x0b\x0c\tb")  # not terminators in Java


@pytest.mark.parametrize(
    "pattern",
    [
        r"\p{Lu}",
        r"\pL",
        r"\P{L}",
        r"[a[b]]",
        r"[a-z&&[^b]]",
        r"a++",
        r"a*+",
        r"(?i)a",
        r"(?<name>a)",
        r"(?>a)",
        r"\bword",
        r"^a",
        r"a$",
        r"\Qa\E",
        r"[]a]",
        r"[a",
        r"(a)\1",
        r"\x41",
        r"\t",
        "a\\",
    ],
)
def test_other_java_constructs_fail_loudly(pattern):
    with pytest.raises(UnsupportedPattern):
        java_to_python(pattern)


def test_translation_keeps_what_both_dialects_share():
    assert (
        java_to_python(r"[a-z0-9-\.]{1,63}(?:-\w+)+(?<!-)")
        == r"(?a)[a-z0-9-\.]{1,63}(?:-\w+)+(?<!-)"
    )
    assert java_to_python(r"[^/.]\.\d+K") == r"(?a)[^/.]\.\d+K"  # . in a class is literal
    assert java_to_python("[\\p{Alnum}]") == "(?a)[A-Za-z0-9]"


# --- check_request ---------------------------------------------------------------------


def test_a_valid_request_has_no_violations():
    assert check_request(REQUEST) == []
    assert refused(VpcConfig=None, ResourceConfig=None) == []  # optional in the model


def test_messages_are_sagemakers():
    assert refused(RoleArn=None) == [
        "Value null at 'roleArn' failed to satisfy constraint: Member must not be null"
    ]
    assert refused(OutputDataConfig={"KmsKeyId": "k"}) == [
        "Value null at 'outputDataConfig.s3OutputPath' failed to satisfy constraint: "
        "Member must not be null"
    ]
    name = "job_1"
    assert refused(TrainingJobName=name) == [
        f"Value '{name}' at 'trainingJobName' failed to satisfy constraint: Member must "
        "satisfy regular expression pattern: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
    ]
    resources = {**REQUEST["ResourceConfig"], "InstanceType": "ml.g5.2xlarg"}
    [enum] = refused(ResourceConfig=resources)
    assert enum.startswith(
        "Value 'ml.g5.2xlarg' at 'resourceConfig.instanceType' failed to satisfy constraint: "
        "Member must satisfy enum value set: [ml.m4.xlarge, ml.m4.2xlarge, "
    )
    assert enum.endswith("]") and "ml.g5.2xlarge, " in enum
    assert sagemaker_api.validation_message(["a"]) == "1 validation error detected: a"
    assert sagemaker_api.validation_message(["a", "b"]) == "2 validation errors detected: a; b"


def test_list_items_and_map_entries_are_reported_as_sagemaker_does():
    source = {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/datasets/demo/train/"}
    good = {"ChannelName": "train", "DataSource": {"S3DataSource": source}}
    bad = {"ChannelName": "valid data", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix"}}}
    assert refused(InputDataConfig=[good, bad]) == [
        "Value 'valid data' at 'inputDataConfig.2.member.channelName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: [A-Za-z0-9\\.\\-_]+",
        "Value null at 'inputDataConfig.2.member.dataSource.s3DataSource.s3Uri' failed to "
        "satisfy constraint: Member must not be null",
    ]
    vpc = {"Subnets": ["subnet_1"], "SecurityGroupIds": [f"sg-{i}" for i in range(6)]}
    assert refused(VpcConfig=vpc) == [
        "Value '[subnet_1]' at 'vpcConfig.subnets' failed to satisfy constraint: Member must "
        "satisfy constraint: [Member must have length less than or equal to 32, Member must "
        "have length greater than or equal to 0, Member must satisfy regular expression "
        "pattern: [-0-9a-zA-Z]+]",
        "Value '[sg-0, sg-1, sg-2, sg-3, sg-4, sg-5]' at 'vpcConfig.securityGroupIds' failed "
        "to satisfy constraint: Member must have length less than or equal to 5",
    ]
    assert refused(HyperParameters={"k" * 257: "1", "a": "b"}) == [
        f"Value '{{{'k' * 257}=1, a=b}}' at 'hyperParameters' failed to satisfy constraint: "
        "Map keys must satisfy constraint: [Member must have length less than or equal to "
        "256, Member must have length greater than or equal to 0, Member must satisfy "
        "regular expression pattern: .*]"
    ]
    too_many = {str(i): "" for i in range(101)}
    assert refused(HyperParameters=too_many)[0].endswith(
        "at 'hyperParameters' failed to satisfy constraint: Member must have length less "
        "than or equal to 100"
    )


def test_types_ranges_and_unknown_members():
    resources = REQUEST["ResourceConfig"]
    assert refused(ResourceConfig={**resources, "InstanceCount": "2"}) == [
        "Value '2' at 'resourceConfig.instanceCount' failed to satisfy constraint: Member "
        "must be of type integer"
    ]
    for count in (True, 2**31, 1.0):
        assert refused(ResourceConfig={**resources, "InstanceCount": count}), count
    assert refused(StoppingCondition={"MaxRuntimeInSeconds": 0}) == [
        "Value '0' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1"
    ]
    assert refused(EnableManagedSpotTraining="true") == [
        "Value 'true' at 'enableManagedSpotTraining' failed to satisfy constraint: Member "
        "must be of type boolean"
    ]
    assert refused(Bogus={"a": 1}) == [
        "Value '{a=1}' at 'bogus' failed to satisfy constraint: Member is not in the "
        "CreateTrainingJob model"
    ]
    assert check_request({**REQUEST, "CheckpointConfig": None, "Tags": None}) == []  # absent


def test_lengths_count_utf16_units_as_java_does():
    assert sagemaker_api.aws_length("a名\U00020000😀") == 6
    assert refused(HyperParameters={"a": "😀" * 1250}) == []
    assert refused(HyperParameters={"a": "😀" * 1250 + "x"})


def test_check_member_and_member_shape():
    assert sagemaker_api.member_shape("VpcConfig.Subnets")["max"] == 16
    assert "ml.p4d.24xlarge" in sagemaker_api.member_shape("ResourceConfig.InstanceType")["enum"]
    [violation] = sagemaker_api.check_member("VpcConfig.Subnets", ["subnet-1"] * 17)
    assert violation == Violation(
        "vpcConfig.subnets", ["subnet-1"] * 17, "Member must have length less than or equal to 16"
    )
    assert sagemaker_api.check_member("Tags.member.Key", "Project") == []
    [key] = sagemaker_api.check_member("Tags.member.Key", "")
    assert key.path == "tags.member.key" and "greater than or equal to 1" in key.constraint
