"""Losses and metrics by task type: open-ended, multiple choice and count.

The loop calls :func:`compute_losses` on a model's output dict and the batch, and hands each batch's
:func:`predict` records to an :class:`Evaluation`, which computes the metrics once over all records
(after gathering them from every process, so no question is counted twice).

- open-ended: cross-entropy over the answer vocabulary; questions whose answer is out of the vocabulary
  (``answer == -1``) are ignored by the loss (the data module also drops them from training) and count as
  wrong at evaluation. Metrics: ``accuracy`` and ``accuracy/<qtype>`` for every question type present
  (what/who/how/when/where on MSVD-QA and MSRVTT-QA).
- multiple choice: hinge loss ``max(0, margin + s_neg - s_pos)`` summed over the negative candidates and
  averaged over questions. Metric: ``accuracy``.
- count: mean squared error of the regressed count. Metric: ``mse`` of the prediction rounded and
  clamped to 1..10 (TGIF-QA protocol; lower is better).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "COUNT_MAX",
    "COUNT_MIN",
    "Evaluation",
    "PredictionRecord",
    "compute_losses",
    "compute_metrics",
    "count_rounded",
    "hinge_loss",
    "open_ended_loss",
    "predict",
    "selection_metric",
]

COUNT_MIN, COUNT_MAX = 1, 10
OUTPUT_KEY = {"open": "logits", "mc": "scores", "count": "count"}


def open_ended_loss(logits: Tensor, answer: Tensor) -> Tensor:
    """Cross-entropy over answer classes, ignoring out-of-vocabulary targets (``-1``).

    Args:
        logits: (B, A) float.
        answer: (B,) int64 class index or -1.

    Returns:
        Scalar: the mean over in-vocabulary questions (0 with a gradient path when there are none).
    """
    valid = answer >= 0
    losses = F.cross_entropy(logits.float(), answer.clamp(min=0), reduction="none")  # (B,)
    losses = torch.where(valid, losses, torch.zeros_like(losses))
    return losses.sum() / valid.sum().clamp(min=1)


def hinge_loss(scores: Tensor, answer: Tensor, *, margin: float = 1.0) -> Tensor:
    """Multiple-choice hinge loss ``sum_neg max(0, margin + s_neg - s_pos)``, averaged over questions.

    Args:
        scores: (B, C) candidate scores.
        answer: (B,) int64 index of the correct candidate.
        margin: the hinge margin.

    Returns:
        Scalar loss.
    """
    scores = scores.float()
    pos = scores.gather(1, answer.view(-1, 1))  # (B, 1)
    per_cand = (margin + scores - pos).clamp(min=0)  # (B, C)
    is_neg = torch.ones_like(per_cand, dtype=torch.bool).scatter_(1, answer.view(-1, 1), False)
    return (per_cand * is_neg).sum(dim=1).mean()


def count_loss(count: Tensor, answer: Tensor) -> Tensor:
    """Mean squared error between the regressed count (B,) and the true count (B,)."""
    return F.mse_loss(count.float().view(-1), answer.float().view(-1))


def compute_losses(
    task_type: str, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *, margin: float = 1.0
) -> dict[str, Tensor]:
    """The loss dict of one batch (the loop sums its values).

    Args:
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        outputs: the model's output dict (``logits`` (B, A), ``scores`` (B, C) or ``count`` (B,)).
        batch: the batch (its ``answer`` (B,)).
        margin: hinge margin for multiple choice.

    Returns:
        ``{"loss_ce": ...}``, ``{"loss_hinge": ...}`` or ``{"loss_mse": ...}``, plus the model's own
        extra terms: a model may return ``outputs["aux_losses"]`` (name -> scalar, already weighted, e.g.
        SiaSamRea's ``loss_siamese``), which are added to the dict and so summed by the loop.
    """
    key = _output_key(task_type, outputs)
    answer = batch["answer"]
    if task_type == "open":
        losses = {"loss_ce": open_ended_loss(outputs[key], answer)}
    elif task_type == "mc":
        losses = {"loss_hinge": hinge_loss(outputs[key], answer, margin=margin)}
    else:
        losses = {"loss_mse": count_loss(outputs[key], answer)}
    for name, value in (outputs.get("aux_losses") or {}).items():
        if name in losses:
            raise KeyError(f"the model's extra loss {name!r} clashes with the task loss of the same name")
        losses[name] = value
    return losses


def _output_key(task_type: str, outputs: Mapping[str, Tensor]) -> str:
    if task_type not in OUTPUT_KEY:
        raise ValueError(f"unknown task type {task_type!r}; expected one of {sorted(OUTPUT_KEY)}")
    key = OUTPUT_KEY[task_type]
    if key not in outputs:
        raise KeyError(f"a {task_type!r} model must return {key!r}; it returned {sorted(outputs)}")
    return key


def count_rounded(count: Tensor) -> Tensor:
    """Round a regressed count and clamp it to 1..10 (TGIF-QA Count protocol). (B,) -> (B,) int64."""
    return count.float().round().clamp(COUNT_MIN, COUNT_MAX).long()


@dataclass(frozen=True)
class PredictionRecord:
    """One evaluated question: what the model answered and whether it is right.

    ``prediction`` is the answer word (open), the chosen candidate index (mc) or the rounded count
    (count); ``raw`` is the regressed count before rounding (count only); ``answer`` is the true answer
    as text/number, ``answer_index`` the class index (-1 when out of vocabulary), ``score`` 1/0 for
    correct/wrong (open, mc) or the squared error of the rounded count.
    """

    qid: str
    video_id: str
    qtype: str
    prediction: str | int
    answer: str | int | float
    answer_index: int
    score: float
    raw: float | None = None


def predict(
    task_type: str,
    outputs: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    *,
    answer_vocab: Sequence[str] | None = None,
) -> list[PredictionRecord]:
    """Turn one batch of model outputs into per-question records.

    Args:
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        outputs: model outputs for the batch.
        batch: the batch; uses ``qid``, ``video_id``, ``answer`` and the optional ``qtype`` / ``answer_text``.
        answer_vocab: open-ended answer words (to write predictions as words).

    Returns:
        One :class:`PredictionRecord` per question, in batch order.
    """
    key = _output_key(task_type, outputs)
    out = outputs[key].detach().float().cpu()
    answer = batch["answer"].detach().cpu()
    qids, vids = batch["qid"], batch["video_id"]
    qtypes = batch.get("qtype") or [""] * len(qids)
    texts = batch.get("answer_text")
    records = []
    if task_type == "open":
        pred = out.argmax(dim=1)
        for i, qid in enumerate(qids):
            a, p = int(answer[i]), int(pred[i])
            word = answer_vocab[p] if answer_vocab is not None and p < len(answer_vocab) else str(p)
            if texts is not None:
                truth = texts[i]
            else:
                truth = answer_vocab[a] if answer_vocab and a >= 0 else str(a)
            records.append(
                PredictionRecord(qid, vids[i], qtypes[i], word, truth, a, float(a >= 0 and p == a))
            )
    elif task_type == "mc":
        pred = out.argmax(dim=1)
        for i, qid in enumerate(qids):
            a, p = int(answer[i]), int(pred[i])
            records.append(PredictionRecord(qid, vids[i], qtypes[i], p, a, a, float(p == a)))
    else:
        rounded = count_rounded(out.view(-1))
        for i, qid in enumerate(qids):
            a = float(answer[i])
            a = int(a) if a.is_integer() else a
            p = int(rounded[i])
            records.append(
                PredictionRecord(qid, vids[i], qtypes[i], p, a, -1, (p - a) ** 2, raw=float(out.view(-1)[i]))
            )
    return records


def compute_metrics(task_type: str, records: Iterable[PredictionRecord]) -> dict[str, float]:
    """Metrics over a whole split from its prediction records (duplicated qids counted once).

    Returns:
        open: ``accuracy`` and ``accuracy/<qtype>``; mc: ``accuracy``; count: ``mse``. Also ``num_questions``.
    """
    unique: dict[str, PredictionRecord] = {}
    for rec in records:
        unique.setdefault(rec.qid, rec)
    recs = list(unique.values())
    n = len(recs)
    if task_type == "count":
        mse = sum(r.score for r in recs) / n if n else math.nan
        return {"mse": mse, "num_questions": float(n)}
    acc = sum(r.score for r in recs) / n if n else math.nan
    metrics = {"accuracy": acc, "num_questions": float(n)}
    if task_type == "open":
        by_type: dict[str, list[float]] = defaultdict(list)
        for r in recs:
            if r.qtype:
                by_type[r.qtype].append(r.score)
        for qtype in sorted(by_type):
            scores = by_type[qtype]
            metrics[f"accuracy/{qtype}"] = sum(scores) / len(scores)
    return metrics


def selection_metric(task_type: str) -> tuple[str, str]:
    """The validation metric used for model selection and whether higher (``"max"``) or lower is better."""
    return ("mse", "min") if task_type == "count" else ("accuracy", "max")


class Evaluation:
    """Accumulates prediction records over an evaluation pass."""

    def __init__(self, task_type: str, answer_vocab: Sequence[str] | None = None) -> None:
        self.task_type = task_type
        self.answer_vocab = answer_vocab
        self.records: list[PredictionRecord] = []

    def update(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any]) -> None:
        self.records.extend(predict(self.task_type, outputs, batch, answer_vocab=self.answer_vocab))

    def metrics(self) -> dict[str, float]:
        return compute_metrics(self.task_type, self.records)
