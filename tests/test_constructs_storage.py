"""DatasetBucket and TrainingImage: synthesized once, checked as CloudFormation, by cdk-nag and cfn-lint.

Synthesis needs neither AWS nor Docker: the image asset is only staged (its build context
copied into the cloud assembly), never built.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from aws_cdk import App, CfnOutput, RemovalPolicy, Stack, Validations
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks
from ernie_sm.stacks.dataset_bucket import (
    CHECKPOINTS,
    DATASETS,
    MODELS,
    DatasetBucket,
    DatasetBucketProps,
)
from ernie_sm.stacks.training_image import (
    BASE_IMAGE_BUILD_ARG,
    DIGEST_PATH,
    DOCKERFILE,
    TrainingImage,
    TrainingImageProps,
)

from tests.cdk_support import ENV, ROOT, cfn_lint_problems, feature_flags, synth_under_nag

MIRROR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mirror/paddle@sha256:" + "ab" * 32
EXISTING_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


@dataclass
class Synth:
    outdir: Path
    default: Stack
    destroy: Stack
    imported: Stack
    data: DatasetBucket
    image: TrainingImage
    overridden_image: TrainingImage

    def template(self, stack: Stack) -> Template:
        return Template.from_stack(stack)

    def assets(self, stack: Stack) -> dict:
        return json.loads((self.outdir / f"{stack.artifact_id}.assets.json").read_text())


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = App(outdir=str(outdir), context=feature_flags())

    default = Stack(app, "Default", env=ENV)
    data = DatasetBucket(default, "Data")
    image = TrainingImage(default, "Image")
    CfnOutput(default, "ImageUri", value=image.image_uri)  # a user of image_uri, for cfn-lint

    destroy = Stack(app, "Destroy", env=ENV)
    DatasetBucket(
        destroy,
        "Data",
        DatasetBucketProps(
            removal_policy=RemovalPolicy.DESTROY,
            checkpoint_expiry_days=5,
            output_noncurrent_expiry_days=11,
            name_prefix="scratch",
        ),
    )
    overridden = TrainingImage(
        destroy,
        "Image",
        TrainingImageProps(
            base_image=MIRROR,
            repository_name="scratch-image",
            removal_policy=RemovalPolicy.DESTROY,
            untagged_image_expiry_days=3,
            log_retention=logs.RetentionDays.ONE_WEEK,
            name_prefix="scratch",
        ),
    )

    imported = Stack(app, "Imported", env=ENV)
    DatasetBucket(
        imported, "Existing", DatasetBucketProps(existing_bucket_name="team-data", name_prefix="a")
    )
    DatasetBucket(
        imported,
        "ExistingWithKey",
        DatasetBucketProps(
            existing_bucket_name="other-data",
            encryption_key=kms.Key.from_key_arn(imported, "TeamKey", EXISTING_KEY_ARN),
            name_prefix="b",
        ),
    )

    synth_under_nag(app, outdir)
    return Synth(outdir, default, destroy, imported, data, image, overridden)


def _only(template: Template, type_: str) -> tuple[str, dict]:
    resources = template.find_resources(type_)
    assert len(resources) == 1, f"expected one {type_}, found {sorted(resources)}"
    return next(iter(resources.items()))


def _data_bucket(template: Template) -> tuple[str, dict]:
    """The dataset bucket: the one that is KMS-encrypted (the other is its access-log bucket)."""
    found = [
        (logical_id, resource)
        for logical_id, resource in template.find_resources("AWS::S3::Bucket").items()
        if "BucketEncryption" in resource["Properties"]
        and resource["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ]["SSEAlgorithm"]
        == "aws:kms"
    ]
    assert len(found) == 1
    return found[0]


def _log_bucket(template: Template) -> tuple[str, dict]:
    _, bucket = _data_bucket(template)
    target = bucket["Properties"]["LoggingConfiguration"]["DestinationBucketName"]["Ref"]
    return target, template.to_json()["Resources"][target]


# --- the dataset bucket --------------------------------------------------------------------


def test_prefixes_are_the_bucket_layout():
    assert (DATASETS, CHECKPOINTS, MODELS) == ("datasets/", "checkpoints/", "models/")


def test_bucket_is_encrypted_with_the_rotated_customer_key(synth):
    template = synth.template(synth.default)
    key_id, key = _only(template, "AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    assert synth.default.resolve(synth.data.key.key_arn) == {"Fn::GetAtt": [key_id, "Arn"]}
    _, bucket = _data_bucket(template)
    assert bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {
                "SSEAlgorithm": "aws:kms",
                "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
            },
        }
    ]
    template.has_resource_properties(
        "AWS::KMS::Alias",
        {"AliasName": "alias/ernie-training-data", "TargetKeyId": Match.any_value()},
    )


def test_bucket_blocks_public_access_versions_and_enforces_ownership(synth):
    _, bucket = _data_bucket(synth.template(synth.default))
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


def test_both_buckets_deny_requests_without_tls(synth):
    template = synth.template(synth.default)
    data_id, _ = _data_bucket(template)
    log_id, _ = _log_bucket(template)
    policies = template.find_resources("AWS::S3::BucketPolicy")
    by_bucket = {p["Properties"]["Bucket"]["Ref"]: p for p in policies.values()}
    assert set(by_bucket) == {data_id, log_id}
    for bucket_id, policy in by_bucket.items():
        deny = [
            s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"
        ]
        assert deny == [
            {
                "Action": "s3:*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Resource": [
                    {"Fn::GetAtt": [bucket_id, "Arn"]},
                    {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
                ],
            }
        ]


def test_access_logs_go_to_a_separate_sse_s3_bucket_by_bucket_policy(synth):
    template = synth.template(synth.default)
    data_id, bucket = _data_bucket(template)
    log_id, logs = _log_bucket(template)
    assert log_id != data_id
    assert bucket["Properties"]["LoggingConfiguration"]["LogFilePrefix"] == "dataset-bucket/"
    props = logs["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert props["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert "AccessControl" not in props  # delivery is granted by policy, not by ACL
    assert props["LifecycleConfiguration"]["Rules"] == [
        {
            "Id": "expire-access-logs",
            "Status": "Enabled",
            "ExpirationInDays": 90,
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        }
    ]
    (policy,) = [
        p
        for p in template.find_resources("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": log_id}
    ]
    (allow,) = [
        s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"
    ]
    assert allow["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert allow["Action"] == "s3:PutObject"
    assert allow["Condition"]["ArnLike"]["aws:SourceArn"] == {"Fn::GetAtt": [data_id, "Arn"]}


def test_lifecycle_expires_checkpoints_old_versions_and_stale_uploads(synth):
    _, bucket = _data_bucket(synth.template(synth.default))
    assert bucket["Properties"]["LifecycleConfiguration"]["Rules"] == [
        {
            "Id": "expire-checkpoints",
            "Prefix": "checkpoints/",
            "Status": "Enabled",
            "ExpirationInDays": 30,
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
        },
        {
            "Id": "expire-noncurrent-versions",
            "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
            "ExpiredObjectDeleteMarker": True,
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        },
    ]


def test_lifecycle_follows_the_props(synth):
    _, bucket = _data_bucket(synth.template(synth.destroy))
    rules = {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-checkpoints"]["ExpirationInDays"] == 5
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 11
    }


def test_data_survives_stack_deletion_by_default(synth):
    template = synth.template(synth.default)
    for type_ in ("AWS::S3::Bucket", "AWS::KMS::Key", "AWS::ECR::Repository"):
        resources = template.find_resources(type_)
        assert resources
        for resource in resources.values():
            assert resource["DeletionPolicy"] == "Retain", type_
            assert resource["UpdateReplacePolicy"] == "Retain", type_
    assert not template.find_resources("Custom::S3AutoDeleteObjects")
    _, repository = _only(template, "AWS::ECR::Repository")
    assert repository["Properties"].get("EmptyOnDelete") is not True


def test_destroy_deletes_and_empties_everything(synth):
    template = synth.template(synth.destroy)
    buckets = template.find_resources("AWS::S3::Bucket")
    assert len(buckets) == 2
    for resource in buckets.values():
        assert resource["DeletionPolicy"] == "Delete"
    emptied = {
        r["Properties"]["BucketName"]["Ref"]
        for r in template.find_resources("Custom::S3AutoDeleteObjects").values()
    }
    assert emptied == set(buckets)
    _, key = _only(template, "AWS::KMS::Key")
    assert key["DeletionPolicy"] == "Delete"
    assert key["Properties"]["PendingWindowInDays"] == 7
    _, repository = _only(template, "AWS::ECR::Repository")
    assert repository["DeletionPolicy"] == "Delete"
    assert repository["Properties"]["EmptyOnDelete"] is True


def test_existing_bucket_is_imported_not_created(synth):
    template = synth.template(synth.imported)
    template.resource_count_is("AWS::S3::Bucket", 0)
    template.resource_count_is("AWS::S3::BucketPolicy", 0)
    # Without a key of its own, the import still gets the data key (SageMaker volumes, outputs);
    # with one, nothing is created.
    template.resource_count_is("AWS::KMS::Key", 1)
    existing = synth.imported.node.find_child("Existing")
    assert isinstance(existing, DatasetBucket)
    assert synth.imported.resolve(existing.bucket.bucket_name) == "team-data"
    # Grants on the imported bucket cover the data key (SageMaker writes outputs with it).
    assert synth.imported.resolve(existing.bucket.encryption_key.key_arn) == synth.imported.resolve(
        existing.key.key_arn
    )
    with_key = synth.imported.node.find_child("ExistingWithKey")
    assert synth.imported.resolve(with_key.key.key_arn) == EXISTING_KEY_ARN
    assert with_key.access_log_bucket is None


@pytest.mark.parametrize(
    "field", ["checkpoint_expiry_days", "output_noncurrent_expiry_days", "access_log_expiry_days"]
)
def test_bucket_props_reject_non_positive_days(field):
    with pytest.raises(ValueError, match=field):
        DatasetBucketProps(**{field: 0})


# --- the training image --------------------------------------------------------------------


def test_repository_scans_on_push_and_expires_untagged_images(synth):
    template = synth.template(synth.default)
    _, repository = _only(template, "AWS::ECR::Repository")
    props = repository["Properties"]
    assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert props.get("EncryptionConfiguration", {"EncryptionType": "AES256"}) == {
        "EncryptionType": "AES256"
    }
    policy = json.loads(props["LifecyclePolicy"]["LifecyclePolicyText"])
    (rule,) = policy["rules"]
    assert rule["selection"] == {
        "tagStatus": "untagged",
        "countType": "sinceImagePushed",
        "countNumber": 14,
        "countUnit": "days",
    }
    assert rule["action"] == {"type": "expire"}
    _, overridden = _only(synth.template(synth.destroy), "AWS::ECR::Repository")
    policy = json.loads(overridden["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])
    assert policy["rules"][0]["selection"]["countNumber"] == 3


def test_repository_is_named_by_cloudformation_unless_a_name_is_given(synth):
    # Deploy, destroy (the RETAINed repository stays), deploy again: a fixed name would clash.
    _, repository = _only(synth.template(synth.default), "AWS::ECR::Repository")
    assert "RepositoryName" not in repository["Properties"]
    _, named = _only(synth.template(synth.destroy), "AWS::ECR::Repository")
    assert named["Properties"]["RepositoryName"] == "scratch-image"


def test_image_asset_builds_the_dockerfile_for_amd64_from_the_repository_root(synth):
    image = synth.image
    (source,) = [a["source"] for a in synth.assets(synth.default)["dockerImages"].values()]
    assert source["dockerFile"] == DOCKERFILE
    assert source["platform"] == "linux/amd64"
    # The Dockerfile's own ARG default is the base image: no build argument is passed.
    assert "dockerBuildArgs" not in source
    assert re.search(
        rf"^ARG {BASE_IMAGE_BUILD_ARG}=\S+", (ROOT / DOCKERFILE).read_text(), re.MULTILINE
    )
    # The staged build context is what .dockerignore lets in, nothing else (no .venv, no tests).
    staged = synth.outdir / source["directory"]
    assert staged.name == f"asset.{image.asset.asset_hash}"
    top = {p.name for p in staged.iterdir()}
    assert top == {
        ".dockerignore",
        "pyproject.toml",
        "setup.py",
        "README.md",
        "ernie_sm",
        "contract",
        "text",
        "training",
        "serving",
        "container",
    }
    assert {p.name for p in (staged / "container").iterdir()} == {"Dockerfile"}
    assert not list(staged.rglob("__pycache__"))


def test_base_image_override_is_passed_as_the_build_argument(synth):
    (source,) = [a["source"] for a in synth.assets(synth.destroy)["dockerImages"].values()]
    assert source["dockerBuildArgs"] == {BASE_IMAGE_BUILD_ARG: MIRROR}
    # A different base is a different image: a different hash, hence a different tag.
    assert synth.overridden_image.image_tag != synth.image.image_tag


def test_the_asset_is_copied_under_its_hash(synth):
    stack, image = synth.default, synth.image
    asset_hash = image.asset.asset_hash
    assert re.fullmatch(r"[0-9a-f]{64}", asset_hash)
    assert image.image_tag == asset_hash
    template = synth.template(stack)
    _, copy = _only(template, "Custom::CDKECRDeployment")
    props = copy["Properties"]
    src = json.dumps(props["SrcImage"])
    assert "cdk-hnb659fds-container-assets-123456789012-us-east-1" in src
    assert src.endswith(f':{asset_hash}"}}]]}}')
    dest = props["DestImage"]["Fn::Join"][1]
    assert dest[0] == "docker://"
    assert {"Ref": _only(template, "AWS::ECR::Repository")[0]} in dest
    assert dest[-1] == f":{asset_hash}"
    assert props["ImageArch"] == "amd64"


def test_a_replayed_copy_succeeds_and_image_uri_pins_the_copied_digest(synth):
    # A rollback or a redeploy of an older image replays the copy onto an existing tag, which
    # an IMMUTABLE repository refuses (cdk-ecr-deployment issue #207): the tags are mutable,
    # and jobs run the digest read after the copy, not whatever the tag points to later.
    stack, image = synth.default, synth.image
    template = synth.template(stack)
    repository_id, repository = _only(template, "AWS::ECR::Repository")
    assert repository["Properties"]["ImageTagMutability"] == "MUTABLE"
    copy_id, _ = _only(template, "Custom::CDKECRDeployment")
    lookup_id, lookup = _only(template, "Custom::AWS")
    assert copy_id in lookup["DependsOn"]
    props = lookup["Properties"]
    assert props["Update"] == props["Create"]  # a rollback reads the older tag's digest again
    assert props["InstallLatestAwsSdk"] is False  # nothing fetched from npm while deploying
    parts = props["Create"]["Fn::Join"][1]
    assert {"Ref": repository_id} in parts
    call = json.loads("".join(p if isinstance(p, str) else "REPOSITORY" for p in parts))
    assert (call["service"], call["action"]) == ("ECR", "describeImages")
    assert call["parameters"] == {
        "repositoryName": "REPOSITORY",
        "imageIds": [{"imageTag": image.image_tag}],
    }
    assert call["outputPaths"] == [DIGEST_PATH]
    *repository_uri, at, digest = stack.resolve(image.image_uri)["Fn::Join"][1]
    assert repository_uri == stack.resolve(image.repository.repository_uri)["Fn::Join"][1]
    assert (at, digest) == ("@", {"Fn::GetAtt": [lookup_id, DIGEST_PATH]})


def _handler(template: Template, custom_type: str) -> dict:
    _, resource = _only(template, custom_type)
    return template.to_json()["Resources"][resource["Properties"]["ServiceToken"]["Fn::GetAtt"][0]]


def test_copy_and_lookup_log_to_groups_that_expire(synth):
    for stack, days in ((synth.default, 90), (synth.destroy, 7)):
        template = synth.template(stack)
        resources = template.to_json()["Resources"]
        groups = {
            _handler(template, custom)["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            for custom in ("Custom::CDKECRDeployment", "Custom::AWS")
        }
        assert len(groups) == 2
        for group in groups:
            assert resources[group]["Type"] == "AWS::Logs::LogGroup"
            assert resources[group]["Properties"]["RetentionInDays"] == days


def test_copy_and_lookup_run_with_a_role_scoped_to_the_repositories_and_their_logs(synth):
    template = synth.template(synth.default)
    (role_id,) = {
        _handler(template, custom)["Properties"]["Role"]["Fn::GetAtt"][0]
        for custom in ("Custom::CDKECRDeployment", "Custom::AWS")
    }
    role = template.to_json()["Resources"][role_id]
    assert "ManagedPolicyArns" not in role["Properties"]
    _, copy = _only(template, "Custom::CDKECRDeployment")
    (policy_id, policy), *others = [
        (k, p)
        for k, p in template.find_resources("AWS::IAM::Policy").items()
        if {"Ref": role_id} in p["Properties"]["Roles"]
    ]
    assert not others
    assert policy_id in copy["DependsOn"]  # the copy starts once the policy is attached
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    wildcard = [s for s in statements if s["Resource"] == "*"]
    assert wildcard == [{"Action": "ecr:GetAuthorizationToken", "Effect": "Allow", "Resource": "*"}]
    actions: dict[str, set[str]] = {}
    for s in statements:
        if s["Resource"] != "*":
            key = json.dumps(s["Resource"], sort_keys=True)
            actions.setdefault(key, set()).update(_as_list(s["Action"]))
    repository_id = _only(template, "AWS::ECR::Repository")[0]
    push = actions.pop(json.dumps({"Fn::GetAtt": [repository_id, "Arn"]}, sort_keys=True))
    assert {"ecr:PutImage", "ecr:BatchGetImage", "ecr:DescribeImages"} <= push
    log_groups = template.find_resources("AWS::Logs::LogGroup")
    assert len(log_groups) == 2
    for group_id in log_groups:
        group_arn = json.dumps({"Fn::GetAtt": [group_id, "Arn"]}, sort_keys=True)
        assert actions.pop(group_arn) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    ((bootstrap, pull),) = actions.items()
    assert "repository/cdk-hnb659fds-container-assets-123456789012-us-east-1" in bootstrap
    assert pull == {
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
    }
    # The construct's own statements (ecr:* and s3:GetObject on "*") were dropped.
    assert not any(a.startswith("s3:") for s in statements for a in _as_list(s["Action"]))


def _as_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("days", [0, -1])
def test_image_props_reject_non_positive_expiry(days):
    with pytest.raises(ValueError, match="untagged_image_expiry_days"):
        TrainingImageProps(untagged_image_expiry_days=days)


# --- cdk-nag and cfn-lint ------------------------------------------------------------------


def test_cdk_nag_reports_nothing_unacknowledged(synth):
    # The fixture's synthesis would have failed on any finding, error or warning; the report
    # written beside the assembly confirms that no plugin reported a violation.
    report = json.loads((synth.outdir / "validation-report.json").read_text())
    violations = [v for r in report["pluginReports"] for v in r.get("violations", [])]
    assert violations == []


def test_cdk_nag_does_fail_synthesis_on_a_finding(tmp_path):
    # The harness itself: a plain bucket (no TLS policy, no access logs) must fail synthesis.
    app = App(outdir=str(tmp_path))
    s3.Bucket(Stack(app, "Plain", env=ENV), "Bucket")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules


def test_cfn_lint_finds_no_errors(synth):
    for stack in (synth.default, synth.destroy, synth.imported):
        assert cfn_lint_problems(synth.outdir / stack.template_file) == [], stack.stack_name
