#!/usr/bin/env python3
"""The CDK app: context from cdk.json (or -c key=value) to the stack, and cdk-nag on everything."""

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks
from ernie_sm.stacks.ernie_stack import ErnieStackProps, ErnieTrainingStack

app = App()


def context(key: str) -> str | None:
    return app.node.try_get_context(f"ernie:{key}") or None


ErnieTrainingStack(
    app,
    "ErniePretraining",
    ErnieStackProps(
        name_prefix=context("namePrefix") or "ernie",
        notification_email=context("notificationEmail"),
        existing_bucket_name=context("existingBucketName"),
        base_image=context("baseImage"),
        subnet_ids=tuple(filter(None, (context("subnetIds") or "").split(","))),
        security_group_ids=tuple(filter(None, (context("securityGroupIds") or "").split(","))),
        instance_type=context("instanceType"),
        instance_count=int(context("instanceCount") or 0) or None,
        kms_key_arn=context("kmsKeyArn"),
    ),
)
Validations.of(app).add_plugins(AwsSolutionsChecks(app))
app.synth()
