"""Read the tensors of an official checkpoint file without running its pickle.

Official releases are often whole pickled modules (``torch.save(model)``): a normal ``torch.load`` would
import and construct the classes the pickle names, i.e. run code from the file. :func:`read_tensors`
uses a restricted unpickler instead: the only callables it resolves are the tensor rebuild functions
(implemented here), ``collections.OrderedDict`` and the storage type names; every other global the pickle
names becomes an inert :class:`Opaque` placeholder that only records its arguments and state. Nothing
from the file is constructed or called, and there is no fallback to an unrestricted load. The tensors
are then collected from the placeholders' ``_parameters`` / ``_buffers`` / ``_modules`` (a pickled
module) or from a plain mapping of names to tensors (a saved state dict).

Both of ``torch.save``'s formats are read: the zip archive (PyTorch >= 1.6) and the legacy stream
(PyTorch 1.2, which the MASN authors used).

:func:`read_vocabulary` reads the official preprocessing's vocabulary files: JSON (MSPAN's
``*_vocab.json`` / ``*_answers_list.json``) with ``json``, pickles (MASN's ``word_to_index_*.pkl`` /
``ans_to_index_*.pkl``) with an unpickler that resolves no global at all, so only dicts, lists, strings
and integers can come out of it; anything else is refused without being built.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["OfficialFileError", "Opaque", "check_vocabulary_size", "describe_file", "read_tensors",
           "read_vocabulary"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}


class OfficialFileError(ValueError):
    """The file is not a readable checkpoint (or holds something other than tensors where they belong)."""


class Opaque:
    """Stand-in for any object the pickle names: records arguments and state, runs nothing."""

    args: tuple = ()
    kwargs: dict = {}
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEM(S) on an unknown mapping type
        if not isinstance(self.state, dict):
            self.state = {}
        self.state[key] = value

    def append(self, value: Any) -> None:  # APPEND(S) on an unknown list type
        if not isinstance(self.state, list):
            self.state = []
        self.state.append(value)

    def extend(self, values: Any) -> None:
        for v in values:
            self.append(v)


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = _DTYPES[name]


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any, **__: Any) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise OfficialFileError("a tensor in the file does not point at a tensor storage")
    return storage.as_strided(tuple(size), tuple(stride), int(offset)).clone()


def _rebuild_parameter(data: Any, *_: Any, **__: Any) -> Any:
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._tensor", "_rebuild_from_type_v2"): lambda func, _type, args, _state: func(*args),
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, load_storage) -> None:
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in ("torch", "torch.storage") and name in _DTYPES:
            return _StorageType(name)
        return type(f"Opaque[{module}.{name}]", (Opaque,), {})  # never the real class

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise OfficialFileError(f"unexpected persistent id {pid!r}")
        if pid[0] == "module":  # legacy saves name each module class (and its source) this way
            cls = pid[1] if len(pid) > 1 else None
            return cls if isinstance(cls, type) and issubclass(cls, Opaque) else Opaque
        if pid[0] != "storage":
            raise OfficialFileError(f"unexpected persistent id kind {pid[0]!r}")
        return self._load_storage(pid)


def _dtype_of(storage_type: Any) -> torch.dtype:
    if isinstance(storage_type, _StorageType):
        return storage_type.dtype
    if isinstance(storage_type, torch.dtype):
        return storage_type
    raise OfficialFileError(f"unknown storage type {storage_type!r}")


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise OfficialFileError(f"{path}: a zip file without one data.pkl (has {names[:5]}...)")
        prefix = pkl[0][: -len("data.pkl")]
        storages: dict[str, torch.Tensor] = {}

        def load_storage(pid: tuple) -> torch.Tensor:
            _, storage_type, key, _location, numel = pid[:5]
            dtype = _dtype_of(storage_type)
            if key not in storages:
                raw = bytearray(zf.read(f"{prefix}data/{key}"))
                t = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
                storages[key] = t.view(dtype) if raw else torch.empty(0, dtype=dtype)
            return storages[key]

        return _Unpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load()


def _load_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        restricted = _Unpickler(f, lambda pid: None)
        if restricted.load() != _LEGACY_MAGIC:
            raise OfficialFileError(
                f"{path}: not a PyTorch checkpoint (neither a zip archive nor a legacy save)")
        _Unpickler(f, lambda pid: None).load()  # protocol version
        _Unpickler(f, lambda pid: None).load()  # system info
        pending: dict[str, tuple[torch.dtype, int]] = {}
        views: list[tuple[Opaque, str, int, int]] = []

        def load_storage(pid: tuple) -> Any:
            _, storage_type, key, _location, numel, view = pid[:6]
            pending[key] = (_dtype_of(storage_type), int(numel))
            holder = Opaque(key)
            views.append((holder, key, *(view[1:3] if view else (0, -1))))
            return holder

        obj = _Unpickler(f, load_storage).load()
        keys = _Unpickler(f, lambda pid: None).load()
        data: dict[str, torch.Tensor] = {}
        for key in keys:
            dtype, _ = pending[key]
            (numel,) = struct.unpack("<q", f.read(8))
            size = numel * torch.empty(0, dtype=dtype).element_size()
            raw = bytearray(f.read(size))
            if len(raw) != size:
                raise OfficialFileError(f"{path}: truncated: the file ends inside its tensor data (a legacy "
                                        "torch.save pickle); expected the whole file")
            data[key] = (torch.frombuffer(raw, dtype=torch.uint8).view(dtype) if size
                         else torch.empty(0, dtype=dtype))
    storages = {id(h): (data[k][o:] if n < 0 else data[k][o:o + n]) for h, k, o, n in views}
    return _resolve_legacy(obj, storages, set())


def _resolve_legacy(obj: Any, storages: dict[int, torch.Tensor], seen: set[int]) -> Any:
    """Legacy saves rebuild tensors before their storages are read: re-run the rebuild on real storages."""
    if isinstance(obj, _LegacyTensor):
        return _rebuild_tensor(storages[id(obj.storage)], *obj.args)
    if id(obj) in seen:
        return obj
    seen.add(id(obj))
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _resolve_legacy(obj[k], storages, seen)
    elif isinstance(obj, list):
        obj[:] = [_resolve_legacy(v, storages, seen) for v in obj]
    elif isinstance(obj, tuple):
        return tuple(_resolve_legacy(v, storages, seen) for v in obj)
    elif isinstance(obj, Opaque):
        obj.args = tuple(_resolve_legacy(v, storages, seen) for v in obj.args)
        obj.state = _resolve_legacy(obj.state, storages, seen)
    return obj


class _LegacyTensor:
    def __init__(self, storage: Opaque, *args: Any) -> None:
        self.storage, self.args = storage, args


def _deferred_rebuild(storage: Any, *args: Any, **_: Any) -> Any:
    if isinstance(storage, Opaque):  # legacy: the storage bytes come after the pickle
        return _LegacyTensor(storage, *args)
    return _rebuild_tensor(storage, *args)


_ALLOWED[("torch._utils", "_rebuild_tensor_v2")] = _deferred_rebuild
_ALLOWED[("torch._utils", "_rebuild_tensor")] = _deferred_rebuild


def _collect(obj: Any, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> None:
    """Gather ``name -> tensor`` from a pickled module tree or a state-dict mapping."""
    if depth > 64:
        raise OfficialFileError("the module tree is nested more than 64 levels deep")
    if isinstance(obj, Opaque):
        state = obj.state
        if isinstance(state, tuple) and state and isinstance(state[0], dict):  # (dict, slotstate)
            state = state[0]
        if not isinstance(state, dict):
            return
        for group in ("_parameters", "_buffers"):
            for name, value in (state.get(group) or {}).items():
                if isinstance(value, torch.Tensor):
                    out[prefix + name] = value
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                _collect(child, f"{prefix}{name}.", out, depth + 1)
        return
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            out.update({prefix + str(k): v for k, v in obj.items()})
            return
        for key in ("state_dict", "model"):
            if key in obj:
                _collect(obj[key], prefix, out, depth + 1)
                return
    raise OfficialFileError(
        f"found a {type(obj).__name__} where a module or a mapping of tensors was expected"
    )


def describe_file(path: str | Path) -> str:
    """What a file that did not load as a checkpoint is, from its first bytes, in words (no file content is
    echoed beyond a short printable start): empty, a truncated zip archive, a pickle, text, or unknown."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if size == 0:
        return "is an empty file"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return (f"is a zip archive (the format of torch.save) whose end is missing ({size} bytes): "
                    "truncated or damaged, e.g. an interrupted download")
        return f"is a zip archive ({size} bytes) that torch cannot read as a checkpoint: damaged"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return (f"is a pickle (the legacy format of torch.save, {size} bytes) that ends early or holds "
                "something else: truncated or damaged")
    text = head.decode("utf-8", "replace")
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        start = " ".join(text.split())[:40]
        return f"is a text file (it starts {start!r}), not a checkpoint"
    return f"is binary data of an unknown format ({size} bytes, starting {head[:8].hex(' ')})"


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All parameters and buffers of a checkpoint file, by their dotted names, without running its pickle.

    A leading ``module.`` (``nn.DataParallel``) is stripped when every name has it.

    Raises:
        OfficialFileError: naming the file, when it is not a PyTorch checkpoint holding tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise OfficialFileError(f"{path}: no such file")
    expected = "expected a PyTorch checkpoint (torch.save of a module or of a state dict)"
    with open(path, "rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"
    if zipped and not zipfile.is_zipfile(path):
        raise OfficialFileError(f"{path} {describe_file(path)}; {expected}")
    try:
        obj = _load_zip(path) if zipped else _load_legacy(path)
        tensors: dict[str, torch.Tensor] = {}
        _collect(obj, "", tensors)
    except OfficialFileError as exc:
        msg = str(exc)
        raise OfficialFileError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, struct.error,
            zipfile.BadZipFile, RuntimeError, AttributeError, IndexError, UnicodeDecodeError) as exc:
        del exc  # its text is the unpickler's (binary junk from the file); say what the file is instead
        raise OfficialFileError(f"{path} {describe_file(path)}; {expected}") from None
    if not tensors:
        raise OfficialFileError(f"{path}: holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


# --------------------------------------------------------------------------------------------------
# Vocabulary files
# --------------------------------------------------------------------------------------------------


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what pickle opcodes build on their own (dicts, lists, tuples, str, int, float, ...)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"holds a {module}.{name} object")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("holds a persistent reference (a tensor or module)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_list(data: Any, path: Path) -> list[str]:
    """``{token: index}``, ``{index: token}`` or a list of tokens, as the tokens ordered by index."""
    if isinstance(data, list) and all(isinstance(t, str) for t in data):
        return list(data)
    if isinstance(data, dict) and data:
        if all(isinstance(k, str) and _is_int(v) for k, v in data.items()):
            pairs = {v: k for k, v in data.items()}
            if len(pairs) != len(data):
                raise OfficialFileError(f"{path}: two tokens share one index")
        elif all(_is_int(k) and isinstance(v, str) for k, v in data.items()):
            pairs = dict(data)
        else:
            raise OfficialFileError(f"{path}: expected {{token: index}} or {{index: token}} with string "
                                    f"tokens and integer indices")
        if sorted(pairs) != list(range(len(pairs))):
            raise OfficialFileError(f"{path}: its indices are not 0..{len(pairs) - 1} without gaps or "
                                    f"repeats")
        return [pairs[i] for i in range(len(pairs))]
    raise OfficialFileError(f"{path}: expected a vocabulary ({{token: index}}, {{index: token}} or a list "
                            f"of tokens), found {type(data).__name__}")


def read_vocabulary(path: str | Path) -> list[str]:
    """An official vocabulary file as its tokens ordered by index.

    JSON files are read with ``json``; pickles with an unpickler that resolves no class or function
    (a pickle naming one, e.g. a numpy scalar, is refused and nothing in it is run).

    Raises:
        OfficialFileError: naming the file: unreadable, neither JSON nor pickle, or not a vocabulary.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OfficialFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if raw.lstrip()[:1] not in (b"{", b"["):  # not JSON: a pickle (any protocol)
        try:
            data = _PlainUnpickler(io.BytesIO(raw)).load()
        except pickle.UnpicklingError as exc:
            raise OfficialFileError(f"{path}: {exc}; vocabulary files hold only dicts, lists, strings and "
                                    f"integers, so it is refused without unpickling it") from None
        except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            raise OfficialFileError(f"{path}: neither a JSON nor a readable pickle vocabulary file "
                                    f"({exc})") from None
    else:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OfficialFileError(f"{path}: not a readable JSON vocabulary file ({exc})") from None
    return _as_list(data, path)


def check_vocabulary_size(tokens: list[str], rows: int, path: str | Path, what: str) -> None:
    """Refuse a vocabulary whose size is not the checkpoint's number of ``what`` rows."""
    if len(tokens) != rows:
        raise OfficialFileError(f"{path}: {len(tokens)} entries, but the checkpoint's {what} has {rows} "
                                f"rows; use the vocabulary file made by the same preprocessing run as the "
                                f"checkpoint")


#: what the official preprocessing puts at index 0 (padding) and 1 (unknown word): MSPAN ``<NULL>`` /
#: ``<UNK>``; MASN ``#START#`` / ``UNK`` (its index-to-word file writes ``.`` at 0)
_PADDING, _UNKNOWN = ("<NULL>", "#START#", "."), ("<UNK>", "UNK")


def read_question_vocabulary(path: str | Path, rows: int) -> list[str]:
    """The official question vocabulary, checked against ``rows`` embedding rows, with its padding and
    unknown-word tokens renamed to ours (``<pad>`` = 0, ``<unk>`` = 1).

    Raises:
        OfficialFileError: naming the file: unreadable, the wrong size, or not a question vocabulary.
    """
    tokens = read_vocabulary(path)
    check_vocabulary_size(tokens, rows, path, "question embedding")
    if len(tokens) < 2 or tokens[0] not in _PADDING or tokens[1] not in _UNKNOWN:
        raise OfficialFileError(
            f"{path}: index 0 and 1 are {tokens[:2]}, not the official padding and unknown-word tokens "
            f"({'/'.join(_PADDING)} and {'/'.join(_UNKNOWN)}); is this the question vocabulary?")
    return ["<pad>", "<unk>", *tokens[2:]]


def read_answer_vocabulary(path: str | Path, rows: int) -> list[str]:
    """The official answer list by index, checked against the answer classifier's ``rows`` outputs."""
    tokens = read_vocabulary(path)
    check_vocabulary_size(tokens, rows, path, "answer classifier")
    return tokens
