"""Checkpoints: state dicts only, written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (no pickled objects):
``model``, ``optimizer``, ``scheduler``, ``scaler`` state dicts, ``rng`` (per process; see
:func:`capture_rng_state`), ``epoch`` (epochs completed), ``state`` (best metric, best epoch and the
:func:`model_digest` of its weights, early stopping counter, global step), and ``meta`` (model name,
configs as JSON text, answer vocabulary).

``best.pt`` holds ``model``, ``epoch``, ``state``, ``meta`` and ``model_sha256``. It is written after the
epoch's own ``epoch-NNNN.pt``, so a crash between the two leaves a missing or older ``best.pt``;
:func:`restore_best` puts the model of the recorded best epoch back (from its epoch checkpoint) and
:func:`check_best` proves that ``best.pt`` holds it (epoch and weights digest) before it is evaluated.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import random
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.atomic import atomic_path

__all__ = [
    "CheckpointError",
    "capture_rng_state",
    "check_best",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "model_digest",
    "prune_checkpoints",
    "restore_best",
    "restore_rng_state",
    "save_checkpoint",
]

_EPOCH_RE = re.compile(r"^epoch-(\d{4,})\.pt$")
#: torch's writer failing with less free space than this is a full disk (its message does not say so)
_FULL = 64 << 20


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not match the run."""


def checkpoint_path(ckpt_dir: Path, epoch: int) -> Path:
    """``ckpt_dir/epoch-0003.pt`` for the checkpoint written after ``epoch`` epochs."""
    return Path(ckpt_dir) / f"epoch-{epoch:04d}.pt"


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """The per-epoch checkpoints in ``ckpt_dir`` as ``(epoch, path)``, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _EPOCH_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest per-epoch checkpoint, or None."""
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest per-epoch checkpoints (``best.pt`` is never touched)."""
    for _, path in list_checkpoints(ckpt_dir)[:-keep]:
        path.unlink(missing_ok=True)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` with ``torch.save`` under a temporary name, fsync, then rename onto ``path``.

    The file is written through a Python file object, so a full disk is an ``OSError`` (ENOSPC) naming
    ``path`` (``pipelines.atomic``), not torch's ``inline_container`` message without one.

    Raises:
        OSError: the file could not be written (``filename`` is ``path``); nothing is left behind.
        CheckpointError: torch's writer failed otherwise (the message names ``path``).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                torch.save(state, fh)
        except RuntimeError as exc:  # torch's zip writer; an OSError of the file object passes through
            if shutil.disk_usage(path.parent).free < _FULL:  # e.g. "[enforce fail ...] unexpected pos"
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise CheckpointError(f"cannot write checkpoint {path} ({first}); check the free space and "
                                  f"permissions of {path.parent}") from None


def model_digest(state_dict: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a model state dict: every entry's name, dtype, shape and bytes, in name order.

    Two state dicts have the same digest exactly when they hold the same weights, wherever they were saved.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{t.dtype}{tuple(value.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy() if t.numel() else b"")
        else:
            digest.update(repr(value).encode())
    return "sha256:" + digest.hexdigest()


def check_best(path: Path, epoch: int, sha256: str | None) -> str | None:
    """Why ``path`` (``best.pt``) does not hold the model of ``epoch`` (weights digest ``sha256``), or None.

    ``sha256`` None (a run written before digests were recorded): only the epoch is compared.
    """
    path = Path(path)
    if not path.is_file():
        return "it is missing"
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        return f"it is unreadable ({exc})"
    if ckpt.get("epoch") != epoch:
        return f"it holds the model of epoch {ckpt.get('epoch')}"
    if sha256 is not None and model_digest(ckpt["model"]) != sha256:
        return f"its weights are not those of epoch {epoch} (digest {model_digest(ckpt['model'])[:19]}...)"
    return None


def restore_best(ckpt_dir: Path, epoch: int, sha256: str | None) -> str | None:
    """Make ``ckpt_dir/best.pt`` the model of the best epoch ``epoch`` (weights digest ``sha256``).

    A missing, older or damaged ``best.pt`` (a crash, kill or full disk between the writes of
    ``epoch-NNNN.pt`` and ``best.pt``) is rewritten from ``epoch-NNNN.pt`` of that epoch.

    Returns:
        None when ``best.pt`` was right, else what was repaired (for the log).

    Raises:
        CheckpointError: ``best.pt`` is wrong and the epoch's checkpoint is gone (pruned) or holds other
            weights, so the model of the best epoch cannot be restored.
    """
    best = Path(ckpt_dir) / "best.pt"
    problem = check_best(best, epoch, sha256)
    if problem is None:
        return None
    source = checkpoint_path(ckpt_dir, epoch)
    if not source.is_file():
        raise CheckpointError(
            f"{best}: {problem}, but the run's validation history selects epoch {epoch}, and {source.name} "
            f"(pruned, train.keep_checkpoints) is gone: its model cannot be restored. Put back the best.pt "
            f"of this run, or train again into a new --out"
        )
    ckpt = load_checkpoint(source)
    found = model_digest(ckpt["model"])
    if sha256 is not None and found != sha256:
        raise CheckpointError(f"{source}: its weights (digest {found[:19]}...) are not those the run "
                              f"recorded for epoch {epoch} ({sha256[:19]}...); it was replaced. Train again "
                              f"into a new --out")
    save_checkpoint(best, {"model": ckpt["model"], "epoch": epoch, "state": ckpt["state"],
                           "meta": ckpt.get("meta", {}), "model_sha256": found})
    return f"{best}: {problem}; restored the model of the best epoch {epoch} from {source.name}"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True`` (no arbitrary unpickling).

    Raises:
        CheckpointError: naming the file when it is missing, damaged, not a checkpoint, or holds pickled
            Python objects (refused, never loaded another way).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's to act on
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" (it needs the Python object {found.group(1)})" if found else ""
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects{what} or is not a torch checkpoint; only "
            "tensors and plain values are loaded, so it is refused. Use a checkpoint written by vqa-train "
            "(RUN/checkpoints/*.pt)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever the parser trips on, the file is not a checkpoint
        detail = str(exc).split(". ")[0].splitlines()[0][:160] if str(exc) else type(exc).__name__
        readable = isinstance(exc, RuntimeError | OSError) and any(c.isalpha() for c in detail)
        detail = f" ({detail})" if readable and "weights_only" not in detail else ""
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a torch checkpoint{detail}; use another checkpoint "
            "(e.g. an earlier RUN/checkpoints/epoch-NNNN.pt)"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        kind = type(state).__name__
        if isinstance(state, dict):
            kind = f"a dict with keys {sorted(map(str, state))[:6]}"
        raise CheckpointError(
            f"{path} is not a vqa-train checkpoint (it holds {kind}; expected the keys 'model' and 'meta')"
        )
    return state


def capture_rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), NumPy and Python RNG states as tensors and plain numbers."""
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "python_version": int(py_version),
        "python_state": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": py_gauss,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            int(state["numpy_pos"]),
            int(state["numpy_has_gauss"]),
            float(state["numpy_gauss"]),
        )
    )
    py_state = tuple(int(x) for x in state["python_state"].tolist())
    random.setstate((int(state["python_version"]), py_state, state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
