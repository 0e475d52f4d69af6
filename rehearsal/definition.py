"""The deployed state machine as `cdk synth` wrote it, with its references made local.

The template refers to resources by CloudFormation references (`Ref`, `Fn::GetAtt`,
`Fn::Join`); a rehearsal has no CloudFormation, so each becomes a local stand-in: the
dataset bucket a folder name, other resources a recognisable local ARN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCOUNT, REGION = "000000000000", "us-east-1"
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
}
PREPARE_HANDLER = "ernie_sm.pipeline.execution.handler"
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


def load(template_file: Path, bucket: str = "rehearsal-data") -> LocalDefinition:
    if not template_file.is_file():
        raise DefinitionError(f"{template_file} does not exist: run `make synth` first")
    resources = json.loads(template_file.read_text())["Resources"]
    resolve = _Resolver(resources, bucket)
    machine = _only(resources, "AWS::StepFunctions::StateMachine", template_file)
    definition = json.loads(resolve(machine["Properties"]["DefinitionString"]))
    prepare = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function"
        and r["Properties"].get("Handler") == PREPARE_HANDLER
    ]
    if len(prepare) != 1:
        raise DefinitionError(f"{template_file} has no Prepare function ({PREPARE_HANDLER})")
    variables = prepare[0]["Properties"]["Environment"]["Variables"]
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
    )


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


def _only(resources: dict, type_: str, template_file: Path) -> dict:
    found = [r for r in resources.values() if r["Type"] == type_]
    if len(found) != 1:
        raise DefinitionError(f"{template_file} should hold exactly one {type_}, has {len(found)}")
    return found[0]


class _Resolver:
    def __init__(self, resources: dict, bucket: str) -> None:
        self.resources, self.bucket = resources, bucket

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
            return (
                self._arn(logical_id) if attribute == "Arn" else f"local-{logical_id}-{attribute}"
            )
        if "Fn::Select" in value:
            index, items = value["Fn::Select"]
            if isinstance(items, dict) and "Fn::Split" in items:
                separator, text = items["Fn::Split"]
                return self(text).split(separator)[index]
            return self(items[index])
        raise DefinitionError(f"cannot make {json.dumps(value)[:200]} local")

    def _ref(self, name: str) -> str:
        if name in PSEUDO:
            return PSEUDO[name]
        if self.resources.get(name, {}).get("Type") == "AWS::S3::Bucket":
            return self.bucket
        return f"local-{name.lower()}"  # a Ref is mostly a name or an id

    def _arn(self, logical_id: str) -> str:
        kind = self.resources.get(logical_id, {}).get("Type", "AWS::Local::Resource")
        if kind == "AWS::IAM::Role":  # SageMaker checks RoleArn's form: global, role/<name>
            return f"arn:aws:iam::{ACCOUNT}:role/{logical_id}"
        service = kind.split("::")[1].lower()
        return f"arn:aws:{service}:{REGION}:{ACCOUNT}:local/{logical_id}"
