"""The training image: built by CDK from container/Dockerfile, copied into its own ECR repository.

A DockerImageAsset always lands in the CDK bootstrap repository, under a tag equal to
its asset hash. cdk-ecr-deployment (v4) copies it into this construct's repository under
that same tag, then a lookup reads the digest the tag points to: `image_uri` is
`<repository>@sha256:...`, exactly the image this synthesis built, whatever happens to
the tag later.

Why digests and mutable tags: the copy runs again whenever CloudFormation replays it (a
rollback, a redeploy of an older image), and copying onto an existing tag fails in an
IMMUTABLE repository (cdk-ecr-deployment issue #207; the copy has no skip-if-present
option and returns no digest, issue #990). In a MUTABLE repository the replayed copy
rewrites the tag with the same image from the bootstrap repository, whose asset tags
CDK never overwrites. IMMUTABLE_WITH_EXCLUSION would not help: every tag here is a
copy's, so all would need excluding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cdk_ecr_deployment as ecr_deployment
from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

# The Docker build context is the repository root (the image installs pyproject.toml and
# training/); its .dockerignore is an allow-list, which CDK honours when staging and hashing.
BUILD_CONTEXT = Path(__file__).resolve().parents[1]
DOCKERFILE = "container/Dockerfile"
# The Dockerfile's build argument for the PaddlePaddle GPU base image. Its default (a pinned
# tag) lives in the Dockerfile alone; TrainingImageProps.base_image overrides it.
BASE_IMAGE_BUILD_ARG = "PADDLE_IMAGE"
# Where ECR's DescribeImages answer holds the digest of the one image asked for.
DIGEST_PATH = "imageDetails.0.imageDigest"

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
    # None: CloudFormation names it, so that the stack can be deployed again after a
    # deletion that kept the repository. A fixed name clashes with such a kept repository.
    repository_name: str | None = None
    # RETAIN: the repository and its images survive a stack deletion. DESTROY also empties it.
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    untagged_image_expiry_days: int = 14
    # Of the logs of the two functions that deploy the image (the copy and the digest lookup).
    log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS
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
    """`repository`, `image_uri` (repository URI @ digest) and `deployment` (the copy).

    Any CloudFormation resource whose properties use `image_uri` depends on the copy
    (the digest is read once the copy is done); a construct that only needs the image to be
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
            repository_name=props.repository_name,
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.MUTABLE,  # see the module docstring
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

        # The role of the copy and of the digest lookup, scoped to the two repositories and the
        # two log groups. The copy's own statements (ecr:* push and pull on "*", s3:GetObject on
        # "*") are dropped by without_policy_updates(): its handler only calls
        # ecr:GetAuthorizationToken and the registry API (pull from the bootstrap repository,
        # push to ours).
        role = iam.Role(
            self,
            "CopyRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Copies the training image into its own repository, reads its digest",
        )
        copy_logs, digest_logs = (
            self._log_group(name, props.log_retention, role) for name in ("CopyLogs", "DigestLogs")
        )
        self.asset.repository.grant_pull(role)
        self.repository.grant_pull_push(role)
        self.repository.grant(role, "ecr:DescribeImages")

        self.deployment = ecr_deployment.ECRDeployment(
            self,
            "Copy",
            src=ecr_deployment.DockerImageName(self.asset.image_uri),
            dest=ecr_deployment.DockerImageName(
                self.repository.repository_uri_for_tag(self.image_tag)
            ),
            image_arch=["amd64"],
            role=role.without_policy_updates(),
        )
        # The copy runs once the role's policy exists, not merely the role.
        self.deployment.node.add_dependency(role)
        self._send_copy_logs_to(copy_logs)

        lookup = cr.AwsCustomResource(
            self,
            "Digest",
            on_update=cr.AwsSdkCall(  # also on create
                service="ECR",
                action="describeImages",
                parameters={
                    "repositoryName": self.repository.repository_name,
                    "imageIds": [{"imageTag": self.image_tag}],
                },
                physical_resource_id=cr.PhysicalResourceId.from_response(DIGEST_PATH),
                output_paths=[DIGEST_PATH],
            ),
            role=role,
            log_group=digest_logs,
            install_latest_aws_sdk=False,  # no download from npm during the deployment
        )
        lookup.node.add_dependency(self.deployment)
        self.image_uri = (
            f"{self.repository.repository_uri}@{lookup.get_response_field(DIGEST_PATH)}"
        )

        self._acknowledge(role)

    def _log_group(
        self, construct_id: str, retention: logs.RetentionDays, writer: iam.IRole
    ) -> logs.LogGroup:
        log_group = logs.LogGroup(
            self, construct_id, retention=retention, removal_policy=RemovalPolicy.DESTROY
        )
        log_group.grant_write(writer)
        return log_group

    def _send_copy_logs_to(self, log_group: logs.LogGroup) -> None:
        """Send the copy function's logs to `log_group` instead of a never-expiring default.

        cdk-ecr-deployment 4 exposes neither the function nor a log setting: its
        SingletonFunction ("CustomResourceHandler") creates the function at stack level
        under `construct_name`, whose CfnFunction takes Lambda's LoggingConfig.LogGroup.
        """
        handler = self.deployment.node.find_child("CustomResourceHandler")
        function = Stack.of(self).node.find_child(handler.construct_name)
        function.node.default_child.logging_config = lambda_.CfnFunction.LoggingConfigProperty(
            log_group=log_group.log_group_name
        )

    def _acknowledge(self, role: iam.Role) -> None:
        """The one cdk-nag finding of the role, acknowledged precisely and with its reason.

        The two functions themselves (stack-level singletons) have no findings.
        """
        Validations.of(role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="ecr:GetAuthorizationToken, which the copy needs to log in to the registry, "
                "has no resource-level permissions; every other action is scoped to the two "
                "repositories and the two log groups.",
            ),
        )
