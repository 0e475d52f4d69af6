"""The whole product in one stack: dataset bucket, training image, job role, pipeline, monitoring."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_kms as kms
from constructs import Construct
from ernie_sm.pipeline.naming import check_name_prefix
from ernie_sm.stacks.dataset_bucket import DatasetBucket, DatasetBucketProps
from ernie_sm.stacks.execution_role import ExecutionRole, ExecutionRoleProps
from ernie_sm.stacks.monitoring import Monitoring, MonitoringProps
from ernie_sm.stacks.network import check_vpc
from ernie_sm.stacks.outputs import add_outputs
from ernie_sm.stacks.training_image import TrainingImage, TrainingImageProps
from ernie_sm.stacks.training_pipeline import TrainingPipeline, TrainingPipelineProps


@dataclass(frozen=True)
class ErnieStackProps:
    name_prefix: str = "ernie"
    notification_email: str | None = None
    existing_bucket_name: str | None = None
    base_image: str | None = None
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    instance_type: str | None = None  # default of the execution input's instance_type
    instance_count: int | None = None
    kms_key_arn: str | None = None  # an existing key for data, volumes and outputs
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN  # of the bucket, key and repository


class ErnieTrainingStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, props: ErnieStackProps, **kwargs: object
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # Before any resource: every execution would fail on these (the app's context keys).
        check_name_prefix(props.name_prefix, "name_prefix (-c ernie:namePrefix)")
        check_vpc(props.subnet_ids, props.security_group_ids)
        data = DatasetBucket(
            self,
            "Data",
            DatasetBucketProps(
                existing_bucket_name=props.existing_bucket_name,
                encryption_key=(
                    kms.Key.from_key_arn(self, "DataKey", props.kms_key_arn)
                    if props.kms_key_arn
                    else None
                ),
                removal_policy=props.removal_policy,
                name_prefix=props.name_prefix,
            ),
        )
        image = TrainingImage(
            self,
            "Image",
            TrainingImageProps(
                base_image=props.base_image,
                removal_policy=props.removal_policy,
                name_prefix=props.name_prefix,
            ),
        )
        role = ExecutionRole(
            self,
            "TrainingJobRole",
            ExecutionRoleProps(
                bucket=data.bucket,
                key=data.key,
                repository=image.repository,
                subnet_ids=props.subnet_ids,
                security_group_ids=props.security_group_ids,
            ),
        )
        pipeline = TrainingPipeline(
            self,
            "Pipeline",
            TrainingPipelineProps(
                bucket=data.bucket,
                key=data.key,
                image_uri=image.image_uri,
                execution_role=role.role,
                name_prefix=props.name_prefix,
                notification_email=props.notification_email,
                input_defaults={
                    k: v
                    for k, v in (
                        ("instance_type", props.instance_type),
                        ("instance_count", props.instance_count),
                    )
                    if v is not None
                },
            ),
        )
        pipeline.node.add_dependency(image.deployment)  # jobs start only once the image is there
        monitoring = Monitoring(
            self,
            "Monitoring",
            MonitoringProps(
                state_machine=pipeline.state_machine,
                topic=pipeline.topic,
                name_prefix=props.name_prefix,
            ),
        )
        # The role and the pipeline acknowledge their own cdk-nag findings (stacks/nag.py).
        add_outputs(pipeline, image, monitoring)
