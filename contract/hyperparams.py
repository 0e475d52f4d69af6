"""The one definition of the training job's hyperparameters: names, types, defaults, help.

SageMaker hands every value over as a string ("True", "0.0001", "8192"). Names follow
the original ERNIE `pretrain.sh` / `train.py` so that existing recipes carry over; the
few new ones are marked as such in their help. The state machine validates execution
input against this module, so nothing else repeats these names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ernie_sm.contract import tasks
from ernie_sm.contract.errors import HyperparameterError

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


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


@dataclass(frozen=True)
class Spec:
    parse: Callable[[str], Any]
    default: str
    help: str


SPECS: dict[str, Spec] = {
    # Data
    "train_filelist": Spec(
        _path, "train_filelist", "Filelist of training shards, relative to the train channel."
    ),
    "valid_filelist": Spec(
        _path, "valid_filelist", "Filelist of validation shards, relative to the valid channel."
    ),
    "vocab_path": Spec(
        _path,
        "vocab.txt",
        "Vocab (`token<TAB>id`) path relative to the train channel, or the bundled preset "
        "ernie-1.0 (the released ERNIE 1.0 vocab).",
    ),
    "max_seq_len": Spec(
        _positive_int, "512", "Longest sample in tokens; longer lines are skipped and counted."
    ),
    "in_tokens": Spec(_bool, "true", "If true, batch_size counts padded tokens, else samples."),
    "batch_size": Spec(
        _positive_int, "8192", "Tokens (in_tokens) or samples per batch, per worker."
    ),
    "bucket_window": Spec(
        _non_negative_int,
        "32",
        "New. Length bucketing: each shard pass sorts its shuffled samples by length within "
        "windows of about this many batches, cuts batches and shuffles them, so a batch "
        "holds samples of similar length and pads little (validation too, unshuffled). "
        "0 restores the original order: shuffled samples cut into batches as they come.",
    ),
    "generate_neg_sample": Spec(
        _bool, "false", "Add NSP negatives built by pairing segments within a batch."
    ),
    "num_workers": Spec(
        _non_negative_int,
        "2",
        "New. Data worker processes per trainer; 0 parses on the training process.",
    ),
    "epoch": Spec(_positive_int, "100", "Passes over the training shards at most."),
    "random_seed": Spec(
        _seed, "0", "Seed of data order, masking, dropout and init: 0 to 2**64 - 1."
    ),
    # Model
    "ernie_config_path": Spec(
        _path,
        "ernie-1.0-base",
        "ernie_config.json path relative to the train channel, or a bundled preset: "
        "ernie-1.0-base, ernie-tiny.",
    ),
    "weight_sharing": Spec(_bool, "true", "Tie the MLM output projection to the word embeddings."),
    # ERNIE 2.0 (contract/tasks.py)
    "tasks": Spec(
        tasks.parse_mix,
        "",
        "New. ERNIE 2.0 multi-task training: `task:weight,...`, each micro-batch drawing its "
        "task by weight (knowledge_masking, sentence_reordering, sentence_distance, "
        "token_document_relation). Empty trains ERNIE 1.0 (knowledge masking and NSP, no "
        "task embedding).",
    ),
    "task_loss_weights": Spec(
        tasks.parse_weights,
        "",
        "New. `task:weight,...` multiplying each task's loss (1 where not named).",
    ),
    # Optimisation
    "learning_rate": Spec(_positive_float, "0.0001", "Peak learning rate."),
    "weight_decay": Spec(
        _non_negative_float, "0.01", "Decoupled weight decay (not on LayerNorm or biases)."
    ),
    "warmup_steps": Spec(
        _non_negative_int,
        "5000",
        "Linear warm-up steps from 0 to learning_rate; 0 keeps the rate constant.",
    ),
    "num_train_steps": Spec(
        _positive_int, "1000000", "Optimizer steps; the rate decays linearly to 0 here."
    ),
    "lr_scheduler": Spec(
        _choice("linear_warmup_decay"), "linear_warmup_decay", "Learning-rate schedule."
    ),
    "gradient_accumulation_steps": Spec(
        _positive_int, "1", "New. Micro-batches per optimizer step."
    ),
    "max_grad_norm": Spec(_positive_float, "1.0", "New. Global-norm gradient clip."),
    # Precision
    "use_fp16": Spec(_bool, "false", "Mixed precision on GPU (see amp_dtype); ignored on CPU."),
    "amp_dtype": Spec(
        _choice("auto", "float16", "bfloat16"),
        "auto",
        "New. Mixed-precision type: auto picks bfloat16 where the GPU supports it, else float16.",
    ),
    "init_loss_scaling": Spec(_positive_float, "102400", "Initial loss scale for float16."),
    "use_dynamic_loss_scaling": Spec(
        _bool, "true", "Adjust the float16 loss scale as overflows occur."
    ),
    "incr_every_n_steps": Spec(
        _positive_int, "100", "Grow the loss scale after this many clean steps."
    ),
    "decr_every_n_nan_or_inf": Spec(
        _positive_int, "2", "Shrink the loss scale after this many overflows."
    ),
    "incr_ratio": Spec(_positive_float, "2.0", "Loss-scale growth factor."),
    "decr_ratio": Spec(_positive_float, "0.8", "Loss-scale shrink factor."),
    # Runtime
    "use_cuda": Spec(_bool, "true", "Train on the GPU when there is one; false forces the CPU."),
    "is_distributed": Spec(
        _bool,
        "true",
        "Data-parallel training over every GPU of every host; false trains on one GPU of one host.",
    ),
    "trainers_per_host": Spec(
        _non_negative_int,
        "0",
        "New. Trainer processes per host; 0 means one per GPU (one without GPUs).",
    ),
    "use_fast_executor": Spec(
        _bool, "true", "Accepted for compatibility; dynamic-graph training has no executor."
    ),
    "checkpoints": Spec(
        _text, "", "Checkpoint folder; empty means SageMaker's /opt/ml/checkpoints."
    ),
    "save_steps": Spec(_positive_int, "10000", "Save a checkpoint every this many steps."),
    "keep_checkpoints": Spec(_positive_int, "3", "New. Checkpoints kept; older ones are deleted."),
    "skip_steps": Spec(_positive_int, "10", "Log training metrics every this many steps."),
    "validation_steps": Spec(
        _positive_int, "1000", "Validate on the valid channel every this many steps."
    ),
}


@dataclass(frozen=True)
class Hyperparameters:
    train_filelist: str
    valid_filelist: str
    vocab_path: str
    max_seq_len: int
    in_tokens: bool
    batch_size: int
    bucket_window: int
    generate_neg_sample: bool
    num_workers: int
    epoch: int
    random_seed: int
    ernie_config_path: str
    weight_sharing: bool
    tasks: dict[str, float]
    task_loss_weights: dict[str, float]
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    num_train_steps: int
    lr_scheduler: str
    gradient_accumulation_steps: int
    max_grad_norm: float
    use_fp16: bool
    amp_dtype: str
    init_loss_scaling: float
    use_dynamic_loss_scaling: bool
    incr_every_n_steps: int
    decr_every_n_nan_or_inf: int
    incr_ratio: float
    decr_ratio: float
    use_cuda: bool
    is_distributed: bool
    trainers_per_host: int
    use_fast_executor: bool
    checkpoints: str
    save_steps: int
    keep_checkpoints: int
    skip_steps: int
    validation_steps: int


# `ernie-sm evaluate`: fine-tune the pretrained model and a baseline on a labelled set
# (the eval channel) and score both. Checked by the same validate() as SPECS.
EVAL_SPECS: dict[str, Spec] = {
    "learning_rate": Spec(_positive_float, "5e-5", "Peak fine-tuning learning rate."),
    "num_train_steps": Spec(
        _positive_int,
        "1000",
        "Fine-tuning steps at most (shuffled epochs over train.tsv); warm-up over the first "
        "10%, then linear decay to 0.",
    ),
    "batch_size": Spec(_positive_int, "32", "Examples per fine-tuning batch."),
    "max_seq_len": Spec(
        _positive_int, "128", "Tokens per example with [CLS] and [SEP]; longer texts are cut."
    ),
    "eval_steps": Spec(_positive_int, "100", "Score dev accuracy every this many steps."),
    "patience": Spec(
        _non_negative_int,
        "5",
        "Stop after this many dev evaluations without a better accuracy; 0 never stops early.",
    ),
    "weight_decay": Spec(
        _non_negative_float, "0.01", "Decoupled weight decay (not on LayerNorm or biases)."
    ),
    "random_seed": Spec(
        _seed, "0", "Seed of data order, dropout and the baseline's init: 0 to 2**64 - 1."
    ),
    "use_cuda": Spec(
        _bool, "true", "Fine-tune on the GPU when there is one; false forces the CPU."
    ),
    "run_baseline": Spec(
        _bool,
        "true",
        "Also fine-tune and score the baseline (the baseline channel, else the same "
        "architecture randomly initialised).",
    ),
}


@dataclass(frozen=True)
class EvalHyperparameters:
    learning_rate: float
    num_train_steps: int
    batch_size: int
    max_seq_len: int
    eval_steps: int
    patience: int
    weight_decay: float
    random_seed: int
    use_cuda: bool
    run_baseline: bool


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
    import difflib

    close = difflib.get_close_matches(name, specs, n=1)
    return f" (did you mean {close[0]}?)" if close else ""
