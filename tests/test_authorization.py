"""Rehearsals authorize every call as AWS would: the evaluator held to AWS's documented
evaluation logic, the synthesized stack's policies read from its template, and executions
whose template lacks a permission the jobs need failing as they would on AWS."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from ernie_sm.rehearsal import definition
from ernie_sm.rehearsal.authorization import Request, decide, kms, s3_list, s3_reads
from ernie_sm.rehearsal.job_access import JobAccess
from ernie_sm.rehearsal.rehearse import STACK, rehearse

from tests.helpers import make_job, tiny_input

ACCOUNT = definition.ACCOUNT
ROLE = f"arn:aws:iam::{ACCOUNT}:role/Caller"
BUCKET_ARN = "arn:aws:s3:::bucket"
OBJECT = "arn:aws:s3:::bucket/data/file.gz"


def _policy(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _allow(action: str, resource: str, **extra: object) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def _policies(identity: list[dict] | None = None, resource: dict | None = None) -> dict:
    return {
        "identity": {ROLE: [{"name": f"p{i}", "policy": p} for i, p in enumerate(identity or [])]},
        "resource": resource or {},
        "encryption": {},
    }


def _decision(request: Request, policies: dict) -> str:
    denial = decide([request], policies)[0]
    if denial is None:
        return "allowed"
    return "explicit" if denial.explicit else "implicit"


# AWS's evaluation logic (IAM user guide, "Policy evaluation logic" and "Determining whether a
# request is allowed or denied within an account"), case by case.


def test_without_any_allow_a_request_is_implicitly_denied():
    assert _decision(Request(ROLE, "s3:GetObject", OBJECT), _policies()) == "implicit"


def test_an_identity_allow_grants_and_an_explicit_deny_overrides_it():
    allow = _policy(_allow("s3:GetObject", "arn:aws:s3:::bucket/*"))
    deny = _policy({"Effect": "Deny", "Action": "s3:*", "Resource": "*"})
    assert _decision(Request(ROLE, "s3:GetObject", OBJECT), _policies([allow])) == "allowed"
    assert _decision(Request(ROLE, "s3:GetObject", OBJECT), _policies([allow, deny])) == "explicit"


def test_in_one_account_a_resource_policy_naming_the_role_allows_without_an_identity_policy():
    bucket = _policy(_allow("s3:GetObject", "arn:aws:s3:::bucket/*", Principal={"AWS": ROLE}))
    policies = _policies(resource={BUCKET_ARN: bucket})
    assert _decision(Request(ROLE, "s3:GetObject", OBJECT), policies) == "allowed"


def test_a_deny_in_a_resource_policy_wins_over_an_identity_allow():
    """The SSL-only bucket policy of AWS's S3 examples: a request without TLS is refused."""
    ssl_only = _policy(
        {
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [BUCKET_ARN, "arn:aws:s3:::bucket/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    )
    policies = _policies([_policy(_allow("s3:*", "*"))], {BUCKET_ARN: ssl_only})
    assert _decision(Request(ROLE, "s3:GetObject", OBJECT), policies) == "allowed"
    plain = Request(ROLE, "s3:GetObject", OBJECT, {"aws:SecureTransport": "false"})
    assert _decision(plain, policies) == "explicit"
    denial = decide([plain], policies)[0]
    assert denial.message() == (
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/Caller/rehearsal is not authorized to "
        f"perform: s3:GetObject on resource: {OBJECT} with an explicit deny in a "
        "resource-based policy"
    )


def test_conditions_are_evaluated_with_the_context_and_a_missing_key_does_not_match():
    pass_role = _policy(
        _allow(
            "iam:PassRole",
            f"arn:aws:iam::{ACCOUNT}:role/Job",
            Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        )
    )
    policies = _policies([pass_role])
    job = f"arn:aws:iam::{ACCOUNT}:role/Job"
    to = {"iam:PassedToService": "sagemaker.amazonaws.com"}
    assert _decision(Request(ROLE, "iam:PassRole", job, to), policies) == "allowed"
    to_lambda = {"iam:PassedToService": "lambda.amazonaws.com"}
    assert _decision(Request(ROLE, "iam:PassRole", job, to_lambda), policies) == "implicit"
    assert _decision(Request(ROLE, "iam:PassRole", job), policies) == "implicit"


def test_a_condition_key_that_an_action_never_carries_never_matches():
    """kms:GrantIsForAWSResource comes with grant operations only (KMS developer guide), so a
    statement that puts DescribeKey under it never allows DescribeKey."""
    key = f"arn:aws:kms:{definition.REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    grant = _policy(
        _allow(
            ["kms:CreateGrant", "kms:DescribeKey"],
            key,
            Condition={"Bool": {"kms:GrantIsForAWSResource": "true"}},
        )
    )
    policies = _policies([grant], {key: _root_key_policy()})
    context = {"kms:GrantIsForAWSResource": "true"}
    assert _decision(Request(ROLE, "kms:CreateGrant", key, context), policies) == "allowed"
    assert _decision(Request(ROLE, "kms:DescribeKey", key, context), policies) == "implicit"


def _root_key_policy() -> dict:
    root = {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    return _policy({"Effect": "Allow", "Principal": root, "Action": "kms:*", "Resource": "*"})


def test_a_key_policy_that_does_not_trust_the_account_makes_iam_policies_useless():
    """KMS developer guide, "Key policies": without the key policy's permission for the
    account, an IAM policy alone gives no access to the key."""
    key = f"arn:aws:kms:{definition.REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    identity = [_policy(_allow("kms:Decrypt", key))]
    other = _policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/Admin"},
            "Action": "kms:*",
            "Resource": "*",
        }
    )
    decrypt = Request(ROLE, "kms:Decrypt", key)
    assert _decision(decrypt, _policies(identity, {key: _root_key_policy()})) == "allowed"
    assert _decision(decrypt, _policies(identity, {key: other})) == "implicit"


def test_a_service_assumes_a_role_only_if_the_trust_policy_lets_it():
    role = f"arn:aws:iam::{ACCOUNT}:role/Job"
    trust = _policy(
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
        }
    )
    policies = _policies(resource={role: trust})
    ours = {"aws:SourceAccount": ACCOUNT}
    assume = Request("sagemaker.amazonaws.com", "sts:AssumeRole", role, ours)
    assert _decision(assume, policies) == "allowed"
    theirs = {"aws:SourceAccount": "111122223333"}
    confused = Request("sagemaker.amazonaws.com", "sts:AssumeRole", role, theirs)
    assert _decision(confused, policies) == "implicit"
    other = Request("lambda.amazonaws.com", "sts:AssumeRole", role, ours)
    assert _decision(other, policies) == "implicit"


# The synthesized stack's own policies.


@pytest.fixture(scope="module")
def stack(cdk_out: Path) -> definition.LocalDefinition:
    return definition.load(cdk_out / f"{STACK}.template.json")


def test_the_state_machine_role_may_publish_to_its_encrypted_topic(stack):
    topic, key = _topic(stack), stack.policies["encryption"][_topic(stack)]
    role = stack.state_machine_role
    context = {"kms:EncryptionContext:aws:sns:topicArn": topic}
    calls = [
        Request(role, "sns:Publish", topic),
        kms(role, "kms:GenerateDataKey", key, "sns", context),
        kms(role, "kms:Decrypt", key, "sns", context),
    ]
    assert decide(calls, stack.policies) == [None, None, None]
    assert decide(
        [Request(role, "sns:Publish", topic, {"aws:SecureTransport": "false"})], stack.policies
    )[0]


def _topic(stack: definition.LocalDefinition) -> str:
    return next(arn for arn in stack.policies["encryption"] if arn.startswith("arn:aws:sns:"))


def test_the_job_role_reads_datasets_and_writes_only_checkpoints_and_models(stack):
    role, bucket = stack.prepare_environment["ROLE_ARN"], stack.bucket
    reads = [s3_list(role, bucket, "datasets/demo/train/")]
    reads += s3_reads(role, bucket, ["datasets/demo/train/part-00000.gz"], stack.policies)
    assert decide(reads, stack.policies) == [None] * len(reads)
    put = [
        Request(role, "s3:PutObject", f"arn:aws:s3:::{bucket}/{key}")
        for key in ("checkpoints/x/c.pdparams", "models/x/output/model.tar.gz", "datasets/demo/x")
    ]
    assert [d is None for d in decide(put, stack.policies)] == [True, True, False]
    assert decide([s3_list(role, bucket, "")], stack.policies)[0] is not None


# Executions whose template lacks a permission fail as on AWS, with a notice naming it.


def _without(cdk_out: Path, tmp_path: Path, action: str, role_prefix: str) -> Path:
    """A copy of the cloud assembly whose role (logical id starting with `role_prefix`)
    lost `action` from its default policy."""
    out = tmp_path / "cdk.out"
    out.mkdir()
    template = json.loads((cdk_out / f"{STACK}.template.json").read_text())
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Policy" and logical_id.startswith(role_prefix):
            statements = resource["Properties"]["PolicyDocument"]["Statement"]
            for statement in statements:
                actions = statement["Action"]
                actions = [actions] if isinstance(actions, str) else actions
                statement["Action"] = [a for a in actions if a != action] or [
                    "sts:GetCallerIdentity"
                ]
    (out / f"{STACK}.template.json").write_text(json.dumps(template))
    return out


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_job(tmp_path / "job") / "input" / "data"


def test_a_job_role_that_cannot_read_the_train_channel_fails_the_job_as_sagemaker_does(
    cdk_out, dataset, tmp_path, capfd
):
    assembly = _without(cdk_out, tmp_path, "s3:GetObject", "TrainingJobRole")
    result = rehearse(tiny_input(), tmp_path / "r", assembly, dataset)
    assert result["error"] == "TrainingJobFailed"
    assert result["cause"].startswith("ClientError: Data download failed:Unable to download object")
    assert "because no identity-based policy allows the s3:GetObject action" in result["cause"]
    err = capfd.readouterr().err
    notice = next(line for line in err.splitlines() if line.startswith("[sns]"))
    assert "ernie pretraining failed" in notice and "s3:GetObject" in notice
    assert not list((tmp_path / "r" / "jobs").glob("*/opt/ml/model/*"))  # nothing trained


def test_a_state_machine_role_without_pass_role_is_refused_by_sagemaker(
    cdk_out, dataset, tmp_path, capfd
):
    assembly = _without(cdk_out, tmp_path, "iam:PassRole", "PipelineStateMachineRole")
    result = rehearse(tiny_input(), tmp_path / "r", assembly, dataset)
    assert result["error"] == "SageMaker.AmazonSageMakerException"
    assert "is not authorized to perform: iam:PassRole on resource: " in result["cause"]
    assert "Error Code: AccessDeniedException" in result["cause"]
    err = capfd.readouterr().err
    assert "iam:PassRole" in next(line for line in err.splitlines() if line.startswith("[sns]"))
    assert not (tmp_path / "r" / "jobs").exists()  # no job was created
    (refused,) = [d for d in _decisions(tmp_path / "r") if not d["allowed"]]
    assert refused["action"] == "iam:PassRole" and refused["principal"].endswith(
        "/PipelineStateMachineRole61BEBDFF"
    )
    assert "1 refused" in err


def test_a_state_machine_role_without_the_sync_rule_would_not_deploy(cdk_out, dataset, tmp_path):
    assembly = _without(cdk_out, tmp_path, "events:PutRule", "PipelineStateMachineRole")
    result = rehearse(tiny_input(), tmp_path / "r", assembly, dataset)
    assert result["error"] == "AccessDeniedException"
    assert "is not authorized to create managed-rule" in result["cause"]
    assert not (tmp_path / "r" / "jobs").exists()  # no execution started
    refused = [d for d in _decisions(tmp_path / "r") if not d["allowed"]]
    assert [d["action"] for d in refused] == ["events:PutRule"]


def _decisions(workdir: Path) -> list[dict]:
    """The rehearsal's record of every call it authorized."""
    (record,) = workdir.glob("executions/*/authorizations.jsonl")
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_the_template_of_a_missing_managed_policy_is_refused(cdk_out, tmp_path):
    out = tmp_path / "cdk.out"
    shutil.copytree(cdk_out, out)
    template_file = out / f"{STACK}.template.json"
    template = json.loads(template_file.read_text())
    role = next(
        r
        for k, r in template["Resources"].items()
        if k.startswith("PipelinePrepareServiceRole") and r["Type"] == "AWS::IAM::Role"
    )
    role["Properties"]["ManagedPolicyArns"] = ["arn:aws:iam::aws:policy/AdministratorAccess"]
    template_file.write_text(json.dumps(template))
    from ernie_sm.rehearsal.policies import PolicyError

    with pytest.raises(PolicyError, match="AdministratorAccess"):
        definition.load(template_file)


def _job_request(stack: definition.LocalDefinition, **resources: str) -> dict:
    env = stack.prepare_environment
    return {
        "TrainingJobName": "ernie-x-a1",
        "RoleArn": env["ROLE_ARN"],
        "AlgorithmSpecification": {"TrainingImage": env["IMAGE_URI"]},
        "ResourceConfig": {"InstanceType": "ml.p3.2xlarge", **resources},
        "OutputDataConfig": {
            "S3OutputPath": f"s3://{stack.bucket}/models",
            "KmsKeyId": env["KMS_KEY_ARN"],
        },
    }


def test_what_sagemaker_does_as_the_job_role_is_allowed_where_the_stack_means_it(stack):
    env = stack.prepare_environment
    access = JobAccess(_job_request(stack, VolumeKmsKeyId=env["KMS_KEY_ARN"]), stack.policies)
    assert access.refused_request() is None  # assumed by SageMaker, the image pulled
    assert access.refused_volume_key() is None
    models = f"s3://{stack.bucket}/models"
    assert (
        access.refused_upload(models, ["models/ernie-x-a1/output/model.tar.gz"], "Artifact") is None
    )
    datasets = f"s3://{stack.bucket}/datasets/demo"
    refused = access.refused_upload(datasets, ["datasets/demo/x.gz"], "Artifact")
    assert refused.startswith("ClientError: Artifact upload failed:AccessDenied: User: ")
    assert "s3:PutObject" in refused
    assert access.warnings("algo-1") == []  # its log and metrics reach CloudWatch


def test_a_role_sagemaker_may_not_assume_or_that_may_not_pull_is_refused_as_sagemaker_does(stack):
    role = stack.prepare_environment["ROLE_ARN"]
    policies = copy.deepcopy(stack.policies)
    trust = policies["resource"][role]["Statement"][0]
    trust["Principal"] = {"Service": "lambda.amazonaws.com"}
    refused = JobAccess(_job_request(stack), policies).refused_request()
    assert refused == (
        f"Could not assume role {role}. Please ensure that the role exists and allows "
        "principal 'sagemaker.amazonaws.com' to assume the role."
    )
    policies = copy.deepcopy(stack.policies)
    for policy in policies["identity"][role]:
        for statement in policy["policy"]["Statement"]:
            if "ecr:BatchGetImage" in statement["Action"]:
                statement["Action"] = ["ecr:BatchCheckLayerAvailability"]
    refused = JobAccess(_job_request(stack), policies).refused_request()
    assert refused.startswith("Access denied for repository: ") and role in refused
    grantless = copy.deepcopy(stack.policies)
    for policy in grantless["identity"][role]:
        policy["policy"]["Statement"] = [
            s for s in policy["policy"]["Statement"] if s["Action"] != "kms:CreateGrant"
        ]
    key = stack.prepare_environment["KMS_KEY_ARN"]
    access = JobAccess(_job_request(stack, VolumeKmsKeyId=key), grantless)
    assert access.refused_volume_key().startswith(
        f"ClientError: Unable to create a grant on VolumeKmsKeyId {key}: User: "
    )
