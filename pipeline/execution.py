"""Execution input -> CreateTrainingJob request: the input an ERNIE pretraining execution takes.

Start an execution of the pretraining state machine with a JSON object; every field is
optional and `{}` trains with the defaults below. Anything wrong fails the execution
before a training job exists, with an `ExecutionInputError` that names every bad field
(`instance_count: expected an integer from 1 to 16, got 0; hyperparameters.batch_size: ...`).
That includes whatever SageMaker's CreateTrainingJob would refuse: any input gives either
that error or a request that meets every constraint of SageMaker's API model
(pipeline/sagemaker_api.py checks the request before it is returned).

Example:

    {
      "hyperparameters": {"batch_size": 4096, "learning_rate": 0.0001, "use_fp16": true},
      "dataset": "datasets/wiki-zh",
      "instance_type": "ml.p4d.24xlarge",
      "instance_count": 2,
      "spot": true,
      "max_runtime_hours": 48
    }

Fields:

  hyperparameters    object, default {} (every hyperparameter at its default)
      Overrides of the training hyperparameters (contract/hyperparams.py lists them
      all). Values may be strings, numbers or booleans: true/false become "true"/"false",
      numbers are written as Python writes them (0.0001 -> "0.0001", 8192 -> "8192"). An
      unknown name or a bad value fails, naming it (`hyperparameters.batch_size: bad value
      'x': expected an integer`). Names starting with `sagemaker_` are reserved. As
      SageMaker requires, a value has at most 2500 characters and no line break (\n, \r,
      U+0085, U+2028, U+2029), and there are at most 100 of them. A job's names and
      values (a stage's with the top-level ones) take at most 16 KiB as JSON: Step
      Functions holds each state's data to 256 KiB.
      `checkpoints` may only be empty or /opt/ml/checkpoints: only that folder is synced
      to S3, and a retried attempt resumes from there.
  dataset            string, default "datasets/demo"
      Key prefix of a prepared dataset in the stack's bucket (what `ernie-sm upload`
      printed), under datasets/: up to 512 letters, digits and !_.*'()=@+- with single
      slashes. The job reads `<dataset>/train/` as its train channel and
      `<dataset>/valid/` as its valid channel. Not an s3:// URI.
  use_validation     boolean, default true
      Give the job the valid channel. Set false for a dataset prepared without a
      validation split (there is no `<dataset>/valid/` then, and the job would fail).
  instance_type      string, default "ml.g5.2xlarge"
      SageMaker training instance type, e.g. ml.g5.12xlarge, ml.p4d.24xlarge: one of
      those CreateTrainingJob's model lists (a near miss gets "did you mean ...?").
  instance_count     integer 1..16, default 1
      Hosts; training is data-parallel over every GPU of every host.
  volume_size_gb     integer 1..16384, default 100
      Storage volume per host in GB (channels are downloaded there).
  spot               boolean, default true
      Managed spot training: cheaper, may be interrupted; the job then resumes from its
      newest checkpoint.
  max_runtime_hours  number > 0, at most 672 (28 days), default 24
      Training time after which SageMaker stops the job.
  max_wait_hours     number, spot only, default min(2 x max_runtime_hours, 672)
      Time for the whole spot job, waiting for capacity included; at least
      max_runtime_hours and at most 672. Giving it with "spot": false is an error.
  warm_start_model   string or null, default null
      s3://<bucket>/models/.../model.tar.gz of a previous job in the stack's bucket: the
      job starts from its weights (the `model` channel). Checkpoints of this execution
      win over it when an attempt is retried.
  job_name_prefix    string, default the stack's name prefix ("ernie")
      Start of the training-job names: 1..30 letters, digits and hyphens, beginning
      and ending with a letter or digit. It must be the stack's name prefix or begin with
      it and a hyphen ("ernie-exp1"), the only names the state machine may create.
  evaluation         object or null, default null (no evaluation)
      After the training job succeeds, a second SageMaker job runs `ernie-sm evaluate`
      on its model: it fine-tunes the model (and a baseline) on a labelled set and
      scores both on its test split. Problems are named `evaluation.<field>`. Fields:
        dataset            string, required: a key prefix under datasets/ (as dataset)
            holding train.tsv, dev.tsv and test.tsv; the job's eval channel.
        hyperparameters    object, default {}: overrides of the evaluation
            hyperparameters (hyperparams.EVAL_SPECS; `ernie-sm evaluate` in the README),
            written as the training ones are (`evaluation.hyperparameters.batch_size`).
        baseline_model     string or null, default null: s3://<bucket>/models/.../
            model.tar.gz (as warm_start_model), the baseline channel; without it the
            baseline is the same architecture randomly initialised.
        instance_type      string, default the training's instance_type.
        max_runtime_hours  number > 0, at most 672, default 4.
      The evaluation job runs on one host, on demand (no spot, no checkpoints), with
      the training's volume_size_gb, under the name `<prefix>-eval-<execution>-...`.
  stages             array or null, default null (one training job, as above)
      ERNIE 2.0 continual multi-task pretraining: 1 to 8 stages, trained in order, one
      training job each; stage i > 0 starts from the model of stage i - 1 (the `model`
      channel), stage 0 from warm_start_model when given. The evaluation, if any, runs
      once, on the last stage's model. Problems are named `stages[<i>].<field>`. Fields:
        tasks              object, required: {task name: sampling weight}, at least one
            task of contract/tasks.py's TASKS (knowledge_masking, sentence_reordering,
            sentence_distance, token_document_relation), each weight a finite number
            > 0, not subnormal and at least 2^-53 of their sum, which is finite
            (tasks.parse_mix). The job's `tasks` hyperparameter (`knowledge_masking:1,...`).
        steps              integer 1..2147483647, required: the job's num_train_steps.
        hyperparameters    object, default {}: overrides for this stage only, over the
            top-level hyperparameters, checked as they are
            (`stages[0].hyperparameters.batch_size`).
        name               string, default "stage-<i + 1>": a label for the output and
            failure notices, 1..32 lower-case letters, digits and hyphens, starting with
            a letter and ending with a letter or digit, unique among the stages.
      A stage's job gets the top-level hyperparameters, then the stage's, then `tasks`
      and `num_train_steps` from its tasks and steps; those two may not be set in any
      hyperparameters when stages is given. Every stage is checked when the execution
      starts, before any job runs; so is the time they may take: every attempt of every
      stage running max_wait_hours (spot) or max_runtime_hours, and of the evaluation,
      must fit the execution's timeout (a year; the stack's EXECUTION_LIMITS).

Each attempt of an execution gets a fresh job name
`<prefix>-<execution name>-<hash>-a<attempt>-<UTC yyyymmddHHMMSS>`; all attempts of one
execution share the checkpoint folder `s3://<bucket>/checkpoints/<execution name>/`, so a
retried attempt resumes where the previous one stopped. Models land under
`s3://<bucket>/models/<job name>/output/model.tar.gz`. A stage's jobs are
`<prefix>-s<i + 1>-<execution name>-...` and share the folder
`s3://<bucket>/checkpoints/<execution name>/stage-<i + 1>/`: its own, so that a stage
never resumes from the checkpoints of the stage before it.

The stack's own settings (image, role, KMS key, subnets, security groups, tags) are
checked against the same model when the Prepare function reads them: a stack that
SageMaker would refuse fails every execution with a `StackEnvironmentError`.

This module runs in the state machine's Prepare Lambda function, whose bundle holds only
the modules LAMBDA_MODULES of stacks/training_pipeline.py names (this one, sagemaker_api
with its JSON, and the trainer's errors, hyperparams, metrics and tasks): standard library
only.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ernie_sm.contract import hyperparams, tasks
from ernie_sm.contract.errors import TrainingError
from ernie_sm.contract.metrics import EVAL_METRIC_DEFINITIONS, METRIC_DEFINITIONS
from ernie_sm.contract.s3_uri import BUCKET_PATTERN, S3_URI_PATTERN
from ernie_sm.pipeline import sagemaker_api

# Channel names; the same as training.layout's (not importable here: not in the bundle).
TRAIN_CHANNEL, VALID_CHANNEL, MODEL_CHANNEL = "train", "valid", "model"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# Limits of this project; SageMaker's own come from its API model (sagemaker_api).
MAX_HOURS = 28 * 24  # SageMaker's longest training run
MAX_INSTANCES = 16
MAX_VOLUME_GB = 16384
MAX_PREFIX = 512
# Patterns are used with fullmatch.
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9!_.*'()=@+/-]+")
MODEL_ARCHIVE = "model.tar.gz"
EXECUTION_TAGS = ("ExecutionName", "Attempt", "Dataset")  # added to the stack's tags

DEFAULT_DATASET = "datasets/demo"
DEFAULT_INSTANCE_TYPE = "ml.g5.2xlarge"
DEFAULT_RUNTIME_HOURS = 24
DEFAULT_EVAL_RUNTIME_HOURS = 4
EVAL_CHANNEL, BASELINE_CHANNEL = "eval", "baseline"  # evaluate's channels, with MODEL_CHANNEL
EVAL_JOB_MARK = "eval"  # evaluation jobs are `<prefix>-eval-...`
MAX_STAGES = 8
# A job's hyperparameters as JSON text (UTF-8 bytes of the names and values). Step Functions
# holds each state's input and output to 256 KiB (262,144 bytes; Step Functions quotas, and
# States.DataLimitExceeded past it, which no Catch takes): a job's request and, after it,
# its DescribeTrainingJob both carry them, beside the stages so far. SageMaker alone would
# take 100 values of 2500 characters, some 270 KB. tests/test_state_payloads.py proves that
# no input this allows makes any state's data too large.
MAX_HYPERPARAMETERS_BYTES = 16 * 1024
MAX_STEPS = 2**31 - 1
STAGE_NAME_PATTERN = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
# Hyperparameters a stage sets from its own fields: {hyperparameter: stage field}.
STAGE_SETS = {"tasks": "tasks", "num_train_steps": "steps"}
# Job names: `<prefix>[-<mark>]-<execution>-<digest>-a<attempt>-<yyyymmddHHMMSS>` (job_name),
# the execution part shortened to fit SageMaker's TrainingJobName. A prefix leaves room
# for the longest mark and tail Prepare appends; a stack's max_attempts is at most
# MAX_ATTEMPTS so that the attempt's digits fit too.
JOB_NAME_LIMIT = sagemaker_api.member_shape("TrainingJobName")["max"]
MAX_ATTEMPTS = 99
DIGEST_CHARS = 8
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
LONGEST_MARK = max((EVAL_JOB_MARK, f"s{MAX_STAGES}"), key=len)
JOB_NAME_PREFIX_MAX = JOB_NAME_LIMIT - len(
    f"-{LONGEST_MARK}-{'0' * DIGEST_CHARS}-a{MAX_ATTEMPTS}-"
    + datetime(2000, 1, 1).strftime(TIMESTAMP_FORMAT)
)
# A stack's name prefix begins every job name, and the state machine may create only
# `training-job/<prefix>-*`. SageMaker lower-cases training-job ARNs (boto/boto3#4606,
# aws/sagemaker-experiments#172) while IAM compares ARNs case-sensitively, so a prefix
# with upper case would be denied every job: lower case only, and TrainingJobName's
# other characters (no "_").
NAME_PREFIX_PATTERN = re.compile(r"[a-z0-9](?:-*[a-z0-9])*")


# The longest message of an ExecutionInputError. Lambda hands the state machine its error
# as a JSON Cause (message, type, stack trace), which the state machine parses; Step
# Functions holds a Cause to 32,768 characters, and one cut short would no longer parse.
MAX_MESSAGE = 8192


class ExecutionInputError(TrainingError):
    """The execution input is unusable; the message names every bad field (as many as fit
    in MAX_MESSAGE characters, then how many more there are; `problems` has them all)."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        message = "invalid execution input: "
        items = [f"{name}: {problem}" for name, problem in self.problems.items()]
        for shown, item in enumerate(items):
            more = f"; ... and {len(items) - shown} more"
            text = item if shown == 0 else f"; {item}"
            if len(message) + len(text) + len(more) > MAX_MESSAGE:
                room = MAX_MESSAGE - len(message) - len(more) - 3
                if shown == 0:  # one long problem: its start
                    message += text[:room] + "..."
                    more = f"; ... and {len(items) - 1} more" if len(items) > 1 else ""
                message += more
                break
            message += text
        super().__init__(message)


class StackEnvironmentError(TrainingError):
    """The Prepare function was deployed without the settings it needs, or with ones
    SageMaker would refuse."""


class ContractGapError(Exception):
    """The contract built a request SageMaker would refuse: a bug here, not bad input."""

    def __init__(self, violations: list[sagemaker_api.Violation]) -> None:
        self.violations = violations
        fields = ", ".join(dict.fromkeys(v.path for v in violations))
        super().__init__(
            f"the CreateTrainingJob request breaks SageMaker's constraints at {fields}, which "
            "the execution-input contract should have refused: "
            + sagemaker_api.validation_message([v.message() for v in violations])
        )


@dataclass(frozen=True)
class EvaluationInput:
    """The validated `evaluation` field, defaults filled in."""

    dataset: str
    hyperparameters: dict[str, str] = field(default_factory=dict)
    baseline_model: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    max_runtime_hours: float = DEFAULT_EVAL_RUNTIME_HOURS

    @property
    def max_runtime_seconds(self) -> int:
        return _seconds(self.max_runtime_hours)


EVALUATION_FIELDS: tuple[str, ...] = tuple(EvaluationInput.__dataclass_fields__)


@dataclass(frozen=True)
class StageInput:
    """One validated entry of `stages`: its overrides alone (stage_hyperparameters merges)."""

    name: str
    tasks: dict[str, float]
    steps: int
    hyperparameters: dict[str, str] = field(default_factory=dict)


STAGE_FIELDS: tuple[str, ...] = tuple(StageInput.__dataclass_fields__)


@dataclass(frozen=True)
class ExecutionInput:
    """A validated execution input, defaults filled in (job_name_prefix None: the stack's)."""

    hyperparameters: dict[str, str] = field(default_factory=dict)
    dataset: str = DEFAULT_DATASET
    use_validation: bool = True
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    volume_size_gb: int = 100
    spot: bool = True
    max_runtime_hours: float = DEFAULT_RUNTIME_HOURS
    max_wait_hours: float | None = 2 * DEFAULT_RUNTIME_HOURS
    warm_start_model: str | None = None
    job_name_prefix: str | None = None
    evaluation: EvaluationInput | None = None
    stages: tuple[StageInput, ...] | None = None

    @property
    def max_runtime_seconds(self) -> int:
        return _seconds(self.max_runtime_hours)

    @property
    def max_wait_seconds(self) -> int | None:
        return None if self.max_wait_hours is None else _seconds(self.max_wait_hours)

    def to_dict(self) -> dict[str, Any]:
        """The normalised input as plain JSON-ready data."""
        return asdict(self)


# The top-level fields, in the order they are checked and documented.
FIELDS: tuple[str, ...] = tuple(ExecutionInput.__dataclass_fields__)


@dataclass(frozen=True)
class ExecutionLimits:
    """How the state machine retries jobs and how long it lets an execution run."""

    max_attempts: int
    backoff_seconds: tuple[int, ...]  # before attempt 2, 3, ...
    timeout_seconds: int


def execution_seconds(job_seconds: list[int], max_attempts: int, backoffs: tuple[int, ...]) -> int:
    """How long an execution of these jobs may take: every attempt of every job as long as
    SageMaker lets it run, the back-offs between them and an hour for the steps around."""
    return max_attempts * sum(job_seconds) + len(job_seconds) * sum(backoffs) + 3600


@dataclass(frozen=True)
class StackEnvironment:
    """What the deployed stack tells the Prepare function (its environment variables)."""

    image_uri: str
    role_arn: str
    bucket: str
    kms_key_arn: str | None = None
    name_prefix: str = "ernie"
    dataset_prefix: str = "datasets"
    output_prefix: str = "models"
    checkpoint_prefix: str = "checkpoints"
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    limits: ExecutionLimits | None = None  # None: no input is too long for the execution

    def __post_init__(self) -> None:
        missing = [n for n in ("image_uri", "role_arn", "bucket") if not getattr(self, n)]
        if missing:
            raise StackEnvironmentError(f"stack environment lacks {', '.join(missing)}")
        if bool(self.subnets) != bool(self.security_groups):
            raise StackEnvironmentError(
                "a VPC needs both subnets and security groups (SUBNETS, SECURITY_GROUPS)"
            )
        problem = name_prefix_problem(self.name_prefix)
        if problem:
            raise StackEnvironmentError(f"NAME_PREFIX {problem}")
        problems = _environment_problems(self)
        if problems:
            raise StackEnvironmentError(
                "SageMaker would refuse the stack's settings: " + "; ".join(problems)
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> StackEnvironment:
        """Read IMAGE_URI, ROLE_ARN, BUCKET (required); KMS_KEY_ARN, NAME_PREFIX,
        DATASET_PREFIX, OUTPUT_PREFIX, CHECKPOINT_PREFIX, SUBNETS and SECURITY_GROUPS
        (comma-separated), TAGS (a JSON object) and EXECUTION_LIMITS (ExecutionLimits as
        a JSON object) are optional."""
        missing = [n for n in ("IMAGE_URI", "ROLE_ARN", "BUCKET") if not environ.get(n)]
        if missing:
            raise StackEnvironmentError(
                f"the Prepare function's environment lacks {', '.join(missing)}"
            )
        tags: Any = {}
        if environ.get("TAGS"):
            try:
                tags = json.loads(environ["TAGS"])
            except json.JSONDecodeError as exc:
                raise StackEnvironmentError(f"TAGS is not JSON: {exc}") from None
            if not isinstance(tags, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
            ):
                raise StackEnvironmentError("TAGS must be a JSON object of strings")
        limits = None
        if environ.get("EXECUTION_LIMITS"):
            try:
                given = json.loads(environ["EXECUTION_LIMITS"])
                limits = ExecutionLimits(
                    int(given["max_attempts"]),
                    tuple(int(s) for s in given["backoff_seconds"]),
                    int(given["timeout_seconds"]),
                )
            except (ValueError, TypeError, KeyError) as exc:
                raise StackEnvironmentError(f"EXECUTION_LIMITS is unreadable: {exc!r}") from None
        optional = {
            "name_prefix": "NAME_PREFIX",
            "dataset_prefix": "DATASET_PREFIX",
            "output_prefix": "OUTPUT_PREFIX",
            "checkpoint_prefix": "CHECKPOINT_PREFIX",
        }
        return cls(
            image_uri=environ["IMAGE_URI"],
            role_arn=environ["ROLE_ARN"],
            bucket=environ["BUCKET"],
            kms_key_arn=environ.get("KMS_KEY_ARN") or None,
            subnets=_split(environ.get("SUBNETS", "")),
            security_groups=_split(environ.get("SECURITY_GROUPS", "")),
            tags=tags,
            limits=limits,
            **{name: environ[var].strip("/") for name, var in optional.items() if environ.get(var)},
        )


def _environment_problems(env: StackEnvironment) -> list[str]:
    """What in the stack's settings S3 or SageMaker would refuse, setting by setting."""
    problems = (
        []
        if BUCKET_PATTERN.fullmatch(env.bucket)
        else [f"bucket: {env.bucket!r} is not an S3 bucket name"]
    )
    for name in ("dataset_prefix", "output_prefix", "checkpoint_prefix"):
        if not _valid_key_prefix(getattr(env, name)):
            problems.append(f"{name}: {getattr(env, name)!r} is not a key prefix")
    room = sagemaker_api.member_shape("Tags")["max"] - len(EXECUTION_TAGS)
    if len(_stack_tags(env)) > room:
        problems.append(f"tags: at most {room} (each job adds {', '.join(EXECUTION_TAGS)})")
    return problems + _refused_settings(env)


def _refused_settings(env: StackEnvironment) -> list[str]:
    """The settings that go into the request as they are, checked as the request's members."""
    members = {
        "image_uri": ("AlgorithmSpecification.TrainingImage", env.image_uri),
        "role_arn": ("RoleArn", env.role_arn),
        "kms_key_arn": ("OutputDataConfig.KmsKeyId", env.kms_key_arn),
        "subnets": ("VpcConfig.Subnets", list(env.subnets)),
        "security_groups": ("VpcConfig.SecurityGroupIds", list(env.security_groups)),
        "tags": ("Tags", _stack_tags(env)),
    }
    return [
        f"{name}: {violation.message()}"
        for name, (member, value) in members.items()
        if value  # absent optional settings leave their member out of the request
        for violation in sagemaker_api.check_member(member, value)
    ]


def _stack_tags(env: StackEnvironment) -> list[dict[str, str]]:
    # aws: is reserved for AWS's own tags; SageMaker refuses it in a request.
    return [{"Key": k, "Value": v} for k, v in env.tags.items() if not k.startswith("aws:")]


# ---------------------------------------------------------------------------------------
# Parsing


def parse_input(raw: object) -> ExecutionInput:
    """Validate an execution input and fill in the defaults; raise ExecutionInputError."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ExecutionInputError({"(input)": f"expected a JSON object, got {_describe(raw)}"})
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}

    def check(name: str, parse: Any) -> None:
        if name not in raw:
            return
        try:
            values[name] = parse(raw[name])
        except _Problem as exc:
            problems[name] = str(exc)

    if "hyperparameters" in raw:
        hp, hp_problems = _hyperparameters(raw["hyperparameters"])
        problems.update(hp_problems)
        if not hp_problems:
            values["hyperparameters"] = hp
    check("dataset", _dataset)
    check("use_validation", _boolean)
    check("instance_type", _instance_type)
    check("instance_count", lambda v: _integer(v, 1, MAX_INSTANCES))
    check("volume_size_gb", lambda v: _integer(v, 1, MAX_VOLUME_GB))
    check("spot", _boolean)
    check("max_runtime_hours", _hours)
    check("max_wait_hours", lambda v: None if v is None else _hours(v))
    check("warm_start_model", _model_uri)
    check("job_name_prefix", _job_name_prefix)
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
    for name in raw:
        if name not in FIELDS:
            problems[str(name)] = _unknown_field(str(name))

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
    elif "max_runtime_hours" not in problems and _seconds(wait) < _seconds(runtime):
        problems["max_wait_hours"] = (
            f"{_number(wait)} is less than max_runtime_hours ({_number(runtime)}): "
            "the spot job's whole time must include its training time"
        )
    problems.update(_hyperparameter_sizes(values))
    if problems:
        raise ExecutionInputError(problems)
    return ExecutionInput(**values)


def _json_bytes(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _hyperparameter_sizes(values: Mapping[str, Any]) -> dict[str, str]:
    """{field: problem} for each job whose hyperparameters pass MAX_HYPERPARAMETERS_BYTES:
    the training's (each stage's merged with the top-level ones) and the evaluation's."""
    common: dict[str, str] = values.get("hyperparameters", {})
    jobs: dict[str, Mapping[str, str]] = {"hyperparameters": common}
    for index, stage in enumerate(values.get("stages") or ()):
        jobs[f"stages[{index}].hyperparameters"] = _merged_hyperparameters(common, stage)
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
            hint = _hint(name, EVALUATION_FIELDS, "fields")
            problems[f"evaluation.{name}"] = f"unknown field ({hint})"
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
    `problems` as `<where>.<field>`."""
    for name, parse in parsers.items():
        if name in value:
            try:
                values[name] = parse(value[name])
            except _Problem as exc:
                problems[f"{where}.{name}"] = str(exc)


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
            problems[f"{where}.{name}"] = f"unknown field ({_hint(name, STAGE_FIELDS, 'fields')})"
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
            problems[f"{where}.{name}"] = f"unknown task ({_hint(name, tasks.TASKS, 'tasks')})"
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
    text = _string(value)
    if not STAGE_NAME_PATTERN.fullmatch(text):
        raise _Problem(
            "expected 1 to 32 lower-case letters, digits and hyphens, starting with a letter "
            f"and ending with a letter or digit, got {text!r}"
        )
    return text


def _merged_hyperparameters(common: Mapping[str, str], stage: StageInput) -> dict[str, str]:
    return {
        **common,
        **stage.hyperparameters,
        "tasks": tasks.format_weights(stage.tasks),
        "num_train_steps": str(stage.steps),
    }


def stage_hyperparameters(inp: ExecutionInput, index: int) -> dict[str, str]:
    """The hyperparameters of stage `index`'s job: the top-level ones, the stage's, and
    tasks and num_train_steps from its tasks and steps."""
    return _merged_hyperparameters(inp.hyperparameters, _stage_of(inp, index))


def _stage_of(inp: ExecutionInput, index: int) -> StageInput:
    if inp.stages is None:
        raise ValueError("the execution input has no stages")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(inp.stages):
        raise ValueError(f"stage must be an index from 0 to {len(inp.stages) - 1}, got {index!r}")
    return inp.stages[index]


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
        reason = _refusal(member, part)
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
    prefix = text.strip("/")
    if not _valid_key_prefix(prefix):
        raise _Problem(
            f"expected a key prefix such as {DEFAULT_DATASET!r} (up to {MAX_PREFIX} letters, "
            f"digits, !_.*'()=@+- and single slashes), got {text!r}"
        )
    return prefix


def _instance_type(value: object) -> str:
    text = _string(value)
    known = sagemaker_api.member_shape("ResourceConfig.InstanceType")["enum"]
    if text not in known:
        close = difflib.get_close_matches(text.lower(), known, n=1)  # the types are lower case
        hint = f"did you mean {close[0]}?" if close else f"e.g. {DEFAULT_INSTANCE_TYPE}"
        raise _Problem(f"{text!r} is not a SageMaker training instance type ({hint})")
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
    reason = _refusal("InputDataConfig.member.DataSource.S3DataSource.S3Uri", text)
    if reason:
        raise _Problem(f"SageMaker refuses it as an S3Uri: {reason}")
    return text


def _job_name_prefix(value: object) -> str:
    text = _string(value)
    if not _valid_prefix(text):
        raise _Problem(
            f"expected 1 to {JOB_NAME_PREFIX_MAX} letters, digits and hyphens, starting and "
            f"ending with a letter or digit, got {text!r}"
        )
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
    if _seconds(value) < 1:
        raise _Problem(f"{_number(value)} hours is shorter than one second")
    return value


def _unknown_field(name: str) -> str:
    if name in hyperparams.SPECS:
        return f'unknown field ({name} is a hyperparameter: put it under "hyperparameters")'
    close = difflib.get_close_matches(name, FIELDS, n=1)
    if close:
        return f"unknown field (did you mean {close[0]}?)"
    return f"unknown field (the fields are {', '.join(FIELDS)})"


def _hint(name: object, known: Iterable[str], plural: str) -> str:
    """ "did you mean <the closest of known>?", else the list of them."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f"did you mean {close[0]}?" if close else f"the {plural} are {', '.join(known)}"


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


def _refusal(member: str, value: object) -> str | None:
    """SageMaker's reason to refuse `value` as `member` (model path), None if it takes it."""
    violations = sagemaker_api.check_member(member, value)
    return "; ".join(v.constraint for v in violations) or None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _seconds(hours: float) -> int:
    return round(hours * 3600)


def _valid_prefix(text: str) -> bool:
    return 0 < len(text) <= JOB_NAME_PREFIX_MAX and not _refusal("TrainingJobName", text)


def name_prefix_problem(prefix: str) -> str | None:
    """Why a stack's name prefix would fail its executions, or None: the one check of
    the stack's synth (check_name_prefix) and of the Prepare function's environment."""
    if (
        0 < len(prefix) <= JOB_NAME_PREFIX_MAX
        and NAME_PREFIX_PATTERN.fullmatch(prefix)
        and not _refusal("TrainingJobName", prefix)
    ):
        return None
    return (
        f"{prefix!r} is refused: expected 1 to {JOB_NAME_PREFIX_MAX} lower-case letters, "
        "digits and hyphens, starting and ending with a letter or digit. It begins every "
        f"training job's name (at most {JOB_NAME_LIMIT} characters with what each job "
        f"appends, -{LONGEST_MARK}-<execution>-<hash>-a<attempt>-<time>), and SageMaker "
        "lower-cases the job ARNs that the state machine may create (training-job/<prefix>-*)"
    )


def check_name_prefix(prefix: str, setting: str = "name_prefix") -> None:
    """Raise ValueError, naming `setting`, for a name prefix every execution would fail on."""
    problem = name_prefix_problem(prefix)
    if problem:
        raise ValueError(f"{setting} {problem}")


def _valid_key_prefix(prefix: str) -> bool:
    return (
        0 < len(prefix) <= MAX_PREFIX
        and bool(PREFIX_PATTERN.fullmatch(prefix))
        and all(part not in ("", ".", "..") for part in prefix.split("/"))
    )


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# ---------------------------------------------------------------------------------------
# Names


def job_name(prefix: str, execution_name: str, attempt: int, now: datetime, mark: str = "") -> str:
    """`<prefix>-<execution>-<hash>-a<attempt>-<yyyymmddHHMMSS>`: fresh per attempt, <= 63 chars.

    A `mark` ("eval") follows the prefix: `<prefix>-eval-<execution>-...`, still a name the
    state machine may create (`<name prefix>-*`).

    The execution part is the execution name with every run of other characters than
    letters and digits made a hyphen, shortened to fit; the hash (of the whole name) keeps
    names apart that sanitise or shorten alike. `now` is taken as UTC when naive.
    """
    if not _valid_prefix(prefix):
        raise ValueError(
            f"job name prefix {prefix!r} is not 1..{JOB_NAME_PREFIX_MAX} letters, digits and hyphens"
        )
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be an integer >= 1, got {attempt!r}")
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    tail = [_digest(execution_name), f"a{attempt}", now.strftime(TIMESTAMP_FORMAT)]
    limit = JOB_NAME_LIMIT
    head = [prefix, *([mark] if mark else [])]
    room = limit - len("-".join([*head, *tail])) - 1
    slug = _slug(execution_name)[: max(room, 0)].rstrip("-")
    name = "-".join([*head, *([slug] if slug else []), *tail])
    if _refusal("TrainingJobName", name):
        raise ValueError(f"cannot make a job name of <= {limit} characters from {name!r}")
    return name


def execution_key(execution_name: str) -> str:
    """The execution's folder name in S3: the name itself when it is a plain one."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}", execution_name) and ".." not in (
        execution_name
    ):
        return execution_name
    slug = _slug(execution_name)[:60].rstrip("-")
    return f"{slug}-{_digest(execution_name)}" if slug else _digest(execution_name)


def checkpoint_uri(env: StackEnvironment, execution_name: str, stage: int | None = None) -> str:
    """Shared by every attempt of one execution, so that a retry resumes from its checkpoints;
    of one stage (index) with `stage`, so that a stage does not resume from the one before."""
    folder = f"s3://{env.bucket}/{env.checkpoint_prefix}/{execution_key(execution_name)}/"
    return folder if stage is None else f"{folder}stage-{stage + 1}/"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


# ---------------------------------------------------------------------------------------
# The request


def has_local_storage(instance_type: str) -> bool:
    """Whether the instance has NVMe instance storage, where VolumeKmsKeyId is refused.

    `d` in the family's attributes (g4dn, p3dn, p4d, r5d, m6id) or GPU/accelerator
    families from generation 5 on (g5, g6e, p5, p6-b200, trn1) have it. Erring towards
    "yes" only drops VolumeKmsKeyId, leaving SageMaker's default volume encryption.
    """
    family = instance_type.split(".")[1] if instance_type.count(".") == 2 else ""
    match = re.match(r"^([a-z]+?)(\d+)([a-z]*)", family)
    if not match:
        return True
    letters, generation, attributes = match.group(1), int(match.group(2)), match.group(3)
    if "d" in attributes or letters == "trn":
        return True
    return letters in ("g", "p") and generation >= 5


def check_against_stack(inp: ExecutionInput, env: StackEnvironment) -> dict[str, str]:
    """Problems only the stack's settings reveal: what its roles may not read or create,
    and stages that could outlast the execution's timeout."""
    problems: dict[str, str] = {}
    prefix = inp.job_name_prefix
    if (
        prefix is not None
        and prefix != env.name_prefix
        and not prefix.startswith(f"{env.name_prefix}-")
    ):
        problems["job_name_prefix"] = (
            f"must be {env.name_prefix!r} or start with '{env.name_prefix}-' "
            f"(the state machine may only create training jobs named {env.name_prefix}-*), "
            f"got {prefix!r}"
        )
    if not inp.dataset.startswith(f"{env.dataset_prefix}/"):
        problems["dataset"] = (
            f"must be under {env.dataset_prefix}/ (where the training role may read), "
            f"got {inp.dataset!r}"
        )
    models = {"warm_start_model": inp.warm_start_model}
    evaluation = inp.evaluation
    if evaluation is not None:
        models["evaluation.baseline_model"] = evaluation.baseline_model
        if not evaluation.dataset.startswith(f"{env.dataset_prefix}/"):
            problems["evaluation.dataset"] = (
                f"must be under {env.dataset_prefix}/ (where the training role may read), "
                f"got {evaluation.dataset!r}"
            )
    limits = env.limits
    if limits is not None and inp.stages is not None:
        longest = execution_seconds(_job_seconds(inp), limits.max_attempts, limits.backoff_seconds)
        if longest > limits.timeout_seconds:
            problems["stages"] = (
                f"{len(inp.stages)} stages of up to {_number(_seconds_of_job(inp) / 3600)} "
                f"hours a job, {limits.max_attempts} attempts each, could take "
                f"{longest / 86400:.0f} days, more than the execution's limit of "
                f"{limits.timeout_seconds / 86400:.0f} days: lower max_runtime_hours "
                "(and max_wait_hours) or run fewer stages"
            )
    for name, uri in models.items():
        if uri is not None and not _stack_model(uri, env):
            problems[name] = (
                f"must be under s3://{env.bucket}/{env.output_prefix}/ (where the training "
                f"role may read models), got {uri!r}"
            )
    return problems


def _job_seconds(inp: ExecutionInput) -> list[int]:
    """How long SageMaker may let each job of the execution run, waiting for spot included."""
    training = [_seconds_of_job(inp)] * (1 if inp.stages is None else len(inp.stages))
    evaluation = [] if inp.evaluation is None else [inp.evaluation.max_runtime_seconds]
    return training + evaluation


def _seconds_of_job(inp: ExecutionInput) -> int:
    return inp.max_wait_seconds or inp.max_runtime_seconds


def _stack_model(uri: str, env: StackEnvironment) -> bool:
    match = S3_URI_PATTERN.fullmatch(uri)
    return (
        match is not None
        and match.group(1) == env.bucket
        and match.group(2).startswith(f"{env.output_prefix}/")
    )


def training_job_request(
    inp: ExecutionInput,
    env: StackEnvironment,
    execution_name: str,
    attempt: int,
    now: datetime,
    stage: int | None = None,
    previous_model: str | None = None,
) -> dict[str, Any]:
    """CreateTrainingJob parameters, as the API and `createTrainingJob.sync` take them.

    With `stages` in the input, `stage` (an index) picks the stage, and stage i > 0 needs
    `previous_model`: the model.tar.gz of stage i - 1, its warm start."""
    problems = check_against_stack(inp, env)
    if problems:
        raise ExecutionInputError(problems)
    if (stage is None) != (inp.stages is None):
        raise ValueError("a stage index goes with an input that has stages, and only with one")
    hyperparameters, model = inp.hyperparameters, inp.warm_start_model
    if stage is not None:
        hyperparameters = stage_hyperparameters(inp, stage)
        model = inp.warm_start_model if stage == 0 else _previous_model(previous_model, env)
    prefix = inp.job_name_prefix or env.name_prefix
    mark = "" if stage is None else f"s{stage + 1}"
    name = job_name(prefix, execution_name, attempt, now, mark=mark)
    data = f"s3://{env.bucket}/{inp.dataset}"
    channels = [_s3_channel(TRAIN_CHANNEL, f"{data}/{TRAIN_CHANNEL}/")]
    if inp.use_validation:
        channels.append(_s3_channel(VALID_CHANNEL, f"{data}/{VALID_CHANNEL}/"))
    if model is not None:
        channels.append(_model_channel(MODEL_CHANNEL, model))
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": inp.max_runtime_seconds}
    if inp.spot:
        wait = inp.max_wait_seconds
        stopping["MaxWaitTimeInSeconds"] = max(
            wait if wait is not None else 2 * inp.max_runtime_seconds, inp.max_runtime_seconds
        )
    request = _job_request(
        env,
        name=name,
        algorithm={"MetricDefinitions": [dict(d) for d in METRIC_DEFINITIONS]},
        hyperparameters=hyperparameters,
        channels=channels,
        resources=(inp.instance_type, inp.instance_count, inp.volume_size_gb),
        stopping=stopping,
        tags=_tags(env, execution_name, attempt, inp.dataset),
    )
    request["EnableManagedSpotTraining"] = inp.spot
    request["CheckpointConfig"] = {
        "S3Uri": checkpoint_uri(env, execution_name, stage),
        "LocalPath": CHECKPOINT_LOCAL_PATH,
    }
    return _checked(request)


def _previous_model(uri: str | None, env: StackEnvironment) -> str:
    """The model the previous stage's job wrote: in the stack's bucket, where it writes."""
    if uri is None or not _stack_model(uri, env) or posixpath.basename(uri) != MODEL_ARCHIVE:
        raise ValueError(
            f"a stage after the first needs the previous stage's model, s3://{env.bucket}/"
            f"{env.output_prefix}/.../{MODEL_ARCHIVE}; got {uri!r}"
        )
    return uri


def evaluation_job_request(
    inp: ExecutionInput,
    env: StackEnvironment,
    execution_name: str,
    attempt: int,
    now: datetime,
    model_uri: str,
) -> dict[str, Any]:
    """CreateTrainingJob parameters of the evaluation of `model_uri` (the trained
    model.tar.gz): `ernie-sm evaluate` (ContainerArguments) with the channels model,
    eval and, when the input names one, baseline."""
    evaluation = inp.evaluation
    if evaluation is None:
        raise ExecutionInputError({"evaluation": "the execution input asks for no evaluation"})
    problems = check_against_stack(inp, env)
    if problems:
        raise ExecutionInputError(problems)
    prefix = inp.job_name_prefix or env.name_prefix
    name = job_name(prefix, execution_name, attempt, now, mark=EVAL_JOB_MARK)
    channels = [
        _model_channel(MODEL_CHANNEL, model_uri),
        _s3_channel(EVAL_CHANNEL, f"s3://{env.bucket}/{evaluation.dataset}/"),
    ]
    if evaluation.baseline_model is not None:
        channels.append(_model_channel(BASELINE_CHANNEL, evaluation.baseline_model))
    request = _job_request(
        env,
        name=name,
        algorithm={
            "MetricDefinitions": [dict(d) for d in EVAL_METRIC_DEFINITIONS],
            "ContainerArguments": ["evaluate"],
        },
        hyperparameters=evaluation.hyperparameters,
        channels=channels,
        resources=(evaluation.instance_type, 1, inp.volume_size_gb),
        stopping={"MaxRuntimeInSeconds": evaluation.max_runtime_seconds},
        tags=_tags(env, execution_name, attempt, evaluation.dataset),
    )
    request["EnableManagedSpotTraining"] = False
    return _checked(request)


def _job_request(
    env: StackEnvironment,
    *,
    name: str,
    algorithm: dict[str, Any],
    hyperparameters: Mapping[str, str],
    channels: list[dict[str, Any]],
    resources: tuple[str, int, int],
    stopping: dict[str, int],
    tags: list[dict[str, str]],
) -> dict[str, Any]:
    """What every job of the stack's requests has: the image, role, output, encryption,
    isolation, tags and VPC; `resources` is (instance type, count, volume GB)."""
    instance_type, count, volume = resources
    output: dict[str, Any] = {"S3OutputPath": f"s3://{env.bucket}/{env.output_prefix}/"}
    resource_config: dict[str, Any] = {
        "InstanceType": instance_type,
        "InstanceCount": count,
        "VolumeSizeInGB": volume,
    }
    if env.kms_key_arn:
        output["KmsKeyId"] = env.kms_key_arn
        if not has_local_storage(instance_type):
            resource_config["VolumeKmsKeyId"] = env.kms_key_arn
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": env.image_uri,
            "TrainingInputMode": "File",
            **algorithm,
        },
        "RoleArn": env.role_arn,
        "HyperParameters": dict(hyperparameters),
        "InputDataConfig": channels,
        "OutputDataConfig": output,
        "ResourceConfig": resource_config,
        "StoppingCondition": stopping,
        "EnableNetworkIsolation": True,
        "EnableInterContainerTrafficEncryption": True,
        "Tags": tags,
    }
    if env.subnets:
        request["VpcConfig"] = {
            "SecurityGroupIds": list(env.security_groups),
            "Subnets": list(env.subnets),
        }
    return request


def _checked(request: dict[str, Any]) -> dict[str, Any]:
    violations = sagemaker_api.check_request(request)
    if violations:
        raise ContractGapError(violations)
    return request


def _model_channel(name: str, uri: str) -> dict[str, Any]:
    # An S3Prefix of the object's whole key: the channel holds exactly that archive.
    channel = _s3_channel(name, uri)
    channel["ContentType"] = "application/x-sagemaker-model"
    return channel


def _s3_channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }


def _tags(
    env: StackEnvironment, execution_name: str, attempt: int, dataset: str
) -> list[dict[str, str]]:
    tags = {tag["Key"]: tag["Value"] for tag in _stack_tags(env)}
    values = (_tag_value(execution_name), str(attempt), _tag_value(dataset))
    tags.update(zip(EXECUTION_TAGS, values, strict=True))
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def _tag_value(text: str) -> str:
    """`text` with each character a tag value may not hold made "_", cut to fit."""
    allowed = sagemaker_api.regex("Tags.member.Value")
    value = "".join(c if allowed.fullmatch(c) else "_" for c in text)
    limit = sagemaker_api.member_shape("Tags.member.Value")["max"]
    value = value[:limit]
    while sagemaker_api.aws_length(value) > limit:  # characters past U+FFFF count twice
        value = value[:-1]
    return value


# ---------------------------------------------------------------------------------------
# Lambda


def prepare(
    raw: object,
    environ: Mapping[str, str],
    execution: str,
    attempt: int = 1,
    model: str | None = None,
    stage: int | None = None,
    previous_model: str | None = None,
) -> tuple[ExecutionInput, StackEnvironment, dict[str, Any]]:
    """What the Prepare step makes of an execution input, given the Prepare function's
    environment variables: the input (the stack's defaults under it), and the request:
    the training job's, or with `model` (the trained model.tar.gz) the evaluation's. An
    input with stages gets stage `stage`'s (the first when None; see training_job_request)."""
    env = StackEnvironment.from_environ(environ)
    if isinstance(raw, dict):  # the stack's defaults (instance type, ...) under the user's input
        raw = {**json.loads(environ.get("INPUT_DEFAULTS") or "{}"), **raw}
    inp = parse_input(raw)
    now = datetime.now(timezone.utc)
    if model is not None:
        return inp, env, evaluation_job_request(inp, env, execution, attempt, now, model)
    if inp.stages is not None and stage is None:
        stage = 0
    return inp, env, training_job_request(inp, env, execution, attempt, now, stage, previous_model)


def stage_summary(inp: ExecutionInput, index: int) -> dict[str, Any]:
    """What the state machine needs of stage `index`: its index and name, and the index
    of the next stage unless it is the last."""
    stage = _stage_of(inp, index)
    summary: dict[str, Any] = {"index": index, "name": stage.name}
    if inp.stages is not None and index + 1 < len(inp.stages):
        summary["next"] = index + 1
    return summary


def handler(event: dict, context: object) -> dict:
    """The Prepare step: {"input", "execution", "attempt"} -> {"request", "attempt"}.

    With "model" (the S3 URI of the trained model.tar.gz) in the event, the request is the
    evaluation job's (the state machine's "Prepare evaluation"); without it, the training
    job's. For an input with stages, "stage" ({"index": i, "model": the model.tar.gz of
    stage i - 1}, from "Prepare stage"; the first stage without it) picks the stage, and
    the answer has "stage", stage_summary's. Bad input raises ExecutionInputError, which Step
    Functions sees as that error type with the message naming the fields.
    """
    execution = event.get("execution")
    if not isinstance(execution, str) or not execution:
        raise ValueError(f"the event needs the execution name in 'execution', got {execution!r}")
    attempt = event.get("attempt", 1)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"'attempt' must be an integer >= 1, got {attempt!r}")
    model = event.get("model")
    if model is not None and not (isinstance(model, str) and S3_URI_PATTERN.fullmatch(model)):
        raise ValueError(f"'model' must be the S3 URI of a model.tar.gz, got {model!r}")
    stage = event.get("stage") or {}
    if not isinstance(stage, dict) or not set(stage) <= {"index", "model"}:
        raise ValueError(f"'stage' must be an object of index and model, or null, got {stage!r}")
    index, previous = stage.get("index"), stage.get("model")
    inp, _, request = prepare(
        event.get("input"), os.environ, execution, attempt, model, index, previous
    )
    # Only what the state machine selects from the answer (Prepare's ResultSelector): each
    # state's data is held to 256 KiB (Step Functions quotas), and the normalised input
    # beside the request would take a two-stage input past it.
    answer: dict[str, Any] = {"request": request, "attempt": attempt}
    if inp.stages is not None and model is None:
        answer["stage"] = stage_summary(inp, index or 0)
    return answer
