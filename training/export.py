"""What a job leaves in SM_MODEL_DIR, and how a later job warm-starts from it.

SM_MODEL_DIR (packed by SageMaker into model.tar.gz) holds:
  inference/ernie.*    the inference model (paddle.jit.save): token ids in,
                       MLM log-probabilities and NSP probabilities out
  model.pdparams       the pretraining weights, for warm starts and fine-tuning
  ernie_config.json    the model config
  vocab.txt            the vocab the ids refer to
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from dataclasses import asdict
from pathlib import Path

import paddle
from ernie_sm.training.config import ErnieConfig, load_config
from ernie_sm.training.errors import ConfigError
from ernie_sm.training.model import ErnieForPretraining, ErnieInference
from ernie_sm.training.vocab import Vocab, load_vocab
from paddle.static import InputSpec

log = logging.getLogger(__name__)

INFERENCE_PREFIX = "inference/ernie"
WEIGHTS = "model.pdparams"


def export_model(
    model: ErnieForPretraining, config: ErnieConfig, vocab_path: Path, model_dir: Path
) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    ids = [InputSpec([None, None], "int64", name) for name in ("src_ids", "sent_ids", "pos_ids")]
    paddle.jit.save(ErnieInference(model), str(model_dir / INFERENCE_PREFIX), input_spec=ids)
    paddle.save(model.state_dict(), str(model_dir / WEIGHTS))
    (model_dir / "ernie_config.json").write_text(config.to_json())
    shutil.copyfile(vocab_path, model_dir / "vocab.txt")


def warm_start(model: ErnieForPretraining, channel: Path, vocab: Vocab) -> None:
    """Initialise weights from a previous job's (or an import's) model.tar.gz or its unpacked
    contents, which must be of the same config and vocab as this job's."""
    archives = sorted(channel.rglob("model.tar.gz"))
    if archives:
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(archives[0]) as tar:
                tar.extractall(tmp, filter="data")
            _load_weights(model, vocab, Path(tmp), source=str(archives[0]))
    else:
        _load_weights(model, vocab, channel, source=str(channel))


def _load_weights(model: ErnieForPretraining, vocab: Vocab, folder: Path, source: str) -> None:
    found = sorted(folder.rglob(WEIGHTS))
    if not found:
        raise ConfigError(f"the model channel ({source}) holds no {WEIGHTS} from a previous job")
    _check_same_model(model.config, vocab, found[0].parent, source)
    state = paddle.load(str(found[0]))
    own = model.state_dict()
    for name, value in own.items():
        if name not in state:
            raise ConfigError(f"warm start from {source}: parameter {name} is missing")
        if list(state[name].shape) != list(value.shape):
            raise ConfigError(
                f"warm start from {source}: parameter {name} has shape {list(state[name].shape)}, "
                f"the model needs {list(value.shape)} (is ernie_config the same?)"
            )
    model.set_state_dict(state)
    log.info("warm start: weights from %s", source)


def _check_same_model(config: ErnieConfig, vocab: Vocab, folder: Path, source: str) -> None:
    """Token ids mean what they meant to the model, and the architecture is the same: a
    different vocab or config would load without error and train on nonsense."""
    for name in ("ernie_config.json", "vocab.txt"):
        if not (folder / name).is_file():
            raise ConfigError(f"warm start from {source}: {name} is missing beside {WEIGHTS}")
    theirs = load_vocab(folder / "vocab.txt")
    if theirs.tokens != vocab.tokens:
        raise ConfigError(
            f"warm start from {source}: its vocab differs from the train channel's "
            f"({_vocab_difference(theirs.tokens, vocab.tokens)}); prepare the data with the "
            "model's vocab (ernie-sm prepare --vocab ernie-1.0 for released ERNIE 1.0)"
        )
    saved = load_config(str(folder / "ernie_config.json"), folder, len(theirs))
    changed = [k for k, v in asdict(config).items() if getattr(saved, k) != v]
    if changed:
        raise ConfigError(
            f"warm start from {source}: its ernie_config differs from ernie_config_path ("
            + ", ".join(
                f"{k} {getattr(saved, k)} there, {getattr(config, k)} here" for k in changed
            )
            + "); set ernie_config_path to the model's config"
        )


def _vocab_difference(theirs: tuple[str, ...], ours: tuple[str, ...]) -> str:
    if len(theirs) != len(ours):
        return f"{len(theirs)} tokens there, {len(ours)} here"
    i = next(i for i, (a, b) in enumerate(zip(theirs, ours, strict=True)) if a != b)
    return f"id {i} is {theirs[i]!r} there, {ours[i]!r} here"
