"""Every CUDA-only step of extraction, in one place.

``claim_device`` picks the device an inference actor runs on; an ``Accelerator`` for that device applies
what only CUDA gets: channels_last weights and inputs, uint8 frames uploaded from pinned memory, bf16
autocast. On the CPU each step is the plain one, so the backbones and the detector run the same code on
both. A test replaces ``claim_device`` with a CPU stand-in to run the GPU scheduling without a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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

    @classmethod
    def on(cls, device: str | torch.device) -> Accelerator:
        return cls(torch.device(device))

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

    def autocast(self) -> torch.autocast:
        """bf16 autocast on CUDA; disabled elsewhere."""
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda)


def _memory_format(kind: str) -> torch.memory_format:
    return torch.channels_last if kind == "image" else torch.channels_last_3d
