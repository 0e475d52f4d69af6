"""Parsing an execution input (execution_input's fields): every problem named by its field.

Anything wrong fails the execution before a training job exists, with an
ExecutionInputError that names every bad field (`instance_count: expected an integer from
1 to 16, got number 0; hyperparameters.batch_size: ...`), including whatever SageMaker's
CreateTrainingJob would refuse.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Callable, Mapping
from typing import Any

from ernie_sm.contract import hyperparams, tasks
from ernie_sm.contract.channels import CHECKPOINT_LOCAL_PATH
from ernie_sm.contract.names import closest, hint
from ernie_sm.contract.s3_uri import S3_URI_PATTERN
from ernie_sm.pipeline import sagemaker_api
from ernie_sm.pipeline.execution_input import (
    DEFAULT_DATASET,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_RUNTIME_HOURS,
    EVALUATION_FIELDS,
    FIELDS,
    MODEL_ARCHIVE,
    STAGE_FIELDS,
    STAGE_SETS,
    EvaluationInput,
    ExecutionInput,
    ExecutionInputError,
    StageInput,
    merged_hyperparameters,
    plain_number,
    seconds,
)
from ernie_sm.pipeline.limits import (
    MAX_HOURS,
    MAX_HYPERPARAMETERS_BYTES,
    MAX_INSTANCES,
    MAX_PREFIX,
    MAX_STAGES,
    MAX_STEPS,
    MAX_VOLUME_GB,
    valid_key_prefix,
)
from ernie_sm.pipeline.naming import JOB_NAME_PREFIX_MAX, valid_job_name_prefix

STAGE_NAME_PATTERN = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")  # used with fullmatch


def parse_input(raw: object) -> ExecutionInput:
    """Validate an execution input and fill in the defaults; raise ExecutionInputError."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ExecutionInputError({"(input)": f"expected a JSON object, got {_describe(raw)}"})
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}
    if "hyperparameters" in raw:
        hp, hp_problems = _hyperparameters(raw["hyperparameters"])
        problems.update(hp_problems)
        if not hp_problems:
            values["hyperparameters"] = hp
    _parse_fields(raw, _top_level_parsers(), "", values, problems)
    _parse_objects(raw, values, problems)
    for name in raw:
        if name not in FIELDS:
            problems[str(name)] = _unknown_field(str(name))
    _spot_times(raw, values, problems)
    problems.update(_hyperparameter_sizes(values))
    if problems:
        raise ExecutionInputError(problems)
    return ExecutionInput(**values)


def _top_level_parsers() -> dict[str, Any]:
    """{field: parser} of the top-level fields that hold one value."""
    return {
        "dataset": _dataset,
        "use_validation": _boolean,
        "instance_type": _instance_type,
        "instance_count": lambda v: _integer(v, 1, MAX_INSTANCES),
        "volume_size_gb": lambda v: _integer(v, 1, MAX_VOLUME_GB),
        "spot": _boolean,
        "max_runtime_hours": _hours,
        "max_wait_hours": lambda v: None if v is None else _hours(v),
        "warm_start_model": _model_uri,
        "job_name_prefix": _job_name_prefix,
    }


def _parse_objects(raw: Mapping, values: dict[str, Any], problems: dict[str, str]) -> None:
    """The evaluation and the stages, when given (null is none)."""
    if raw.get("evaluation") is not None:
        default_type = values.get("instance_type", DEFAULT_INSTANCE_TYPE)
        evaluation, eval_problems = _evaluation(raw["evaluation"], default_type)
        problems.update(eval_problems)
        if evaluation is not None:
            values["evaluation"] = evaluation
    if raw.get("stages") is not None:
        stages, stage_problems = _stages(raw["stages"], raw.get("hyperparameters"))
        problems.update(stage_problems)
        if stages is not None:
            values["stages"] = stages


def _spot_times(raw: Mapping, values: dict[str, Any], problems: dict[str, str]) -> None:
    """max_wait_hours: none on demand, else given (at least max_runtime_hours) or the default."""
    spot = values.get("spot", True)
    runtime = values.get("max_runtime_hours", DEFAULT_RUNTIME_HOURS)
    wait = values.get("max_wait_hours")
    if not spot:
        if raw.get("max_wait_hours") is not None and "max_wait_hours" not in problems:
            problems["max_wait_hours"] = (
                'applies only to spot training; leave it out with "spot": false'
            )
        values["max_wait_hours"] = None
    elif wait is None:
        values["max_wait_hours"] = min(2 * runtime, MAX_HOURS)
    elif "max_runtime_hours" not in problems and seconds(wait) < seconds(runtime):
        problems["max_wait_hours"] = (
            f"{plain_number(wait)} is less than max_runtime_hours ({plain_number(runtime)}): "
            "the spot job's whole time must include its training time"
        )


def _json_bytes(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _hyperparameter_sizes(values: Mapping[str, Any]) -> dict[str, str]:
    """{field: problem} for each job whose hyperparameters pass MAX_HYPERPARAMETERS_BYTES:
    the training's (each stage's merged with the top-level ones) and the evaluation's."""
    common: dict[str, str] = values.get("hyperparameters", {})
    jobs: dict[str, Mapping[str, str]] = {"hyperparameters": common}
    for index, stage in enumerate(values.get("stages") or ()):
        jobs[f"stages[{index}].hyperparameters"] = merged_hyperparameters(common, stage)
    evaluation = values.get("evaluation")
    if evaluation is not None:
        jobs["evaluation.hyperparameters"] = evaluation.hyperparameters
    problems = {}
    for where, hyperparameters in jobs.items():
        size = _json_bytes(hyperparameters)
        if size > MAX_HYPERPARAMETERS_BYTES:
            stage_note = " (with the top-level ones, tasks and steps)" if "stages[" in where else ""
            problems[where] = (
                f"{size} bytes of names and values as JSON{stage_note}, more than the "
                f"{MAX_HYPERPARAMETERS_BYTES} a job's may take: each state of the execution "
                "holds at most 256 KiB, and a job's request and its description both carry them"
            )
            if where == "hyperparameters":
                break  # every stage has them too
    return problems


class _Problem(ValueError):
    pass


def _hyperparameters(
    value: object, specs: Mapping[str, Any] = hyperparams.SPECS, where: str = "hyperparameters"
) -> tuple[dict[str, str], dict[str, str]]:
    """Training hyperparameters, or with `specs` and `where` the evaluation's."""
    if value is None:
        return {}, {}
    if not isinstance(value, Mapping):
        return {}, {where: f"expected a JSON object, got {_describe(value)}"}
    problems: dict[str, str] = {}
    normalised: dict[str, str] = {}
    for name, item in value.items():
        try:
            normalised[str(name)] = _hyperparameter(str(name), item)
        except _Problem as exc:
            problems[f"{where}.{name}"] = str(exc)
    for name, problem in hyperparams.validate(normalised, specs).items():
        problems[f"{where}.{name}"] = problem
    checkpoints = normalised.get("checkpoints", "").strip() if specs is hyperparams.SPECS else ""
    if (
        checkpoints
        and posixpath.normpath(
            posixpath.join(posixpath.dirname(CHECKPOINT_LOCAL_PATH), checkpoints)
        )
        != CHECKPOINT_LOCAL_PATH
    ):
        problems[f"{where}.checkpoints"] = (
            f"must be empty or {CHECKPOINT_LOCAL_PATH}, got {checkpoints!r}: only that folder "
            "is synced to S3, where a retried attempt resumes from"
        )
    limit = sagemaker_api.member_shape("HyperParameters")["max"]
    if len(normalised) > limit:
        problems[where] = f"more than {limit} entries, which SageMaker refuses"
    return normalised, dict(sorted(problems.items()))


def _evaluation(
    value: object, default_instance_type: str
) -> tuple[EvaluationInput | None, dict[str, str]]:
    """The `evaluation` field: the input and {"evaluation.<field>": problem}."""
    if not isinstance(value, Mapping):
        return None, {"evaluation": f"expected a JSON object or null, got {_describe(value)}"}
    problems: dict[str, str] = {}
    values: dict[str, Any] = {"instance_type": default_instance_type}
    parsers = {
        "dataset": _dataset,
        "baseline_model": _model_uri,
        "instance_type": _instance_type,
        "max_runtime_hours": _hours,
    }
    if "dataset" not in value:
        problems["evaluation.dataset"] = "required: the key prefix of a labelled set"
    _parse_fields(value, parsers, "evaluation", values, problems)
    if "hyperparameters" in value:
        hp, hp_problems = _hyperparameters(
            value["hyperparameters"], hyperparams.EVAL_SPECS, "evaluation.hyperparameters"
        )
        problems.update(hp_problems)
        values["hyperparameters"] = hp
    for name in value:
        if name not in EVALUATION_FIELDS:
            problems[f"evaluation.{name}"] = (
                f"unknown field ({hint(name, EVALUATION_FIELDS, 'fields')})"
            )
    if problems:
        return None, problems
    return EvaluationInput(**values), {}


def _parse_fields(
    value: Mapping,
    parsers: Mapping[str, Any],
    where: str,
    values: dict[str, Any],
    problems: dict[str, str],
) -> None:
    """Parse the fields of `value` that `parsers` names into `values`; a bad one goes to
    `problems` as `<where>.<field>` (as `<field>` at the top level, where `where` is "")."""
    for name, parse in parsers.items():
        if name in value:
            try:
                values[name] = parse(value[name])
            except _Problem as exc:
                problems[f"{where}.{name}" if where else name] = str(exc)


def _stages(
    value: object, top_level: object
) -> tuple[tuple[StageInput, ...] | None, dict[str, str]]:
    """The `stages` field: the stages and {"stages[<i>].<field>": problem}; also the
    top-level hyperparameters that a stage sets, which `stages` makes an error."""
    problems = {
        f"hyperparameters.{name}": f"set by each stage's {field_name} when stages is given"
        for name, field_name in STAGE_SETS.items()
        if isinstance(top_level, Mapping) and name in top_level
    }
    if not isinstance(value, list):
        problems["stages"] = f"expected an array of stage objects or null, got {_describe(value)}"
    elif not 1 <= len(value) <= MAX_STAGES:
        problems["stages"] = f"expected 1 to {MAX_STAGES} stages, got {len(value)}"
    if "stages" in problems:
        return None, problems
    stages = []
    for index, item in enumerate(value):
        stage, stage_problems = _stage(item, index)
        problems.update(stage_problems)
        stages.append(stage)
    names = [stage.name for stage in stages if stage is not None]
    for index, stage in enumerate(stages):
        if stage is not None and names.count(stage.name) > 1:
            problems[f"stages[{index}].name"] = f"{stage.name!r} names more than one stage"
    if problems:
        return None, problems
    return tuple(stages), {}


def _stage(value: object, index: int) -> tuple[StageInput | None, dict[str, str]]:
    """stages[index]: the stage and its problems. Its hyperparameters merged with the
    top-level ones stay within SageMaker's limits: values are checked one by one, and
    both name only the hyperparameters of SPECS, fewer than SageMaker's 100."""
    where = f"stages[{index}]"
    if not isinstance(value, Mapping):
        return None, {where: f"expected a stage object, got {_describe(value)}"}
    problems: dict[str, str] = {}
    values: dict[str, Any] = {"name": f"stage-{index + 1}"}
    for name in ("tasks", "steps"):
        if name not in value:
            problems[f"{where}.{name}"] = "required"
    parsers = {"name": _stage_name, "steps": lambda v: _integer(v, 1, MAX_STEPS)}
    _parse_fields(value, parsers, where, values, problems)
    if "tasks" in value:
        weights, task_problems = _stage_tasks(value["tasks"], f"{where}.tasks")
        problems.update(task_problems)
        values["tasks"] = weights
    if "hyperparameters" in value:
        given = value["hyperparameters"]
        hp, hp_problems = _hyperparameters(given, where=f"{where}.hyperparameters")
        for name, field_name in STAGE_SETS.items():
            if isinstance(given, Mapping) and name in given:
                hp_problems[f"{where}.hyperparameters.{name}"] = (
                    f"set by the stage's {field_name}; leave it out"
                )
        problems.update(hp_problems)
        values["hyperparameters"] = hp
    for name in value:
        if name not in STAGE_FIELDS:
            problems[f"{where}.{name}"] = f"unknown field ({hint(name, STAGE_FIELDS, 'fields')})"
    if problems:
        return None, problems
    return StageInput(**values), {}


def _stage_tasks(value: object, where: str) -> tuple[dict[str, float], dict[str, str]]:
    """{task: weight} as tasks.parse_weights reads it back from the job's hyperparameter
    (format_weights keeps six digits), and the problems by task."""
    if not isinstance(value, Mapping) or not value:
        example = f'{{"{tasks.KNOWLEDGE_MASKING.name}": 1}}'
        got = "an empty object" if isinstance(value, Mapping) else _describe(value)
        return {}, {
            where: f"expected an object of at least one task name and its weight, e.g. "
            f"{example}, got {got}"
        }
    problems: dict[str, str] = {}
    weights: dict[str, float] = {}
    for name, weight in value.items():
        if name not in tasks.TASKS:
            problems[f"{where}.{name}"] = f"unknown task ({hint(name, tasks.TASKS, 'tasks')})"
        elif not _positive_finite(weight):
            problems[f"{where}.{name}"] = f"expected a finite number > 0, got {_describe(weight)}"
        else:
            try:  # as the job reads it: six digits, which may round below the least normal
                weights |= tasks.parse_weights(tasks.format_weights({name: float(weight)}))
            except ValueError as exc:
                problems[f"{where}.{name}"] = f"{exc}, got {_describe(weight)}"
    if not problems:  # the sum and the shares, as the trainer checks them (tasks.parse_mix)
        for name, problem in tasks.mix_problems(weights).items():
            problems[where if name is None else f"{where}.{name}"] = problem
    if problems:
        return {}, problems
    return tasks.parse_mix(tasks.format_weights(weights)), {}


def _positive_finite(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and value > 0  # an int too large for a float overflows
    except OverflowError:
        return False


def _stage_name(value: object) -> str:
    return _matching(
        value,
        lambda text: bool(STAGE_NAME_PATTERN.fullmatch(text)),
        "1 to 32 lower-case letters, digits and hyphens, starting with a letter and ending "
        "with a letter or digit",
    )


def _hyperparameter(name: str, value: object) -> str:
    """The string SageMaker hands the job for `value`, if SageMaker would take it."""
    if name.startswith(hyperparams.RESERVED_PREFIX):
        raise _Problem(f"names starting with {hyperparams.RESERVED_PREFIX} are reserved")
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        try:
            text = str(value)
        except ValueError:  # more digits than Python writes out, and than SageMaker takes
            raise _Problem(f"number {_number_text(value)} is too long") from None
    elif isinstance(value, str):
        text = value
    else:
        raise _Problem(f"expected a string, number or boolean, got {_describe(value)}")
    if any(c in sagemaker_api.LINE_TERMINATORS for c in text):
        # HyperParameterValue's pattern is .*, and Java's . matches no line terminator.
        raise _Problem(f"value {text!r} has a line break, which SageMaker refuses")
    for member, part in (("HyperParameters.key", name), ("HyperParameters.value", text)):
        reason = sagemaker_api.refusal(member, part)
        if reason:
            raise _Problem(f"SageMaker refuses the {member.rsplit('.', 1)[1]}: {reason}")
    return text


def _dataset(value: object) -> str:
    text = _string(value)
    if text.startswith("s3://"):
        raise _Problem(
            f"expected a key prefix in the stack's bucket such as {DEFAULT_DATASET!r}, "
            f"not an s3:// URI: {text!r}"
        )
    expected = (
        f"a key prefix such as {DEFAULT_DATASET!r} (up to {MAX_PREFIX} letters, digits, "
        "!_.*'()=@+- and single slashes)"
    )
    return _matching(text, lambda t: valid_key_prefix(t.strip("/")), expected).strip("/")


def _instance_type(value: object) -> str:
    text = _string(value)
    known = sagemaker_api.member_shape("ResourceConfig.InstanceType")["enum"]
    if text not in known:
        close = closest(text.lower(), known)  # the types are lower case
        suggestion = f"did you mean {close}?" if close else f"e.g. {DEFAULT_INSTANCE_TYPE}"
        raise _Problem(f"{text!r} is not a SageMaker training instance type ({suggestion})")
    return text


def _model_uri(value: object) -> str | None:
    if value is None:
        return None
    text = _string(value)
    match = S3_URI_PATTERN.fullmatch(text)
    if not match or posixpath.basename(match.group(2)) != MODEL_ARCHIVE:
        raise _Problem(
            f"expected s3://<bucket>/<key>/{MODEL_ARCHIVE} of a previous training job, got {text!r}"
        )
    reason = sagemaker_api.refusal("InputDataConfig.member.DataSource.S3DataSource.S3Uri", text)
    if reason:
        raise _Problem(f"SageMaker refuses it as an S3Uri: {reason}")
    return text


def _job_name_prefix(value: object) -> str:
    return _matching(
        value,
        valid_job_name_prefix,
        f"1 to {JOB_NAME_PREFIX_MAX} letters, digits and hyphens, starting and ending with a "
        "letter or digit",
    )


def _matching(value: object, valid: Callable[[str], bool], expected: str) -> str:
    """`value`, a string that `valid` takes; else "expected <expected>, got <value>"."""
    text = _string(value)
    if not valid(text):
        raise _Problem(f"expected {expected}, got {text!r}")
    return text


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Problem(f"expected a string, got {_describe(value)}")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Problem(f"expected true or false, got {_describe(value)}")
    return value


def _integer(value: object, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Problem(f"expected an integer from {low} to {high}, got {_describe(value)}")
    return value


def _hours(value: object) -> float:
    # Compared as given (NaN fails too): float() of a huge integer would overflow.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_HOURS:
        raise _Problem(f"expected a number of hours > 0 and <= {MAX_HOURS}, got {_describe(value)}")
    if seconds(value) < 1:
        raise _Problem(f"{plain_number(value)} hours is shorter than one second")
    return value


def _unknown_field(name: str) -> str:
    if name in hyperparams.SPECS:
        return f'unknown field ({name} is a hyperparameter: put it under "hyperparameters")'
    if close := closest(name, FIELDS):
        return f"unknown field (did you mean {close}?)"
    return f"unknown field (the fields are {', '.join(FIELDS)})"


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {_number_text(value)}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def _number_text(value: float) -> str:
    try:
        return repr(value)
    except ValueError:  # an int past Python's limit of digits to write out
        return f"of {value.bit_length()} bits"
