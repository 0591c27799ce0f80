"""Losses and metrics by task type: open-ended, multiple choice, count and moment retrieval.

The loop calls :func:`compute_losses` on a model's output dict and the batch, and hands each batch's
:func:`predict` records to an :class:`Evaluation`, which computes the metrics once over all records
(after gathering them from every process, so no question is counted twice).

- open-ended: cross-entropy over the answer vocabulary; questions whose answer is out of the vocabulary
  (``answer == -1``) are ignored by the loss (the data module also drops them from training) and count as
  wrong at evaluation. Metrics: ``accuracy`` and ``accuracy/<qtype>`` for every question type present
  (what/who/how/when/where on MSVD-QA and MSRVTT-QA).
- multiple choice: hinge loss ``max(0, margin + s_neg - s_pos)`` summed over the negative candidates and
  averaged over questions, or averaged over (question, negative) pairs (``train.hinge_reduction=mean``,
  MASN's official scale). Metric: ``accuracy``.
- count: mean squared error of the regressed count. Metric: ``mse`` of the prediction rounded and
  clamped to 1..10 (TGIF-QA protocol; lower is better).
- moment: alignment binary cross-entropy of every valid candidate window's confidence against its
  IoU-derived label, plus boundary regression of the best-labelled window (CMIN's official rule and
  weights, see :func:`moment_loss`). Metrics: ``R@n,IoU=m`` for n in {1, 5} and m in {0.1, 0.3, 0.5, 0.7}
  and ``mIoU`` (top-1), computed in seconds on the candidates after non-maximum suppression
  (:func:`moment_predictions`); ``iou="steps"`` uses the official code's step-index formula instead.
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
    "moment_loss",
    "moment_predictions",
    "nms_top_k",
    "open_ended_loss",
    "predict",
    "selection_metric",
    "temporal_iou",
]

COUNT_MIN, COUNT_MAX = 1, 10
OUTPUT_KEY = {"open": "logits", "mc": "scores", "count": "count", "moment": "window_scores"}
MOMENT_RECALL_AT = (1, 5)
MOMENT_IOUS = (0.1, 0.3, 0.5, 0.7)


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


def compute_losses(
    task_type: str, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *, margin: float = 1.0,
    hinge_reduction: str = "sum", **moment: float,
) -> dict[str, Tensor]:
    """The loss dict of one batch (the loop sums its values).

    Args:
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        outputs: the model's output dict (``logits`` (B, A), ``scores`` (B, C) or ``count`` (B,)).
        batch: the batch (its ``answer`` (B,)).
        margin: hinge margin for multiple choice.
        hinge_reduction: ``"sum"`` over negatives or ``"mean"`` over pairs (:func:`hinge_loss`).
        moment: ``label_min_ratio`` / ``reg_weight`` for :func:`moment_loss`.

    Returns:
        ``{"loss_ce": ...}``, ``{"loss_hinge": ...}``, ``{"loss_mse": ...}`` or
        ``{"loss_align": ..., "loss_reg": ...}``, plus the model's own extra terms: a model may return
        ``outputs["aux_losses"]`` (name -> scalar, already weighted, e.g. SiaSamRea's ``loss_siamese``),
        which are added to the dict and so summed by the loop.
    """
    key = _output_key(task_type, outputs)
    if task_type == "moment":
        return moment_loss(outputs, batch, **moment)
    answer = batch["answer"]
    if task_type == "open":
        losses = {"loss_ce": open_ended_loss(outputs[key], answer)}
    elif task_type == "mc":
        losses = {"loss_hinge": hinge_loss(outputs[key], answer, margin=margin, reduction=hinge_reduction)}
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

    Moment retrieval: ``prediction`` is the top-5 moments after NMS, ``[[start_s, end_s, score], ...]``;
    ``answer`` the ground truth ``[start_s, end_s]``; ``score`` the top-1 IoU; ``ious`` the IoU of each
    predicted moment (with the formula the evaluation was asked for).
    """

    qid: str
    video_id: str
    qtype: str
    prediction: str | int
    answer: str | int | float
    answer_index: int
    score: float
    raw: float | None = None
    ious: tuple[float, ...] | None = None


def predict(
    task_type: str,
    outputs: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    *,
    answer_vocab: Sequence[str] | None = None,
    **moment: Any,
) -> list[PredictionRecord]:
    """Turn one batch of model outputs into per-question records.

    Args:
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        outputs: model outputs for the batch.
        batch: the batch; uses ``qid``, ``video_id``, ``answer`` and the optional ``qtype`` / ``answer_text``.
        answer_vocab: open-ended answer words (to write predictions as words).
        moment: ``nms_threshold`` and ``iou`` for moment retrieval (:func:`moment_predictions`).

    Returns:
        One :class:`PredictionRecord` per question, in batch order.
    """
    key = _output_key(task_type, outputs)
    if task_type == "moment":
        return _predict_moments(outputs, batch, **moment)
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
    if task_type == "moment":
        return moment_metrics(recs)
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
    if task_type == "moment":
        return ("R@1,IoU=0.5", "max")
    return ("mse", "min") if task_type == "count" else ("accuracy", "max")


class Evaluation:
    """Accumulates prediction records over an evaluation pass."""

    def __init__(self, task_type: str, answer_vocab: Sequence[str] | None = None, **moment: Any) -> None:
        self.task_type = task_type
        self.answer_vocab = answer_vocab
        self.moment = moment
        self.records: list[PredictionRecord] = []

    def update(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any]) -> None:
        self.records.extend(predict(self.task_type, outputs, batch, answer_vocab=self.answer_vocab,
                                    **self.moment))

    def metrics(self) -> dict[str, float]:
        return compute_metrics(self.task_type, self.records)


# ---------------------------------------------------------------------------- moment retrieval
def temporal_iou(a: Tensor, b: Tensor) -> Tensor:
    """Continuous temporal IoU of intervals ``a`` (..., 2) and ``b`` (..., 2) (broadcast); 0 if disjoint."""
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = torch.maximum(a[..., 1], b[..., 1]) - torch.minimum(a[..., 0], b[..., 0])
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def step_iou(pred_s: Tensor, gt_s: Tensor, duration: float, num_steps: int) -> Tensor:
    """The official CMIN code's IoU: on inclusive integer step indices with a +1 term.

    Seconds become steps of a ``num_steps``-step video: a predicted [s, e) as indices
    [round(s'), round(e') - 1], the ground truth as [int(s'), int(e')] (the official truncation), both
    clipped to [0, num_steps - 1]; IoU = (min end - max start + 1) / (max end - min start + 1), >= 0.

    Args:
        pred_s: (N, 2) predicted moments in seconds; gt_s: (2,) the ground truth in seconds.
    """
    scale = num_steps / max(duration, 1e-12)
    p = pred_s * scale
    ps, pe = p[:, 0].round(), p[:, 1].round() - 1
    gs, ge = torch.floor(gt_s[0] * scale), torch.floor(gt_s[1] * scale)
    ps, pe = ps.clamp(0, num_steps - 1), pe.clamp(0, num_steps - 1)
    gs, ge = gs.clamp(0, num_steps - 1), ge.clamp(0, num_steps - 1)
    pe = torch.maximum(pe, ps)
    inter = torch.minimum(pe, ge) - torch.maximum(ps, gs) + 1
    union = torch.maximum(pe, ge) - torch.minimum(ps, gs) + 1
    return (inter / union).clamp(min=0)


def nms_top_k(windows: Tensor, scores: Tensor, *, threshold: float, k: int = 5) -> Tensor:
    """Greedy temporal non-maximum suppression, stopping after ``k`` kept windows.

    A window is suppressed when its IoU with an already kept, higher-scoring window exceeds
    ``threshold`` (``threshold >= 1`` disables suppression).

    Args:
        windows: (N, 2) [start, end]; scores: (N,).

    Returns:
        (<= k,) int64 indices into ``windows``, best first.
    """
    order = scores.argsort(descending=True, stable=True)
    w = windows[order]
    alive = torch.ones(len(order), dtype=torch.bool, device=windows.device)
    keep = []
    while len(keep) < k:
        idx = alive.nonzero()
        if len(idx) == 0:
            break
        i = int(idx[0])
        keep.append(i)
        alive[i] = False
        if threshold < 1:
            alive &= temporal_iou(w[i].unsqueeze(0), w) <= threshold
    return order[torch.tensor(keep, dtype=torch.int64, device=windows.device)]


def _gt_steps(batch: Mapping[str, Any], num_steps: Tensor) -> Tensor:
    """The ground truth (B, 2) in each video's step units (seconds / duration * valid steps)."""
    duration = batch["duration"].float().clamp(min=1e-6)  # (B,)
    return batch["moment"].float() / duration.unsqueeze(1) * num_steps.float().unsqueeze(1)


def moment_labels(windows: Tensor, window_mask: Tensor, gt: Tensor, *, min_ratio: float = 0.3) -> Tensor:
    """Alignment labels of every window (the official CMIN rule; the paper does not give one).

    y = IoU(window, ground truth) / max IoU over the video's valid windows, set to 0 where the IoU is
    below ``min_ratio`` * max and on invalid windows. The ground truth is widened to at least one step
    so a zero-length moment still has a best window.

    Args:
        windows: (N, 2) steps; window_mask: (B, N) bool; gt: (B, 2) steps.

    Returns:
        (B, N) float labels in [0, 1].
    """
    centre = gt.mean(1, keepdim=True)
    half = ((gt[:, 1:] - gt[:, :1]).clamp(min=1.0)) / 2
    gt = torch.cat([centre - half, centre + half], dim=1)  # (B, 2)
    iou = temporal_iou(windows.unsqueeze(0), gt.unsqueeze(1)) * window_mask  # (B, N)
    best = iou.amax(1, keepdim=True).clamp(min=1e-12)
    iou = torch.where(iou < min_ratio * best, torch.zeros_like(iou), iou)
    return iou / best


def moment_loss(outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *, label_min_ratio: float = 0.3,
                reg_weight: float = 1e-3) -> dict[str, Tensor]:
    """CMIN's loss (Eq. 8): alignment BCE + ``reg_weight`` * boundary regression.

    Alignment: binary cross-entropy of each valid window's confidence (``window_scores`` logits) against
    :func:`moment_labels`, averaged over the valid windows of the batch. Regression (official rule):
    the refined box (window + ``window_offsets``) of each video's best-labelled window against the
    ground truth, SmoothL1 in steps, weight 1e-3.

    Args:
        outputs: ``window_scores`` (B, N), ``window_offsets`` (B, N, 2), ``window_mask`` (B, N),
            ``windows`` (N, 2), ``num_steps`` (B,).
        batch: ``moment`` (B, 2) seconds, ``duration`` (B,) seconds.

    Returns:
        ``{"loss_align": ..., "loss_reg": ...}`` (the regression already weighted).
    """
    scores = outputs["window_scores"].float()
    mask = outputs["window_mask"]
    windows = outputs["windows"].float()
    gt = _gt_steps(batch, outputs["num_steps"])
    labels = moment_labels(windows, mask.float(), gt, min_ratio=label_min_ratio)
    bce = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
    align = (bce * mask).sum() / mask.sum().clamp(min=1)
    best = labels.argmax(1)  # (B,)
    rows = torch.arange(len(best), device=best.device)
    refined = windows[best] + outputs["window_offsets"].float()[rows, best]  # (B, 2)
    reg = F.smooth_l1_loss(refined, gt)
    return {"loss_align": align, "loss_reg": reg_weight * reg}


def moment_predictions(outputs: Mapping[str, Tensor], *, durations: Tensor, nms_threshold: float = 0.5,
                       top_k: int = 5) -> list[tuple[Tensor, Tensor]]:
    """Top-k moments per video in seconds: refined valid windows, clipped, after NMS.

    Returns:
        Per video ``(moments (k', 2) seconds, scores (k',) sigmoid confidences)``, best first.
    """
    scores = torch.sigmoid(outputs["window_scores"].detach().float()).cpu()
    boxes = (outputs["windows"].detach().float().unsqueeze(0)
             + outputs["window_offsets"].detach().float()).cpu()  # (B, N, 2) steps
    mask = outputs["window_mask"].detach().cpu()
    steps = outputs["num_steps"].detach().float().cpu()
    out = []
    for b in range(scores.shape[0]):
        dur = float(durations[b])
        sec = (boxes[b][mask[b]] / steps[b].clamp(min=1) * dur).clamp(0, dur)  # (N', 2)
        sec = torch.stack([sec.min(1).values, sec.max(1).values], 1)
        sc = scores[b][mask[b]]
        keep = nms_top_k(sec, sc, threshold=nms_threshold, k=top_k)
        out.append((sec[keep], sc[keep]))
    return out


def moment_records(qids: Sequence[str], video_ids: Sequence[str], moments: Sequence[Tensor],
                   scores: Sequence[Tensor], gt: Tensor, durations: Tensor, *, iou: str = "continuous",
                   num_steps: int = 200) -> list[PredictionRecord]:
    """Prediction records of ranked moments (the model's or a baseline's), with their IoUs."""
    records = []
    for i, qid in enumerate(qids):
        m, g = moments[i].float(), gt[i].float()
        if iou == "steps":
            ious = step_iou(m, g, float(durations[i]), num_steps) if len(m) else torch.zeros(0)
        else:
            ious = temporal_iou(m, g.unsqueeze(0)) if len(m) else torch.zeros(0)
        pred = [[round(float(s), 3), round(float(e), 3), round(float(c), 5)]
                for (s, e), c in zip(m.tolist(), scores[i].tolist(), strict=True)]
        top1 = float(ious[0]) if len(ious) else 0.0
        records.append(PredictionRecord(qid, video_ids[i], "", pred, [round(float(v), 3) for v in g.tolist()],
                                        -1, top1, ious=tuple(float(v) for v in ious)))
    return records


def _predict_moments(outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *, nms_threshold: float = 0.5,
                     iou: str = "continuous", **_: Any) -> list[PredictionRecord]:
    durations = batch["duration"].detach().float().cpu()
    ranked = moment_predictions(outputs, durations=durations, nms_threshold=nms_threshold)
    steps = outputs["num_steps"].detach().cpu()
    records = []
    for b in range(len(ranked)):  # the step formula uses each video's own number of steps
        records += moment_records(batch["qid"][b:b + 1], batch["video_id"][b:b + 1], [ranked[b][0]],
                                  [ranked[b][1]], batch["moment"].detach().float().cpu()[b:b + 1],
                                  durations[b:b + 1], iou=iou, num_steps=int(steps[b]))
    return records


def moment_metrics(records: Sequence[PredictionRecord]) -> dict[str, float]:
    """``R@n,IoU=m`` (share of queries with a top-n moment of IoU >= m) and ``mIoU`` (top-1)."""
    n = len(records)
    out: dict[str, float] = {}
    for k in MOMENT_RECALL_AT:
        for m in MOMENT_IOUS:
            hits = sum(any(v >= m - 1e-9 for v in (r.ious or ())[:k]) for r in records)
            out[f"R@{k},IoU={m}"] = hits / n if n else math.nan
    out["mIoU"] = sum(r.score for r in records) / n if n else math.nan
    out["num_questions"] = float(n)
    return out
