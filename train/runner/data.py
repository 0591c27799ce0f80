"""The loaders of a run's datasets and the feature statistics a checkpoint records. The datasets themselves
are built by the task kind (``train/tasks/``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.data import (
    QACollate,
    QADataset,
    seed_worker,
)

log = logging.getLogger("train")


def recorded_stats(path: Path | None, ckpt: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The ``train.feature_norm=standardize`` statistics a checkpoint was trained with (None: none)."""
    if ckpt is None and path is not None:
        ckpt = load_checkpoint(path)
    stats = ((ckpt or {}).get("meta") or {}).get("feature_stats") or {}
    return {k: (v["mean"].numpy(), v["std"].numpy()) for k, v in stats.items()} or None


def make_loader(ds: QADataset, *, batch_size: int, sampler: Any, collate: QACollate, cfg: TrainConfig,
            pin: bool, generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=False,
    )

