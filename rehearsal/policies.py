"""The IAM policies of a synthesized template, made local: who may do what, as AWS would read it.

`from_template` gathers, with every CloudFormation reference resolved to the rehearsal's
local names and ARNs (rehearsal/definition.py):

- identity: each role's identity-based policies (its AWS::IAM::Policy and
  AWS::IAM::ManagedPolicy resources, inline policies, and the AWS managed policies it
  names, whose documents are below as AWS publishes them);
- resource: the resource-based policies, by the ARN they protect: bucket policies, key
  policies, topic policies, repository policies and each role's trust policy;
- encryption: the KMS key a bucket's default encryption or a topic's SSE uses, by the
  bucket's or topic's ARN (their readers and writers need that key too).

A key that the template imports (its ARN given, no AWS::KMS::Key) gets the default key
policy, which lets the account's IAM policies decide; an imported bucket has no policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# AWS managed policies a CDK construct attaches, as AWS publishes them (IAM console, policy
# versions). Anything else is refused: a rehearsal cannot know what it allows.
MANAGED_POLICIES: dict[str, dict[str, Any]] = {
    "service-role/AWSLambdaBasicExecutionRole": {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": "*",
            }
        ],
    },
}


def default_key_policy(account: str) -> dict[str, Any]:
    """ "Default key policy" in the AWS KMS developer guide: the account's IAM policies decide."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }


class PolicyError(Exception):
    """The template holds a policy a rehearsal cannot evaluate."""


Resolve = Callable[[Any], Any]
POLICY_HOLDERS = (
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::S3::BucketPolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::KMS::Key",
    "AWS::ECR::Repository",
    "AWS::S3::Bucket",
    "AWS::SNS::Topic",
)


def from_template(resources: dict[str, Any], resolve: Resolve, account: str) -> dict[str, Any]:
    identity: dict[str, list[dict[str, Any]]] = {}
    resource: dict[str, dict[str, Any]] = {}
    encryption: dict[str, str] = {}
    roles = {
        resolve({"Ref": logical_id}): resolve({"Fn::GetAtt": [logical_id, "Arn"]})
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::IAM::Role"
    }
    for logical_id, r in resources.items():
        kind = r["Type"]
        if kind not in POLICY_HOLDERS:
            continue
        properties = resolve(r.get("Properties", {}))
        if kind == "AWS::IAM::Role":
            arn = roles[resolve({"Ref": logical_id})]
            resource[arn] = properties["AssumeRolePolicyDocument"]
            attached = identity.setdefault(arn, [])
            for inline in properties.get("Policies", []):
                attached.append({"name": inline["PolicyName"], "policy": inline["PolicyDocument"]})
            for managed in properties.get("ManagedPolicyArns", []):
                attached.append({"name": managed, "policy": _managed(managed, logical_id)})
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for role in properties.get("Roles", []):
                identity.setdefault(roles[role], []).append(
                    {"name": logical_id, "policy": properties["PolicyDocument"]}
                )
        elif kind == "AWS::S3::BucketPolicy":
            resource[f"arn:aws:s3:::{properties['Bucket']}"] = properties["PolicyDocument"]
        elif kind == "AWS::SNS::TopicPolicy":
            for topic in properties["Topics"]:
                resource[topic] = properties["PolicyDocument"]
        elif kind == "AWS::KMS::Key":
            arn = resolve({"Fn::GetAtt": [logical_id, "Arn"]})
            resource[arn] = properties.get("KeyPolicy") or default_key_policy(account)
        elif kind == "AWS::ECR::Repository" and "RepositoryPolicyText" in properties:
            resource[resolve({"Fn::GetAtt": [logical_id, "Arn"]})] = properties[
                "RepositoryPolicyText"
            ]
        key = _encryption_key(kind, properties)
        if key:
            encryption[resolve({"Fn::GetAtt": [logical_id, "Arn"]})] = key
    for key in set(encryption.values()) - set(resource):
        resource[key] = default_key_policy(account)  # an imported key
    return {"identity": identity, "resource": resource, "encryption": encryption}


def _managed(arn: str, role: str) -> dict[str, Any]:
    name = arn.split(":policy/", 1)[-1]
    if name not in MANAGED_POLICIES:
        raise PolicyError(f"{role} has the managed policy {arn}, which a rehearsal cannot read")
    return MANAGED_POLICIES[name]


def _encryption_key(kind: str, properties: dict[str, Any]) -> str | None:
    if kind == "AWS::SNS::Topic":
        return properties.get("KmsMasterKeyId")
    if kind == "AWS::S3::Bucket":
        rules = properties.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
        for rule in rules:
            default = rule.get("ServerSideEncryptionByDefault", {})
            if default.get("SSEAlgorithm") in ("aws:kms", "aws:kms:dsse"):
                return default.get("KMSMasterKeyID")
    return None
