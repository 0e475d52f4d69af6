"""Pickles from checkpoints people download, read without running any of their code.

A pickle is a program: `find_class` hands it callables and REDUCE calls them. The one
unpickler here hands out only stand-ins of its own, which record arrays and tensors and
build nothing until their values have been checked: numpy's array and dtype
reconstruction (what `paddle.save` writes into `.pdparams`), ordered dicts, and the
tensor and storage records of `torch.save` (whose storages the caller reads from the zip).
Every shape, stride, offset and dtype is checked against the bytes behind it before an
array is made, so no file can make a view of memory outside its own data.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable
from typing import IO

import numpy as np

# The dtypes a weight file may hold: floats, and the integers of buffers and counters.
DTYPE = re.compile(r"[fiu][1248]|b1")


class UnsafePickle(ValueError):
    """The pickle is not a plain container of arrays, or its arrays do not fit their data."""


class _StateDict(dict):
    """collections.OrderedDict as torch.save writes it: its `_metadata` attribute (set by
    BUILD) is of no use here and dropped."""

    def __setstate__(self, state: object) -> None:
        pass


class _Dtype:
    """numpy.dtype(typestr, align, copy), then BUILD with (version, byteorder, ...)."""

    def __init__(self, typestr: object, *_: object) -> None:
        if not isinstance(typestr, str) or not DTYPE.fullmatch(typestr):
            raise UnsafePickle(f"dtype {typestr!r} is not a number type")
        self.typestr = typestr
        self.order = "<"

    def __setstate__(self, state: object) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if order not in ("<", ">", "|", "="):
            raise UnsafePickle(f"dtype state {state!r} is not a plain number type's")
        self.order = order

    def resolve(self) -> np.dtype:
        order = "=" if self.order == "|" else self.order
        return np.dtype(self.typestr).newbyteorder(order)


class _Sealed:
    """What BUILD may not change: without this, a pickle could set attributes on it."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise UnsafePickle(f"refusing to set the state of a {type(self).__name__}")


class _NdarrayType(_Sealed):
    """Stands in for numpy.ndarray, which only _reconstruct may receive."""

    __slots__ = ()


class _PendingArray:
    """numpy's _reconstruct(ndarray, (0,), b'b'), then BUILD with
    (version, shape, dtype, is_fortran, rawdata)."""

    def __init__(self, subtype: object = None, *_: object) -> None:
        if not isinstance(subtype, _NdarrayType):
            raise UnsafePickle("_reconstruct of something other than numpy.ndarray")
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def resolve(self, name: str) -> np.ndarray:
        state = self.state
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickle(f"{name}: an array without its data")
        _version, shape, dtype, fortran, raw = state
        return _from_bytes(raw, dtype, shape, "F" if fortran is True else "C", name)


def _frombuffer(raw: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """numpy._core.numeric._frombuffer, what protocol 5 pickles of arrays call."""
    return _from_bytes(raw, dtype, shape, order, "an array")


def _from_bytes(raw: object, dtype: object, shape: object, order: object, name: str) -> np.ndarray:
    if not isinstance(dtype, _Dtype):
        raise UnsafePickle(f"{name}: its dtype is not a numpy dtype")
    if isinstance(raw, (bytearray, pickle.PickleBuffer)):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise UnsafePickle(f"{name}: its data is a {type(raw).__name__}, not bytes")
    size = _shape(shape, name)
    numpy_dtype = dtype.resolve()
    if math.prod(size) * numpy_dtype.itemsize != len(raw):
        raise UnsafePickle(
            f"{name}: shape {list(size)} of {numpy_dtype} needs "
            f"{math.prod(size) * numpy_dtype.itemsize} bytes, its data has {len(raw)}"
        )
    array = np.frombuffer(raw, numpy_dtype).reshape(size, order="F" if order == "F" else "C")
    return np.ascontiguousarray(array).astype(numpy_dtype.newbyteorder("="), copy=False)


def _shape(shape: object, name: str, what: str = "shape") -> tuple[int, ...]:
    if not (isinstance(shape, (tuple, list)) and all(_count(n) for n in shape)):
        raise UnsafePickle(f"{name}: {what} {shape!r} is not a list of whole numbers >= 0")
    return tuple(shape)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _latin1(text: object = None, encoding: object = None) -> bytes:
    """_codecs.encode(text, "latin1"): how protocol 2 pickles write bytes (older paddle.save)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickle(f"_codecs.encode of {type(text).__name__} to {encoding!r}")
    return text.encode("latin1")


class Storage(_Sealed):
    """One torch storage: its elements, as read by the caller from the archive."""

    __slots__ = ("data", "key")

    def __init__(self, data: np.ndarray, key: str) -> None:
        self.data = data
        self.key = key


class _PendingTensor(_Sealed):
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    __slots__ = ("offset", "size", "storage", "stride")

    def __init__(
        self, storage: object = None, offset: object = None, size: object = None,
        stride: object = None, *_: object,
    ) -> None:  # fmt: skip
        if not isinstance(storage, Storage):
            raise UnsafePickle("a tensor whose storage is not one of the archive's")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def resolve(self, name: str) -> np.ndarray:
        data = self.storage.data
        assert isinstance(data, np.ndarray) and data.ndim == 1 and data.dtype.kind in "fiub"
        size = _shape(self.size, f"tensor {name}")
        stride = _shape(self.stride, f"tensor {name}", "strides")
        if not _count(self.offset) or len(stride) != len(size):
            raise UnsafePickle(
                f"tensor {name}: offset {self.offset!r} and strides {list(stride)} do not fit "
                f"its shape {list(size)}"
            )
        numel = math.prod(size)
        if numel == 0:
            return np.zeros(size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= len(data) or numel > len(data):
            raise UnsafePickle(
                f"tensor {name}: shape {list(size)}, strides {list(stride)} at offset "
                f"{self.offset} reach past its storage {self.storage.key} of {len(data)} elements"
            )
        strides = tuple(s * data.itemsize for s in stride)
        view = np.lib.stride_tricks.as_strided(data[self.offset :], shape=size, strides=strides)
        return view.copy()


def _rebuild_parameter(data: object = None, *_: object) -> object:
    return data


class StorageType(_Sealed):
    """torch.FloatStorage and its kin, as they appear in a persistent id."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


TORCH_STORAGES = (
    "FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage",
    "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage",
)  # fmt: skip
ALLOWED: dict[tuple[str, str], Callable | type | object] = {
    ("collections", "OrderedDict"): _StateDict,
    ("numpy", "ndarray"): _NdarrayType(),
    ("numpy", "dtype"): _Dtype,
    ("_codecs", "encode"): _latin1,
    **{(m, "_reconstruct"): _PendingArray for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): _frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
}  # fmt: skip
TORCH_ALLOWED: dict[tuple[str, str], Callable | type | object] = {
    ("torch._utils", "_rebuild_tensor"): _PendingTensor,
    ("torch._utils", "_rebuild_tensor_v2"): _PendingTensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): StorageType(name) for name in TORCH_STORAGES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], storage: Callable[[tuple], Storage] | None) -> None:
        super().__init__(file)
        self.storage = storage
        self.allowed = {**ALLOWED, **(TORCH_ALLOWED if storage else {})}

    def find_class(self, module: str, name: str) -> Callable | type:
        found = self.allowed.get((module, name))
        if found is None:
            raise UnsafePickle(f"refusing to load {module}.{name}: not part of a state dict")
        return found  # type: ignore[return-value]

    def persistent_load(self, pid: object) -> Storage:
        if self.storage is None:
            raise UnsafePickle(f"unknown persistent object {pid!r}")
        return self.storage(pid)  # type: ignore[arg-type]


def load(file: IO[bytes], storage: Callable[[tuple], Storage] | None = None) -> object:
    """The pickle in `file`, with every array checked and built. `storage` turns a torch
    persistent id into its Storage; without it a persistent id is refused. Raises
    UnsafePickle for anything but containers of arrays, and for any malformed pickle."""
    try:
        return _resolve(_Unpickler(file, storage).load(), "the pickle", 0)
    except UnsafePickle:
        raise
    except Exception as exc:  # a broken pickle fails in any of pickle's ways
        raise UnsafePickle(f"not a readable pickle ({type(exc).__name__}: {exc})") from None


def _resolve(value: object, name: str, depth: int) -> object:
    if depth > 20:
        raise UnsafePickle(f"{name}: containers nested deeper than a state dict's")
    if isinstance(value, (_PendingArray, _PendingTensor)):
        return value.resolve(name)
    if isinstance(value, dict):
        return {k: _resolve(v, str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, f"{name}[{i}]", depth + 1) for i, v in enumerate(value))
    if value is None or isinstance(value, (str, bytes, int, float, bool, np.ndarray)):
        return value
    raise UnsafePickle(f"{name}: a {type(value).__name__}, not an array")
