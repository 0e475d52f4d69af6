"""The S3 bucket for datasets, checkpoints and models, and the KMS key that encrypts them.

One customer-managed key serves the bucket and the SageMaker jobs (volumes, outputs),
so a single key policy governs who can read the training data and what it produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct
from ernie_sm.contract import bucket_layout

# The bucket's layout (contract/bucket_layout.py) as key prefixes; the execution role and
# the state machine build their paths on these.
DATASETS = f"{bucket_layout.DATASETS}/"
CHECKPOINTS = f"{bucket_layout.CHECKPOINTS}/"
MODELS = f"{bucket_layout.MODELS}/"

_ACCESS_LOGS_USE_BUCKET_POLICY = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"

__all__ = ["CHECKPOINTS", "DATASETS", "MODELS", "DatasetBucket", "DatasetBucketProps"]


@dataclass(frozen=True)
class DatasetBucketProps:
    # Import this bucket instead of creating one (its encryption, policy and lifecycle
    # stay the owner's business; nothing below is applied to it).
    existing_bucket_name: str | None = None
    # None: a customer-managed key with yearly rotation is created.
    encryption_key: kms.IKey | None = field(default=None, compare=False)
    # RETAIN: the data (and its key) survive a stack deletion. DESTROY also empties the bucket.
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    checkpoint_expiry_days: int = 30
    # Overwritten checkpoint files pile up as noncurrent versions at every save.
    checkpoint_noncurrent_expiry_days: int = 1
    output_noncurrent_expiry_days: int = 90
    access_log_expiry_days: int = 90
    name_prefix: str = "ernie"

    def __post_init__(self) -> None:
        for name in (
            "checkpoint_expiry_days",
            "checkpoint_noncurrent_expiry_days",
            "output_noncurrent_expiry_days",
            "access_log_expiry_days",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"DatasetBucketProps.{name} must be a whole number >= 1, got {value!r}"
                )


class DatasetBucket(Construct):
    """`bucket` (created or imported) and `key` (the data key, for SageMaker too)."""

    bucket: s3.IBucket
    key: kms.IKey
    access_log_bucket: s3.IBucket | None

    def __init__(
        self, scope: Construct, construct_id: str, props: DatasetBucketProps | None = None
    ) -> None:
        super().__init__(scope, construct_id)
        props = props or DatasetBucketProps()
        # Log delivery by bucket policy (to the logging service principal), not by the
        # LogDeliveryWrite ACL, which BUCKET_OWNER_ENFORCED forbids; whatever the app's flags.
        self.node.set_context(_ACCESS_LOGS_USE_BUCKET_POLICY, True)
        destroy = props.removal_policy == RemovalPolicy.DESTROY

        if props.encryption_key is not None:
            self.key = props.encryption_key
        else:
            self.key = kms.Key(
                self,
                "Key",
                description=f"{props.name_prefix}: training data, checkpoints, models and SageMaker volumes",
                enable_key_rotation=True,
                alias=f"alias/{props.name_prefix}-training-data",
                removal_policy=props.removal_policy,
                pending_window=Duration.days(7) if destroy else None,
            )

        if props.existing_bucket_name:
            # The key is attached so that grants on the bucket include kms:Decrypt and
            # kms:GenerateDataKey on it: SageMaker writes outputs encrypted with it.
            self.bucket = s3.Bucket.from_bucket_attributes(
                self,
                "Bucket",
                bucket_name=props.existing_bucket_name,
                encryption_key=self.key,
            )
            self.access_log_bucket = None
            return

        logs = s3.Bucket(
            self,
            "AccessLogs",
            # Server access logs can only be delivered to SSE-S3 buckets, not SSE-KMS ones.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(props.access_log_expiry_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            removal_policy=props.removal_policy,
            auto_delete_objects=destroy,
        )
        self.access_log_bucket = logs

        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,  # one data key per bucket, not per object: fewer KMS calls
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            server_access_logs_bucket=logs,
            server_access_logs_prefix="dataset-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-checkpoints",
                    prefix=CHECKPOINTS,
                    expiration=Duration.days(props.checkpoint_expiry_days),
                    noncurrent_version_expiration=Duration.days(
                        props.checkpoint_noncurrent_expiry_days
                    ),
                ),
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(
                        props.output_noncurrent_expiry_days
                    ),
                    expired_object_delete_marker=True,
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                ),
            ],
            removal_policy=props.removal_policy,
            auto_delete_objects=destroy,
        )
