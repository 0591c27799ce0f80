"""Every device-dependent step of extraction and training, in one place.

**Precision** (``resolve_precision``): ``auto`` means bf16 autocast where the hardware computes bf16
natively (a CUDA device that supports it; a CPU with AVX-512 BF16 or AMX, detected at run time from
``/proc/cpuinfo`` and torch's CPU capability checks) and fp32 elsewhere; ``bf16`` and ``fp32`` are used
as given (bf16 on a CPU without native support is emulated: correct but many times slower). ``fp16``
(training on CUDA only, with a gradient scaler) and the legacy spelling ``none`` (= ``fp32``) are
accepted for ``train.amp``. The environment variable ``VQA_CPU_BF16=1|0`` overrides the CPU detection
(a container that hides the CPU flags; the test suite sets 0 so it runs the same on every machine).
The resolved value is what runs record (manifest options, a training run's provenance).

``claim_device`` picks the device an inference actor runs on; an ``Accelerator`` for that device applies
what only CUDA gets: channels_last weights and inputs, uint8 frames uploaded from pinned memory; and the
autocast of its resolved precision (CPU or CUDA). On the CPU the other steps are the plain ones, so the
backbones and the detector run the same code on both (the detector always in fp32). A test replaces
``claim_device`` with a CPU stand-in to run the GPU scheduling without a GPU.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor, nn


def claim_device(device: str) -> str:
    """The device an inference actor runs on: the one GPU Ray gave it, or the CPU.

    Ray sets ``CUDA_VISIBLE_DEVICES`` of an actor holding ``num_gpus=1`` to its own GPU, so that GPU is
    ``cuda:0`` inside the actor.
    """
    if not device.startswith("cuda"):
        return device
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise RuntimeError(f"no CUDA device is usable by this actor (CUDA_VISIBLE_DEVICES={visible!r})")
    return "cuda:0"


@dataclass(frozen=True)
class Accelerator:
    """The CUDA-only steps for ``device`` ("cpu", "cuda", "cuda:1", ...); plain steps elsewhere."""

    device: torch.device
    precision: str = "fp32"  # resolved: "bf16" (autocast) or "fp32"

    @classmethod
    def on(cls, device: str | torch.device, precision: str = "fp32") -> Accelerator:
        """The steps for ``device``, with ``precision`` (auto | bf16 | fp32) resolved for it."""
        device = torch.device(device)
        return cls(device, resolve_precision(precision, device))

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def place(self, module: nn.Module, kind: str = "image") -> nn.Module:
        """``module`` on the device; channels_last(_3d) weights on CUDA (``kind``: "image" or "video")."""
        module = module.to(self.device)
        return module.to(memory_format=_memory_format(kind)) if self.cuda else module

    def upload(self, x: Tensor) -> Tensor:
        """``x`` on the device; on CUDA copied from pinned memory without blocking."""
        if self.cuda:
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)

    def layout(self, x: Tensor, kind: str = "image") -> Tensor:
        """A contiguous input: channels_last(_3d) on CUDA, the default layout elsewhere."""
        return x.contiguous(memory_format=_memory_format(kind)) if self.cuda else x.contiguous()

    def autocast(self):
        """bf16 autocast on this device when the precision is bf16 (CPU or CUDA); a no-op for fp32."""
        return autocast(self.device, self.precision)


#: the values ``vqa-extract --precision`` accepts (``train.amp`` also takes ``fp16`` and ``none``)
PRECISIONS = ("auto", "bf16", "fp32")
_TRAIN_PRECISIONS = PRECISIONS + ("fp16", "none")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is no such file)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


@cache
def _cpu_bf16_detected() -> bool:
    if any(flag in cpu_flags() for flag in _CPU_BF16_FLAGS):
        return True
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's own (private) checks
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def bf16_native(device: str | torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (so bf16 autocast is faster there, not emulated).

    CUDA: ``torch.cuda.is_bf16_supported()``; a driver that sees no GPU (a Ray cluster whose GPUs are on
    other nodes) assumes yes, as the toolkit did before precision was an option. CPU: AVX-512 BF16 or
    AMX (``VQA_CPU_BF16=1|0`` overrides the detection).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return not torch.cuda.is_available() or torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    forced = os.environ.get("VQA_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_bf16_detected()


def resolve_precision(requested: str, device: str | torch.device) -> str:
    """The precision a run uses on ``device``: ``"bf16"``, ``"fp32"`` (or ``"fp16"`` on CUDA).

    Args:
        requested: ``auto`` (bf16 where :func:`bf16_native`, else fp32), ``bf16``, ``fp32``; for training
            also ``fp16`` (CUDA only) and ``none`` (the older spelling of fp32).

    Raises:
        ValueError: an unknown value, or fp16 on a device other than CUDA.
    """
    device = torch.device(device)
    if requested not in _TRAIN_PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise ValueError(f"fp16 autocast is for CUDA only (device {device}); use auto, bf16 or fp32")
    return "fp32" if requested == "none" else requested


def autocast(device: str | torch.device, precision: str):
    """Autocast for a resolved ``precision`` on ``device``: bf16 (CPU or CUDA), fp16 (CUDA), fp32: none."""
    device = torch.device(device)
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _memory_format(kind: str) -> torch.memory_format:
    return torch.channels_last if kind == "image" else torch.channels_last_3d
