"""What a model archive tells the model server: `serving.json` at the archive's root.

The export (training/export.py, and training/evaluate.py for its classifier) writes it and
the server (`ernie-sm serve`) reads it, so the tasks a model serves, where each task's
inference model is, and how its text is tokenised have one definition. Task names and
their JSON are the Hugging Face inference schemas' (fill-mask, feature-extraction,
text-classification).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ernie_sm.contract.errors import ConfigError
from ernie_sm.contract.textfile import read_json_object

MANIFEST = "serving.json"
FORMAT = 1
FILL_MASK = "fill-mask"
FEATURE_EXTRACTION = "feature-extraction"
TEXT_CLASSIFICATION = "text-classification"
TASKS = (FILL_MASK, FEATURE_EXTRACTION, TEXT_CLASSIFICATION)
# Overrides which of the archive's tasks the endpoint serves.
TASK_ENV = "ERNIE_SERVE_TASK"


@dataclass(frozen=True)
class ServingManifest:
    # task -> its inference model's path prefix (paddle.jit.save's), relative to the root
    models: dict[str, str]
    vocab: str = "vocab.txt"
    max_seq_len: int = 512  # the longest input in tokens, [CLS] and [SEP] included
    lowercase: bool = True  # BERT normalisation of the tokenizer (text/encoder.py)
    labels: tuple[str, ...] = ()  # text-classification's class names, by class index
    # fill-mask's export computes this many answers per mask: the most a request may ask
    max_top_k: int = 10
    format: int = field(default=FORMAT)

    def write(self, root: Path) -> Path:
        path = root / MANIFEST
        path.write_text(json.dumps({**asdict(self), "labels": list(self.labels)}, indent=2))
        return path


def read_manifest(root: Path) -> ServingManifest:
    """The manifest of an unpacked archive; one that is missing, of another format, or
    names a task, file or label set that is not there fails naming what and where."""
    path = root / MANIFEST
    if not path.is_file():
        raise ConfigError(
            f"{root} holds no {MANIFEST}: the model was not exported for serving (export it "
            "again with this version of ernie-sm train or evaluate)"
        )
    raw = read_json_object(path, "serving manifest", ConfigError)
    if raw.get("format") != FORMAT:
        raise ConfigError(f"{path}: format {raw.get('format')!r}, this server reads {FORMAT}")
    known = set(ServingManifest.__dataclass_fields__)
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"{path}: unknown fields {', '.join(unknown)}")
    try:
        manifest = ServingManifest(**{**raw, "labels": tuple(raw.get("labels", ()))})
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    _check(manifest, root, path)
    return manifest


def _check(manifest: ServingManifest, root: Path, path: Path) -> None:
    if not isinstance(manifest.models, dict) or not manifest.models:
        raise ConfigError(f"{path}: models must map at least one task to its model")
    for task, prefix in manifest.models.items():
        if task not in TASKS:
            raise ConfigError(f"{path}: task {task!r} is not one of {', '.join(TASKS)}")
        if not isinstance(prefix, str) or not Path(root, f"{prefix}.pdiparams").is_file():
            raise ConfigError(f"{path}: {task}'s model {prefix!r}.pdiparams is missing")
    if not Path(root, manifest.vocab).is_file():
        raise ConfigError(f"{path}: vocab {manifest.vocab!r} is missing")
    if TEXT_CLASSIFICATION in manifest.models and len(manifest.labels) < 2:
        raise ConfigError(f"{path}: {TEXT_CLASSIFICATION} needs its labels (2 or more)")
    if not isinstance(manifest.max_seq_len, int) or manifest.max_seq_len < 3:
        raise ConfigError(f"{path}: max_seq_len must be an integer of at least 3")
    if not isinstance(manifest.max_top_k, int) or manifest.max_top_k < 1:
        raise ConfigError(f"{path}: max_top_k must be an integer of at least 1")


def served_task(manifest: ServingManifest, override: str | None) -> str:
    """The task the endpoint serves: `override` (from TASK_ENV) if set, else the archive's
    only task, else fill-mask when it has it; a task the archive lacks is refused."""
    if override:
        if override not in manifest.models:
            raise ConfigError(
                f"{TASK_ENV}={override!r}: the model serves {', '.join(manifest.models)}"
            )
        return override
    if len(manifest.models) == 1:
        return next(iter(manifest.models))
    if FILL_MASK in manifest.models:
        return FILL_MASK
    raise ConfigError(f"the model serves {', '.join(manifest.models)}: set {TASK_ENV} to one")
