"""Released ERNIE 1.0 checkpoints, read into this project's parameter names.

ERNIE 1.0 circulates in three forms:
  original     the release of PaddlePaddle/ERNIE (ERNIE_1.0_max-len-512): `params/` with one
               PaddlePaddle 1.x variable file per tensor (names from ernie/model/ernie_v1.py),
               `ernie_config.json`, `vocab.txt`
  paddlenlp    PaddleNLP's ernie-1.0 / ernie-1.0-base-zh: `model_state.pdparams` and
               `model_config.json` (or `config.json`)
  huggingface  the transformers conversion (nghuyong/ernie-1.0-base-zh): `model.safetensors`
               or `pytorch_model.bin`, `config.json`, `vocab.txt`
Each maps one to one onto ErnieForPretraining's state dict; a tensor that the source has
but ERNIE 1.0 pretraining does not use (task-type embeddings, optimizer state) is reported,
anything else unmatched is an error.
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ernie_sm.training.config import ErnieConfig, config_from_dict
from ernie_sm.training.errors import ConfigError
from ernie_sm.training.textfile import read_json_object

# One row per tensor: our name, then the original's, PaddleNLP's and transformers' names.
# `{i}` is the encoder layer. Linear weights are [in, out] in Paddle, [out, in] in torch.
EMBEDDINGS = (
    ("ernie.word_emb.weight", "word_embedding", "ernie.embeddings.word_embeddings.weight",
     "ernie.embeddings.word_embeddings.weight"),
    ("ernie.pos_emb.weight", "pos_embedding", "ernie.embeddings.position_embeddings.weight",
     "ernie.embeddings.position_embeddings.weight"),
    ("ernie.sent_emb.weight", "sent_embedding", "ernie.embeddings.token_type_embeddings.weight",
     "ernie.embeddings.token_type_embeddings.weight"),
)  # fmt: skip
NORMS = (  # (ours, original, PaddleNLP, transformers) prefixes of a LayerNorm
    ("ernie.emb_norm", "pre_encoder_layer_norm", "ernie.embeddings.layer_norm",
     "ernie.embeddings.LayerNorm"),
    ("ernie.encoder.layers.{i}.norm1", "encoder_layer_{i}_post_att_layer_norm",
     "ernie.encoder.layers.{i}.norm1", "ernie.encoder.layer.{i}.attention.output.LayerNorm"),
    ("ernie.encoder.layers.{i}.norm2", "encoder_layer_{i}_post_ffn_layer_norm",
     "ernie.encoder.layers.{i}.norm2", "ernie.encoder.layer.{i}.output.LayerNorm"),
    ("mlm_norm", "mask_lm_trans_layer_norm", "cls.predictions.layer_norm",
     "cls.predictions.transform.LayerNorm"),
)  # fmt: skip
LINEARS = (  # (ours, original, PaddleNLP, transformers) prefixes of a fully connected layer
    ("ernie.encoder.layers.{i}.self_attn.q_proj", "encoder_layer_{i}_multi_head_att_query_fc",
     "ernie.encoder.layers.{i}.self_attn.q_proj", "ernie.encoder.layer.{i}.attention.self.query"),
    ("ernie.encoder.layers.{i}.self_attn.k_proj", "encoder_layer_{i}_multi_head_att_key_fc",
     "ernie.encoder.layers.{i}.self_attn.k_proj", "ernie.encoder.layer.{i}.attention.self.key"),
    ("ernie.encoder.layers.{i}.self_attn.v_proj", "encoder_layer_{i}_multi_head_att_value_fc",
     "ernie.encoder.layers.{i}.self_attn.v_proj", "ernie.encoder.layer.{i}.attention.self.value"),
    ("ernie.encoder.layers.{i}.self_attn.out_proj", "encoder_layer_{i}_multi_head_att_output_fc",
     "ernie.encoder.layers.{i}.self_attn.out_proj",
     "ernie.encoder.layer.{i}.attention.output.dense"),
    ("ernie.encoder.layers.{i}.linear1", "encoder_layer_{i}_ffn_fc_0",
     "ernie.encoder.layers.{i}.linear1", "ernie.encoder.layer.{i}.intermediate.dense"),
    ("ernie.encoder.layers.{i}.linear2", "encoder_layer_{i}_ffn_fc_1",
     "ernie.encoder.layers.{i}.linear2", "ernie.encoder.layer.{i}.output.dense"),
    ("ernie.pooler", "pooled_fc", "ernie.pooler.dense", "ernie.pooler.dense"),
    ("mlm_transform", "mask_lm_trans_fc", "cls.predictions.transform",
     "cls.predictions.transform.dense"),
    ("nsp", "next_sent_fc", "cls.seq_relationship", "cls.seq_relationship"),
)  # fmt: skip
MLM_BIAS = (
    "mlm_bias",
    "mask_lm_out_fc.b_0",
    "cls.predictions.decoder_bias",
    "cls.predictions.bias",
)
# Parameters of the pretraining heads only: a base-model checkpoint lacks them, and
# `init_missing_heads` lets them start from ERNIE's initialiser instead.
HEADS = re.compile(r"(mlm_|nsp\.|ernie\.pooler\.)")


@dataclass(frozen=True)
class Form:
    name: str
    column: int  # of the rows above
    norm_suffixes: tuple[str, str]  # scale, shift
    linear_suffixes: tuple[str, str]  # weight, bias
    transposed: bool  # Linear weights stored [out, in]
    # Copies of tied tensors the source may also hold: name -> the tensor it must equal.
    tied: dict[str, str]
    # Tensors the source may hold that ERNIE 1.0 pretraining does not use: pattern -> why.
    unused: dict[str, str]


TASK_EMBEDDINGS = "task-type embeddings (ERNIE 2.0/3.0), not part of ERNIE 1.0"
FORMS = {
    "original": Form(
        "original", 1, ("_scale", "_bias"), (".w_0", ".b_0"), False,
        tied={"mask_lm_out_fc.w_0": "word_embedding"},
        unused={
            r"task_embedding": TASK_EMBEDDINGS,
            r".*_moment[12]_0|.*_beta[12]_pow_acc_0|learning_rate_\d+|@LR_DECAY_COUNTER@"
            r"|loss_scaling_\d+|num_(good|bad)_steps_\d+": "optimizer state",
        },
    ),
    "paddlenlp": Form(
        "paddlenlp", 2, (".weight", ".bias"), (".weight", ".bias"), False,
        tied={  # older releases: decoder_weight; 3.x: a tied Linear, decoder.weight/.bias
            "cls.predictions.decoder_weight": "ernie.embeddings.word_embeddings.weight",
            "cls.predictions.decoder.weight": "ernie.embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.decoder_bias",
        },
        unused={r"ernie\.embeddings\.task_type_embeddings\.weight": TASK_EMBEDDINGS},
    ),
    "huggingface": Form(
        "huggingface", 3, (".weight", ".bias"), (".weight", ".bias"), True,
        tied={
            "cls.predictions.decoder.weight": "ernie.embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias",
        },
        unused={
            r"ernie\.embeddings\.task_type_embeddings\.weight": TASK_EMBEDDINGS,
            r"ernie\.embeddings\.position_ids": "a buffer of position indices, not a weight",
        },
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Released:
    """A released checkpoint in this project's terms."""

    form: str
    state: dict[str, np.ndarray]  # by our parameter names; heads may be missing (see HEADS)
    config: ErnieConfig
    notes: list[str]  # what was left out, and why


def name_map(form: Form, layers: int) -> dict[str, tuple[str, bool]]:
    """Our parameter name -> (the source's name, whether to transpose)."""
    names: dict[str, tuple[str, bool]] = {}
    for row in EMBEDDINGS:
        names[row[0]] = (row[form.column], False)
    names[MLM_BIAS[0]] = (MLM_BIAS[form.column], False)
    for rows, suffixes, ours_suffixes, transpose in (
        (NORMS, form.norm_suffixes, (".weight", ".bias"), (False, False)),
        (LINEARS, form.linear_suffixes, (".weight", ".bias"), (form.transposed, False)),
    ):
        for row in rows:
            for i in range(layers) if "{i}" in row[0] else [None]:
                for theirs, ours, flip in zip(suffixes, ours_suffixes, transpose, strict=True):
                    names[row[0].format(i=i) + ours] = (row[form.column].format(i=i) + theirs, flip)
    return names


def read(source: Path, vocab_len: int) -> Released:
    """Read a released checkpoint folder of any of the three forms."""
    form, weights = locate(source)
    tensors = READERS[weights](source / weights)
    config_name = CONFIGS[form]
    if form == "paddlenlp" and not (source / config_name).is_file():
        config_name = "config.json"  # what PaddleNLP's save_pretrained writes since 2.6
    config = _config(_json(source / config_name), form, source, vocab_len)
    state, notes = _convert(FORMS[form], tensors, config.num_hidden_layers, source)
    return Released(form, state, config, notes)


# Which file tells the form: (form, weights file or folder), in the order they are tried.
WEIGHTS = (
    ("original", "params"),
    ("paddlenlp", "model_state.pdparams"),
    ("huggingface", "model.safetensors"),
    ("huggingface", "pytorch_model.bin"),
)
CONFIGS = {
    "original": "ernie_config.json",
    "paddlenlp": "model_config.json",
    "huggingface": "config.json",
}


def locate(source: Path) -> tuple[str, str]:
    """(form, weights file) of the checkpoint in `source`."""
    for form, weights in WEIGHTS:
        if (source / weights).exists():
            return form, weights
    raise ConfigError(
        f"{source} is not a released ERNIE checkpoint: expected params/ and ernie_config.json "
        "(the original release), model_state.pdparams (PaddleNLP), or model.safetensors / "
        "pytorch_model.bin with config.json (transformers)"
    )


def _json(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path} is missing: the checkpoint's model config")
    return read_json_object(path, "model config", ConfigError)


# Settings beside ERNIE 1.0's that change the architecture, and the value ours has.
FIXED = {
    "layer_norm_eps": (1e-5, "LayerNorm epsilon"),
    "position_embedding_type": ("absolute", "position embeddings"),
    "pool_act": ("tanh", "pooler activation"),
}


def _config(raw: dict, form: str, source: Path, vocab_len: int) -> ErnieConfig:
    if "init_args" in raw:  # PaddleNLP's legacy model_config.json
        args = raw["init_args"]
        raw = args[0] if isinstance(args, list) and args and isinstance(args[0], dict) else {}
    where = f"of the {form} checkpoint {source}"
    if raw.get("use_task_id"):
        raise ConfigError(
            f"model config {where} sets use_task_id: it adds task-type embeddings to every input (ERNIE "
            "2.0/3.0), which ERNIE 1.0 does not have; import an ERNIE 1.0 checkpoint"
        )
    for key, (value, what) in FIXED.items():
        if key in raw and raw[key] != value and not _close(raw[key], value):
            raise ConfigError(
                f"model config {where}: {key} is {raw[key]!r}; ERNIE 1.0's {what} is {value!r}"
            )
    hidden = raw.get("hidden_size")
    inner = raw.get("intermediate_size")
    if inner is not None and isinstance(hidden, int) and inner != 4 * hidden:
        raise ConfigError(
            f"model config {where}: intermediate_size {inner} is not 4 x hidden_size {hidden}, the ERNIE 1.0 "
            "feed-forward size"
        )
    if "vocab_size" not in raw:
        raise ConfigError(f"model config {where} has no vocab_size")
    # ERNIE 1.0 has no task embedding, whatever size a config gives the unused one.
    known = set(ErnieConfig.__dataclass_fields__) - {"task_type_vocab_size"}
    known.add("sent_type_vocab_size")
    return config_from_dict({k: v for k, v in raw.items() if k in known}, where, vocab_len)


def _close(a: object, b: object) -> bool:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return numbers and math.isclose(a, b, rel_tol=1e-6)  # type: ignore[arg-type]


def _convert(
    form: Form, tensors: dict[str, np.ndarray], layers: int, source: Path
) -> tuple[dict[str, np.ndarray], list[str]]:
    tensors = {
        _modern_norm_name(k) if form.name == "huggingface" else k: v for k, v in tensors.items()
    }
    names = name_map(form, layers)
    state = {
        ours: (tensors[theirs].T if flip else tensors[theirs])
        for ours, (theirs, flip) in names.items()
        if theirs in tensors
    }
    used = {theirs for theirs, _ in names.values()}
    notes, extra, different = [], [], []
    for name in sorted(set(tensors) - used):
        if name in form.tied and form.tied[name] in tensors:
            if not np.array_equal(tensors[name], tensors[form.tied[name]]):
                different.append(f"{name} (ERNIE 1.0 ties it to {form.tied[name]})")
            continue
        why = next((w for p, w in form.unused.items() if re.fullmatch(p, name)), None)
        if why is None:
            extra.append(name)
        else:
            notes.append(f"{name}: {why}, not imported")
    missing = sorted(
        f"{theirs} (for {ours})"
        for ours, (theirs, _) in names.items()
        if theirs not in tensors and not HEADS.match(ours)
    )
    problems = [f"missing: {', '.join(missing)}"] if missing else []
    problems += [f"not part of ERNIE 1.0: {', '.join(extra)}"] if extra else []
    problems += [f"tied tensors that differ: {', '.join(different)}"] if different else []
    if problems:
        raise ConfigError(
            f"{source} ({form.name} form) does not match ERNIE 1.0 with {layers} layers: "
            + "; ".join(problems)
        )
    return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}, notes


def _modern_norm_name(name: str) -> str:
    """transformers' files from before 4.x name LayerNorm parameters gamma and beta."""
    return re.sub(
        r"(LayerNorm)\.gamma$", r"\1.weight", re.sub(r"(LayerNorm)\.beta$", r"\1.bias", name)
    )


def missing_heads(state: dict[str, np.ndarray], ours: list[str]) -> list[str]:
    """Head parameters the model has that the checkpoint did not bring."""
    return [name for name in ours if name not in state and HEADS.match(name)]


# -- readers, one per file format ---------------------------------------------------------


def _read_paddle_1x(folder: Path) -> dict[str, np.ndarray]:
    """One PaddlePaddle 1.x variable file per tensor, the file name being the variable's."""
    import paddle

    tensors = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            tensors[path.name] = np.asarray(paddle.load(str(path), return_numpy=True))
        except Exception as exc:  # Paddle raises ValueError, RuntimeError or OSError here
            raise ConfigError(f"{path} is not a PaddlePaddle variable file ({exc})") from None
    if not tensors:
        raise ConfigError(f"{folder} holds no variable files")
    return tensors


def _read_pdparams(path: Path) -> dict[str, np.ndarray]:
    import paddle

    try:
        state = paddle.load(str(path), return_numpy=True)
    except Exception as exc:  # a truncated or foreign file fails inside pickle or Paddle
        raise ConfigError(f"{path} is not a Paddle state dict ({exc})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k: np.asarray(v) for k, v in state.items() if k != "StructuredToParameterName@@"}


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError  # installed with paddlepaddle
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"{path} is not a safetensors file ({exc})") from None


def _read_torch_zip(path: Path) -> dict[str, np.ndarray]:
    """A `torch.save` state dict, read without torch and without running pickled code:
    only tensors, their storages and ordered dicts are allowed."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ConfigError(
            f"{path} is not a zip-format torch file (torch < 1.6 wrote another format): "
            "save it again with a current torch, or use model.safetensors"
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ConfigError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        root = pickles[0][: -len("data.pkl")]
        try:
            state = _TorchUnpickler(archive, root).load()
        except (pickle.UnpicklingError, KeyError, ValueError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,  # widened to float32 below
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


class _TorchUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(archive.open(root + "data.pkl"))
        self.archive = archive
        self.root = root

    def find_class(self, module: str, name: str) -> Callable | type:
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
            return _rebuild_tensor if name == "_rebuild_tensor_v2" else _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a state dict")

    def persistent_load(self, pid: tuple) -> np.ndarray:
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unknown persistent object {pid!r}")
        data = np.frombuffer(
            self.archive.read(f"{self.root}data/{key}"), STORAGE_DTYPES[storage_type.name]
        )
        if storage_type.name == "BFloat16Storage":
            data = (data.astype(np.uint32) << 16).view(np.float32)
        return data


@dataclass(frozen=True)
class _StorageType:
    name: str


def _rebuild_tensor(
    storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: object
) -> np.ndarray:
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides).copy()


def _rebuild_parameter(data: np.ndarray, *_: object) -> np.ndarray:
    return data


READERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    "params": _read_paddle_1x,
    "model_state.pdparams": _read_pdparams,
    "model.safetensors": _read_safetensors,
    "pytorch_model.bin": _read_torch_zip,
}
