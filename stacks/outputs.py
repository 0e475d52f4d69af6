"""The stack outputs by which `ernie-sm start`, `watch`, `ls` and the notebook helper find
a deployed stack's resources (operations/stack.py `OUTPUTS`): one call for any stack that
composes the constructs, ErnieTrainingStack or a platform team's.

One call per stack, for its one pipeline: the commands pick a stack (`--stack`), and its
outputs say which pipeline is its. The constructs do not add outputs themselves, so that a
stack may hold more than one bucket or image.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from ernie_sm.stacks.monitoring import Monitoring
from ernie_sm.stacks.training_image import TrainingImage
from ernie_sm.stacks.training_pipeline import TrainingPipeline


def add_outputs(
    pipeline: TrainingPipeline, image: TrainingImage, monitoring: Monitoring
) -> dict[str, CfnOutput]:
    """Every output of OUTPUTS, under its key, in the pipeline's stack; by key."""
    stack = Stack.of(pipeline)
    props = pipeline.props
    values = {
        "DatasetBucket": props.bucket.bucket_name,
        "ImageRepository": image.repository.repository_uri,
        "ImageUri": props.image_uri,
        "StateMachineArn": pipeline.state_machine.state_machine_arn,
        # Its environment holds the settings jobs are built from (the notebook route).
        "PrepareFunctionName": pipeline.prepare_function.function_name,
        "ExecutionRoleArn": props.execution_role.role_arn,
        "NotificationTopicArn": pipeline.topic.topic_arn,
        "DashboardUrl": (
            f"https://console.aws.amazon.com/cloudwatch/home?region={stack.region}"
            f"#dashboards:name={monitoring.dashboard.dashboard_name}"
        ),
    }
    return {key: CfnOutput(stack, key, value=value) for key, value in values.items()}
