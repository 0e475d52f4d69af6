"""The role SageMaker training jobs run as: datasets in, checkpoints and models out, one image.

In a VPC it also manages the network interfaces SageMaker creates for the job.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct
from ernie_sm.stacks import nag
from ernie_sm.stacks.dataset_bucket import CHECKPOINTS, DATASETS, MODELS
from ernie_sm.stacks.network import check_vpc

METRICS_NAMESPACE = "/aws/sagemaker/TrainingJobs"
SAGEMAKER = "sagemaker.amazonaws.com"
# A job with a VpcConfig needs these and ec2:Create/DeleteNetworkInterface(Permission), all
# on "*" in the SageMaker developer guide ("CreateTrainingJob API: Execution Role
# Permissions") and in CDK's SageMakerCreateTrainingJob task; _grant_network scopes the latter.
NETWORK_DESCRIBE_ACTIONS = (
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
)


@dataclass(frozen=True)
class ExecutionRoleProps:
    bucket: s3.IBucket
    key: kms.IKey
    repository: ecr.IRepository
    # The jobs' VpcConfig (both or neither): SageMaker creates their network interfaces
    # there with this role. The one place to give it: a TrainingPipeline given this role
    # runs its jobs there.
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()


class ExecutionRole(Construct):
    """`role`; `subnet_ids` and `security_group_ids`, the VPC its policy lets jobs run in;
    `log_group_arn` and `network_interfaces_arn` (None without subnets) for cdk-nag, whose
    findings on the role it acknowledges itself (stacks/nag.py, each with its reason)."""

    role: iam.Role
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    log_group_arn: str
    network_interfaces_arn: str | None

    def __init__(self, scope: Construct, construct_id: str, props: ExecutionRoleProps) -> None:
        super().__init__(scope, construct_id)
        check_vpc(props.subnet_ids, props.security_group_ids)
        self.subnet_ids = tuple(props.subnet_ids)
        self.security_group_ids = tuple(props.security_group_ids)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(
                SAGEMAKER,
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
            description="Runs ERNIE pretraining jobs: datasets in, checkpoints and models out",
        )
        self._grant_data(props.bucket, props.key)
        props.repository.grant_pull(self.role)
        self._grant_logs_and_metrics()
        self.network_interfaces_arn = (
            self._grant_network(props.subnet_ids, props.security_group_ids)
            if props.subnet_ids
            else None
        )
        nag.acknowledge_execution_role(self, props.bucket)

    def _allow(self, actions: list[str], resources: list[str], **conditions: dict) -> None:
        self.role.add_to_policy(
            iam.PolicyStatement(actions=actions, resources=resources, conditions=conditions or None)
        )

    def _grant_data(self, bucket: s3.IBucket, key: kms.IKey) -> None:
        # Explicit reads rather than bucket.grant_read, which also allows s3:List* on the whole
        # bucket and so would void the prefix condition on s3:ListBucket below.
        self._allow(
            ["s3:GetObject"],
            [bucket.arn_for_objects(f"{p}*") for p in (DATASETS, MODELS, CHECKPOINTS)],
        )
        self._allow(["s3:GetBucketLocation"], [bucket.bucket_arn])
        self._allow(
            ["s3:ListBucket"],
            [bucket.bucket_arn],
            StringLike={"s3:prefix": [f"{DATASETS}*", f"{CHECKPOINTS}*", f"{MODELS}*"]},
        )
        bucket.grant_write(self.role, f"{CHECKPOINTS}*")  # checkpoint sync also deletes
        bucket.grant_put(self.role, f"{MODELS}*")
        key.grant_encrypt_decrypt(self.role)
        # VolumeKmsKeyId: SageMaker takes a grant on the key for the job's storage volumes,
        # as this role ("If you specify a volume KMS key ...: kms:CreateGrant", same guide).
        self._allow(["kms:CreateGrant"], [key.key_arn], Bool={"kms:GrantIsForAWSResource": "true"})

    def _grant_logs_and_metrics(self) -> None:
        stack = Stack.of(self)
        self.log_group_arn = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{METRICS_NAMESPACE}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self._allow(
            [
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "logs:DescribeLogStreams",
            ],
            [self.log_group_arn],
        )
        # PutMetricData has no resource; the namespace condition scopes it.
        self._allow(
            ["cloudwatch:PutMetricData"],
            ["*"],
            StringEquals={"cloudwatch:namespace": METRICS_NAMESPACE},
        )

    def _grant_network(self, subnet_ids: tuple[str, ...], group_ids: tuple[str, ...]) -> str:
        """The job's network interfaces, in these subnets with these security groups only.

        Per the Service Authorization Reference for EC2: CreateNetworkInterface is authorized
        on the new network-interface, the subnet and the security groups, and only the latter
        two name anything known in advance; the network-interface of CreateNetworkInterface-
        Permission and Delete(NetworkInterface|NetworkInterfacePermission) carries ec2:Subnet
        (the subnet's ARN) and, for CreateNetworkInterfacePermission, ec2:AuthorizedService,
        which SageMaker's own AmazonSageMakerCoreServiceRolePolicy sets to SageMaker.
        """
        stack = Stack.of(self)

        def arn(resource: str, name: str) -> str:
            return stack.format_arn(service="ec2", resource=resource, resource_name=name)

        interfaces = arn("network-interface", "*")  # their ids are made by the call
        subnets = [arn("subnet", s) for s in subnet_ids]
        in_subnets = {"ec2:Subnet": subnets}
        self._allow(list(NETWORK_DESCRIBE_ACTIONS), ["*"])  # no resource-level permissions
        self._allow(
            ["ec2:CreateNetworkInterface"],
            [interfaces, *subnets, *(arn("security-group", g) for g in group_ids)],
        )
        self._allow(
            ["ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission"],
            [interfaces],
            ArnEquals=in_subnets,
        )
        self._allow(
            ["ec2:CreateNetworkInterfacePermission"],
            [interfaces],
            ArnEquals=in_subnets,
            StringEquals={"ec2:AuthorizedService": SAGEMAKER},
        )
        return interfaces
