"""The stack outputs by which `ernie-sm start`, `watch`, `ls` and the notebook helper find
a deployed stack's resources (operations/stack.py `OUTPUTS`).

Each construct declares the outputs of its own resources, so any stack composing them
(ErnieTrainingStack, or a platform team's) has them under the keys those commands read.
One stack holds one set: a second TrainingPipeline (or DatasetBucket, ...) in the same
stack fails the synth on the duplicate output.
"""

from __future__ import annotations

from aws_cdk import CfnOutput
from constructs import Construct


def add_output(scope: Construct, key: str, value: str, description: str) -> CfnOutput:
    """A CloudFormation output whose key is exactly `key`, wherever `scope` sits."""
    output = CfnOutput(scope, key, value=value, description=description)
    output.override_logical_id(key)
    return output
