"""A platform team's own CDK app, with its own `stacks` and `training` packages, composes
the project's constructs: one import namespace (ernie_sm) keeps the two apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cdk_support import ROOT

TEAM_STACK = """
from aws_cdk import Stack
from constructs import Construct

import training  # the team's own package, which ours must not shadow
from ernie_sm.stacks import nag
from ernie_sm.stacks.dataset_bucket import DatasetBucket, DatasetBucketProps
from ernie_sm.stacks.execution_role import ExecutionRole, ExecutionRoleProps
from ernie_sm.stacks.training_image import TrainingImage, TrainingImageProps
from ernie_sm.stacks.training_pipeline import TrainingPipeline, TrainingPipelineProps


class TeamStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, acknowledge: bool, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        assert training.OWNER == "team"
        data = DatasetBucket(self, "Data", DatasetBucketProps(name_prefix="team"))
        image = TrainingImage(self, "Image", TrainingImageProps(name_prefix="team"))
        role = ExecutionRole(
            self, "JobRole", ExecutionRoleProps(data.bucket, data.key, image.repository)
        )
        pipeline = TrainingPipeline(
            self,
            "Pipeline",
            TrainingPipelineProps(
                bucket=data.bucket,
                key=data.key,
                image_uri=image.image_uri,
                execution_role=role.role,
                name_prefix="team",
                input_defaults={"instance_type": "ml.p5.48xlarge"},
            ),
        )
        if acknowledge:
            nag.acknowledge_execution_role(role, data.bucket)
            nag.acknowledge_pipeline(pipeline)
"""

TEAM_APP = """
import sys
from pathlib import Path

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from stacks.team import TeamStack

app = App(outdir=sys.argv[1])
env = Environment(account="123456789012", region="us-east-1")
TeamStack(app, "Team", acknowledge=sys.argv[2] == "acknowledge", env=env)
Validations.of(app).add_plugins(AwsSolutionsChecks(app))
app.synth()
"""


def test_a_team_app_with_its_own_stacks_and_training_packages_composes_ours(tmp_path):
    app = tmp_path / "team-app"
    for package, body in (("stacks", ""), ("training", 'OWNER = "team"\n')):
        (app / package).mkdir(parents=True)
        (app / package / "__init__.py").write_text(body)
    (app / "stacks" / "team.py").write_text(TEAM_STACK)
    (app / "app.py").write_text(TEAM_APP)
    env = {
        **os.environ,
        "PATH": f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{os.environ['PATH']}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }

    def synth(outdir: Path, acknowledge: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "app.py", str(outdir), acknowledge],
            cwd=app,  # its own stacks/ and training/ come first on sys.path, as in its repository
            env=env,
            capture_output=True,
            text=True,
        )

    out = synth(tmp_path / "cdk.out", "acknowledge")
    report = tmp_path / "cdk.out" / "validation-report.json"
    assert out.returncode == 0, out.stderr[-3000:] + (report.read_text() if report.exists() else "")
    template = json.loads((tmp_path / "cdk.out" / "Team.template.json").read_text())
    types = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::S3::Bucket", "AWS::ECR::Repository", "AWS::StepFunctions::StateMachine"} <= types
    assert json.loads(report.read_text())["pluginReports"] == []  # nothing unacknowledged
    # Without the project's acknowledgments cdk-nag objects: it did run above.
    assert synth(tmp_path / "unacknowledged", "none").returncode != 0
    found = (tmp_path / "unacknowledged" / "validation-report.json").read_text()
    assert "AwsSolutions-IAM5" in found
