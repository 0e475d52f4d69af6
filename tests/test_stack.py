"""The whole stack: the state machine, its roles, the Prepare function, monitoring, outputs.

Synthesized once per module under cdk-nag (any unacknowledged finding fails), then read
as CloudFormation; the CDK CLI's own synth of app.py runs too, offline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import botocore.session
import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Match, Template
from ernie_sm.contract.metrics import METRIC_DEFINITIONS
from ernie_sm.operations.stack import OUTPUTS
from ernie_sm.pipeline.execution_input import ExecutionInputError
from ernie_sm.pipeline.handler import prepare
from ernie_sm.pipeline.limits import MAX_HOURS, MAX_STAGES
from ernie_sm.stacks.dataset_bucket import DatasetBucket
from ernie_sm.stacks.ernie_stack import ErnieStackProps, ErnieTrainingStack
from ernie_sm.stacks.execution_role import ExecutionRole, ExecutionRoleProps
from ernie_sm.stacks.lambda_bundle import package_files
from ernie_sm.stacks.network import MAX_SECURITY_GROUPS, MAX_SUBNETS, check_vpc
from ernie_sm.stacks.training_image import TrainingImage
from ernie_sm.stacks.training_pipeline import (
    API_ERROR,
    EVALUATION_REQUEST_FIELDS,
    LAMBDA_PACKAGES,
    REQUEST_FIELDS,
    RESOURCE_LIMIT,
    TrainingPipeline,
    TrainingPipelineProps,
)

from tests.cdk_support import ENV, ROOT, cfn_lint_problems, feature_flags, synth_under_nag


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


def test_train_catches_api_errors_before_job_failures_and_every_path_notifies(synth):
    states = _definition(synth.template)["States"]
    catches = [(c["ErrorEquals"], c["Next"], c["ResultPath"]) for c in states["Train"]["Catch"]]
    # In order: States.TaskFailed matches every error but States.Timeout, so it comes last
    # but one, after the errors whose Cause is plain text.
    assert catches == [
        ([RESOURCE_LIMIT], "Another attempt?", "$.error"),
        ([API_ERROR], "Throttled?", "$.error"),
        (["States.TaskFailed"], "Job ended?", "$.error"),
        (["States.ALL"], "NotifyFailure", "$.error"),
    ]
    assert states["Throttled?"]["Choices"][0]["StringMatches"] == "*ThrottlingException*"
    assert states["Throttled?"]["Default"] == "NotifyFailure"
    # A JSON Cause (a job's description, perhaps cut short) has the job described afresh
    # by name, never parsed; any other Cause is reported as it is.
    assert states["Job ended?"]["Choices"][0] == {
        "Variable": "$.error.Cause",
        "StringMatches": "{*",
        "Next": "Read job",
    }
    assert states["Job ended?"]["Default"] == "NotifyFailure"
    assert states["Has a reason?"]["Choices"][0]["IsPresent"] is True
    assert states["Has a reason?"]["Default"] == "Job status"
    assert states["Out of capacity?"]["Choices"][0]["StringMatches"] == "CapacityError*"
    assert states["Out of capacity?"]["Choices"][0]["Next"] == "Another attempt?"
    assert states["Prepare job"]["Catch"][0]["Next"] == "Function error?"
    # Every failure is published, then fails the execution, even when publishing fails.
    assert states["NotifyFailure"]["Next"] == "Failed"
    assert states["NotifyFailure"]["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "Failed"}
    ]
    assert states["Failed"] == {
        "Type": "Fail",
        "ErrorPath": "$.error.Error",
        "CausePath": "$.error.Cause",
    }
    assert states["NotifySuccess"]["Next"] == "Done" and states["Done"]["Type"] == "Succeed"
    assert "StringToJson" not in json.dumps(states["Read job"])


def test_a_long_cause_is_never_parsed_the_job_is_described_by_name(synth):
    """A Cause over Step Functions' 32,768 characters may come cut short: the failure
    routing reads the job from DescribeTrainingJob (the AWS SDK integration), not from
    States.StringToJson of the Cause, which would fail the execution without a notice."""
    states = _definition(synth.template)["States"]
    readers = [name for name in states if name.startswith("Read job")]
    assert readers == ["Read job", "Read job (evaluation)", "Read job (stage)"]
    for name in readers:
        read = states[name]
        assert read["Type"] == "Task"
        assert read["Resource"].endswith(":states:::aws-sdk:sagemaker:describeTrainingJob")
        assert read["Parameters"] == {"TrainingJobName.$": "$.job.request.TrainingJobName"}
        assert read["ResultPath"] == "$.error"  # the description in the Cause's place
        assert read["Retry"][0]["ErrorEquals"] == ["States.ALL"]
        # Not described: the failure goes out as it came, with a notice.
        (catch,) = read["Catch"]
        assert (
            catch["ErrorEquals"] == ["States.ALL"] and catch["ResultPath"] == "$.failure.Describe"
        )
    assert states["Read job"]["Catch"][0]["Next"] == "NotifyFailure"
    assert states["Read job (stage)"]["Catch"][0]["Next"] == "Name the stage"
    assert states["Read job (evaluation)"]["Catch"][0]["Next"] == "Name the evaluation"
    # The one Cause still parsed is the Prepare function's, whose message it bounds
    # (limits.MAX_MESSAGE).
    parsed = [n for n, s in states.items() if "StringToJson($.error.Cause)" in json.dumps(s)]
    assert {n.removesuffix(" (evaluation)").removesuffix(" (stage)") for n in parsed} == {
        "Read Prepare error"
    }
    # Its calls fall under the state machine's grant on this stack's jobs.
    (sagemaker,) = [
        s
        for s in _statements(synth.template, "StateMachineRole")
        if "sagemaker:DescribeTrainingJob" in s["Action"]
    ]
    assert "training-job/ernie-*" in json.dumps(sagemaker["Resource"])


def test_a_notice_that_cannot_be_sent_is_retried_and_never_fails_a_success(synth):
    states = _definition(synth.template)["States"]
    for name in ("NotifySuccess", "NotifyFailure"):
        (retry,) = states[name]["Retry"]
        assert retry["ErrorEquals"] == ["States.ALL"] and retry["MaxAttempts"] >= 3
        assert retry["BackoffRate"] == 2 and retry["JitterStrategy"] == "FULL"
    # Still not sent: the execution succeeds with its output (the error discarded).
    assert states["NotifySuccess"]["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "Done"}
    ]
    assert states["NotifySuccess"]["ResultPath"] is None
    assert states["Done"] == {"Type": "Succeed", "OutputPath": "$"}


def test_every_prepare_retries_every_transient_lambda_error(synth):
    """Step Functions' guide (bp-lambda-serviceexception): the four service exceptions,
    and Lambda.TooManyRequestsException when Lambda throttles the invoke."""
    states = _definition(synth.template)["States"]
    transient = {
        "Lambda.ClientExecutionTimeoutException",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
    }
    prepares = [n for n, s in states.items() if s.get("Resource", "").endswith(":lambda:invoke")]
    assert sorted(prepares) == ["Prepare evaluation", "Prepare job", "Prepare stage"]
    for name in prepares:
        retries = states[name]["Retry"]
        assert {e for r in retries for e in r["ErrorEquals"]} == transient, name
        assert all(r["MaxAttempts"] >= 6 for r in retries)
        (throttled,) = [r for r in retries if "Lambda.TooManyRequestsException" in r["ErrorEquals"]]
        assert throttled["JitterStrategy"] == "FULL" and throttled["MaxDelaySeconds"] <= 300


def test_prepare_returns_exactly_what_its_result_selectors_read(synth):
    """Nothing rides in a state's data that no state reads (Step Functions' 256 KiB)."""
    states = _definition(synth.template)["States"]
    selected = {
        name: {v.removeprefix("$.Payload.") for v in states[name]["ResultSelector"].values()}
        for name in ("Prepare job", "Prepare stage", "Prepare evaluation")
    }
    assert selected == {
        "Prepare job": {"request", "attempt"},
        "Prepare stage": {"request", "attempt", "stage"},
        "Prepare evaluation": {"request", "attempt"},
    }
    assert states["Model"]["Parameters"]["model.$"] == "$.training.ModelArtifacts.S3ModelArtifacts"


def test_attempts_back_off_doubling_and_the_timeout_outlasts_them_all(synth):
    definition = _definition(synth.template)
    states = definition["States"]
    assert states["Another attempt?"]["Choices"][0]["NumericLessThan"] == 3
    # The loop goes back through Prepare, which names the job for the new attempt.
    count = states["Count attempt"]
    assert count["Next"] == "Back off" and states["Back off"]["Next"] == "Prepare job"
    assert count["Parameters"]["backoff.$"] == (
        "States.ArrayGetItem(States.Array(0, 300, 600), $.job.attempt)"
    )
    assert states["Back off"]["SecondsPath"] == "$.backoff"
    # Three attempts of SageMaker's longest job (28 days, spot waiting included) for each
    # of the MAX_STAGES stages and for the evaluation, their back-offs and an hour; that
    # is more than a standard workflow's longest execution, a year, which it is then.
    longest = (MAX_STAGES + 1) * (3 * MAX_HOURS * 3600 + 300 + 600) + 3600
    assert definition["TimeoutSeconds"] == min(longest, 365 * 86400) == 365 * 86400
    # Prepare refuses stages that could run longer (test_stages_input.py).
    functions = synth.template.find_resources("AWS::Lambda::Function").values()
    variables = [f["Properties"].get("Environment", {}).get("Variables", {}) for f in functions]
    (limits,) = [json.loads(v["EXECUTION_LIMITS"]) for v in variables if "EXECUTION_LIMITS" in v]
    assert limits == {
        "max_attempts": 3,
        "backoff_seconds": [300, 600],
        "timeout_seconds": definition["TimeoutSeconds"],
    }


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
                "sagemaker:ListTags",
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


def _key_statements(template: Template, action: str) -> list[dict]:
    return [
        s
        for s in _statements(template, "StateMachineRole")
        if action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    ]


def _the_key(template: Template) -> dict:
    (key,) = template.find_resources("AWS::KMS::Key")
    return {"Fn::GetAtt": [key, "Arn"]}


def test_state_machine_role_may_publish_to_the_encrypted_topic(synth):
    """SNS: a publisher to a topic encrypted with a customer managed key needs
    kms:GenerateDataKey (SNS calls it, and Decrypt) on it; CDK's SnsPublish grants only
    sns:Publish."""
    key = _the_key(synth.template)
    (topic,) = synth.template.find_resources("AWS::SNS::Topic").values()
    assert topic["Properties"]["KmsMasterKeyId"] == key
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        statements = _key_statements(synth.template, action)
        assert [s["Resource"] for s in statements] == [key], action
        assert all(s["Effect"] == "Allow" and "Condition" not in s for s in statements)
    assert _key_statements(synth.template, "sns:Publish")


def test_kms_grant_condition_covers_only_the_grant(synth):
    """kms:GrantIsForAWSResource is only in the request context of grant operations: under
    it, DescribeKey would never be allowed."""
    key = _the_key(synth.template)
    (grant,) = _key_statements(synth.template, "kms:CreateGrant")
    assert grant["Action"] == "kms:CreateGrant" and grant["Resource"] == key
    assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    (describe,) = _key_statements(synth.template, "kms:DescribeKey")
    assert describe["Action"] == "kms:DescribeKey" and "Condition" not in describe
    assert describe["Resource"] == key


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
            "Handler": "ernie_sm.pipeline.handler.handler",
            "Runtime": "python3.14",
            "TracingConfig": {"Mode": "Active"},
        },
    )
    bundles = [
        folder
        for folder in synth.outdir.glob("asset.*")
        if (folder / "ernie_sm" / "pipeline" / "handler.py").is_file()
    ]
    assert len(bundles) == 1, "no Prepare bundle in the cloud assembly"
    bundle = bundles[0]
    files = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    assert files == sorted(package_files(LAMBDA_PACKAGES))
    assert "ernie_sm/training/train.py" not in files and "ernie_sm/stacks/__init__.py" not in files
    # The bundle alone answers an empty execution input, as Lambda would run it: no site
    # packages (-S), so nothing but the bundle and the standard library can be imported.
    script = (
        "import json; from ernie_sm.pipeline.handler import handler; "
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
        [sys.executable, "-S", "-c", script],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    request = json.loads(out.stdout)["request"]
    assert request["TrainingJobName"].startswith("ernie-")
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == list(METRIC_DEFINITIONS)
    assert set(request) == set(REQUEST_FIELDS)


# Inputs that reach every route: one job, stages, an evaluation, spot and on demand.
ROUTE_EVALUATION = {"dataset": "datasets/topics"}
ROUTE_INPUTS = (
    {},
    {"spot": False, "evaluation": ROUTE_EVALUATION},
    {
        "stages": [{"tasks": {"knowledge_masking": 1}, "steps": 10}] * 2,
        "evaluation": ROUTE_EVALUATION,
    },
)


@pytest.mark.parametrize("in_vpc", [False, True], ids=["public", "vpc"])
def test_each_job_state_passes_exactly_the_members_prepare_builds(synth, in_vpc):
    """What a job state hands createTrainingJob.sync is the request's every member and
    nothing else, on every route: a member the builder adds must reach SageMaker."""
    states = _definition(synth.vpc if in_vpc else synth.template)["States"]
    environ = {
        "IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ernie-training:abc",
        "ROLE_ARN": "arn:aws:iam::123456789012:role/job",
        "BUCKET": "data",
        **({"SUBNETS": "subnet-1", "SECURITY_GROUPS": "sg-1"} if in_vpc else {}),
    }
    model = "s3://data/models/ernie-run-1/output/model.tar.gz"
    routes = []
    for raw in ROUTE_INPUTS:
        if "evaluation" in raw:
            routes.append(("Evaluate", prepare(raw, environ, "run-1", model=model)))
        if "stages" in raw:
            for index in range(len(raw["stages"])):
                previous = model if index else None
                request = prepare(raw, environ, "run-1", stage=index, previous_model=previous)
                routes.append(("Train stage", request))
        else:
            routes.append(("Train", prepare(raw, environ, "run-1")))
    assert {state for state, _ in routes} == {"Train", "Train stage", "Evaluate"}
    for state, (_, _, request) in routes:
        passed = {name.removesuffix(".$") for name in states[state]["Parameters"]}
        assert passed == set(request), state


def test_outcomes_go_to_an_encrypted_topic_with_the_email_subscription(synth):
    synth.template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    synth.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ml-team@example.com"}
    )
    assert synth.vpc.find_resources("AWS::SNS::Subscription") == {}


def _widgets(template: Template) -> list[dict]:
    (dashboard,) = template.find_resources("AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else "REF" for p in parts))["widgets"]


def _searches(template: Template) -> list[str]:
    return [
        metric[0]["expression"]
        for widget in _widgets(template)
        for metric in widget["properties"].get("metrics", [])
        if "expression" in metric[0]
    ]


def test_dashboard_shows_model_flops_mfu_and_padding_beside_tokens_per_second(synth):
    def metric_names(widget: dict) -> list[str]:
        searches = [m[0]["expression"] for m in widget["properties"]["metrics"]]
        return [re.search(r'MetricName="([\w-]+)"', s)[1] for s in searches]

    by_title = {w["properties"].get("title"): w for w in _widgets(synth.template)}
    row = [
        by_title["Tokens per second"],
        by_title["Model FLOPs per second"],
        by_title["MFU and padding efficiency (real / padded tokens)"],
    ]
    assert [metric_names(w) for w in row] == [
        ["Training-tokens-per-second"],
        ["Training-model-flops-per-second"],
        ["Training-mfu", "Training-padding-efficiency"],
    ]
    assert len({w["y"] for w in row}) == 1 and [w["x"] for w in row] == [0, 8, 16]


def test_dashboard_searches_this_stacks_jobs_and_alarms_watch_executions(synth):
    for template, prefix in ((synth.template, "ernie"), (synth.vpc, "lab")):
        searches = _searches(template)
        assert searches
        for search in searches:
            # An unquoted dimension value is a token match: `<prefix>-...` names and
            # `<job>/algo-N` hosts; quoted, "<prefix>-" would have to be the whole value.
            dimension = "Host" if ",Host}" in search else "TrainingJobName"
            metric = re.search(r'MetricName="([\w-]+)"', search)[1]
            assert search == (
                f"SEARCH('{{/aws/sagemaker/TrainingJobs,{dimension}}} "
                f"MetricName=\"{metric}\" {dimension}={prefix}', 'Average', 60)"
            )
        assert {re.search(r'MetricName="([\w-]+)"', s)[1] for s in searches} >= {
            "Training-loss",
            "Validation-loss",
            "Training-tokens-per-second",
            "Training-model-flops-per-second",
            "Training-mfu",
            "Training-padding-efficiency",
            "GPUUtilization",
            "GPUMemoryUtilization",
            "eval_accuracy",
            "baseline_accuracy",
            "eval_f1",
            "baseline_f1",
            *(
                f"{kind}-{task}-{figure}"
                for kind in ("Training", "Validation")
                for task in (
                    "knowledge_masking",
                    "sentence_reordering",
                    "sentence_distance",
                    "token_document_relation",
                )
                for figure in ("loss", "accuracy")
            ),
        }
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
        if f["Properties"].get("Handler") == "ernie_sm.pipeline.handler.handler"
    ]
    defaults = json.loads(function["Properties"]["Environment"]["Variables"]["INPUT_DEFAULTS"])
    assert defaults == {"instance_type": "ml.p4d.24xlarge", "instance_count": 2}
    app = App(context=feature_flags())
    with pytest.raises(ExecutionInputError, match="instance_count"):
        ErnieTrainingStack(app, "Bad", ErnieStackProps(instance_count=99), env=ENV)


# --- the training-job role -------------------------------------------------------------------


def _ec2(statements: list[dict]) -> dict[str, dict]:
    by_action = {}
    for statement in statements:
        for action in _as_list(statement["Action"]):
            if action.startswith("ec2:"):
                by_action[action] = statement
    return by_action


def _as_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def test_job_role_in_a_vpc_manages_network_interfaces_in_its_subnets_only(synth):
    assert _ec2(_statements(synth.template, "TrainingJobRole")) == {}
    ec2 = _ec2(_statements(synth.vpc, "TrainingJobRole"))
    # The list of the SageMaker developer guide (CreateTrainingJob with VpcConfig).
    assert set(ec2) == {
        "ec2:CreateNetworkInterface",
        "ec2:CreateNetworkInterfacePermission",
        "ec2:DeleteNetworkInterface",
        "ec2:DeleteNetworkInterfacePermission",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeVpcs",
        "ec2:DescribeDhcpOptions",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
    }
    arn = "arn:aws:ec2:us-east-1:123456789012:"
    subnets = [f"{arn}subnet/subnet-1", f"{arn}subnet/subnet-2"]
    interfaces = f"{arn}network-interface/*"
    for action, statement in ec2.items():
        if action.startswith("ec2:Describe"):
            assert statement["Resource"] == "*" and "Condition" not in statement
    create = ec2["ec2:CreateNetworkInterface"]
    assert create["Action"] == "ec2:CreateNetworkInterface" and "Condition" not in create
    assert create["Resource"] == [interfaces, *subnets, f"{arn}security-group/sg-1"]
    for action in ("ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission"):
        assert ec2[action]["Resource"] == interfaces
        assert ec2[action]["Condition"] == {"ArnEquals": {"ec2:Subnet": subnets}}
    permit = ec2["ec2:CreateNetworkInterfacePermission"]
    assert permit["Action"] == "ec2:CreateNetworkInterfacePermission"
    assert permit["Resource"] == interfaces
    assert permit["Condition"] == {
        "ArnEquals": {"ec2:Subnet": subnets},
        "StringEquals": {"ec2:AuthorizedService": "sagemaker.amazonaws.com"},
    }


def test_job_role_may_let_sagemaker_encrypt_volumes_with_the_key(synth):
    (grant,) = [
        s
        for s in _statements(synth.template, "TrainingJobRole")
        if "kms:CreateGrant" in _as_list(s["Action"])
    ]
    assert grant["Action"] == "kms:CreateGrant"
    assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    (key_id,) = synth.template.find_resources("AWS::KMS::Key")
    assert grant["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}


def test_job_role_lists_and_reads_only_its_prefixes(synth):
    statements = _statements(synth.template, "TrainingJobRole")
    listing = [
        s
        for s in statements
        if any(a in ("s3:*", "s3:List*", "s3:ListBucket") for a in _as_list(s["Action"]))
    ]
    assert listing
    for statement in listing:
        assert statement["Action"] == "s3:ListBucket"
        assert statement["Condition"] == {
            "StringLike": {"s3:prefix": ["datasets/*", "checkpoints/*", "models/*"]}
        }
    (reads,) = [s for s in statements if "s3:GetObject" in _as_list(s["Action"])]
    assert reads["Action"] == "s3:GetObject"
    assert [r["Fn::Join"][1][1] for r in reads["Resource"]] == [
        "/datasets/*",
        "/models/*",
        "/checkpoints/*",
    ]
    assert not any(a.startswith("s3:GetBucket*") for s in statements for a in _as_list(s["Action"]))


# --- the VPC a job runs in -------------------------------------------------------------------


def test_vpc_limits_are_sagemakers():
    vpc_config = (
        botocore.session.get_session().get_service_model("sagemaker").shape_for("VpcConfig")
    )
    assert set(vpc_config.required_members) == {"Subnets", "SecurityGroupIds"}
    assert vpc_config.members["Subnets"].metadata["max"] == MAX_SUBNETS == 16
    assert vpc_config.members["SecurityGroupIds"].metadata["max"] == MAX_SECURITY_GROUPS == 5


BAD_VPCS = [
    ((), ("sg-1",), "security_group_ids needs subnet_ids"),
    (("subnet-1",), (), "subnet_ids needs security_group_ids"),
    (tuple(f"subnet-{i}" for i in range(17)), ("sg-1",), "subnet_ids takes at most 16"),
    (("subnet-1",), tuple(f"sg-{i}" for i in range(6)), "security_group_ids takes at most 5"),
]


@pytest.mark.parametrize(("subnets", "groups", "message"), BAD_VPCS)
def test_a_vpc_sagemaker_would_refuse_fails_the_synth(subnets, groups, message):
    with pytest.raises(ValueError, match=message):
        check_vpc(subnets, groups)
    with pytest.raises(ValueError, match=message):
        ErnieTrainingStack(
            App(context=feature_flags()),
            "Bad",
            ErnieStackProps(subnet_ids=subnets, security_group_ids=groups),
            env=ENV,
        )
    stack = Stack(App(context=feature_flags()), "Role", env=ENV)
    data = DatasetBucket(stack, "Data")
    repository = TrainingImage(stack, "Image").repository
    with pytest.raises(ValueError, match=message):
        ExecutionRole(
            stack,
            "Job",
            ExecutionRoleProps(data.bucket, data.key, repository, subnets, groups),
        )
    role = ExecutionRole(stack, "Role", ExecutionRoleProps(data.bucket, data.key, repository))
    with pytest.raises(ValueError, match=message):
        TrainingPipeline(
            stack,
            "Pipeline",
            TrainingPipelineProps(
                bucket=data.bucket,
                key=data.key,
                image_uri="image",
                execution_role=role.role,
                subnet_ids=subnets,
                security_group_ids=groups,
            ),
        )


def test_no_vpc_or_one_within_the_limits_passes():
    check_vpc((), ())
    check_vpc(tuple(f"subnet-{i}" for i in range(16)), tuple(f"sg-{i}" for i in range(5)))


def test_evaluation_runs_after_the_model_only_when_the_input_asks_for_it(synth):
    states = _definition(synth.template)["States"]
    assert states["Model"]["Next"] == "Evaluate?"
    choice = states["Evaluate?"]
    # Absent or null: today's path (IsNull on an absent field would be an error).
    assert choice["Choices"] == [
        {
            "Not": {"Variable": "$$.Execution.Input.evaluation", "IsPresent": True},
            "Next": "NotifySuccess",
        },
        {"Variable": "$$.Execution.Input.evaluation", "IsNull": True, "Next": "NotifySuccess"},
    ]
    assert choice["Default"] == "Start evaluation"
    start = states["Start evaluation"]
    assert start["Parameters"] == {"attempt": 1, "trained.$": "$"}
    assert start["Next"] == "Prepare evaluation"
    prepare = states["Prepare evaluation"]
    assert prepare["Parameters"]["Payload"]["model.$"] == "$.trained.model"
    assert prepare["Next"] == "Evaluate"
    evaluate = states["Evaluate"]
    assert evaluate["Resource"] == states["Train"]["Resource"]
    assert evaluate["Parameters"] == {
        f"{f}.$": f"$.job.request.{f}" for f in EVALUATION_REQUEST_FIELDS
    }
    assert evaluate["ResultPath"] == "$.evaluation" and evaluate["Next"] == "Scored?"
    # A completed job without its metric lines scored nothing: it fails with a notice.
    scored = states["Scored?"]
    assert scored["Choices"] == [
        {
            "Variable": "$.evaluation.FinalMetricDataList[0]",
            "IsPresent": True,
            "Next": "Evaluation",
        }
    ]
    unscored = states[scored["Default"]]
    assert unscored["Parameters"]["Error"] == "EvaluationWithoutMetrics"
    assert unscored["ResultPath"] == "$.error" and unscored["Next"] == "NotifyFailure"
    vpc = _definition(synth.vpc)["States"]["Evaluate"]["Parameters"]
    assert vpc["VpcConfig.$"] == "$.job.request.VpcConfig"
    # The output is the training's ($.trained: model, training_job, attempts and, with
    # stages, stages) with the evaluation's results under "evaluation".
    output = states["Evaluation"]
    assert output["Parameters"] == {
        "training_job.$": "$.evaluation.TrainingJobName",
        "attempts.$": "$.job.attempt",
        "metrics.$": "$.evaluation.FinalMetricDataList",
        "report.$": "$.evaluation.ModelArtifacts.S3ModelArtifacts",
    }
    assert output["ResultPath"] == "$.trained.evaluation" and output["OutputPath"] == "$.trained"
    assert states["Evaluation"]["Next"] == "NotifySuccess"


def test_evaluate_is_retried_and_fails_as_train_is_in_states_of_its_own(synth):
    states = _definition(synth.template)["States"]
    suffix = " (evaluation)"

    def own(name: str) -> str:
        # The job's failures are named (Name the evaluation); Prepare's go out as they are.
        if name == "NotifyFailure":
            return "Name the evaluation"
        return name if name == "Prepare evaluation" else f"{name}{suffix}"

    def routes(task: str, rename=lambda name: name) -> list:
        return [
            (c["ErrorEquals"], rename(c["Next"]), c["ResultPath"]) for c in states[task]["Catch"]
        ]

    assert routes("Evaluate") == routes("Train", own)
    # Every state of the training's loop has its evaluation twin, wired the same way.
    training = [
        "Another attempt?",
        "Count attempt",
        "Back off",
        "Throttled?",
        "Job ended?",
        "Read job",
        "Has a reason?",
        "Failure reason",
        "Job status",
        "Out of capacity?",
        "Function error?",
        "Read Prepare error",
        "Prepare error",
    ]
    for name in training:
        twin = states[own(name)]
        assert twin["Type"] == states[name]["Type"], name
        if "Next" in states[name]:
            expected = (
                "Prepare evaluation"
                if states[name]["Next"] == "Prepare job"
                else "NotifyFailure"
                if name == "Prepare error"
                else own(states[name]["Next"])
            )
            assert twin["Next"] == expected, name
    count = states[f"Count attempt{suffix}"]["Parameters"]
    # The model URI survives the back-off; the attempts count from 1 again.
    assert count["trained.$"] == "$.trained"
    assert count["attempt.$"] == states["Count attempt"]["Parameters"]["attempt.$"]
    assert states["Prepare evaluation"]["Catch"][0]["Next"] == f"Function error?{suffix}"
    assert states[f"Another attempt?{suffix}"]["Default"] == "Name the evaluation"


def test_an_evaluation_failure_names_the_evaluation_job(synth):
    """Not the training job's TrainingJobFailed / AlgorithmError alone: the Cause says the
    evaluation job failed, and which."""
    states = _definition(synth.template)["States"]
    named = states["Name the evaluation"]
    assert named["Parameters"] == {
        "Error.$": "$.error.Error",
        "Cause.$": "States.Format('Evaluation job {} failed: {}', "
        "$.job.request.TrainingJobName, $.error.Cause)",
    }
    assert named["ResultPath"] == "$.error" and named["Next"] == "NotifyFailure"
    # Every end of the evaluation job goes through it; the training's do not.
    job_ends = [
        ("Evaluate", [c["Next"] for c in states["Evaluate"]["Catch"]][-1]),
        ("Another attempt? (evaluation)", states["Another attempt? (evaluation)"]["Default"]),
        ("Throttled? (evaluation)", states["Throttled? (evaluation)"]["Default"]),
        ("Job ended? (evaluation)", states["Job ended? (evaluation)"]["Default"]),
        ("Job status (evaluation)", states["Job status (evaluation)"]["Next"]),
        ("Out of capacity? (evaluation)", states["Out of capacity? (evaluation)"]["Default"]),
    ]
    assert all(target == "Name the evaluation" for _, target in job_ends), job_ends
    assert states["Another attempt?"]["Default"] == "NotifyFailure"


def test_a_later_stages_prepare_failure_names_the_stage(synth):
    states = _definition(synth.template)["States"]
    # The function's message, or a Lambda error as it came, then the stage's name.
    assert states["Prepare error (stage)"]["Next"] == "Later stage?"
    assert states["Function error? (stage)"]["Default"] == "Later stage?"
    later = states["Later stage?"]
    assert later["Choices"] == [
        {"Variable": "$.stage.index", "NumericGreaterThan": 0, "Next": "Look up the stage"}
    ]
    assert later["Default"] == "NotifyFailure"  # the first: its message names the fields
    look_up = states["Look up the stage"]["Parameters"]
    assert look_up["Stage.$"] == "States.ArrayGetItem($$.Execution.Input.stages, $.stage.index)"
    assert states["Stage named?"]["Default"] == "Number the unprepared stage"
    for name in ("Name the unprepared stage", "Number the unprepared stage"):
        state = states[name]
        assert "could not be prepared: {}" in state["Parameters"]["Cause.$"]
        assert state["ResultPath"] == "$.error" and state["Next"] == "NotifyFailure"


def test_evaluation_jobs_fall_under_the_state_machines_grant(synth):
    statements = _statements(synth.template, "StateMachineRole")
    (sagemaker,) = [s for s in statements if "sagemaker:CreateTrainingJob" in s["Action"]]
    # `<prefix>-eval-...` matches `training-job/<prefix>-*`: no other grant is needed.
    assert json.dumps(sagemaker["Resource"]).count("training-job/ernie-*") == 1
    assert "-eval-" not in json.dumps(statements)


def test_an_input_with_stages_runs_them_in_a_loop_of_states_of_its_own(synth):
    definition = _definition(synth.template)
    states = definition["States"]
    assert definition["StartAt"] == "Stages?"
    # Absent or null: today's single job, its states unchanged.
    assert states["Stages?"]["Choices"] == [
        {"Not": {"Variable": "$$.Execution.Input.stages", "IsPresent": True}, "Next": "Start"},
        {"Variable": "$$.Execution.Input.stages", "IsNull": True, "Next": "Start"},
    ]
    assert states["Stages?"]["Default"] == "Start stages"
    assert states["Start"] == {"Type": "Pass", "Parameters": {"attempt": 1}, "Next": "Prepare job"}
    assert states["Start stages"]["Parameters"] == {
        "attempt": 1,
        "stage": {"index": 0},
        "stages": {"text": "", "comma": ""},
    }
    prepare = states["Prepare stage"]
    assert prepare["Parameters"]["Payload"]["stage.$"] == "$.stage"
    assert prepare["ResultSelector"]["stage.$"] == "$.Payload.stage"
    assert prepare["Next"] == "Train stage"
    train = states["Train stage"]
    assert (train["Resource"], train["Parameters"]) == (
        states["Train"]["Resource"],
        states["Train"]["Parameters"],
    )
    # Retries keep the stage and the list so far; a job's failure names the stage.
    count = states["Count attempt (stage)"]["Parameters"]
    assert (count["stage.$"], count["stages.$"]) == ("$.stage", "$.stages")
    catches = [(c["ErrorEquals"], c["Next"]) for c in train["Catch"]]
    assert catches == [
        ([RESOURCE_LIMIT], "Another attempt? (stage)"),
        ([API_ERROR], "Throttled? (stage)"),
        (["States.TaskFailed"], "Job ended? (stage)"),
        (["States.ALL"], "Name the stage"),
    ]
    assert states["Another attempt? (stage)"]["Default"] == "Name the stage"
    assert states["Prepare stage"]["Catch"][0]["Next"] == "Function error? (stage)"
    assert states["Function error? (stage)"]["Default"] == "Later stage?"
    named = states["Name the stage"]
    assert named["ResultPath"] == "$.error" and named["Next"] == "NotifyFailure"
    assert "$.job.stage.name" in named["Parameters"]["Cause.$"]
    # After each job: its outcome joins the list; the next stage or the output.
    assert train["Next"] == "Stage metrics?"
    assert states["Stage metrics?"]["Choices"] == [
        {"Variable": "$.training.FinalMetricDataList", "IsPresent": True, "Next": "Stage outcome"}
    ]
    no_metrics = states[states["Stage metrics?"]["Default"]]  # a job that logged none
    assert no_metrics["Result"] == [] and no_metrics["Next"] == "Stage outcome"
    assert no_metrics["ResultPath"] == "$.training.FinalMetricDataList"
    assert states["Stage outcome"]["Next"] == "Record stage"
    assert states["Record stage"]["Next"] == "Next stage?"
    assert states["Next stage?"]["Choices"] == [
        {"Variable": "$.job.stage.next", "IsPresent": True, "Next": "Next stage"}
    ]
    assert states["Next stage"]["Parameters"]["stage"] == {
        "index.$": "$.job.stage.next",
        "model.$": "$.outcome.model",
    }
    assert states["Next stage"]["Next"] == "Prepare stage"
    assert states["Next stage?"]["Default"] == "Stages"
    assert states["Stages"]["Next"] == "Evaluate?"
    assert set(states["Stages"]["Parameters"]) == {
        "model.$",
        "training_job.$",
        "attempts.$",
        "stages.$",
    }
