"""MASN (Seo et al., 2021; official code ahjeongseo/MASN-pytorch): its training-side knowledge.

Training (the paper: Adam 1e-4, batch 32 for Count, FrameQA, MSVD/MSRVTT-QA and 16 for Action and
Transition; the official code: constant lr (``change_lr='none'``), no weight decay, the hinge loss averaged
over the (question, negative) pairs as ``embed_loss.py``'s size_average, which the paper does not give).
Unclipped fp32 gradients (official ``main*.py``). Released checkpoints: ``vqa-convert masn`` with the
official text rule ``masn``. The explanation draws each frame's most attended object boxes
(``appearance_attention``, Eq. (3)-(4)).
"""

from __future__ import annotations

from typing import Any

from train.recipes.base import ExplainView, Recipe

__all__ = ["RECIPE"]


def train_defaults(dataset: str, task: str | None, task_type: str) -> dict[str, Any]:
    return {
        "batch_size": 16 if task_type == "mc" else 32,
        "scheduler": "none",
        "weight_decay": 0.0,
        "hinge_reduction": "mean",
    }


RECIPE = Recipe(
    name="masn",
    grad_clip=None,
    amp="fp32",
    train_defaults=train_defaults,
    explain=ExplainView("object_boxes"),
    converter="train.tools.convert:masn_command",
    text_rules=("masn",),
)
