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

import io
import json
import math
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ernie_sm.contract.errors import ConfigError
from ernie_sm.contract.textfile import read_json_object
from ernie_sm.training import safe_pickle
from ernie_sm.training.config import ErnieConfig, config_from_dict

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
LAYER_TENSORS = 16  # in each encoder layer: 6 linear layers and 2 LayerNorms, 2 tensors each


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
        path = source / weights
        if path.exists() or path.is_symlink():
            if not (path.is_dir() if weights == "params" else path.is_file()):
                kind = "folder" if weights == "params" else "regular file"
                raise ConfigError(f"{path} is not a {kind}: refusing to read it")
            return form, weights
    raise ConfigError(
        f"{source} is not a released ERNIE checkpoint: expected params/ and ernie_config.json "
        "(the original release), model_state.pdparams (PaddleNLP), or model.safetensors / "
        "pytorch_model.bin with config.json (transformers)"
    )


def _json(path: Path) -> dict:
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "is missing"
        raise ConfigError(f"{path} {what}: the checkpoint's model config")
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
    if layers * LAYER_TENSORS > len(tensors):  # before name_map makes `layers` of anything
        raise ConfigError(
            f"{source} ({form.name} form): its model config gives num_hidden_layers {layers}, but "
            f"its {len(tensors)} tensors hold at most {len(tensors) // LAYER_TENSORS} layers"
        )
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
    return _float32(state, names, source), notes


def _float32(
    state: dict[str, np.ndarray], names: dict[str, tuple[str, bool]], source: Path
) -> dict[str, np.ndarray]:
    """The weights as float32, refusing integers (a buffer or an index is no weight) and NaN or
    infinite values (a diverged or damaged checkpoint), naming the source's tensors."""
    kinds = [f"{names[k][0]} ({v.dtype})" for k, v in state.items() if v.dtype.kind != "f"]
    if kinds:
        raise ConfigError(f"{source}: weights that are not floating point: {', '.join(kinds)}")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused
        state = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}
    bad = [names[k][0] for k, v in state.items() if not np.isfinite(v).all()]
    if bad:
        raise ConfigError(
            f"{source}: weights with NaN or infinite values (or beyond float32): {', '.join(bad)}"
        )
    return state


def expected_shapes(config: ErnieConfig) -> dict[str, list[int]]:
    """The shape of every parameter of ErnieForPretraining for `config`, in its order, computed
    without building the model (a config can ask for more memory than there is)."""
    h, vocab = config.hidden_size, config.vocab_size
    inner = 4 * h  # ERNIE 1.0's feed-forward size (_config refuses any other)

    def linear(name: str, n_in: int, n_out: int) -> dict[str, list[int]]:
        return {f"{name}.weight": [n_in, n_out], f"{name}.bias": [n_out]}

    def norm(name: str) -> dict[str, list[int]]:
        return {f"{name}.weight": [h], f"{name}.bias": [h]}

    shapes = {
        "mlm_bias": [vocab],
        "ernie.word_emb.weight": [vocab, h],
        "ernie.pos_emb.weight": [config.max_position_embeddings, h],
        "ernie.sent_emb.weight": [config.type_vocab_size, h],
        **norm("ernie.emb_norm"),
    }
    for i in range(config.num_hidden_layers):
        layer = f"ernie.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes |= linear(f"{layer}.self_attn.{proj}", h, h)
        shapes |= linear(f"{layer}.linear1", h, inner) | linear(f"{layer}.linear2", inner, h)
        shapes |= norm(f"{layer}.norm1") | norm(f"{layer}.norm2")
    shapes |= linear("ernie.pooler", h, h) | linear("mlm_transform", h, h) | norm("mlm_norm")
    return shapes | linear("nsp", h, 2)


def _modern_norm_name(name: str) -> str:
    """transformers' files from before 4.x name LayerNorm parameters gamma and beta."""
    return re.sub(
        r"(LayerNorm)\.gamma$", r"\1.weight", re.sub(r"(LayerNorm)\.beta$", r"\1.bias", name)
    )


def missing_heads(state: dict[str, np.ndarray], ours: list[str]) -> list[str]:
    """Head parameters the model has that the checkpoint did not bring."""
    return [name for name in ours if name not in state and HEADS.match(name)]


# -- readers, one per file format ---------------------------------------------------------
# Checkpoints are files from the internet: no reader runs code from them (pickles go through
# safe_pickle, the other formats are parsed here), and every size a file declares is checked
# against the bytes it holds before anything is allocated or viewed.


def _regular_file(path: Path) -> Path:
    """`path`, when it is a regular file: a FIFO or a device would block or never end."""
    if not path.is_file():
        raise ConfigError(f"{path} is not a regular file")
    return path


# PaddlePaddle's VarType.Type numbers (framework.proto) of the dtypes a variable file holds.
PADDLE_DTYPES = {
    0: np.bool_, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float16, 5: np.float32,
    6: np.float64, 20: np.uint8, 21: np.int8, 22: "bfloat16",
}  # fmt: skip


def _read_paddle_1x(folder: Path) -> dict[str, np.ndarray]:
    """One PaddlePaddle 1.x variable file per tensor, the file name being the variable's."""
    tensors = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        data = path.read_bytes()
        try:
            if data[:1] == b"\x80":  # a pickle: what paddle.save writes for one array
                value = safe_pickle.load(io.BytesIO(data))
                if not isinstance(value, np.ndarray):
                    raise ValueError(f"it holds a {type(value).__name__}, not an array")
                tensors[path.name] = value
            else:
                tensors[path.name] = _lod_tensor(data)
        except ValueError as exc:  # safe_pickle.UnsafePickle is one
            raise ConfigError(f"{path} is not a PaddlePaddle variable file ({exc})") from None
    if not tensors:
        raise ConfigError(f"{folder} holds no variable files")
    return tensors


def _lod_tensor(data: bytes) -> np.ndarray:
    """A LoDTensor as Paddle's save_vars writes it (SerializeToStream): uint32 version 0,
    uint64 LoD levels (each a uint64 byte count and its offsets), uint32 version 0, int32
    size of a TensorDesc protobuf (1: data type, 2: dims), the desc, then the elements."""
    at = 0

    def take(n: int) -> bytes:
        nonlocal at
        if n < 0 or at + n > len(data):
            raise ValueError("it ends early")
        at += n
        return data[at - n : at]

    if int.from_bytes(take(4), "little") != 0:
        raise ValueError("not a version 0 LoDTensor")
    for _ in range(int.from_bytes(take(8), "little")):
        take(int.from_bytes(take(8), "little"))
    if int.from_bytes(take(4), "little") != 0:
        raise ValueError("not a version 0 tensor")
    kind, dims = _tensor_desc(take(int.from_bytes(take(4), "little", signed=True)))
    if kind not in PADDLE_DTYPES:
        raise ValueError(f"data type {kind} is not a number type")
    dtype = np.dtype(np.uint16 if PADDLE_DTYPES[kind] == "bfloat16" else PADDLE_DTYPES[kind])
    if math.prod(dims) * dtype.itemsize != len(data) - at:
        raise ValueError(
            f"dims {dims} of {dtype} need {math.prod(dims) * dtype.itemsize} bytes, the file "
            f"holds {len(data) - at}"
        )
    array = np.frombuffer(data, dtype.newbyteorder("<"), offset=at).reshape(dims)
    if PADDLE_DTYPES[kind] == "bfloat16":
        return _bfloat16(array)
    return array.astype(dtype, copy=True)


def _tensor_desc(desc: bytes) -> tuple[int | None, list[int]]:
    """(data type, dims) of a serialised TensorDesc."""
    at, kind, dims = 0, None, []

    def varint() -> int:
        nonlocal at
        value = shift = 0
        while True:
            if at >= len(desc) or shift > 63:
                raise ValueError("a malformed tensor description")
            byte = desc[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while at < len(desc):
        key = varint()
        if key == 0x08:
            kind = varint()
        elif key == 0x10:
            dims.append(varint())
        elif key == 0x12:  # packed dims
            end = at + varint()
            while at < end:
                dims.append(varint())
        else:
            raise ValueError(f"a tensor description with an unknown field (key {key})")
    if any(d >= 2**63 for d in dims):  # negative int64s
        raise ValueError(f"negative dims {[d - 2**64 if d >= 2**63 else d for d in dims]}")
    return kind, dims


def _bfloat16(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (as uint16) widened to the float32 they are the top half of."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _read_pdparams(path: Path) -> dict[str, np.ndarray]:
    """paddle.save's pickle of a dict of numpy arrays, read without paddle.load."""
    try:
        with _regular_file(path).open("rb") as file:
            state = safe_pickle.load(file)
    except safe_pickle.UnsafePickle as exc:
        raise ConfigError(f"{path} is not a Paddle state dict: {exc}") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a state dict")
    state.pop("StructuredToParameterName@@", None)
    return _arrays(state, path)


def _arrays(state: dict, path: Path) -> dict[str, np.ndarray]:
    wrong = [
        str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)
    ]
    if wrong:
        raise ConfigError(f"{path}: entries that are not named arrays: {', '.join(wrong[:10])}")
    return state


SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}  # fmt: skip


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The safetensors format: a little-endian uint64 header size, a JSON header naming each
    tensor's dtype, shape and [begin, end) byte range in the data after it."""
    try:
        return _safetensors(_regular_file(path))
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ConfigError(f"{path} is not a safetensors file ({exc})") from None


def _safetensors(path: Path) -> dict[str, np.ndarray]:
    size = path.stat().st_size
    with path.open("rb") as file:
        header_size = int.from_bytes(file.read(8), "little")
        if size < 8 or header_size > min(size - 8, 100 * 2**20):
            raise ValueError(f"a header of {header_size} bytes in a file of {size}")
        header = json.loads(file.read(header_size))
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
        header.pop("__metadata__", None)
        tensors = {}
        for name, info in header.items():
            dtype = np.dtype(SAFETENSORS_DTYPES.get(info["dtype"], np.void))
            if dtype == np.void:
                raise ValueError(f"tensor {name}: dtype {info['dtype']!r} is not supported")
            shape, (begin, end) = info["shape"], info["data_offsets"]
            counts = [*shape, begin, end]
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
                raise ValueError(f"tensor {name}: shape {shape} or offsets are not whole numbers")
            if begin > end or end > size - 8 - header_size:
                raise ValueError(f"tensor {name}: bytes {begin}..{end} lie outside the data")
            if math.prod(shape) * dtype.itemsize != end - begin:
                raise ValueError(
                    f"tensor {name}: shape {shape} of {info['dtype']} needs "
                    f"{math.prod(shape) * dtype.itemsize} bytes, it has {end - begin}"
                )
            file.seek(8 + header_size + begin)
            array = np.frombuffer(file.read(end - begin), dtype.newbyteorder("<")).reshape(shape)
            array = array.astype(dtype)
            tensors[name] = _bfloat16(array) if info["dtype"] == "BF16" else array
    return tensors


def _read_torch_zip(path: Path) -> dict[str, np.ndarray]:
    """A `torch.save` state dict, read without torch and without running pickled code."""
    try:
        archive = zipfile.ZipFile(_regular_file(path))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise ConfigError(
            f"{path} is not a zip-format torch file (torch < 1.6 wrote another format): "
            "save it again with a current torch, or use model.safetensors"
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ConfigError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        root = pickles[0][: -len("data.pkl")]
        try:
            order = (
                archive.read(root + "byteorder").decode()
                if root + "byteorder" in archive.namelist()
                else "little"
            )
            storages = _TorchStorages(archive, root, ">" if order == "big" else "<")
            with archive.open(pickles[0]) as file:
                state = safe_pickle.load(file, storages)
        except (safe_pickle.UnsafePickle, zipfile.BadZipFile, zlib.error, OSError, EOFError,
                UnicodeDecodeError, NotImplementedError, RuntimeError) as exc:  # fmt: skip
            raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a state dict")
    return _arrays(state, path)


STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,  # widened to float32
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}  # fmt: skip


class _TorchStorages:
    """Persistent id ('storage', type, key, location, numel) -> the storage data/KEY."""

    def __init__(self, archive: zipfile.ZipFile, root: str, order: str) -> None:
        self.archive, self.root, self.order = archive, root, order
        self.read: dict[str, safe_pickle.Storage] = {}

    def __call__(self, pid: tuple) -> safe_pickle.Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise safe_pickle.UnsafePickle(f"unknown persistent object {pid!r}")
        kind, key = pid[1], pid[2]
        if not isinstance(kind, safe_pickle.StorageType) or not isinstance(key, str):
            raise safe_pickle.UnsafePickle(f"unknown persistent object {pid!r}")
        if key not in self.read:
            name = f"{self.root}data/{key}"
            if name not in self.archive.namelist():
                raise safe_pickle.UnsafePickle(f"storage {key} is not in the archive")
            dtype = np.dtype(STORAGE_DTYPES[kind.name])
            raw = self.archive.read(name)
            if len(raw) % dtype.itemsize:
                raise safe_pickle.UnsafePickle(
                    f"storage {key} of {len(raw)} bytes is no whole number of {kind.name} elements"
                )
            data = np.frombuffer(raw, dtype.newbyteorder(self.order)).astype(dtype)
            if kind.name == "BFloat16Storage":
                data = _bfloat16(data)
            self.read[key] = safe_pickle.Storage(data, key)
        return self.read[key]


READERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    "params": _read_paddle_1x,
    "model_state.pdparams": _read_pdparams,
    "model.safetensors": _read_safetensors,
    "pytorch_model.bin": _read_torch_zip,
}
