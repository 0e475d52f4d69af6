"""The deployed state machine as `cdk synth` wrote it, with its references made local.

The template refers to resources by CloudFormation references (`Ref`, `Fn::GetAtt`,
`Fn::Join`); a rehearsal has no CloudFormation, so each becomes a local stand-in: the
dataset bucket a folder name, other resources a recognisable local ARN.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ernie_sm.rehearsal import policies

ACCOUNT, REGION = "000000000000", "us-east-1"
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
}
PREPARE_HANDLER = "ernie_sm.pipeline.handler.handler"
# Node.js timers hold at most 2^31 - 1 ms (24.8 days); a longer execution timeout would fire
# at once in the interpreter, so a rehearsal runs without it.
MAX_TIMER_SECONDS = (2**31 - 1) // 1000


class DefinitionError(Exception):
    """The cloud assembly does not hold the stack a rehearsal needs."""


@dataclass(frozen=True)
class LocalDefinition:
    definition: dict[str, Any]  # the state machine's ASL
    prepare_environment: dict[str, str]  # the Prepare function's variables
    bucket: str  # the name standing for the dataset bucket
    notes: tuple[str, ...]  # what had to change to run it here
    policies: dict[str, Any]  # every IAM policy of the template (rehearsal/policies.py)
    state_machine_role: str  # the ARNs of the roles the state machine and Prepare run as
    prepare_role: str
    prepare_log_group: str  # the ARN of the group Prepare's log goes to
    state_machine: str  # the state machine's ARN


def template_file(cdk_out: Path, stack: str) -> Path:
    """The template of `stack` in the cloud assembly `cdk_out`, as its manifest names it:
    `stack` is the stack's name (what `cdk deploy` and `--stack` of the operator commands
    call it) or its construct id, in any app composing this project's constructs."""
    manifest = cdk_out / "manifest.json"
    if not manifest.is_file() and (cdk_out / f"{stack}.template.json").is_file():
        return cdk_out / f"{stack}.template.json"  # a folder of templates, as cdk synth names them
    if not manifest.is_file():
        raise DefinitionError(
            f"{cdk_out} is not a cloud assembly (no manifest.json): synthesize the app that "
            "defines the stack first (`cdk synth` in its folder; `make synth` for this one)"
        )
    artifacts = json.loads(manifest.read_text()).get("artifacts", {})
    stacks = {
        artifact_id: artifact.get("properties", {})
        for artifact_id, artifact in artifacts.items()
        if artifact.get("type") == "aws:cloudformation:stack"
    }
    for artifact_id, properties in stacks.items():
        if stack in (artifact_id, properties.get("stackName", artifact_id)):
            return cdk_out / properties.get("templateFile", f"{artifact_id}.template.json")
    names = ", ".join(p.get("stackName", a) for a, p in stacks.items()) or "none"
    raise DefinitionError(
        f"the cloud assembly {cdk_out} has no stack {stack} (it has: {names}): pass "
        "--stack, or synthesize the app that defines it"
    )


def _in_rehearsal_environment(template: dict[str, Any], template_file: Path) -> dict[str, Any]:
    """The template of a stack synthesized for an account or region (`env=`; its
    manifest's `environment`), with those literals made ACCOUNT and REGION, as the pseudo
    parameters of an environment-agnostic stack are: its policies then name the
    rehearsal's principals and resources, as on AWS they name the account's own."""
    manifest = template_file.parent / "manifest.json"
    if not manifest.is_file():
        return template
    environments = [
        artifact.get("environment", "")
        for artifact in json.loads(manifest.read_text()).get("artifacts", {}).values()
        if artifact.get("type") == "aws:cloudformation:stack"
        and artifact.get("properties", {}).get("templateFile") == template_file.name
    ]
    if len(environments) != 1:
        return template
    account, _, region = environments[0].removeprefix("aws://").partition("/")
    text = json.dumps(template)
    if account.isdigit() and account != ACCOUNT:
        text = re.sub(rf"(?<!\d){account}(?!\d)", ACCOUNT, text)
    if region not in ("", "unknown-region", REGION):
        text = re.sub(rf"(?<![a-z0-9-]){re.escape(region)}(?![a-z0-9-])", REGION, text)
    return json.loads(text)


def load(template_file: Path, bucket: str = "rehearsal-data") -> LocalDefinition:
    if not template_file.is_file():
        raise DefinitionError(f"{template_file} does not exist: run `make synth` first")
    resources = _in_rehearsal_environment(json.loads(template_file.read_text()), template_file)[
        "Resources"
    ]
    machine_id = _only(resources, "AWS::StepFunctions::StateMachine", template_file)
    machine = resources[machine_id]
    prepare_ids = [
        logical_id
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::Lambda::Function"
        and r["Properties"].get("Handler") == PREPARE_HANDLER
    ]
    if len(prepare_ids) != 1:
        raise DefinitionError(f"{template_file} has no Prepare function ({PREPARE_HANDLER})")
    prepare_id = prepare_ids[0]
    prepare = [resources[prepare_id]]
    variables = prepare[0]["Properties"]["Environment"]["Variables"]
    dataset_bucket = variables.get("BUCKET", {})
    resolve = _Resolver(
        resources, bucket, dataset_bucket.get("Ref") if isinstance(dataset_bucket, dict) else None
    )
    definition = json.loads(resolve(machine["Properties"]["DefinitionString"]))
    notes = []
    if definition.get("TimeoutSeconds", 0) > MAX_TIMER_SECONDS:
        days = definition.pop("TimeoutSeconds") / 86400
        notes.append(f"the execution timeout ({days:g} days) is not enforced locally")
    notes += _task_timeouts(definition["States"])
    return LocalDefinition(
        definition=definition,
        prepare_environment={k: resolve(v) for k, v in variables.items()},
        bucket=bucket,
        notes=tuple(notes),
        policies=policies.from_template(resources, resolve.deep, ACCOUNT),
        state_machine_role=resolve(machine["Properties"]["RoleArn"]),
        prepare_role=resolve(prepare[0]["Properties"]["Role"]),
        prepare_log_group=_log_group(prepare_id, prepare[0]["Properties"], resolve),
        state_machine=resolve({"Ref": machine_id}),
    )


def _log_group(function_id: str, properties: dict[str, Any], resolve: _Resolver) -> str:
    """A function's LoggingConfig group, else Lambda's default /aws/lambda/<name>."""
    group = properties.get("LoggingConfig", {}).get("LogGroup")
    name = resolve(group) if group else f"/aws/lambda/{resolve({'Ref': function_id})}"
    return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}"


def _task_timeouts(states: dict[str, Any]) -> list[str]:
    """On AWS a Task without TimeoutSeconds has none; the interpreter would give it 60 s
    (the States Language spec's default), failing any job longer than a minute."""
    unbounded = [
        name
        for name, state in states.items()
        if state["Type"] == "Task"
        and "TimeoutSeconds" not in state
        and "TimeoutSecondsPath" not in state
    ]
    for name in unbounded:
        states[name]["TimeoutSeconds"] = MAX_TIMER_SECONDS
    if not unbounded:
        return []
    return [f"Task states without a timeout run up to {MAX_TIMER_SECONDS / 86400:.1f} days"]


def _only(resources: dict, type_: str, template_file: Path) -> str:
    found = [logical_id for logical_id, r in resources.items() if r["Type"] == type_]
    if len(found) != 1:
        raise DefinitionError(f"{template_file} should hold exactly one {type_}, has {len(found)}")
    return found[0]


class _Resolver:
    def __init__(self, resources: dict, bucket: str, dataset_bucket: str | None) -> None:
        self.resources, self.bucket, self.dataset_bucket = resources, bucket, dataset_bucket

    def deep(self, value: Any) -> Any:
        """`value` with every intrinsic inside it resolved (a policy document, say)."""
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        if isinstance(value, dict):
            if len(value) == 1 and (
                next(iter(value)) == "Ref" or next(iter(value)).startswith("Fn::")
            ):
                return self(value)
            return {k: self.deep(v) for k, v in value.items()}
        return value

    def __call__(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(self(p) for p in parts)
        if "Ref" in value:
            return self._ref(value["Ref"])
        if "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"]
            if attribute in ("Arn", "TopicArn"):
                return self._arn(logical_id)
            return f"local-{logical_id}-{attribute}"
        if "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
            return re.sub(r"\$\{([^}]+)\}", lambda m: self._sub(m.group(1)), value["Fn::Sub"])
        if "Fn::Select" in value:
            index, items = value["Fn::Select"]
            if isinstance(items, dict) and "Fn::Split" in items:
                separator, text = items["Fn::Split"]
                return self(text).split(separator)[index]
            return self(items[index])
        raise DefinitionError(f"cannot make {json.dumps(value)[:200]} local")

    def _sub(self, name: str) -> str:
        logical_id, _, attribute = name.partition(".")
        return self({"Fn::GetAtt": [logical_id, attribute]} if attribute else {"Ref": name})

    def _ref(self, name: str) -> str:
        if name in PSEUDO:
            return PSEUDO[name]
        kind = self.resources.get(name, {}).get("Type", "")
        if kind in ("AWS::SNS::Topic", "AWS::StepFunctions::StateMachine"):
            return self._arn(name)  # their Ref is their ARN
        return self.name(name)

    def name(self, logical_id: str) -> str:
        """The resource's name (or id) standing for the one CloudFormation would give it."""
        resource = self.resources.get(logical_id, {})
        kind, properties = resource.get("Type", ""), resource.get("Properties", {})
        if kind == "AWS::S3::Bucket":
            return (
                self.bucket if logical_id == self.dataset_bucket else f"local-{logical_id.lower()}"
            )
        if kind == "AWS::KMS::Key":  # a key id is a UUID
            return str(uuid.uuid5(uuid.NAMESPACE_URL, logical_id))
        named = {
            "AWS::ECR::Repository": "RepositoryName",
            "AWS::StepFunctions::StateMachine": "StateMachineName",
            "AWS::Logs::LogGroup": "LogGroupName",
        }.get(kind)
        if named and isinstance(properties.get(named), str):
            return properties[named]
        if kind in ("AWS::IAM::Role", "AWS::Lambda::Function", "AWS::SNS::Topic"):
            return logical_id
        return f"local-{logical_id.lower()}"

    def _arn(self, logical_id: str) -> str:
        """An ARN of the form AWS gives that kind of resource, so that IAM's resource
        matching (rehearsal/authorization.py) sees what it would see on AWS."""
        kind = self.resources.get(logical_id, {}).get("Type", "AWS::Local::Resource")
        name = self.name(logical_id)
        where = f"{REGION}:{ACCOUNT}"
        arns = {
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::KMS::Key": f"arn:aws:kms:{where}:key/{name}",
            "AWS::SNS::Topic": f"arn:aws:sns:{where}:{name}",
            "AWS::Lambda::Function": f"arn:aws:lambda:{where}:function:{name}",
            "AWS::ECR::Repository": f"arn:aws:ecr:{where}:repository/{name}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{where}:log-group:{name}:*",
            "AWS::StepFunctions::StateMachine": f"arn:aws:states:{where}:stateMachine:{name}",
        }
        if kind in arns:
            return arns[kind]
        service = kind.split("::")[1].lower()
        return f"arn:aws:{service}:{where}:local/{logical_id}"
