"""Question answering's losses, prediction decoding and metrics (the kinds in ``train/tasks/qa.py``).

- open-ended: cross-entropy over the answer vocabulary; questions whose answer is out of the vocabulary
  (``answer == -1``) are ignored by the loss (the data module also drops them from training) and count as
  wrong at evaluation. Metrics: ``accuracy`` and ``accuracy/<qtype>`` for every question type present
  (what/who/how/when/where on MSVD-QA and MSRVTT-QA).
- multiple choice: hinge loss ``max(0, margin + s_neg - s_pos)`` summed over the negative candidates and
  averaged over questions, or averaged over (question, negative) pairs (``train.hinge_reduction=mean``,
  MASN's official scale). Metric: ``accuracy``.
- count: mean squared error of the regressed count. Metric: ``mse`` of the prediction rounded and
  clamped to 1..10 (TGIF-QA protocol; lower is better).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from train.losses import PredictionRecord

__all__ = [
    "COUNT_MAX",
    "COUNT_MIN",
    "HINGE_REDUCTIONS",
    "accuracy_metrics",
    "count_loss",
    "count_rounded",
    "hinge_loss",
    "mse_metrics",
    "open_ended_loss",
    "predict_choices",
    "predict_classes",
    "predict_counts",
]

COUNT_MIN, COUNT_MAX = 1, 10




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


HINGE_REDUCTIONS = ("sum", "mean")


def hinge_loss(scores: Tensor, answer: Tensor, *, margin: float = 1.0, reduction: str = "sum") -> Tensor:
    """Multiple-choice hinge loss over the (question, negative candidate) pairs.

    ``reduction="sum"``: ``sum_neg max(0, margin + s_neg - s_pos)`` per question, averaged over questions.
    ``reduction="mean"``: the same terms averaged over all (question, negative) pairs, i.e. the sum
    divided by the C - 1 negatives (MASN's official ``embed_loss.MultipleChoiceLoss``, size_average=True).

    Args:
        scores: (B, C) candidate scores.
        answer: (B,) int64 index of the correct candidate.
        margin: the hinge margin.
        reduction: ``"sum"`` or ``"mean"`` (see above).

    Returns:
        Scalar loss.
    """
    if reduction not in HINGE_REDUCTIONS:
        raise ValueError(f"hinge reduction must be one of {HINGE_REDUCTIONS}, got {reduction!r}")
    scores = scores.float()
    pos = scores.gather(1, answer.view(-1, 1))  # (B, 1)
    per_cand = (margin + scores - pos).clamp(min=0)  # (B, C)
    is_neg = torch.ones_like(per_cand, dtype=torch.bool).scatter_(1, answer.view(-1, 1), False)
    per_question = (per_cand * is_neg).sum(dim=1)  # (B,)
    if reduction == "mean":
        per_question = per_question / max(scores.shape[1] - 1, 1)
    return per_question.mean()


def count_loss(count: Tensor, answer: Tensor) -> Tensor:
    """Mean squared error between the regressed count (B,) and the true count (B,)."""
    return F.mse_loss(count.float().view(-1), answer.float().view(-1))



def count_rounded(count: Tensor) -> Tensor:
    """Round a regressed count and clamp it to 1..10 (TGIF-QA Count protocol). (B,) -> (B,) int64."""
    return count.float().round().clamp(COUNT_MIN, COUNT_MAX).long()


def _batch_rows(out: Tensor, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, list, list, list]:
    """The output (float, CPU), the answers (CPU), the question ids, video ids and question types."""
    qids = batch["qid"]
    return (out.detach().float().cpu(), batch["answer"].detach().cpu(), qids, batch["video_id"],
            batch.get("qtype") or [""] * len(qids))


def predict_classes(logits: Tensor, batch: Mapping[str, Any], answer_vocab: Sequence[str] | None
                    ) -> list[PredictionRecord]:
    """Open-ended: the arg-max class as its answer word (``answer_vocab``), right when it is the answer."""
    out, answer, qids, vids, qtypes = _batch_rows(logits, batch)
    texts = batch.get("answer_text")
    pred = out.argmax(dim=1)
    records = []
    for i, qid in enumerate(qids):
        a, p = int(answer[i]), int(pred[i])
        word = answer_vocab[p] if answer_vocab is not None and p < len(answer_vocab) else str(p)
        if texts is not None:
            truth = texts[i]
        else:
            truth = answer_vocab[a] if answer_vocab and a >= 0 else str(a)
        records.append(PredictionRecord(qid, vids[i], qtypes[i], word, truth, a, float(a >= 0 and p == a)))
    return records


def predict_choices(scores: Tensor, batch: Mapping[str, Any]) -> list[PredictionRecord]:
    """Multiple choice: the arg-max candidate's index, right when it is the answer's."""
    out, answer, qids, vids, qtypes = _batch_rows(scores, batch)
    pred = out.argmax(dim=1)
    return [PredictionRecord(qid, vids[i], qtypes[i], int(pred[i]), int(answer[i]), int(answer[i]),
                             float(int(pred[i]) == int(answer[i]))) for i, qid in enumerate(qids)]


def predict_counts(count: Tensor, batch: Mapping[str, Any]) -> list[PredictionRecord]:
    """Count: the rounded, clamped count (``raw``: the regressed one) and its squared error."""
    out, answer, qids, vids, qtypes = _batch_rows(count, batch)
    rounded = count_rounded(out.view(-1))
    records = []
    for i, qid in enumerate(qids):
        a = float(answer[i])
        a = int(a) if a.is_integer() else a
        p = int(rounded[i])
        records.append(
            PredictionRecord(qid, vids[i], qtypes[i], p, a, -1, (p - a) ** 2, raw=float(out.view(-1)[i]))
        )
    return records


def accuracy_metrics(records: Sequence[PredictionRecord], *, by_type: bool) -> dict[str, float]:
    """``accuracy`` and ``num_questions``; ``by_type``: also ``accuracy/<qtype>`` per question type."""
    n = len(records)
    metrics = {"accuracy": sum(r.score for r in records) / n if n else math.nan, "num_questions": float(n)}
    if by_type:
        scores: dict[str, list[float]] = defaultdict(list)
        for r in records:
            if r.qtype:
                scores[r.qtype].append(r.score)
        for qtype in sorted(scores):
            metrics[f"accuracy/{qtype}"] = sum(scores[qtype]) / len(scores[qtype])
    return metrics


def mse_metrics(records: Sequence[PredictionRecord]) -> dict[str, float]:
    """``mse`` of the rounded counts and ``num_questions``."""
    n = len(records)
    return {"mse": sum(r.score for r in records) / n if n else math.nan, "num_questions": float(n)}
