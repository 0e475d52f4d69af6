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
from pathlib import Path

import paddle
from ernie_sm.training.config import ErnieConfig
from ernie_sm.training.errors import ConfigError
from ernie_sm.training.model import ErnieForPretraining, ErnieInference
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


def warm_start(model: ErnieForPretraining, channel: Path) -> None:
    """Initialise weights from a previous job's model.tar.gz (or its unpacked contents)."""
    archives = sorted(channel.rglob("model.tar.gz"))
    if archives:
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(archives[0]) as tar:
                tar.extractall(tmp, filter="data")
            _load_weights(model, Path(tmp), source=str(archives[0]))
    else:
        _load_weights(model, channel, source=str(channel))


def _load_weights(model: ErnieForPretraining, folder: Path, source: str) -> None:
    found = sorted(folder.rglob(WEIGHTS))
    if not found:
        raise ConfigError(f"the model channel ({source}) holds no {WEIGHTS} from a previous job")
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
