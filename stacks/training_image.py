"""The training image: built by CDK from container/Dockerfile, copied into its own ECR repository.

A DockerImageAsset always lands in the CDK bootstrap repository, under a tag equal to
its asset hash. cdk-ecr-deployment (v4) copies it into this construct's repository under
that same tag; the repository's tags are immutable, so `image_uri` names exactly the
image this synthesis built, never a moving target such as `latest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cdk_ecr_deployment as ecr_deployment
from aws_cdk import Acknowledgment, Duration, Fn, RemovalPolicy, Validations
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from constructs import Construct

# The Docker build context is the repository root (the image installs pyproject.toml and
# training/); its .dockerignore is an allow-list, which CDK honours when staging and hashing.
BUILD_CONTEXT = Path(__file__).resolve().parents[1]
DOCKERFILE = "container/Dockerfile"
# The Dockerfile's build argument for the PaddlePaddle GPU base image. Its default (a pinned
# tag) lives in the Dockerfile alone; TrainingImageProps.base_image overrides it.
BASE_IMAGE_BUILD_ARG = "PADDLE_IMAGE"

__all__ = [
    "BASE_IMAGE_BUILD_ARG",
    "BUILD_CONTEXT",
    "DOCKERFILE",
    "TrainingImage",
    "TrainingImageProps",
]


@dataclass(frozen=True)
class TrainingImageProps:
    # None: the Dockerfile's own `ARG PADDLE_IMAGE=` default. Otherwise any reference the
    # building machine can pull (an ECR mirror, a digest-pinned `repo@sha256:...`).
    base_image: str | None = None
    # None: f"{name_prefix}-training".
    repository_name: str | None = None
    # RETAIN: the repository and its images survive a stack deletion. DESTROY also empties it.
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    untagged_image_expiry_days: int = 14
    name_prefix: str = "ernie"

    def __post_init__(self) -> None:
        if (
            not isinstance(self.untagged_image_expiry_days, int)
            or self.untagged_image_expiry_days < 1
        ):
            raise ValueError(
                "TrainingImageProps.untagged_image_expiry_days must be a whole number >= 1, "
                f"got {self.untagged_image_expiry_days!r}"
            )
        if self.base_image is not None and not self.base_image.strip():
            raise ValueError(
                "TrainingImageProps.base_image must not be empty (None keeps the default)"
            )


class TrainingImage(Construct):
    """`repository`, `image_uri` (repository URI : asset hash) and `deployment` (the copy).

    Any CloudFormation resource whose properties use `image_uri` depends on the copy
    (the value carries a reference to it); a construct that only needs the image to be
    there can also `node.add_dependency(training_image.deployment)`.
    """

    repository: ecr.Repository
    asset: ecr_assets.DockerImageAsset
    deployment: ecr_deployment.ECRDeployment
    image_tag: str
    image_uri: str

    def __init__(
        self, scope: Construct, construct_id: str, props: TrainingImageProps | None = None
    ) -> None:
        super().__init__(scope, construct_id)
        props = props or TrainingImageProps()
        destroy = props.removal_policy == RemovalPolicy.DESTROY

        # Encryption: ECR's default AES-256 (SSE with S3-managed keys). The image holds the
        # open-source trainer and public base layers, no data or secrets; a KMS key would
        # make every puller (SageMaker's execution role, the copy function) need kms:Decrypt
        # for no confidentiality gained. The encryption type of a repository cannot be
        # changed later, so this is a deliberate choice.
        self.repository = ecr.Repository(
            self,
            "Repository",
            repository_name=props.repository_name or f"{props.name_prefix}-training",
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            encryption=ecr.RepositoryEncryption.AES_256,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    description="Expire untagged images (layers of superseded pushes)",
                    tag_status=ecr.TagStatus.UNTAGGED,
                    max_image_age=Duration.days(props.untagged_image_expiry_days),
                )
            ],
            removal_policy=props.removal_policy,
            empty_on_delete=destroy,
        )

        build_args = (
            {BASE_IMAGE_BUILD_ARG: props.base_image} if props.base_image is not None else None
        )
        self.asset = ecr_assets.DockerImageAsset(
            self,
            "Asset",
            directory=str(BUILD_CONTEXT),
            file=DOCKERFILE,
            platform=ecr_assets.Platform.LINUX_AMD64,  # SageMaker GPU instances are x86_64
            build_args=build_args,
            display_name=f"{props.name_prefix} training image",
        )
        self.image_tag = self.asset.asset_hash

        # The copy function's role, scoped to the two repositories involved. The construct's
        # own statements (ecr:* push and pull on "*", s3:GetObject on "*") are dropped by
        # without_policy_updates(): its handler only calls ecr:GetAuthorizationToken and the
        # registry API (pull from the bootstrap repository, push to ours).
        copy_role = iam.Role(
            self,
            "CopyRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Copies the training image from the CDK asset repository into its own",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AWSLambdaBasicExecutionRole"
                )
            ],
        )
        self.asset.repository.grant_pull(copy_role)
        self.repository.grant_pull_push(copy_role)

        destination = self.repository.repository_uri_for_tag(self.image_tag)
        self.deployment = ecr_deployment.ECRDeployment(
            self,
            "Copy",
            src=ecr_deployment.DockerImageName(self.asset.image_uri),
            dest=ecr_deployment.DockerImageName(destination),
            image_arch=["amd64"],
            role=copy_role.without_policy_updates(),
        )
        # The copy runs once the role's policy exists, not merely the role.
        self.deployment.node.add_dependency(copy_role)

        # "<repository URI>" + Fn::Select [0, [":<tag>", Ref(copy)]]: the Select yields the tag,
        # and its unused Ref makes CloudFormation create whatever uses image_uri only after
        # the copy succeeded (the list holds only a string and a Ref, both documented there).
        copy_resource = self.deployment.node.find_child("CustomResource")
        self.image_uri = Fn.join(
            "",
            [
                self.repository.repository_uri,
                Fn.select(0, [f":{self.image_tag}", copy_resource.ref]),
            ],
        )

        self._acknowledge(copy_role)

    def _acknowledge(self, copy_role: iam.Role) -> None:
        """cdk-nag findings of the copy's role, each acknowledged precisely and with its reason.

        The copy function itself (a stack-level singleton, provided.al2023) has no findings.
        """
        Validations.of(copy_role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
                reason="The AWS-managed basic execution policy only lets the copy function write "
                "its own CloudWatch logs; its log group's name is only known after creation.",
            ),
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="ecr:GetAuthorizationToken, which the copy needs to log in to the registry, "
                "has no resource-level permissions; every other action is scoped to the two "
                "repositories.",
            ),
        )
