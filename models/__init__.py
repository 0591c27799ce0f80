"""Paper models, one file each, and the explicit model registry.

``MODELS`` is written out by hand below (no registration by import side effect). Each
:class:`ModelEntry` says how to build the model from its frozen config dataclass and which feature
set and batch keys it reads::

    from models import get_model
    entry = get_model("mspan")
    cfg = entry.config_cls(num_scales=4)            # validated in __post_init__
    model = entry.build(cfg, vocab_size=V, num_answers=A, task_type="open", embeddings=glove)
    out = model(batch)  # {"logits": (B, A)} | {"scores": (B, C)} | {"count": (B,)}, plus any
                        # documented extras (MASN: its attention weights)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from models.cmin import CMINConfig, cmin
from models.masn import MASNConfig, masn
from models.mspan import MSPANConfig, mspan
from models.siasamrea import SiaSamReaConfig, siasamrea

__all__ = ["MODELS", "ModelEntry", "get_model"]


@dataclass(frozen=True)
class ModelEntry:
    """How to build one registered model.

    Attributes:
        name: registry name (``"mspan"``).
        config_cls: the model's frozen config dataclass (defaults = the paper's).
        build: ``build(cfg, *, vocab_size, num_answers, task_type, embeddings=None) -> nn.Module``.
        feature_set: name of the extraction feature set the model reads (``extract.featuresets``).
        task_types: task types the model supports, among ``"open"``, ``"mc"``, ``"count"``, ``"moment"``.
        feature_keys: feature datasets the model reads from the batch.
    """

    name: str
    config_cls: type
    build: Callable[..., nn.Module]
    feature_set: str = "mspan"
    task_types: tuple[str, ...] = ("open", "mc", "count")
    feature_keys: tuple[str, ...] = ("appearance", "motion")


def _registry(*entries: ModelEntry) -> dict[str, ModelEntry]:
    out: dict[str, ModelEntry] = {}
    for entry in entries:
        if entry.name in out:
            raise ValueError(f"model {entry.name!r} is registered twice")
        out[entry.name] = entry
    return out


MODELS: dict[str, ModelEntry] = _registry(
    ModelEntry(
        name="mspan",
        config_cls=MSPANConfig,
        build=mspan,
        feature_set="mspan",
        task_types=("open", "mc", "count"),
        feature_keys=("appearance", "motion"),
    ),
    ModelEntry(
        name="siasamrea",
        config_cls=SiaSamReaConfig,
        build=siasamrea,
        feature_set="siasamrea",
        task_types=("open", "mc", "count"),
        feature_keys=("frames", "frame_times"),
    ),
    ModelEntry(
        name="cmin",
        config_cls=CMINConfig,
        build=cmin,
        feature_set="cmin",
        task_types=("moment",),
        feature_keys=("clips",),
    ),
    ModelEntry(
        name="masn",
        config_cls=MASNConfig,
        build=masn,
        feature_set="masn",
        task_types=("open", "mc", "count"),
        feature_keys=("appearance", "motion", "objects", "object_boxes", "motion_objects", "frame_mask",
                      "object_mask"),
    ),
)


def get_model(name: str) -> ModelEntry:
    """Look up a registered model.

    Args:
        name: registry name.

    Returns:
        Its :class:`ModelEntry`.

    Raises:
        KeyError: unknown name; the message lists the registered names.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}") from None

