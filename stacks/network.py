"""The VPC a training job may run in: checked at synth, as SageMaker's VpcConfig accepts it.

The instances of one multi-host job reach each other through the job's security groups,
whose rules a synth cannot see: the stack takes their ids only. They need, between members
of the same group (inbound and outbound): the trainers' collective traffic (NCCL on a GPU,
gloo on a CPU, over the ports from 6170 up and whatever ports NCCL picks), the hosts'
cause reports on TCP 6169 (training/host_reports.py), and for the inter-container traffic
encryption every job turns on, UDP 500 and IP protocol 50 (ESP): SageMaker developer
guide, "Protect Communications Between ML Compute Instances in a Distributed Training
Job" (https://docs.aws.amazon.com/sagemaker/latest/dg/train-encrypt.html). A group the
same CDK app creates (or imports) gets them from `allow_traffic_within_job`.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_ec2 as ec2

# SageMaker's VpcConfig (botocore's sagemaker model): Subnets 1..16 and SecurityGroupIds 1..5,
# both required once either is given.
MAX_SUBNETS = 16
MAX_SECURITY_GROUPS = 5
JOB_TRAFFIC = (
    "Between the instances of one training job: NCCL and gloo, cause reports on TCP 6169, "
    "IPsec of inter-container traffic encryption (UDP 500, ESP)"
)


def check_vpc(subnet_ids: Sequence[str], security_group_ids: Sequence[str]) -> None:
    """Raise ValueError unless both are empty (no VPC) or both fit SageMaker's VpcConfig."""
    if bool(subnet_ids) != bool(security_group_ids):
        given, missing = (
            ("subnet_ids", "security_group_ids")
            if subnet_ids
            else ("security_group_ids", "subnet_ids")
        )
        raise ValueError(
            f"{given} needs {missing} too: a job in a VPC has both subnets and security groups"
        )
    for name, ids, limit in (
        ("subnet_ids", subnet_ids, MAX_SUBNETS),
        ("security_group_ids", security_group_ids, MAX_SECURITY_GROUPS),
    ):
        if len(ids) > limit:
            raise ValueError(f"{name} takes at most {limit} ids (SageMaker), got {len(ids)}")


def allow_traffic_within_job(group: ec2.ISecurityGroup) -> None:
    """Allow all traffic, in and out, between members of `group`: what the instances of a
    multi-host job in it need of each other (the module docstring). Pass its id in the
    role's `security_group_ids`. A group that allows all outbound traffic (CDK's default)
    keeps that rule and gets only the inbound one."""
    group.add_ingress_rule(group, ec2.Port.all_traffic(), JOB_TRAFFIC)
    if not group.allow_all_outbound:
        group.add_egress_rule(group, ec2.Port.all_traffic(), JOB_TRAFFIC)
