"""The one definition of the training job's hyperparameters: names, types, defaults, help.

Each is one field of a dataclass (Hyperparameters for `ernie-sm train`,
EvalHyperparameters for `ernie-sm evaluate`) that carries its parser, default and help;
SPECS and EVAL_SPECS, which validation and the listings read, are derived from them.

SageMaker hands every value over as a string ("True", "0.0001", "8192"). Names follow
the original ERNIE `pretrain.sh` / `train.py` so that existing recipes carry over; the
few new ones are marked as such in their help. The state machine validates execution
input against this module, so nothing else repeats these names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from ernie_sm.contract import tasks as job_tasks
from ernie_sm.contract.errors import HyperparameterError
from ernie_sm.contract.names import closest

# Keys that SageMaker's SDK and toolkit add on their own (sagemaker_program, ...).
RESERVED_PREFIX = "sagemaker_"
# paddle.seed takes an unsigned 64-bit integer and raises TypeError past it (numpy's
# SeedSequence takes any size). Paddle 3.3's CPU generator uses the seed modulo 2**32.
MAX_SEED = 2**64 - 1
T = TypeVar("T")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError("expected true or false")


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("expected an integer") from None


def _float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError("expected a number") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise ValueError("expected an integer > 0")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def _seed(text: str) -> int:
    value = _non_negative_int(text)
    if value > MAX_SEED:
        raise ValueError(
            f"expected an integer from 0 to {MAX_SEED} (2**64 - 1, paddle.seed's limit)"
        )
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a finite number >= 0")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise ValueError("expected a number > 0")
    return value


def _text(text: str) -> str:
    return text.strip()


NAME_MAX = 255  # bytes in one name of a path, on Linux's file systems


def _path(text: str) -> str:
    """A file's path: each of its names short enough for a file system to look up (a
    longer one fails every open with "File name too long")."""
    value = text.strip()
    if "\0" in value:
        raise ValueError("expected a path, got one with a NUL character")
    longest = max((len(name.encode()) for name in value.split("/")), default=0)
    if longest > NAME_MAX:
        raise ValueError(
            f"expected a path whose every file or folder name is at most {NAME_MAX} bytes "
            f"(a file system's limit), got a name of {longest} bytes"
        )
    return value


def _choice(*options: str, aliases: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """One of `options` (case aside); an alias is taken as the option it names."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        value = (aliases or {}).get(value, value)
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


@dataclass(frozen=True)
class Spec:
    """One hyperparameter: `parse` turns SageMaker's string into its value (the type and
    constraints), `default` is that string when none is given, `help` says what it does;
    `type` is the value's type as the dataclass declares it."""

    parse: Callable[[str], Any]
    default: str
    help: str
    type: str = ""


_SPEC = "spec"  # the key of a field's Spec in its metadata


def hyperparameter(parse: Callable[[str], Any], default: str, help: str) -> Any:
    """A dataclass field declaring one hyperparameter (as run_mlm.py's fields carry their
    default and help): its parser, its default as the string SageMaker would hand over,
    its help. The field's own default is that string parsed."""
    return field(
        default_factory=lambda: parse(default), metadata={_SPEC: Spec(parse, default, help)}
    )


def specs_of(declared: type) -> dict[str, Spec]:
    """{name: Spec} of a dataclass of hyperparameter() fields, in declaration order."""
    return {f.name: replace(f.metadata[_SPEC], type=str(f.type)) for f in fields(declared)}


# The learning-rate schedules training/schedule.py implements, the first the default;
# linear_warmup_decay, the only value accepted before, is linear by another name.
LR_SCHEDULERS = ("linear", "cosine")
LR_SCHEDULER_ALIASES = {"linear_warmup_decay": "linear"}


@dataclass(frozen=True)
class Hyperparameters:
    """The training job's hyperparameters (`ernie-sm train`), one field each."""

    # Data
    train_filelist: str = hyperparameter(
        _path,
        "train_filelist",
        "Filelist of training shards, relative to the train channel.",
    )
    valid_filelist: str = hyperparameter(
        _path,
        "valid_filelist",
        "Filelist of validation shards, relative to the valid channel.",
    )
    vocab_path: str = hyperparameter(
        _path,
        "vocab.txt",
        "Vocab (`token<TAB>id`) path relative to the train channel, or the bundled preset "
        "ernie-1.0 (the released ERNIE 1.0 vocab).",
    )
    max_seq_len: int = hyperparameter(
        _positive_int,
        "512",
        "Longest sample in tokens; longer lines are skipped and counted.",
    )
    in_tokens: bool = hyperparameter(
        _bool,
        "true",
        "If true, batch_size counts padded tokens, else samples.",
    )
    batch_size: int = hyperparameter(
        _positive_int,
        "8192",
        "Tokens (in_tokens) or samples per batch, per worker.",
    )
    bucket_window: int = hyperparameter(
        _non_negative_int,
        "32",
        "New. Length bucketing: each shard pass sorts its shuffled samples by length within "
        "windows of about this many batches, cuts batches and shuffles them, so a batch "
        "holds samples of similar length and pads little (validation too, unshuffled). "
        "0 restores the original order: shuffled samples cut into batches as they come.",
    )
    generate_neg_sample: bool = hyperparameter(
        _bool,
        "false",
        "Add NSP negatives built by pairing segments within a batch.",
    )
    num_workers: int = hyperparameter(
        _non_negative_int,
        "2",
        "New. Data worker processes per trainer; 0 parses on the training process.",
    )
    epoch: int = hyperparameter(
        _positive_int,
        "100",
        "Passes over the training shards at most.",
    )
    random_seed: int = hyperparameter(
        _seed,
        "0",
        "Seed of data order, masking, dropout and init: 0 to 2**64 - 1.",
    )
    # Model
    ernie_config_path: str = hyperparameter(
        _path,
        "ernie-1.0-base",
        "ernie_config.json path relative to the train channel, or a bundled preset: "
        "ernie-1.0-base, ernie-tiny.",
    )
    weight_sharing: bool = hyperparameter(
        _bool,
        "true",
        "Tie the MLM output projection to the word embeddings.",
    )
    # ERNIE 2.0 (contract/tasks.py). RUF009 takes hyperparameter() for a shared mutable
    # default; it is a field() whose default_factory makes a new dict each time.
    tasks: dict[str, float] = hyperparameter(  # noqa: RUF009
        job_tasks.parse_mix,
        "",
        "New. ERNIE 2.0 multi-task training: `task:weight,...`, each micro-batch drawing its "
        "task by weight (knowledge_masking, sentence_reordering, sentence_distance, "
        "token_document_relation). Empty trains ERNIE 1.0 (knowledge masking and NSP, no "
        "task embedding).",
    )
    task_loss_weights: dict[str, float] = hyperparameter(  # noqa: RUF009
        job_tasks.parse_weights,
        "",
        "New. `task:weight,...` multiplying each task's loss (1 where not named).",
    )
    # Optimisation
    learning_rate: float = hyperparameter(
        _positive_float,
        "0.0001",
        "Peak learning rate.",
    )
    weight_decay: float = hyperparameter(
        _non_negative_float,
        "0.01",
        "Decoupled weight decay (not on LayerNorm or biases).",
    )
    warmup_steps: int = hyperparameter(
        _non_negative_int,
        "5000",
        "Linear warm-up steps from 0 to learning_rate; 0: none (with lr_scheduler linear, "
        "a constant rate).",
    )
    num_train_steps: int = hyperparameter(
        _positive_int,
        "1000000",
        "Optimizer steps; the rate decays to 0 here (lr_scheduler).",
    )
    lr_scheduler: str = hyperparameter(
        _choice(*LR_SCHEDULERS, aliases=LR_SCHEDULER_ALIASES),
        LR_SCHEDULERS[0],
        "Learning-rate schedule after warm-up: linear, ERNIE's learning_rate * (1 - step / "
        "num_train_steps); cosine, PaddleNLP's CosineAnnealingWithWarmupDecay, half a cosine "
        "from learning_rate to 0 at num_train_steps.",
    )
    gradient_accumulation_steps: int = hyperparameter(
        _positive_int,
        "1",
        "New. Micro-batches per optimizer step.",
    )
    max_grad_norm: float = hyperparameter(
        _positive_float,
        "1.0",
        "New. Global-norm gradient clip.",
    )
    # Precision
    use_fp16: bool = hyperparameter(
        _bool,
        "false",
        "Mixed precision on GPU (see amp_dtype); ignored on CPU.",
    )
    amp_dtype: str = hyperparameter(
        _choice("auto", "float16", "bfloat16"),
        "auto",
        "New. Mixed-precision type: auto picks bfloat16 where the GPU supports it, else float16.",
    )
    init_loss_scaling: float = hyperparameter(
        _positive_float,
        "102400",
        "Initial loss scale for float16.",
    )
    use_dynamic_loss_scaling: bool = hyperparameter(
        _bool,
        "true",
        "Adjust the float16 loss scale as overflows occur.",
    )
    incr_every_n_steps: int = hyperparameter(
        _positive_int,
        "100",
        "Grow the loss scale after this many clean steps.",
    )
    decr_every_n_nan_or_inf: int = hyperparameter(
        _positive_int,
        "2",
        "Shrink the loss scale after this many overflows.",
    )
    incr_ratio: float = hyperparameter(
        _positive_float,
        "2.0",
        "Loss-scale growth factor.",
    )
    decr_ratio: float = hyperparameter(
        _positive_float,
        "0.8",
        "Loss-scale shrink factor.",
    )
    # Runtime
    use_cuda: bool = hyperparameter(
        _bool,
        "true",
        "Train on the GPU when there is one; false forces the CPU.",
    )
    is_distributed: bool = hyperparameter(
        _bool,
        "true",
        "Data-parallel training over every GPU of every host; false trains on one GPU of one host.",
    )
    trainers_per_host: int = hyperparameter(
        _non_negative_int,
        "0",
        "New. Trainer processes per host; 0 means one per GPU (one without GPUs).",
    )
    use_fast_executor: bool = hyperparameter(
        _bool,
        "true",
        "Accepted for compatibility; dynamic-graph training has no executor.",
    )
    checkpoints: str = hyperparameter(
        _text,
        "",
        "Checkpoint folder; empty means SageMaker's /opt/ml/checkpoints.",
    )
    save_steps: int = hyperparameter(
        _positive_int,
        "10000",
        "Save a checkpoint every this many steps.",
    )
    keep_checkpoints: int = hyperparameter(
        _positive_int,
        "3",
        "New. Checkpoints kept; older ones are deleted.",
    )
    skip_steps: int = hyperparameter(
        _positive_int,
        "10",
        "Log training metrics every this many steps.",
    )
    validation_steps: int = hyperparameter(
        _positive_int,
        "1000",
        "Validate on the valid channel every this many steps.",
    )


SPECS: dict[str, Spec] = specs_of(Hyperparameters)


@dataclass(frozen=True)
class EvalHyperparameters:
    """`ernie-sm evaluate`: fine-tune the pretrained model and a baseline on a labelled set
    (the eval channel) and score both. Checked by the same validate() as the training's."""

    learning_rate: float = hyperparameter(
        _positive_float,
        "5e-5",
        "Peak fine-tuning learning rate.",
    )
    num_train_steps: int = hyperparameter(
        _positive_int,
        "1000",
        "Fine-tuning steps at most (shuffled epochs over train.tsv); warm-up over the first "
        "10%, then linear decay to 0.",
    )
    batch_size: int = hyperparameter(
        _positive_int,
        "32",
        "Examples per fine-tuning batch.",
    )
    max_seq_len: int = hyperparameter(
        _positive_int,
        "128",
        "Tokens per example with [CLS] and [SEP]; longer texts are cut.",
    )
    eval_steps: int = hyperparameter(
        _positive_int,
        "100",
        "Score dev accuracy every this many steps.",
    )
    patience: int = hyperparameter(
        _non_negative_int,
        "5",
        "Stop after this many dev evaluations without a better accuracy; 0 never stops early.",
    )
    weight_decay: float = hyperparameter(
        _non_negative_float,
        "0.01",
        "Decoupled weight decay (not on LayerNorm or biases).",
    )
    random_seed: int = hyperparameter(
        _seed,
        "0",
        "Seed of data order, dropout and the baseline's init: 0 to 2**64 - 1.",
    )
    use_cuda: bool = hyperparameter(
        _bool,
        "true",
        "Fine-tune on the GPU when there is one; false forces the CPU.",
    )
    run_baseline: bool = hyperparameter(
        _bool,
        "true",
        "Also fine-tune and score the baseline (the baseline channel, else the same "
        "architecture randomly initialised).",
    )


EVAL_SPECS: dict[str, Spec] = specs_of(EvalHyperparameters)


def validate(raw: Mapping[str, Any], specs: Mapping[str, Spec] | None = None) -> dict[str, str]:
    """Check names and values against `specs` (the training job's SPECS unless given, e.g.
    EVAL_SPECS); return the problems as {name: message}, empty when all is well."""
    specs = SPECS if specs is None else specs
    problems: dict[str, str] = {}
    for name, value in raw.items():
        if name.startswith(RESERVED_PREFIX):
            continue
        spec = specs.get(name)
        if spec is None:
            problems[name] = "unknown hyperparameter" + _did_you_mean(name, specs)
            continue
        if not isinstance(value, str):
            problems[name] = f"value {value!r} must be a string, as SageMaker passes it"
            continue
        try:
            spec.parse(_unquote(value))
        except ValueError as exc:
            problems[name] = f"bad value {value!r}: {exc}"
    return problems


def parse(raw: Mapping[str, Any]) -> Hyperparameters:
    """Turn SageMaker's string-to-string map into typed hyperparameters, failing on the first problem."""
    return _parse(raw, SPECS, Hyperparameters)


def parse_eval(raw: Mapping[str, Any]) -> EvalHyperparameters:
    """The same for `ernie-sm evaluate`, against EVAL_SPECS."""
    return _parse(raw, EVAL_SPECS, EvalHyperparameters)


def _parse(raw: Mapping[str, Any], specs: Mapping[str, Spec], into: type[T]) -> T:
    problems = validate(raw, specs)
    if problems:
        details = "; ".join(f"{name}: {message}" for name, message in sorted(problems.items()))
        raise HyperparameterError(f"invalid hyperparameters: {details}")
    values = {
        name: spec.parse(_unquote(raw.get(name, spec.default))) for name, spec in specs.items()
    }
    return into(**values)


def defaults(specs: Mapping[str, Spec] | None = None) -> dict[str, str]:
    """Every hyperparameter (of SPECS unless given) with its default, as strings."""
    return {name: spec.default for name, spec in (SPECS if specs is None else specs).items()}


def _unquote(value: str) -> str:
    """The SageMaker Python SDK JSON-encodes string values ('"ernie-tiny"'); take them as meant."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def _did_you_mean(name: str, specs: Mapping[str, Spec]) -> str:
    close = closest(name, specs)
    return f" (did you mean {close}?)" if close else ""
