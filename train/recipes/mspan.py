"""MSPAN (Guo et al., 2021; official code gzcsudo/MSPAN-VideoQA): its training-side knowledge.

Training (official code and run scripts): batch 64 on TGIF-QA and 128 on MSVD-QA / MSRVTT-QA;
StepLR(5, 0.5) for Count, MSVD-QA and MSRVTT-QA, MultiStepLR([10, 15, 19, 23, 27], 0.5) otherwise;
20 epochs for Count and MSRVTT-QA, 30 otherwise; the top 4000 training answers on MSVD-QA and MSRVTT-QA
(elsewhere the answer vocabulary is the dataset adapter's ``default_answer_vocab_size``). Unclipped fp32
gradients (official ``train.py``). Model: the run scripts' dropout per task (:data:`DROPOUT`). Released
checkpoints: ``vqa-convert mspan`` with the official text rules ``mspan-tgif`` / ``mspan-msqa``.
The explanation strip is weighted by ``readout_weights``, the Eq. (11)-(12) readout softmax over the
nodes of G_1, whose node x is frame x.
"""

from __future__ import annotations

from typing import Any

from train.recipes.base import ExplainView, Recipe

__all__ = ["DROPOUT", "RECIPE"]

MSVD_LIKE = ("msvd-qa", "msrvtt-qa")

#: dropout in the official run scripts (train_sh/*.sh), by (dataset, task); other datasets keep the config
#: default (the readout's 0.2 is the config default everywhere)
DROPOUT = {
    ("tgif", "action"): 0.1,
    ("tgif", "count"): 0.2,
    ("tgif", "frameqa"): 0.3,
    ("tgif", "transition"): 0.3,
    ("msvd-qa", None): 0.3,
    ("msrvtt-qa", None): 0.3,
}


def train_defaults(dataset: str, task: str | None, task_type: str) -> dict[str, Any]:
    msvd_like = dataset in MSVD_LIKE
    out: dict[str, Any] = {
        "batch_size": 128 if msvd_like else 64,
        "scheduler": "step" if (msvd_like or task_type == "count") else "multistep",
        "epochs": 20 if (dataset == "msrvtt-qa" or task_type == "count") else 30,
    }
    if msvd_like:
        out["answer_vocab_size"] = 4000
    return out


def model_defaults(dataset: str, task: str | None, task_type: str) -> dict[str, Any]:
    return {"dropout": DROPOUT[(dataset, task)]} if (dataset, task) in DROPOUT else {}


RECIPE = Recipe(
    name="mspan",
    grad_clip=None,
    amp="fp32",
    train_defaults=train_defaults,
    model_defaults=model_defaults,
    explain=ExplainView("frame_attention", attention_key="readout_weights"),
    converter="train.tools.convert:mspan_command",
    text_rules=("mspan-tgif", "mspan-msqa"),
)
