"""What a run is given: :class:`RunSpec`, the keys a resume or an evaluation may change, the device, the
seeds, the model sizes read from the features, the optimiser and schedule, and the run's config."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.atomic import DirectoryInUseError
from pipelines.version import toolkit_version
from train.config import ConfigError, TrainConfig, build_config, config_to_dict
from train.distributed import DistInfo
from train.tasks import get_task

log = logging.getLogger("train")

#: train.* keys that may change when a run is resumed (everything else must match the saved config)
RESUMABLE_KEYS = frozenset({"epochs", "num_workers", "log_every", "patience", "keep_checkpoints",
                            "glove_warn_coverage", "allow_zero_glove_coverage"})
#: train.* keys an evaluation may set differently from the checkpoint's training config (they do not change
#: the results; moment_nms and moment_iou are evaluation choices); every other key is taken from the
#: checkpoint, and a contradicting value is refused
EVAL_RUNTIME_KEYS = RESUMABLE_KEYS | {"batch_size", "grad_accum", "eval_batch_size",
                                      "ddp_find_unused_parameters", "moment_nms", "moment_iou"}
LOCK_NAME = ".vqa-train.lock"


class RunInUseError(DirectoryInUseError):
    """Another vqa-train process trains or evaluates in the same directory."""


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, already validated.

    Attributes:
        model: the MODELS key (``"mspan"``).
        dataset: the DATASETS key; ``task`` its task or None.
        root: dataset root; ``features``: feature directory; ``out``: run directory.
        train: the training config; ``model_config``: the model's config dataclass instance.
        moment: moment retrieval's data and loss settings (``train.moments.MomentConfig``; None: the
            defaults); ``--eval-only`` takes the checkpoint's.
        glove: GloVe file for the question embeddings, or None (random init).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        resume: continue from the newest checkpoint in ``out/checkpoints``.
        eval_only: evaluate ``checkpoint`` on val and test without training.
        checkpoint: a checkpoint file (eval-only).
        allow_missing_features: drop questions whose video has no features (counted in the log)
            instead of stopping.
        show_progress: tqdm bars.
        threads: torch CPU threads of this process (None: leave torch's setting); logged.
        allow_feature_change: resume or evaluate on features whose fingerprint differs from the run's
            record (the change is recorded in metrics.json) instead of stopping.
        eval_name: ``--eval-only`` into a training run's directory writes to ``out/eval-<eval_name>``
            (default: the checkpoint's file stem, e.g. ``eval-best``).
    """

    model: str
    dataset: str
    task: str | None
    root: Path
    features: Path
    out: Path
    train: TrainConfig
    model_config: Any
    moment: Any = None
    glove: Path | None = None
    device: str = "auto"
    resume: bool = False
    eval_only: bool = False
    checkpoint: Path | None = None
    allow_missing_features: bool = False
    show_progress: bool = True
    threads: int | None = None
    allow_feature_change: bool = False
    eval_name: str | None = None


def resolve_device(device: str, dist: DistInfo | None = None) -> torch.device:
    """``auto`` -> CUDA when available else CPU; under DDP on CUDA, ``cuda:LOCAL_RANK``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dist is not None and dist.distributed:
            return torch.device("cuda", dist.local_rank)
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); cuDNN in deterministic mode."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def fill_from_features(config_cls: type, values: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """Fill a model config's input sizes from the feature directory unless they were set explicitly.

    Convention: a field ``<feature>_dim`` takes the last dimension of feature ``<feature>``, and
    ``num_frames`` the (fixed) leading dimension of the first feature that has one.

    Args:
        config_cls: the model's config dataclass.
        values: the explicitly set model keys (not modified).
        outputs: ``FeatureReader.outputs`` (name -> spec with ``shape``).

    Returns:
        ``values`` plus the filled sizes.

    Raises:
        ConfigError: an explicit size that contradicts the features.
    """
    fields = set(config_cls.__dataclass_fields__)
    out = dict(values)
    for name, spec in outputs.items():
        key = f"{name}_dim"
        if key in fields and spec.shape:
            dim = spec.shape[-1]
            if key in values and values[key] != dim:
                raise ConfigError(
                    f"model.{key}={values[key]} but the features' {name!r} have size {dim}; drop the setting "
                    f"or use matching features"
                )
            out[key] = dim
    if "num_frames" in fields:
        fixed = [s.shape[0] for n, s in outputs.items() if f"{n}_dim" in fields and s.shape and s.shape[0]]
        if fixed:
            if "num_frames" in values and values["num_frames"] != fixed[0]:
                raise ConfigError(
                    f"model.num_frames={values['num_frames']} but the features hold {fixed[0]} frames "
                    f"per video"
                )
            out["num_frames"] = fixed[0]
    return out


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (MSPAN's), AdamW or SGD over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """The epoch-wise schedule: StepLR(step_size, gamma), MultiStepLR(milestones, gamma) or None; or the
    per-update ``inverse_sqrt`` (CMIN's): linear warm-up from ``warmup_init_lr`` to ``lr`` over
    ``warmup_updates`` updates, then ``lr * sqrt(warmup_updates / update)``."""
    if cfg.scheduler == "inverse_sqrt":
        w, start = cfg.warmup_updates, cfg.warmup_init_lr / cfg.lr

        def factor(step: int) -> float:
            if step < w:
                return start + (1.0 - start) * step / w
            return math.sqrt(max(w, 1) / max(step, 1))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma
        )
    return None


def eval_train_config(saved: Mapping[str, Any], explicit: Mapping[str, Any], *, source: str) -> TrainConfig:
    """The training config of an evaluation: the checkpoint's, with only :data:`EVAL_RUNTIME_KEYS` changed.

    Args:
        saved: the checkpoint's ``train`` values (``meta["train_config"]``).
        explicit: train.* values the user set for the evaluation (``--config``, ``--set``, flags).
        source: the checkpoint path, for the message.

    Raises:
        ConfigError: an explicit value that contradicts the checkpoint on a key that changes results.
    """
    base = config_to_dict(build_config(TrainConfig, dict(saved), section="train"))
    wanted = config_to_dict(build_config(TrainConfig, {**base, **explicit}, section="train"))
    diffs = [f"train.{k}={wanted[k]!r} (checkpoint: {base[k]!r})" for k in sorted(explicit)
             if k not in EVAL_RUNTIME_KEYS and wanted[k] != base[k]]
    if diffs:
        raise ConfigError(
            f"--eval-only takes the training settings from {source}; these contradict it: "
            f"{'; '.join(diffs)}. Drop them (only train.{{{', '.join(sorted(EVAL_RUNTIME_KEYS))}}} "
            "may be set)"
        )
    runtime = {k: v for k, v in explicit.items() if k in EVAL_RUNTIME_KEYS}
    return build_config(TrainConfig, {**base, **runtime}, section="train")


def eval_out_dir(spec: RunSpec) -> Path:
    """Where a run writes: ``out``, or ``out/eval-<name>`` when evaluating into a training run's directory."""
    out = Path(spec.out)
    if not spec.eval_only:
        return out
    if (out / "config.yaml").exists() or (out / "checkpoints").is_dir() or (out / "metrics.jsonl").exists():
        name = spec.eval_name or (Path(spec.checkpoint).stem if spec.checkpoint else "checkpoint")
        return out / f"eval-{name}"
    return out


def effective_config(spec: RunSpec, task_type: str) -> dict[str, Any]:
    """The run's configuration as saved in ``config.yaml``."""
    return {
        "model_name": spec.model,
        "dataset": spec.dataset,
        "task": spec.task,
        "task_type": task_type,
        "root": str(spec.root),
        "features": str(spec.features),
        "glove": str(spec.glove) if spec.glove else None,
        "toolkit_version": toolkit_version(),
        "train": config_to_dict(spec.train),
        "model": config_to_dict(spec.model_config),
        **get_task(task_type).config_sections(spec.moment),
    }

