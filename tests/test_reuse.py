"""A platform team's own CDK app, with its own `stacks` and `training` packages, composes
the project's constructs exactly as docs/constructs.md shows: one import namespace (ernie_sm)
keeps the two apart, and the stack is deployable (cdk-nag finds nothing), operable (the
outputs the commands read) and rehearsable (`ernie-sm rehearse --cdk-out ... --stack`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ernie_sm.operations.stack import OUTPUTS
from ernie_sm.pipeline.stack_environment import StackEnvironment
from ernie_sm.rehearsal import definition
from ernie_sm.rehearsal.rehearse import rehearse, stack_template

from ernie_sm.cli import main
from tests.cdk_support import ROOT
from tests.helpers import make_job, tiny_input

SECTION = "# Using the constructs in your own app"

TEAM_APP = """
import sys

from aws_cdk import App, Environment, Validations
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks

import training  # the team's own package, which ours must not shadow
from stacks.team import TeamStack

assert training.OWNER == "team"
app = App(outdir=sys.argv[1])
env = Environment(account="123456789012", region="us-east-1")
stack = TeamStack(app, "Team", env=env)
if sys.argv[2] == "flawed":  # a bucket cdk-nag objects to: proof that it runs
    s3.Bucket(stack, "Flawed")
Validations.of(app).add_plugins(AwsSolutionsChecks(app))
app.synth()
"""


def readme_snippet() -> str:
    """The composition of docs/constructs.md, as a team would paste it."""
    text = (ROOT / "docs" / "constructs.md").read_text()
    section = text[text.index(SECTION) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The team's app folder, synthesized (clean) into its cdk.out."""
    app = tmp_path_factory.mktemp("team-app")
    for package, body in (("stacks", ""), ("training", 'OWNER = "team"\n')):
        (app / package).mkdir(parents=True)
        (app / package / "__init__.py").write_text(body)
    (app / "stacks" / "team.py").write_text(readme_snippet())
    (app / "app.py").write_text(TEAM_APP)
    out = synth(app, app / "cdk.out", "clean")
    report = app / "cdk.out" / "validation-report.json"
    assert out.returncode == 0, out.stderr[-3000:] + (report.read_text() if report.exists() else "")
    return app


def synth(app: Path, outdir: Path, variant: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{os.environ['PATH']}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return subprocess.run(
        [sys.executable, "app.py", str(outdir), variant],
        cwd=app,  # its own stacks/ and training/ come first on sys.path, as in its repository
        env=env,
        capture_output=True,
        text=True,
    )


def test_the_readme_composition_synthesizes_under_cdk_nag_with_no_finding(team):
    template = json.loads((team / "cdk.out" / "Team.template.json").read_text())
    types = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::S3::Bucket", "AWS::ECR::Repository", "AWS::StepFunctions::StateMachine"} <= types
    report = json.loads((team / "cdk.out" / "validation-report.json").read_text())
    assert report["pluginReports"] == []  # no finding at all, acknowledged or not
    # cdk-nag did run: a resource it objects to fails the same app.
    flawed = team / "flawed.out"
    assert synth(team, flawed, "flawed").returncode != 0
    assert "AwsSolutions-S1" in (flawed / "validation-report.json").read_text()


def test_the_composition_has_every_output_the_operator_commands_read(team):
    template = json.loads((team / "cdk.out" / "Team.template.json").read_text())
    assert set(template["Outputs"]) == set(OUTPUTS)


def test_the_composition_runs_its_jobs_in_the_vpc_given_once(team):
    template = json.loads((team / "cdk.out" / "Team.template.json").read_text())
    local = definition.load(stack_template(team / "cdk.out", "Team"))
    env = StackEnvironment.from_environ(local.prepare_environment)  # Prepare takes it
    assert env.name_prefix == "team"
    assert (env.subnets, env.security_groups) == (
        ("subnet-0123456789abcdef0",),
        ("sg-0123456789abcdef0",),
    )
    ingress = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress"
    ]
    assert [(i["GroupId"], i["SourceSecurityGroupId"], i["IpProtocol"]) for i in ingress] == [
        ("sg-0123456789abcdef0", "sg-0123456789abcdef0", "-1")
    ]


def test_rehearse_picks_the_stack_of_another_apps_cloud_assembly(team, tmp_path, capsys):
    cdk_out = team / "cdk.out"
    # Not ours: our stack is not in it, and a rehearsal never synthesizes into it.
    assert main(["rehearse", "--cdk-out", str(cdk_out), "--dir", str(tmp_path)]) == 2
    assert "has no stack ErniePretraining (it has: Team): pass --stack" in capsys.readouterr().err
    empty = tmp_path / "unsynthesized"
    empty.mkdir()
    assert main(["rehearse", "--cdk-out", str(empty), "--stack", "Team"]) == 2
    assert "no manifest.json): synthesize the app" in capsys.readouterr().err
    assert list(empty.iterdir()) == []
    # The chosen stack, end to end: its Prepare names the job with the team's prefix.
    dataset = make_job(tmp_path / "job") / "input" / "data"
    result = rehearse(tiny_input(), tmp_path / "r", cdk_out, dataset, stack="Team")
    assert "output" in result, result
    assert result["output"]["training_job"].startswith("team-")
    assert result["output"]["model"].startswith("s3://rehearsal-data/models/team-")


def test_a_stack_synthesized_for_an_account_and_region_is_rehearsed_in_the_local_ones(tmp_path):
    manifest = {
        "artifacts": {
            "Team": {
                "type": "aws:cloudformation:stack",
                "environment": "aws://111122223333/eu-west-1",
                "properties": {"templateFile": "Team.template.json"},
            }
        }
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    arn = "arn:aws:states:eu-west-1:111122223333:stateMachine:*"
    template = {
        "Resources": {"R": {"Properties": {"A": arn, "Az": "eu-west-1a", "N": "1111222233334"}}}
    }
    local = definition._in_rehearsal_environment(template, tmp_path / "Team.template.json")
    assert local["Resources"]["R"]["Properties"] == {
        "A": f"arn:aws:states:{definition.REGION}:{definition.ACCOUNT}:stateMachine:*",
        "Az": "eu-west-1a",  # not a region
        "N": "1111222233334",  # not the account
    }
