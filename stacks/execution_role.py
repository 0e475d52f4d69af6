"""The role SageMaker training jobs run as: read datasets, write checkpoints and models, pull one image."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.dataset_bucket import CHECKPOINTS, DATASETS, MODELS

METRICS_NAMESPACE = "/aws/sagemaker/TrainingJobs"


@dataclass(frozen=True)
class ExecutionRoleProps:
    bucket: s3.IBucket
    key: kms.IKey
    repository: ecr.IRepository


class ExecutionRole(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ExecutionRoleProps) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(
                "sagemaker.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            ),
            description="Runs ERNIE pretraining jobs: datasets in, checkpoints and models out",
        )
        bucket = props.bucket
        bucket.grant_read(self.role, f"{DATASETS}*")
        bucket.grant_read(self.role, f"{MODELS}*")  # warm starts read an earlier model
        bucket.grant_read_write(self.role, f"{CHECKPOINTS}*")
        bucket.grant_put(self.role, f"{MODELS}*")
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={
                    "StringLike": {"s3:prefix": [f"{DATASETS}*", f"{CHECKPOINTS}*", f"{MODELS}*"]}
                },
            )
        )
        props.key.grant_encrypt_decrypt(self.role)
        props.repository.grant_pull(self.role)
        self.log_group_arn = log_groups = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{METRICS_NAMESPACE}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=[log_groups],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # PutMetricData has no resource; the namespace condition scopes it
                conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
            )
        )
