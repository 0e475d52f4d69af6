"""The whole stack: the state machine, its roles, the Prepare function, monitoring, outputs.

Synthesized once per module under cdk-nag (any unacknowledged finding fails), then read
as CloudFormation; the CDK CLI's own synth of app.py runs too, offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from aws_cdk import App
from aws_cdk.assertions import Match, Template

from operations.stack import OUTPUTS
from stacks.ernie_stack import ErnieStackProps, ErnieTrainingStack
from stacks.training_pipeline import LAMBDA_DATA, LAMBDA_MODULES, REQUEST_FIELDS, RETRYABLE
from tests.cdk_support import ENV, ROOT, cfn_lint_problems, feature_flags, synth_under_nag
from training.execution import ExecutionInputError
from training.metrics import METRIC_DEFINITIONS


@dataclass
class Synth:
    outdir: Path
    stack: ErnieTrainingStack
    template: Template
    vpc: Template


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = App(outdir=str(outdir), context=feature_flags())
    stack = ErnieTrainingStack(
        app,
        "Ernie",
        ErnieStackProps(
            notification_email="ml-team@example.com",
            instance_type="ml.p4d.24xlarge",
            instance_count=2,
        ),
        env=ENV,
    )
    vpc = ErnieTrainingStack(
        app,
        "ErnieInVpc",
        ErnieStackProps(
            name_prefix="lab", subnet_ids=("subnet-1", "subnet-2"), security_group_ids=("sg-1",)
        ),
        env=ENV,
    )
    synth_under_nag(app, outdir)
    return Synth(outdir, stack, Template.from_stack(stack), Template.from_stack(vpc))


def _definition(template: Template) -> dict:
    """The state machine's ASL with CloudFormation references flattened to placeholders."""
    (machine,) = template.find_resources("AWS::StepFunctions::StateMachine").values()
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else "REF" for p in parts)
    return json.loads(text)


def _statements(template: Template, role_fragment: str) -> list[dict]:
    policies = template.find_resources("AWS::IAM::Policy")
    return [
        statement
        for logical_id, policy in policies.items()
        if role_fragment in logical_id
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_train_state_runs_create_training_job_sync_with_the_prepared_request(synth):
    states = _definition(synth.template)["States"]
    train = states["Train"]
    assert train["Resource"].endswith(":states:::sagemaker:createTrainingJob.sync")
    assert train["Parameters"] == {f"{f}.$": f"$.job.request.{f}" for f in REQUEST_FIELDS}
    in_vpc = _definition(synth.vpc)["States"]["Train"]["Parameters"]
    assert in_vpc["VpcConfig.$"] == "$.job.request.VpcConfig"


def test_capacity_and_throttling_retry_with_a_fresh_name_then_fail_with_the_reason(synth):
    states = _definition(synth.template)["States"]
    catches = {tuple(c["ErrorEquals"]): c["Next"] for c in states["Train"]["Catch"]}
    assert catches[tuple(RETRYABLE)] == "Another attempt?"
    assert catches[("States.TaskFailed",)] == "Read failure"
    assert states["Another attempt?"]["Choices"][0]["NumericLessThan"] == 3
    # The loop goes back through Prepare, which names the job for the new attempt.
    assert states["Back off"]["Next"] == "Count attempt"
    assert states["Count attempt"]["Next"] == "Prepare job"
    capacity = states["Out of capacity?"]
    assert states["Read failure"]["Next"] == "Out of capacity?"
    assert capacity["Choices"][0]["StringMatches"] == "CapacityError*"
    assert capacity["Choices"][0]["Next"] == "Another attempt?"
    assert states["Failure reason"]["Parameters"]["Cause.$"] == "$.failure.Job.FailureReason"
    assert states["Failed"]["Type"] == "Fail" and states["Failed"]["CausePath"] == "$.error.Cause"
    # Every failure is published, then fails the execution (a notice must not end it as a success).
    assert states["NotifyFailure"]["Next"] == states["NotifyJobFailure"]["Next"] == "Failed"
    assert states["NotifySuccess"]["Next"] == "Done" and states["Done"]["Type"] == "Succeed"
    assert states["Prepare job"]["Catch"][0]["Next"] == "NotifyFailure"
    assert states["Model"]["Parameters"]["model.$"] == "$.training.ModelArtifacts.S3ModelArtifacts"


def test_state_machine_logs_everything_and_traces(synth):
    synth.template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like(
                {"Level": "ALL", "IncludeExecutionData": True}
            ),
        },
    )


def test_state_machine_may_only_run_this_prefix_and_pass_the_role_to_sagemaker(synth):
    statements = _statements(synth.template, "StateMachineRole")
    by_action = {json.dumps(s["Action"]): s for s in statements}
    sagemaker = by_action[
        json.dumps(
            [
                "sagemaker:CreateTrainingJob",
                "sagemaker:DescribeTrainingJob",
                "sagemaker:StopTrainingJob",
                "sagemaker:AddTags",
            ]
        )
    ]
    assert "training-job/ernie-*" in json.dumps(sagemaker["Resource"])
    pass_role = by_action['"iam:PassRole"']
    assert pass_role["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    events = by_action[json.dumps(["events:PutTargets", "events:PutRule", "events:DescribeRule"])]
    assert "rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule" in json.dumps(
        events["Resource"]
    )
    assert not any(s["Action"] in ("*", "sagemaker:*", "s3:*") for s in statements)


def test_training_job_role_reads_datasets_writes_checkpoints_and_models_only(synth):
    synth.template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [
                    Match.object_like(
                        {
                            "Principal": {"Service": "sagemaker.amazonaws.com"},
                            "Condition": {"StringEquals": {"aws:SourceAccount": ENV.account}},
                        }
                    )
                ]
            }
        },
    )
    statements = _statements(synth.template, "TrainingJobRole")
    text = json.dumps(statements)
    for prefix in ("datasets/*", "checkpoints/*", "models/*"):
        assert prefix in text
    writes = [s for s in statements if "s3:PutObject" in s["Action"]]
    assert writes and all("datasets/" not in json.dumps(s["Resource"]) for s in writes)
    metrics = next(s for s in statements if s["Action"] == "cloudwatch:PutMetricData")
    assert metrics["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}
    }


def test_prepare_function_ships_only_the_contract_modules_and_runs(synth):
    synth.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "training.execution.handler",
            "Runtime": "python3.14",
            "TracingConfig": {"Mode": "Active"},
        },
    )
    bundles = [
        folder
        for folder in synth.outdir.glob("asset.*")
        if (folder / "training" / "execution.py").is_file()
        and not (folder / "training" / "train.py").exists()
    ]
    assert bundles, "no Prepare bundle in the cloud assembly"
    bundle = bundles[0]
    files = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    expected = [f"training/{m}.py" for m in LAMBDA_MODULES] + [f"training/{d}" for d in LAMBDA_DATA]
    assert files == sorted(expected)
    # The bundle alone answers an empty execution input, as Lambda would run it.
    script = (
        "import json; from training.execution import handler; "
        "print(json.dumps(handler({'input': {}, 'execution': 'exec-1', 'attempt': 2}, None)))"
    )
    env = {
        "PATH": os.environ["PATH"],
        "IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ernie-training:abc",
        "ROLE_ARN": "arn:aws:iam::123456789012:role/job",
        "BUCKET": "data",
        "NAME_PREFIX": "ernie",
    }
    out = subprocess.run(
        [sys.executable, "-I", "-c", script],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    request = json.loads(out.stdout)["request"]
    assert request["TrainingJobName"].startswith("ernie-")
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == list(METRIC_DEFINITIONS)
    assert set(REQUEST_FIELDS) <= set(request)


def test_outcomes_go_to_an_encrypted_topic_with_the_email_subscription(synth):
    synth.template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    synth.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ml-team@example.com"}
    )
    assert synth.vpc.find_resources("AWS::SNS::Subscription") == {}


def test_dashboard_searches_every_job_and_alarms_watch_executions(synth):
    (dashboard,) = synth.template.find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric in ("Training-loss", "Validation-loss", "Training-tokens-per-second"):
        assert f'MetricName=\\\\\\"{metric}\\\\\\"' in body or metric in body
    assert "SEARCH(" in body and "GPUUtilization" in body and "GPUMemoryUtilization" in body
    alarms = synth.template.find_resources("AWS::CloudWatch::Alarm")
    assert {a["Properties"]["MetricName"] for a in alarms.values()} == {
        "ExecutionsFailed",
        "ExecutionsTimedOut",
    }
    assert all(a["Properties"]["AlarmActions"] for a in alarms.values())


def test_outputs_are_the_ones_the_operator_commands_read(synth):
    assert set(synth.template.to_json()["Outputs"]) == set(OUTPUTS)


def test_cdk_nag_clean_and_cfn_lint_finds_no_errors(synth):
    report = json.loads((synth.outdir / "validation-report.json").read_text())
    assert [v for r in report["pluginReports"] for v in r.get("violations", [])] == []
    for name in ("Ernie", "ErnieInVpc"):
        assert cfn_lint_problems(synth.outdir / f"{name}.template.json") == [], name


def test_cdk_cli_synthesizes_the_app_offline(tmp_path):
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "CDK_DISABLE_VERSION_CHECK": "true"}
    start = time.perf_counter()
    out = subprocess.run(
        [str(ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--quiet", "-o", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "ErniePretraining.template.json").is_file()
    print(f"cdk synth took {time.perf_counter() - start:.1f} s")


def test_stack_defaults_reach_the_prepare_function_and_bad_ones_fail_the_synth(synth):
    (function,) = [
        f
        for f in synth.template.find_resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "training.execution.handler"
    ]
    defaults = json.loads(function["Properties"]["Environment"]["Variables"]["INPUT_DEFAULTS"])
    assert defaults == {"instance_type": "ml.p4d.24xlarge", "instance_count": 2}
    app = App(context=feature_flags())
    with pytest.raises(ExecutionInputError, match="instance_count"):
        ErnieTrainingStack(app, "Bad", ErnieStackProps(instance_count=99), env=ENV)
