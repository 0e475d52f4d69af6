"""Every AWS call a rehearsal makes or stands in for, decided as IAM would decide it on AWS.

A call is a `Request`: the principal that would make it on AWS (a role's ARN, or a service
principal when a service assumes a role), the action, the resource's ARN and the request
context AWS would supply (`aws:SecureTransport`, `iam:PassedToService`, `kms:ViaService`,
`s3:prefix`...). `decide` evaluates requests against the synthesized template's policies
(rehearsal/policies.py): the principal's identity-based policies and the resource's
resource-based policy, by AWS's evaluation logic (an explicit deny wins; then an allow in
either; else an implicit deny). The evaluation is @cloud-copilot/iam-simulate's, run by
rehearsal/authorize.mjs, not ours; tests/test_authorization.py holds it to the examples of
AWS's documentation.

A denied request becomes `AccessDenied`, whose message is worded as AWS words it ("User:
... is not authorized to perform: ACTION on resource: ARN because no identity-based policy
allows the ACTION action"); each stand-in turns it into its service's own error.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ernie_sm.rehearsal.definition import ACCOUNT, REGION

ROOT = Path(__file__).resolve().parents[1]
NODE = ROOT / "node_modules" / ".bin" / "node"
EVALUATOR = Path(__file__).with_name("authorize.mjs")
SESSION = "rehearsal"  # the session name in an assumed role's ARN
# Where a rehearsal has each decision recorded, one JSON line per call (a variable, as the
# task stand-ins run in processes of their own).
RECORD = "REHEARSAL_AUTHORIZATIONS"


@dataclass(frozen=True)
class Request:
    principal: str  # a role's ARN, or a service principal (sagemaker.amazonaws.com)
    action: str
    resource: str
    context: Mapping[str, str | list[str]] = field(default_factory=dict)

    def caller(self) -> str:
        """The principal as AWS names it in an error: a role acts through its session."""
        if ":role/" in self.principal:
            name = self.principal.rsplit("/", 1)[1]
            return f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/{SESSION}"
        return self.principal


@dataclass(frozen=True)
class Denial:
    request: Request
    explicit: bool
    policy_type: str  # the kind of policy that decided: identity, resource, ...

    def message(self) -> str:
        """AWS's wording (IAM user guide, "Access denied error messages")."""
        r = self.request
        head = (
            f"User: {r.caller()} is not authorized to perform: {r.action} on resource: {r.resource}"
        )
        kind = "resource-based" if self.policy_type == "resource" else "identity-based"
        if self.explicit:
            return f"{head} with an explicit deny in a {kind} policy"
        return f"{head} because no {kind} policy allows the {r.action} action"


class AccessDenied(Exception):
    def __init__(self, denial: Denial) -> None:
        super().__init__(denial.message())
        self.denial = denial


class EvaluatorError(Exception):
    """The evaluator could not run or could not evaluate a request."""


def decide(
    requests: Sequence[Request], policies: Mapping[str, Any], record: str | None = None
) -> list[Denial | None]:
    """For each request, None when AWS would allow it, else why it would not; each decision
    is appended to `record` (default: the file $REHEARSAL_AUTHORIZATIONS names, if any)."""
    if not requests:
        return []
    if not NODE.exists():
        raise EvaluatorError(f"{NODE} is missing: run `make` targets (npm ci) first")
    batch = [_simulation(r, policies) for r in requests]
    run = subprocess.run(
        [str(NODE), str(EVALUATOR)],
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if run.returncode != 0:
        raise EvaluatorError(run.stderr.strip() or f"{EVALUATOR.name} exited {run.returncode}")
    denials = [_denial(r, d) for r, d in zip(requests, json.loads(run.stdout), strict=True)]
    _record(requests, denials, record or os.environ.get(RECORD))
    return denials


def _record(
    requests: Sequence[Request], denials: Sequence[Denial | None], path: str | None
) -> None:
    if not path:
        return
    with open(path, "a", encoding="utf-8") as record:
        for request, denial in zip(requests, denials, strict=True):
            entry = {
                "principal": request.principal,
                "action": request.action,
                "resource": request.resource,
                "allowed": denial is None,
            }
            if denial is not None:
                entry["denied"] = denial.message()
            record.write(json.dumps(entry) + "\n")


def require(requests: Sequence[Request], policies: Mapping[str, Any]) -> None:
    """Raise AccessDenied for the first request AWS would refuse."""
    for denial in decide(requests, policies):
        if denial is not None:
            raise AccessDenied(denial)


def _simulation(request: Request, policies: Mapping[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = {"aws:SecureTransport": "true", "aws:RequestedRegion": REGION}
    if ":role/" in request.principal:
        context |= {"aws:PrincipalArn": request.principal, "aws:PrincipalAccount": ACCOUNT}
    return {
        "principal": request.caller(),
        "action": request.action,
        "resource": request.resource,
        "resourceAccount": ACCOUNT,
        "identityPolicies": policies["identity"].get(request.principal, []),
        "resourcePolicy": policies["resource"].get(_protected(request.resource)),
        "context": context | dict(request.context),
    }


def _protected(arn: str) -> str:
    """The ARN whose resource-based policy covers `arn`: an object's bucket, else itself."""
    if arn.startswith("arn:aws:s3:::"):
        return arn.split("/", 1)[0]
    return arn


def _denial(request: Request, result: Mapping[str, Any]) -> Denial | None:
    if result["decision"] == "Allowed":
        return None
    reasons = result.get("denials") or [{}]
    explicit = [d for d in reasons if d.get("denialType") == "Explicit"]
    decisive = (explicit or reasons)[0]
    return Denial(request, bool(explicit), decisive.get("policyType", "identity"))


# S3 as SageMaker and the jobs use it, with the KMS calls a bucket's default encryption
# implies. With an S3 Bucket Key (the dataset bucket has one) S3 asks KMS with the bucket's
# ARN as encryption context (S3 user guide, "Reducing the cost of SSE-KMS").
def s3_list(principal: str, bucket: str, prefix: str) -> Request:
    return Request(principal, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": prefix})


def s3_reads(
    principal: str, bucket: str, keys: Iterable[str], policies: Mapping[str, Any]
) -> list[Request]:
    requests = [Request(principal, "s3:GetObject", f"arn:aws:s3:::{bucket}/{k}") for k in keys]
    return requests + _s3_key(principal, bucket, "kms:Decrypt", policies, bool(requests))


def s3_writes(
    principal: str, bucket: str, keys: Iterable[str], policies: Mapping[str, Any]
) -> list[Request]:
    requests = [Request(principal, "s3:PutObject", f"arn:aws:s3:::{bucket}/{k}") for k in keys]
    return requests + _s3_key(principal, bucket, "kms:GenerateDataKey", policies, bool(requests))


def _s3_key(
    principal: str, bucket: str, action: str, policies: Mapping[str, Any], used: bool
) -> list[Request]:
    key = policies["encryption"].get(f"arn:aws:s3:::{bucket}")
    if not key or not used:
        return []
    return [
        kms(
            principal,
            action,
            key,
            "s3",
            {"kms:EncryptionContext:aws:s3:arn": f"arn:aws:s3:::{bucket}"},
        )
    ]


def kms(
    principal: str,
    action: str,
    key: str,
    service: str,
    context: Mapping[str, str | list[str]] | None = None,
) -> Request:
    """A KMS call that `service` makes with the caller's credentials (kms:ViaService)."""
    return Request(
        principal,
        action,
        key,
        {"kms:ViaService": f"{service}.{REGION}.amazonaws.com", "kms:CallerAccount": ACCOUNT}
        | dict(context or {}),
    )
