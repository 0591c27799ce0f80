"""CMIN (Zhang et al., 2019; official code ikuinen/CMIN_moment_retrieval): its training-side knowledge.

Training (the official run scripts, README): AdamW (Adam with decoupled weight decay), warm-up then
inverse square root (300 updates), questions cut to 20 tokens; TACoS: batch 64, 40 epochs, lr 4e-4 from
1e-7, weight decay 1e-8; ActivityNet Captions: batch 128, 10 epochs, lr 8e-4 from 1e-6, weight decay 1e-7.
Unclipped fp32 gradients (``runners/runner_final.py``). Model: window widths [6, 18, 32] steps on TACoS
(the config default is ActivityNet Captions'). The explanation is the moment timeline.
"""

from __future__ import annotations

from typing import Any

from train.recipes.base import ExplainView, Recipe

__all__ = ["RECIPE"]


def train_defaults(dataset: str, task: str | None, task_type: str) -> dict[str, Any]:
    tacos = dataset == "tacos"
    return dict(optimizer="adamw", scheduler="inverse_sqrt", warmup_updates=300, max_question_len=20,
                batch_size=64 if tacos else 128, epochs=40 if tacos else 10, lr=4e-4 if tacos else 8e-4,
                warmup_init_lr=1e-7 if tacos else 1e-6, weight_decay=1e-8 if tacos else 1e-7)


def model_defaults(dataset: str, task: str | None, task_type: str) -> dict[str, Any]:
    return {"window_widths": [6, 18, 32]} if dataset == "tacos" else {}


RECIPE = Recipe(
    name="cmin",
    grad_clip=None,
    amp="fp32",
    train_defaults=train_defaults,
    model_defaults=model_defaults,
    explain=ExplainView("timeline"),
)
