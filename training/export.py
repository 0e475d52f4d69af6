"""What a job leaves in SM_MODEL_DIR, and how a later job warm-starts from it.

SM_MODEL_DIR (packed by SageMaker into model.tar.gz) holds:
  inference/ernie.*    the inference model (paddle.jit.save): token ids in,
                       MLM log-probabilities and NSP probabilities out
  model.pdparams       the pretraining weights, for warm starts and fine-tuning
  ernie_config.json    the model config
  vocab.txt            the vocab the ids refer to
  serving/fill_mask.*  what `ernie-sm serve` runs (docs/serving.md): top-k probabilities
  serving/features.*   and ids at the mask positions; the last hidden states
  serving.json         the serving manifest (contract/serving.py)
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import paddle
from ernie_sm.contract.errors import ConfigError
from ernie_sm.text.vocab import Vocab, load_vocab
from ernie_sm.training import safe_pickle
from ernie_sm.training.config import ErnieConfig, load_config
from ernie_sm.training.model import ErnieForPretraining, ErnieInference
from ernie_sm.training.paddle_noise import without_paddle_noise
from ernie_sm.training.serving_export import export_pretrained, id_specs

log = logging.getLogger(__name__)

INFERENCE_PREFIX = "inference/ernie"
WEIGHTS = "model.pdparams"


def export_model(
    model: ErnieForPretraining, config: ErnieConfig, vocab_path: Path, model_dir: Path
) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    ids = id_specs()
    with without_paddle_noise():
        paddle.jit.save(ErnieInference(model), str(model_dir / INFERENCE_PREFIX), input_spec=ids)
    paddle.save(model.state_dict(), str(model_dir / WEIGHTS))
    (model_dir / "ernie_config.json").write_text(config.to_json())
    shutil.copyfile(vocab_path, model_dir / "vocab.txt")
    export_pretrained(model, config, model_dir)


@contextlib.contextmanager
def exported_model(channel: Path, what: str = "the model channel") -> Iterator[tuple[Path, str]]:
    """The folder holding model.pdparams (with ernie_config.json and vocab.txt beside it) in a
    channel of a job's model.tar.gz or its unpacked contents, and the source to name in
    messages. An archive is unpacked into a temporary folder that lasts as long as the block."""
    archives = sorted(channel.rglob("model.tar.gz"))
    with contextlib.ExitStack() as stack:
        folder, source = channel, str(channel)
        if archives:
            folder, source = (
                Path(stack.enter_context(tempfile.TemporaryDirectory())),
                str(archives[0]),
            )
            _unpack(archives[0], folder, what)
        found = sorted(folder.rglob(WEIGHTS))
        if not found:
            raise ConfigError(f"{what} ({source}) holds no {WEIGHTS} from a previous job")
        for name in ("ernie_config.json", "vocab.txt"):
            if not (found[0].parent / name).is_file():
                raise ConfigError(f"{what} ({source}): {name} is missing beside {WEIGHTS}")
        yield found[0].parent, source


def _unpack(archive: Path, folder: Path, what: str) -> None:
    """Extract `archive` into `folder` with the tar data filter (no member outside the folder,
    no absolute or escaping link, no device or FIFO); a truncated or non-tar.gz archive, or a
    member the filter refuses, fails naming the archive (and the member)."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    except tarfile.FilterError as exc:
        raise ConfigError(
            f"{what} ({archive}) holds a member that is not unpacked: {exc} (a model.tar.gz "
            "holds plain files and folders under its root)"
        ) from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(
            f"{what} ({archive}) cannot be unpacked, it is truncated or not a .tar.gz: {reason}"
        ) from None


def read_exported(folder: Path, source: str) -> tuple[ErnieConfig, Vocab, dict]:
    """The config, vocab and weights of a folder that exported_model() found."""
    vocab = load_vocab(folder / "vocab.txt")
    config = load_config(str(folder / "ernie_config.json"), folder, len(vocab))
    return config, vocab, load_weights(folder / WEIGHTS, source)


def load_weights(path: Path, source: str) -> dict[str, np.ndarray]:
    """The parameters in an exported model.pdparams: a dict of float arrays by name, read
    with the one restricted unpickler (training/safe_pickle.py), never paddle.load, so that
    no model channel can run code; a file holding anything else fails naming it and
    `source`."""
    what = str(path) if Path(source).is_dir() else f"{path.name} in {source}"
    try:
        if not path.is_file():
            raise OSError("not a regular file")
        with path.open("rb") as file:
            state = safe_pickle.load(file)
    except (OSError, safe_pickle.UnsafePickle) as exc:
        reason = " ".join(str(exc).split()) or "no reason given"
        raise ConfigError(
            f"{what} cannot be read as Paddle weights ({type(exc).__name__}: {reason})"
        ) from None
    if not isinstance(state, dict):
        raise ConfigError(
            f"{what} holds a {type(state).__name__}, not the parameters by name that "
            "`ernie-sm train` saves"
        )
    state.pop("StructuredToParameterName@@", None)  # paddle.save's bookkeeping
    for name, value in state.items():
        if not isinstance(name, str) or not (
            isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating)
        ):
            raise ConfigError(
                f"{what}: entry {str(name)[:80]!r} is a {type(value).__name__}, not a float "
                "tensor as `ernie-sm train` saves"
            )
    return state


# What an ERNIE 2.0 model has beyond ERNIE 1.0: initialised when warm-starting from 1.0.
ERNIE2_PARAMETERS = ("ernie.task_emb.", "task_heads.")


def warm_start(model: ErnieForPretraining, channel: Path, vocab: Vocab) -> None:
    """Initialise weights from a previous job's (or an import's) model.tar.gz or its unpacked
    contents, which must be of the same config and vocab as this job's; an ERNIE 1.0 model
    also warm-starts an ERNIE 2.0 one, whose task embedding and task heads keep their
    initialisation."""
    with exported_model(channel) as (folder, source):
        saved = _check_same_model(model.config, vocab, folder, source)
        new = () if saved.task_type_vocab_size else ERNIE2_PARAMETERS
        what = f"warm start from {source}"
        initialised = set_weights(model, load_weights(folder / WEIGHTS, source), what, new=new)
    log.info("warm start: weights from %s", source)
    if initialised:
        log.info(
            "warm start: ERNIE 1.0 model into ERNIE 2.0; initialised, not loaded: %s",
            ", ".join(initialised),
        )


def set_weights(
    layer: paddle.nn.Layer,
    state: dict,
    what: str,
    prefix: str = "",
    new: tuple[str, ...] = (),
) -> list[str]:
    """Load `state` into `layer`, whose parameter `name` is `prefix + name` there (e.g.
    "ernie." for the encoder of a pretraining model); a missing or mis-shaped parameter is
    an error, as Paddle would only warn and leave it as initialised, unless its name starts
    with one of `new`. Returns the parameters left as initialised."""
    own = layer.state_dict()
    kept = [name for name in own if name.startswith(new) and prefix + name not in state]
    for name, value in own.items():
        theirs = state.get(prefix + name)
        if theirs is None and name in kept:
            continue
        if theirs is None:
            raise ConfigError(f"{what}: parameter {prefix + name} is missing")
        if list(theirs.shape) != list(value.shape):
            raise ConfigError(
                f"{what}: parameter {prefix + name} has shape {list(theirs.shape)}, "
                f"the model needs {list(value.shape)} (is ernie_config the same?)"
            )
    layer.set_state_dict({n: own[n] if n in kept else state[prefix + n] for n in own})
    return kept


def _check_same_model(config: ErnieConfig, vocab: Vocab, folder: Path, source: str) -> ErnieConfig:
    """Token ids mean what they meant to the model, and the architecture is the same (but
    for the task embedding an ERNIE 2.0 model adds to 1.0): a different vocab or config
    would load without error and train on nonsense. Returns the saved config."""
    theirs = load_vocab(folder / "vocab.txt")
    if theirs.tokens != vocab.tokens:
        raise ConfigError(
            f"warm start from {source}: its vocab differs from the train channel's "
            f"({_vocab_difference(theirs.tokens, vocab.tokens)}); prepare the data with the "
            "model's vocab (ernie-sm prepare --vocab ernie-1.0 for released ERNIE 1.0)"
        )
    saved = load_config(str(folder / "ernie_config.json"), folder, len(theirs))
    changed = [k for k, v in asdict(config).items() if getattr(saved, k) != v]
    if changed == ["task_type_vocab_size"] and saved.task_type_vocab_size:
        raise ConfigError(
            f"warm start from {source}: it is an ERNIE 2.0 model (task_type_vocab_size "
            f"{saved.task_type_vocab_size}) and this job trains "
            + (
                f"one with {config.task_type_vocab_size}"
                if config.task_type_vocab_size
                else "ERNIE 1.0"
            )
            + ": set the tasks hyperparameter (and ernie_config_path to the model's config)"
        )
    if changed == ["task_type_vocab_size"]:
        return saved  # ERNIE 1.0 into 2.0
    if changed:
        raise ConfigError(
            f"warm start from {source}: its ernie_config differs from ernie_config_path ("
            + ", ".join(
                f"{k} {getattr(saved, k)} there, {getattr(config, k)} here" for k in changed
            )
            + "); set ernie_config_path to the model's config"
        )
    return saved


def _vocab_difference(theirs: tuple[str, ...], ours: tuple[str, ...]) -> str:
    if len(theirs) != len(ours):
        return f"{len(theirs)} tokens there, {len(ours)} here"
    i = next(i for i, (a, b) in enumerate(zip(theirs, ours, strict=True)) if a != b)
    return f"id {i} is {theirs[i]!r} there, {ours[i]!r} here"
