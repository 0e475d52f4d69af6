"""Settings that would pass synth and then fail every execution are refused at synth: the
name prefix (checked by the one function Prepare checks it with), the attempts, a VPC the
job role's policy does not name; and the rules multi-host jobs need in their security group."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Template
from ernie_sm.pipeline import sagemaker_api
from ernie_sm.pipeline.limits import MAX_STAGES
from ernie_sm.pipeline.naming import (
    EVAL_JOB_MARK,
    JOB_NAME_PREFIX_MAX,
    MAX_ATTEMPTS,
    check_name_prefix,
    job_name,
)
from ernie_sm.pipeline.stack_environment import StackEnvironment, StackEnvironmentError
from ernie_sm.stacks.dataset_bucket import DatasetBucket
from ernie_sm.stacks.ernie_stack import ErnieStackProps, ErnieTrainingStack
from ernie_sm.stacks.execution_role import ExecutionRole, ExecutionRoleProps
from ernie_sm.stacks.network import allow_traffic_within_job
from ernie_sm.stacks.training_image import TrainingImage
from ernie_sm.stacks.training_pipeline import TrainingPipeline, TrainingPipelineProps

from tests.cdk_support import ENV, ROOT, feature_flags, synth_under_nag

NOW = datetime(2026, 3, 1, 12, 30, 45, tzinfo=timezone.utc)
ENVIRON = {
    "IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ernie:latest",
    "ROLE_ARN": "arn:aws:iam::123456789012:role/ernie-training",
    "BUCKET": "ernie-data-123456789012",
}
# Upper case passes TrainingJobName's pattern, but SageMaker lower-cases training-job ARNs
# and the state machine's policy allows `training-job/<prefix>-*` case-sensitively.
BAD_PREFIXES = ["Team_A", "TeamA", "team_a", "team-", "-team", "", "a" * (JOB_NAME_PREFIX_MAX + 1)]
GOOD_PREFIXES = ["ernie", "team-a", "t3", "a--b", "a" * JOB_NAME_PREFIX_MAX]


def _parts(stack: Stack) -> tuple[DatasetBucket, object, ExecutionRole]:
    data = DatasetBucket(stack, "Data")
    repository = TrainingImage(stack, "Image").repository
    return (
        data,
        repository,
        ExecutionRole(stack, "Role", ExecutionRoleProps(data.bucket, data.key, repository)),
    )


def _pipeline(stack: Stack, role: ExecutionRole, data: DatasetBucket, **props) -> TrainingPipeline:
    return TrainingPipeline(
        stack,
        "Pipeline",
        TrainingPipelineProps(
            bucket=data.bucket, key=data.key, image_uri="image", execution_role=role.role, **props
        ),
    )


@pytest.mark.parametrize("prefix", BAD_PREFIXES)
def test_a_name_prefix_every_prepare_would_refuse_fails_the_synth(prefix):
    with pytest.raises(StackEnvironmentError, match=f"^NAME_PREFIX {prefix!r} is refused"):
        StackEnvironment("image", ENVIRON["ROLE_ARN"], ENVIRON["BUCKET"], name_prefix=prefix)
    with pytest.raises(ValueError, match=r"name_prefix \(-c ernie:namePrefix\) .*lower-case"):
        ErnieTrainingStack(
            App(context=feature_flags()), "Bad", ErnieStackProps(name_prefix=prefix), env=ENV
        )
    stack = Stack(App(context=feature_flags()), "Parts", env=ENV)
    data, _, role = _parts(stack)
    with pytest.raises(ValueError, match=f"^name_prefix {prefix!r} is refused"):
        _pipeline(stack, role, data, name_prefix=prefix)


@pytest.mark.parametrize("prefix", GOOD_PREFIXES)
def test_a_name_prefix_prepare_takes_leaves_room_for_every_job_name_it_makes(prefix):
    check_name_prefix(prefix)
    assert StackEnvironment.from_environ({**ENVIRON, "NAME_PREFIX": prefix}).name_prefix == prefix
    shape = sagemaker_api.member_shape("TrainingJobName")
    for mark in ("", EVAL_JOB_MARK, f"s{MAX_STAGES}"):
        name = job_name(prefix, "x" * 80, MAX_ATTEMPTS, NOW, mark=mark)
        assert len(name) <= shape["max"] and re.fullmatch(shape["pattern"], name)
        assert name.startswith(f"{prefix}-") and name.endswith(f"-a{MAX_ATTEMPTS}-20260301123045")


def test_the_app_refuses_a_name_prefix_context_before_building_anything(tmp_path):
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({"ernie:namePrefix": "Team_A"}),
        "CDK_OUTDIR": str(tmp_path),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    out = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "name_prefix (-c ernie:namePrefix) 'Team_A' is refused" in out.stderr


@pytest.mark.parametrize("attempts", [0, MAX_ATTEMPTS + 1])
def test_more_attempts_than_job_names_have_room_for_fail_the_synth(attempts):
    stack = Stack(App(context=feature_flags()), "Parts", env=ENV)
    data, _, role = _parts(stack)
    with pytest.raises(ValueError, match=f"max_attempts must be 1 to {MAX_ATTEMPTS}"):
        _pipeline(stack, role, data, max_attempts=attempts)


def test_a_vpc_on_the_pipeline_but_not_on_the_role_fails_the_synth():
    stack = Stack(App(context=feature_flags()), "Parts", env=ENV)
    data, _, role = _parts(stack)  # a role without the VPC's network interfaces
    with pytest.raises(ValueError, match="differ from those of the ExecutionRole Parts/Role"):
        _pipeline(stack, role, data, subnet_ids=("subnet-1",), security_group_ids=("sg-1",))


def _vpc_role(stack: Stack, subnets=("subnet-1", "subnet-2"), groups=("sg-1",)):
    data = DatasetBucket(stack, "Data")
    repository = TrainingImage(stack, "Image").repository
    props = ExecutionRoleProps(data.bucket, data.key, repository, subnets, groups)
    return data, ExecutionRole(stack, "Role", props)


def test_another_vpc_than_the_roles_fails_the_synth():
    stack = Stack(App(context=feature_flags()), "Parts", env=ENV)
    data, role = _vpc_role(stack)
    with pytest.raises(ValueError, match="give them to ExecutionRoleProps alone"):
        _pipeline(stack, role, data, subnet_ids=("subnet-1",), security_group_ids=("sg-1",))


def test_the_pipeline_runs_its_jobs_in_the_roles_vpc(tmp_path):
    app = App(outdir=str(tmp_path), context=feature_flags())
    stack = Stack(app, "Parts", env=ENV)
    data, role = _vpc_role(stack)
    _pipeline(stack, role, data)  # the VPC given once, on the role
    same = Stack(app, "Same", env=ENV)
    data_same, role_same = _vpc_role(same)
    _pipeline(
        same,
        role_same,
        data_same,
        subnet_ids=("subnet-1", "subnet-2"),
        security_group_ids=("sg-1",),
    )
    for template in (Template.from_stack(stack), Template.from_stack(same)):
        functions = template.find_resources("AWS::Lambda::Function")
        (variables,) = [
            f["Properties"]["Environment"]["Variables"]
            for f in functions.values()
            if "SUBNETS" in f["Properties"].get("Environment", {}).get("Variables", {})
        ]
        assert (variables["SUBNETS"], variables["SECURITY_GROUPS"]) == ("subnet-1,subnet-2", "sg-1")
        (machine,) = template.find_resources("AWS::StepFunctions::StateMachine").values()
        assert "VpcConfig.$" in json.dumps(machine["Properties"]["DefinitionString"])


def test_the_job_security_group_helper_allows_the_traffic_between_its_members(tmp_path):
    app = App(outdir=str(tmp_path), context=feature_flags())
    stack = Stack(app, "Network", env=ENV)
    vpc = ec2.Vpc.from_vpc_attributes(
        stack, "Vpc", vpc_id="vpc-0123456789abcdef0", availability_zones=["us-east-1a"]
    )
    group = ec2.SecurityGroup(stack, "Jobs", vpc=vpc, allow_all_outbound=False)
    allow_traffic_within_job(group)
    synth_under_nag(app, tmp_path)  # nothing cdk-nag objects to
    template = Template.from_stack(stack)
    group_id = {"Fn::GetAtt": [stack.get_logical_id(group.node.default_child), "GroupId"]}
    (ingress,) = template.find_resources("AWS::EC2::SecurityGroupIngress").values()
    (egress,) = template.find_resources("AWS::EC2::SecurityGroupEgress").values()
    # All protocols between members: NCCL/gloo, TCP 6169, UDP 500 and ESP (protocol 50).
    assert ingress["Properties"] | {"Description": ""} == {
        "GroupId": group_id,
        "SourceSecurityGroupId": group_id,
        "IpProtocol": "-1",
        "Description": "",
    }
    assert egress["Properties"]["DestinationSecurityGroupId"] == group_id
    assert egress["Properties"]["IpProtocol"] == "-1"
    assert "6169" in ingress["Properties"]["Description"]
