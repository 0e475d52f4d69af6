"""The execution input: its fields, each documented once, here, where it is defined.

Start an execution of the pretraining state machine with a JSON object of these fields;
every field is optional and `{}` trains with the defaults. parsing.parse_input checks an
input; docs/execution-input.md's tables and docs/execution-input.schema.json are generated
from these definitions (pipeline/schema.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ernie_sm.contract import tasks
from ernie_sm.contract.errors import TrainingError
from ernie_sm.pipeline.limits import MAX_HOURS, MAX_INSTANCES, MAX_MESSAGE, MAX_STEPS, MAX_VOLUME_GB

DEFAULT_DATASET = "datasets/demo"
DEFAULT_INSTANCE_TYPE = "ml.g5.2xlarge"
DEFAULT_RUNTIME_HOURS = 24
DEFAULT_EVAL_RUNTIME_HOURS = 4
MODEL_ARCHIVE = "model.tar.gz"
# Hyperparameters a stage sets from its own fields: {hyperparameter: stage field}.
STAGE_SETS = {"tasks": "tasks", "num_train_steps": "steps"}


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


def _doc(help: str, schema: dict[str, Any], shown_default: str | None = None) -> dict[str, Any]:
    """A field's documentation, its metadata: `help`, its JSON Schema (`schema`, without the
    description and default, which schema.py adds) and, where the input's default is not
    the dataclass's, `shown_default` ("required" for a field the input must have)."""
    return {"help": help, "schema": schema, "shown_default": shown_default}


def definition(name: str, nullable: bool = False) -> dict[str, Any]:
    """The schema of a value of one of schema.py's shared definitions, or null."""
    ref = {"$ref": f"#/$defs/{name}"}
    return {"anyOf": [ref, {"type": "null"}]} if nullable else ref


def _integer(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


@dataclass(frozen=True)
class EvaluationInput:
    """After the training job succeeds, a second SageMaker job runs `ernie-sm evaluate` on
    its model: it fine-tunes the model (and a baseline) on a labelled set and scores both on
    its test split. It runs on one host, on demand (no spot, no checkpoints), with the
    training's volume_size_gb, KMS key, network isolation, tags and VPC."""

    dataset: str = field(
        metadata=_doc(
            "Key prefix under `datasets/` (as dataset) holding train.tsv, dev.tsv and test.tsv: "
            "the job's eval channel.",
            definition("key_prefix"),
            shown_default="required",
        ),
    )
    hyperparameters: dict[str, str] = field(
        default_factory=dict,
        metadata=_doc(
            "Overrides of the evaluation hyperparameters (`ernie-sm hyperparameters --evaluate`), "
            "written and checked as the training ones are.",
            definition("evaluation_hyperparameters", nullable=True),
        ),
    )
    baseline_model: str | None = field(
        default=None,
        metadata=_doc(
            "`s3://<bucket>/models/.../model.tar.gz` (as warm_start_model): the baseline channel; "
            "without it the baseline is the same architecture randomly initialised.",
            definition("model_uri", nullable=True),
        ),
    )
    instance_type: str = field(
        default=DEFAULT_INSTANCE_TYPE,
        metadata=_doc(
            "SageMaker instance type of the evaluation job.",
            definition("instance_type"),
            shown_default="the training's instance_type",
        ),
    )
    max_runtime_hours: float = field(
        default=DEFAULT_EVAL_RUNTIME_HOURS,
        metadata=_doc(
            "Time after which SageMaker stops the evaluation job.",
            definition("hours"),
        ),
    )

    @property
    def max_runtime_seconds(self) -> int:
        return seconds(self.max_runtime_hours)


@dataclass(frozen=True)
class StageInput:
    """One training job of ERNIE 2.0's continual multi-task pretraining. Its job gets the
    top-level hyperparameters, then the stage's, then `tasks` and `num_train_steps` from its
    tasks and steps (`knowledge_masking:0.6,sentence_reordering:0.2,...`)."""

    name: str = field(
        metadata=_doc(
            "A label for the output and failure notices: 1 to 32 lower-case letters, digits "
            "and hyphens, starting with a letter and ending with a letter or digit, unique "
            "among the stages.",
            definition("stage_name"),
            shown_default='`"stage-<n>"`',
        ),
    )
    tasks: dict[str, float] = field(
        metadata=_doc(
            f"`{{task name: sampling weight}}`, at least one task of {', '.join(tasks.TASKS)}; "
            "each weight a finite number > 0, not subnormal and at least 2^-53 of their sum, "
            "which is finite. The job's `tasks` hyperparameter (`knowledge_masking:1,...`).",
            definition("tasks"),
            shown_default="required",
        ),
    )
    steps: int = field(
        metadata=_doc(
            "The job's num_train_steps.",
            _integer(1, MAX_STEPS),
            shown_default="required",
        ),
    )
    hyperparameters: dict[str, str] = field(
        default_factory=dict,
        metadata=_doc(
            "Overrides for this stage only, over the top-level hyperparameters, checked as they "
            "are; `tasks` and `num_train_steps` come from the stage's tasks and steps.",
            definition("stage_hyperparameters", nullable=True),
        ),
    )


@dataclass(frozen=True)
class ExecutionInput:
    """A validated execution input, defaults filled in (job_name_prefix None: the stack's)."""

    hyperparameters: dict[str, str] = field(
        default_factory=dict,
        metadata=_doc(
            "Overrides of the training hyperparameters (`ernie-sm hyperparameters`). Values may "
            'be strings, numbers or booleans: true/false become "true"/"false", numbers are '
            'written as Python writes them (0.0001 -> "0.0001"). Names starting with '
            "`sagemaker_` are reserved; a value has at most 2500 characters and no line break, "
            "and a job's names and values take at most 16 KiB as JSON. `checkpoints` may only be "
            "empty or `/opt/ml/checkpoints`, the folder synced to S3.",
            definition("hyperparameters", nullable=True),
        ),
    )
    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata=_doc(
            "Key prefix of a prepared dataset in the stack's bucket, under `datasets/` (what "
            "`ernie-sm upload` printed; not an s3:// URI): up to 512 letters, digits and "
            "`!_.*'()=@+-` with single slashes. The job reads `<dataset>/train/` as its train "
            "channel and `<dataset>/valid/` as its valid channel.",
            definition("key_prefix"),
        ),
    )
    use_validation: bool = field(
        default=True,
        metadata=_doc(
            "Give the job the valid channel; false for a dataset prepared without a validation "
            "split.",
            {"type": "boolean"},
        ),
    )
    instance_type: str = field(
        default=DEFAULT_INSTANCE_TYPE,
        metadata=_doc(
            "SageMaker training instance type, one of those CreateTrainingJob's model lists "
            "(e.g. ml.g5.12xlarge, ml.p4d.24xlarge).",
            definition("instance_type"),
        ),
    )
    instance_count: int = field(
        default=1,
        metadata=_doc(
            "Hosts; training is data-parallel over every GPU of every host.",
            _integer(1, MAX_INSTANCES),
        ),
    )
    volume_size_gb: int = field(
        default=100,
        metadata=_doc(
            "Storage volume per host in GB (channels are downloaded there).",
            _integer(1, MAX_VOLUME_GB),
        ),
    )
    spot: bool = field(
        default=True,
        metadata=_doc(
            "Managed spot training: cheaper, may be interrupted; the job then resumes from its "
            "newest checkpoint.",
            {"type": "boolean"},
        ),
    )
    max_runtime_hours: float = field(
        default=DEFAULT_RUNTIME_HOURS,
        metadata=_doc(
            "Training time after which SageMaker stops the job.",
            definition("hours"),
        ),
    )
    max_wait_hours: float | None = field(
        default=2 * DEFAULT_RUNTIME_HOURS,
        metadata=_doc(
            'Spot only (an error with "spot": false): time for the whole spot job, waiting '
            "for capacity included; at least max_runtime_hours.",
            definition("hours", nullable=True),
            shown_default=f"min(2 x max_runtime_hours, {MAX_HOURS})",
        ),
    )
    warm_start_model: str | None = field(
        default=None,
        metadata=_doc(
            "`s3://<bucket>/models/.../model.tar.gz` of a previous job in the stack's bucket: the "
            "job starts from its weights (the model channel). Checkpoints of this execution win "
            "over it when an attempt is retried.",
            definition("model_uri", nullable=True),
        ),
    )
    job_name_prefix: str | None = field(
        default=None,
        metadata=_doc(
            "Start of the training-job names: the stack's name prefix, or it and a hyphen and "
            'more ("ernie-exp1"), letters, digits and hyphens, beginning and ending with a '
            "letter or digit.",
            definition("job_name_prefix"),
            shown_default="the stack's name prefix",
        ),
    )
    evaluation: EvaluationInput | None = field(
        default=None,
        metadata=_doc(
            "Evaluate the trained model (below); null for none.",
            definition("evaluation", nullable=True),
        ),
    )
    stages: tuple[StageInput, ...] | None = field(
        default=None,
        metadata=_doc(
            "ERNIE 2.0's continual multi-task pretraining: 1 to 8 stages (below), "
            "trained in order, each from the model of the one before (the first from "
            "warm_start_model when given), the evaluation once on the last; null for one "
            "training job. `tasks` and `num_train_steps` may then be in no hyperparameters.",
            definition("stages", nullable=True),
        ),
    )

    @property
    def max_runtime_seconds(self) -> int:
        return seconds(self.max_runtime_hours)

    @property
    def max_wait_seconds(self) -> int | None:
        return None if self.max_wait_hours is None else seconds(self.max_wait_hours)

    def to_dict(self) -> dict[str, Any]:
        """The normalised input as plain JSON-ready data."""
        return asdict(self)


# The fields, in the order they are checked and documented.
FIELDS: tuple[str, ...] = tuple(ExecutionInput.__dataclass_fields__)
EVALUATION_FIELDS: tuple[str, ...] = tuple(EvaluationInput.__dataclass_fields__)
STAGE_FIELDS: tuple[str, ...] = tuple(StageInput.__dataclass_fields__)


def merged_hyperparameters(common: Mapping[str, str], stage: StageInput) -> dict[str, str]:
    """A stage job's hyperparameters: `common` (the top-level ones), the stage's, and tasks
    and num_train_steps from its tasks and steps."""
    return {
        **common,
        **stage.hyperparameters,
        "tasks": tasks.format_weights(stage.tasks),
        "num_train_steps": str(stage.steps),
    }


def stage_hyperparameters(inp: ExecutionInput, index: int) -> dict[str, str]:
    """The hyperparameters of stage `index`'s job (merged_hyperparameters)."""
    return merged_hyperparameters(inp.hyperparameters, stage_of(inp, index))


def stage_of(inp: ExecutionInput, index: int) -> StageInput:
    if inp.stages is None:
        raise ValueError("the execution input has no stages")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(inp.stages):
        raise ValueError(f"stage must be an index from 0 to {len(inp.stages) - 1}, got {index!r}")
    return inp.stages[index]


def seconds(hours: float) -> int:
    return round(hours * 3600)


def plain_number(value: float) -> str:
    """8 for 8.0, else as Python writes it."""
    return str(int(value)) if float(value).is_integer() else str(value)
