"""The VPC a training job may run in: checked at synth, as SageMaker's VpcConfig accepts it."""

from __future__ import annotations

from collections.abc import Sequence

# SageMaker's VpcConfig (botocore's sagemaker model): Subnets 1..16 and SecurityGroupIds 1..5,
# both required once either is given.
MAX_SUBNETS = 16
MAX_SECURITY_GROUPS = 5


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
