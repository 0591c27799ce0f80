"""Weight files: finding them, reading them safely, converting native layouts, and their sha256.

Three native checkpoint layouts are read, each as its authors publish it:

- ``"torchvision"``: a plain state dict (``resnet152-394f9c45.pth``, ``r3d_18-b3b3357e.pth``).
- ``"hara"``: Hara et al. 3D-ResNets-PyTorch releases (``r3d152_K_200ep.pth``,
  ``resnext-101-kinetics.pth``): ``{'state_dict': {'module.conv1.weight': ..., ...}, 'arch': ...}``;
  the ``module.`` prefix (left by ``nn.DataParallel``) is stripped.
- ``"pytorchvideo"``: pytorchvideo model-zoo files (``I3D_8x8_R50.pyth``): ``{'model_state': {...}}``,
  or a plain state dict.
- ``"detectron2"``: detectron2 checkpoints (the bottom-up-attention conversion
  ``bua-caffe-frcn-r101_with_attributes.pth``): ``{'model': {...}, ...}`` or a plain state dict; BN
  ``num_batches_tracked`` counters are dropped (frozen BN has none).
- ``"c3d"``: the converted Sports-1M C3D weights of DavideA/c3d-pytorch (``c3d.pickle``, saved with
  ``torch.save``): a plain state dict ``conv1.weight`` (64, 3, 3, 3, 3) ... ``conv5b.bias``,
  ``fc6.weight`` (4096, 8192), ``fc7``, ``fc8.bias`` (487,); a ``module.`` prefix is stripped.

Every file is read with ``torch.load(path, map_location="cpu", weights_only=True)``: no pickled code
runs. Loading is strict: a missing or unexpected key, or a shape mismatch, is an error that names the
file and the keys. The sha256 of every file used goes into the feature provenance.

No function here downloads anything: torchvision weights are used when they are already in the torch
hub cache (``torch.hub.get_dir()/checkpoints/<file>``); otherwise the error says which file to put where.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

WEIGHT_FORMATS = ("torchvision", "hara", "pytorchvideo", "detectron2", "c3d")


class WeightsError(RuntimeError):
    """A weight file is missing, unreadable or does not fit the backbone; the message says what to do."""


def sha256_file(path: str | os.PathLike, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def torch_cache_checkpoint(filename: str) -> Path:
    """Where torchvision keeps a downloaded weight file: ``torch.hub.get_dir()/checkpoints/<filename>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def find_cached(filenames: tuple[str, ...]) -> Path | None:
    """The first of ``filenames`` present in the torch hub cache, or None."""
    for name in filenames:
        path = torch_cache_checkpoint(name)
        if path.is_file():
            return path
    return None


def _unpickler_reason(err: BaseException) -> str:
    """The ``WeightsUnpickler error: ...`` part of torch's weights_only message (without its advice)."""
    text = " ".join(str(err).split())
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1]
        reason = reason.split(". Please use", 1)[0].split(" Check the documentation", 1)[0]
        return reason.strip().rstrip(".") or "refused"
    return text[:200] or type(err).__name__


def read_checkpoint(path: str | os.PathLike) -> object:
    """``torch.load`` a checkpoint on the CPU with ``weights_only=True``.

    Raises:
        WeightsError: the file is missing, is not a torch checkpoint (garbage, truncated, empty), or
            holds pickled Python objects that ``weights_only=True`` refuses (a whole model, custom
            classes). The message names the file and says what to give instead; nothing is ever
            loaded with ``weights_only=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # not a pickle / torch file, or objects beyond tensors
        raise WeightsError(
            f"cannot read weight file {path} with torch.load(weights_only=True): {_unpickler_reason(err)}. "
            "Either it is not a PyTorch checkpoint, or it stores Python objects besides tensors (e.g. a "
            "whole pickled model), which this toolkit never unpickles. Give a state-dict checkpoint "
            "(.pth/.pt/.pyth) in the backbone's native format, e.g. re-saved with "
            "torch.save(model.state_dict(), path) from a source you trust."
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError) as err:
        # RuntimeError: a damaged zip archive ("failed finding central directory"); EOFError: empty or
        # truncated legacy file; ValueError / KeyError / IndexError: malformed records inside
        reason = str(err).splitlines()[0] if str(err) else "the file ends early"
        if path.stat().st_size == 0:
            reason = "the file is empty"
        raise WeightsError(
            f"cannot read weight file {path} with torch.load(weights_only=True) "
            f"({type(err).__name__}: {reason}). The file is damaged, truncated or not a PyTorch "
            "checkpoint: download it again, or give a state-dict checkpoint (.pth/.pt/.pyth) in the "
            "backbone's native format."
        ) from err


def _tensor_dict(obj: object, path: Path, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path}: expected a non-empty state dict {where}, found {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: entry {key!r} {where} is not a tensor ({type(value).__name__})")
        out[key] = value
    return out


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def convert_checkpoint(
    obj: object, fmt: str, path: str | os.PathLike = "<memory>"
) -> dict[str, torch.Tensor]:
    """Turn a loaded checkpoint in a native layout into a state dict for our modules.

    Args:
        obj: what ``read_checkpoint`` returned.
        fmt: ``"torchvision"``, ``"hara"``, ``"pytorchvideo"``, ``"detectron2"`` or ``"c3d"``.
        path: the file, for error messages.

    Returns:
        Parameter / buffer name -> tensor.
    """
    path = Path(path)
    if fmt == "torchvision":
        if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            obj = obj["state_dict"]
        return _strip_prefix(_tensor_dict(obj, path, "(torchvision layout)"), "module.")
    if fmt == "hara":
        if isinstance(obj, Mapping) and "state_dict" in obj:
            state = _tensor_dict(obj["state_dict"], path, "under 'state_dict' (Hara et al. layout)")
        else:
            state = _tensor_dict(obj, path, "(Hara et al. layout)")
        return _strip_prefix(state, "module.")
    if fmt == "pytorchvideo":
        if isinstance(obj, Mapping) and "model_state" in obj:
            state = _tensor_dict(obj["model_state"], path, "under 'model_state' (pytorchvideo layout)")
        else:
            state = _tensor_dict(obj, path, "(pytorchvideo layout)")
        return _strip_prefix(state, "module.")
    if fmt == "detectron2":
        if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
            state = _tensor_dict(obj["model"], path, "under 'model' (detectron2 layout)")
        else:
            state = _tensor_dict(obj, path, "(detectron2 layout)")
        state = _strip_prefix(state, "module.")
        return {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    if fmt == "c3d":
        return _strip_prefix(_tensor_dict(obj, path, "(C3D c3d.pickle layout)"), "module.")
    raise ValueError(f"unknown weight format {fmt!r}; expected one of {WEIGHT_FORMATS}")


def _named(items: list[str], *, sep: str = ", ", limit: int = 24) -> str:
    """Every item, or the first ``limit`` and how many more (a whole 3D ResNet-152 would fill pages)."""
    shown = sep.join(items[:limit])
    return shown if len(items) <= limit else f"{shown}{sep}... and {len(items) - limit} more"


def load_into(module: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Strictly copy ``state`` into ``module``; mismatches raise ``WeightsError`` naming the file and keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}" for k in wrong]
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_named(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_named(unexpected)})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes ({_named(shapes, sep='; ')})")
        raise WeightsError(
            f"weight file {path} does not fit {type(module).__name__}: "
            + "; ".join(parts)
            + ". Check that the checkpoint matches the backbone (architecture, depth, number of classes)."
        )
    module.load_state_dict(state, strict=True)


def load_checkpoint_file(module: nn.Module, path: str | os.PathLike, fmt: str) -> str:
    """Read ``path`` in layout ``fmt``, load it strictly into ``module``, return the file's sha256."""
    path = Path(path)
    state = convert_checkpoint(read_checkpoint(path), fmt, path)
    load_into(module, state, path)
    return sha256_file(path)
