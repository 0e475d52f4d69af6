"""cdk-nag acknowledgments for the job role and the pipeline, each with the reason it is accepted.

ExecutionRole and TrainingPipeline apply them to themselves, so that any stack composing
them passes cdk-nag's AwsSolutions checks as ErnieTrainingStack does. cdk-nag 3 matches an acknowledgment to one finding exactly (`Rule[finding]`), so the
findings that name resources are built from the same constructs the policies use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_s3 as s3
from constructs import IConstruct
from ernie_sm.stacks.dataset_bucket import CHECKPOINTS, DATASETS, MODELS

if TYPE_CHECKING:  # the constructs call these functions: no import cycle at run time
    from ernie_sm.stacks.execution_role import ExecutionRole
    from ernie_sm.stacks.training_pipeline import TrainingPipeline

KEY_ACTIONS = (
    "the CDK grant of the one data key (kms:ReEncrypt*, kms:GenerateDataKey*) for encrypted objects"
)


def _ack(scope: IConstruct, finding: str, reason: str) -> None:
    Validations.of(scope).acknowledge(Acknowledgment(id=f"AwsSolutions-{finding}", reason=reason))


def _token(construct: IConstruct, attribute: str) -> str:
    """How cdk-nag prints a reference to `construct`'s attribute in a finding."""
    logical_id = Stack.of(construct).get_logical_id(construct.node.default_child)
    return f"<{logical_id}.{attribute}>"


def _bucket_arn(bucket: s3.IBucket) -> str:
    if bucket.node.default_child is None:  # an imported bucket: its ARN is a literal
        return _rendered(bucket, bucket.bucket_arn)
    return _token(bucket, "Arn")


def _rendered(scope: IConstruct, value: str) -> str:
    """A string as cdk-nag prints it: literal where the stack's environment is known, else
    with `<AWS::Partition>`-style placeholders for pseudo parameters and references."""
    resolved = Stack.of(scope).resolve(value)
    if isinstance(resolved, str):
        return resolved
    return "".join(_placeholder(part) for part in resolved["Fn::Join"][1])


def _placeholder(part: object) -> str:
    if isinstance(part, str):
        return part
    if "Ref" in part:
        return f"<{part['Ref']}>"
    return "<{}.{}>".format(*part["Fn::GetAtt"])


def acknowledge_execution_role(role: ExecutionRole, bucket: s3.IBucket) -> None:
    policy = role.role
    arn = _bucket_arn(bucket)
    for prefix in (DATASETS, CHECKPOINTS, MODELS):
        _ack(
            policy,
            f"IAM5[Resource::{arn}/{prefix}*]",
            f"Training jobs read or write any object under {prefix} of the dataset bucket; "
            "the keys are the user's dataset and the job's outputs, unknown in advance.",
        )
    for action, why in (
        (
            "s3:DeleteObject*",
            "checkpoint sync removes checkpoints the trainer deleted (keep last K)",
        ),
        ("s3:Abort*", "multipart uploads of checkpoints and model.tar.gz may need aborting"),
    ):
        _ack(policy, f"IAM5[Action::{action}]", f"CDK bucket grant scoped to prefixes: {why}.")
    for action in ("kms:ReEncrypt*", "kms:GenerateDataKey*"):
        _ack(policy, f"IAM5[Action::{action}]", f"Limited to {KEY_ACTIONS}.")
    _ack(
        policy,
        "IAM5[Resource::*]",
        "ecr:GetAuthorizationToken, cloudwatch:PutMetricData and the ec2:Describe* calls of "
        "jobs in a VPC support no resource-level permissions (AWS requires *); PutMetricData "
        "is limited by a namespace condition.",
    )
    _ack(
        policy,
        f"IAM5[Resource::{_rendered(policy, role.log_group_arn)}]",
        "SageMaker writes one log stream per job and host into this one log group.",
    )
    if role.network_interfaces_arn is not None:
        _ack(
            policy,
            f"IAM5[Resource::{_rendered(policy, role.network_interfaces_arn)}]",
            "SageMaker creates each job's network interfaces, so their ids are unknown in "
            "advance: creation is limited to the configured subnets and security groups, "
            "deletion and attach permissions to interfaces in those subnets (ec2:Subnet), "
            "attach permissions to SageMaker (ec2:AuthorizedService).",
        )


def acknowledge_pipeline(pipeline: TrainingPipeline) -> None:
    prepare = pipeline.prepare_function
    _ack(
        prepare.role,
        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        "The AWS-maintained minimal policy for a function's own log group.",
    )
    _ack(
        prepare.role,
        "IAM5[Resource::*]",
        "X-Ray trace upload supports no resource (AWS requires *).",
    )
    machine_role = pipeline.state_machine.role
    _ack(
        machine_role,
        "IAM5[Resource::*]",
        "X-Ray tracing and the log delivery of Step Functions support no resource-level "
        "permissions (AWS requires *).",
    )
    _ack(
        machine_role,
        f"IAM5[Resource::{_token(prepare, 'Arn')}:*]",
        "Invoking any version of the one Prepare function.",
    )
    _ack(
        machine_role,
        f"IAM5[Resource::{_rendered(machine_role, pipeline.jobs_arn)}]",
        "Job names are made per attempt; the policy allows only this stack's name prefix.",
    )
