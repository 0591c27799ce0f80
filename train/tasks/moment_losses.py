"""Moment retrieval's loss, prediction decoding and metrics (the kind in ``train/tasks/moment.py``).

- loss: alignment binary cross-entropy of every valid candidate window's confidence against its
  IoU-derived label, plus boundary regression of the best-labelled window (CMIN's official rule, ground
  truth and normalisation by default, see :func:`moment_loss`).
- predictions: the refined valid windows in seconds, after NMS (:func:`moment_predictions`).
- metrics: ``R@n,IoU=m`` for n in {1, 5} and m in {0.1, 0.3, 0.5, 0.7, 0.9} and ``mIoU`` (top-1), by the
  protocol ``train.moment_iou`` names (:data:`MOMENT_PROTOCOLS`): ``official`` (default: CMIN's own
  evaluation, the arg-max window without NMS on its step formula, which reproduces the official R@1) or
  the toolkit's ``continuous`` / ``steps`` (top moments after NMS at ``train.moment_nms``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from train.losses import PredictionRecord

__all__ = [
    "MOMENT_IOUS",
    "MOMENT_PROTOCOLS",
    "MOMENT_RECALL_AT",
    "inclusive_iou",
    "moment_loss",
    "moment_metrics",
    "moment_predictions",
    "moment_records",
    "nms_top_k",
    "official_box_steps",
    "official_steps",
    "predict_moments",
    "refined_boxes",
    "step_iou",
    "temporal_iou",
]

MOMENT_RECALL_AT = (1, 5)
MOMENT_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)

#: the moment metrics' protocols (``train.moment_iou``), recorded beside every moment metric in metrics.json
MOMENT_PROTOCOLS = {
    "official": (
        "CMIN's official evaluation (runners/runner_final.py, criteria.py): R@1 = the arg-max window after "
        "boundary regression, no NMS, rounded to inclusive step indices and scored with the official step "
        "IoU against the official ground-truth steps; mIoU of that window; IoU thresholds 0.1-0.9. R@5 (not "
        "computed by the official code): the top 5 after NMS at IoU m - 0.05 for threshold m (the "
        "convention of the official code's unused compute_IoU_recall), scored the same way"),
    "continuous": (
        "toolkit: the top 1 / top 5 moments after NMS at train.moment_nms for every threshold; plain IoU of "
        "intervals in seconds; thresholds 0.1-0.9"),
    "steps": (
        "toolkit: the top 1 / top 5 moments after NMS at train.moment_nms for every threshold; the official "
        "step IoU with prediction and ground truth both mapped by the official ground-truth rule; "
        "thresholds 0.1-0.9"),
}


def temporal_iou(a: Tensor, b: Tensor) -> Tensor:
    """Continuous temporal IoU of intervals ``a`` (..., 2) and ``b`` (..., 2) (broadcast); 0 if disjoint."""
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = torch.maximum(a[..., 1], b[..., 1]) - torch.minimum(a[..., 0], b[..., 0])
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def official_steps(moments_s: Tensor, duration: Tensor | float, num_steps: Tensor | int) -> Tensor:
    """Moments in seconds as the official CMIN code's inclusive step indices (its ground-truth rule).

    The official data loader (``datasets/ActivityNet.py``) takes the step each time falls in,
    ``int(t * T / duration)``, for the start and for the end, caps the end at ``T - 1`` and the start at
    the end. (Its second stage, ``dataloaders/clip_loader.py``, maps frames to its 200 resampled steps;
    our clips are resampled to T steps of equal duration, so a time maps to its step directly: that stage
    is the identity here.) Computed in float64.

    Args:
        moments_s: (..., 2) seconds; duration: seconds and num_steps: T, each a number or of shape (...).

    Returns:
        (..., 2) float64 integer-valued ``[start, end]``, inclusive, in ``[0, T - 1]``.
    """
    m = torch.as_tensor(moments_s, dtype=torch.float64)
    per_s = torch.as_tensor(num_steps, dtype=torch.float64) / torch.as_tensor(duration, dtype=torch.float64)
    last = torch.as_tensor(num_steps, dtype=torch.float64) - 1
    start = torch.floor(per_s * m[..., 0]).clamp(min=0)
    end = torch.minimum(torch.floor(per_s * m[..., 1]).clamp(min=0), last)
    return torch.stack([torch.minimum(start, end), end], dim=-1)


def inclusive_iou(a: Tensor, b: Tensor) -> Tensor:
    """The official CMIN IoU (``criteria.calculate_IoU``) of inclusive index intervals, float64, broadcast.

    ``(min(end) - max(start) + 1) / (max(end) - min(start) + 1)``, 0 when negative.
    """
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    inter = torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0]) + 1
    union = torch.maximum(a[..., 1], b[..., 1]) - torch.minimum(a[..., 0], b[..., 0])
    iou = inter / (union + 1)
    return torch.where((union < -1e-5) | (iou < 0), torch.zeros_like(iou), iou)


def step_iou(pred_s: Tensor, gt_s: Tensor, duration: float, num_steps: int) -> Tensor:
    """The official step IoU with prediction and ground truth mapped alike (``train.moment_iou=steps``).

    Both go through :func:`official_steps` (the official ground-truth rule), then :func:`inclusive_iou`:
    a prediction equal to the ground truth scores 1.

    Args:
        pred_s: (N, 2) predicted moments in seconds; gt_s: (2,) the ground truth in seconds.

    Returns:
        (N,) float64.
    """
    gt = official_steps(gt_s, duration, num_steps)
    return inclusive_iou(official_steps(pred_s, duration, num_steps), gt.unsqueeze(0))


def official_box_steps(boxes: Tensor, num_steps: int) -> Tensor:
    """A predicted box as the official evaluation maps it (``runners/runner_final.py``, ``eval``).

    Args:
        boxes: (N, 2) refined boxes in the official inclusive step coordinates (window ``[s, e)`` of
            ``models.cmin.window_layout`` is the official proposal ``[s, e - 1]``; offsets add to both).
        num_steps: the video's valid steps.

    Returns:
        (N, 2) float64: rounded half to even (``np.round``), the start raised to 0, the end lowered to
        ``num_steps - 1`` (neither reordered nor clamped otherwise, as the official code).
    """
    r = torch.round(torch.as_tensor(boxes, dtype=torch.float32)).to(torch.float64)
    return torch.stack([r[:, 0].clamp(min=0), r[:, 1].clamp(max=num_steps - 1)], dim=1)


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


def _gt_steps(batch: Mapping[str, Any], num_steps: Tensor, rule: str = "continuous") -> Tensor:
    """The ground truth (B, 2) in each video's step units: ``continuous`` (seconds / duration * valid
    steps) or ``official`` (the steps :func:`official_steps` gives, as the interval ``[start, end + 1)``)."""
    if rule == "official":
        gt = official_steps(batch["moment"], batch["duration"], num_steps)  # (B, 2)
        return (gt + torch.tensor([0.0, 1.0], dtype=gt.dtype, device=gt.device)).float()
    duration = batch["duration"].float().clamp(min=1e-6)  # (B,)
    return batch["moment"].float() / duration.unsqueeze(1) * num_steps.float().unsqueeze(1)


def moment_labels(windows: Tensor, window_mask: Tensor, gt: Tensor, *, min_ratio: float = 0.3) -> Tensor:
    """Alignment labels of every window.

    The slides train each window's confidence against its IoU with the ground truth; the official code
    (followed) scales it: y = IoU(window, ground truth) / max IoU over the video's valid windows, set to 0
    where the IoU is below ``min_ratio`` * max and on invalid windows. The ground truth is widened to at
    least one step so a zero-length moment still has a best window (the official one always spans a step).

    Args:
        windows: (N, 2) steps; window_mask: (B, N) bool; gt: (B, 2) steps.

    Returns:
        (B, N) float32 labels in [0, 1], computed in float64 as the official code does (whole-step ground
        truths put many IoUs exactly at ``min_ratio`` * max; float32 would round some of them away).
    """
    gt, windows = gt.double(), windows.double()
    centre = gt.mean(1, keepdim=True)
    half = ((gt[:, 1:] - gt[:, :1]).clamp(min=1.0)) / 2
    gt = torch.cat([centre - half, centre + half], dim=1)  # (B, 2)
    iou = temporal_iou(windows.unsqueeze(0), gt.unsqueeze(1)) * window_mask.double()  # (B, N)
    best = iou.amax(1, keepdim=True).clamp(min=1e-12)
    iou = torch.where(iou < min_ratio * best, torch.zeros_like(iou), iou)
    return (iou / best).float()


def moment_loss(outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *, label_min_ratio: float = 0.3,
                reg_weight: float = 1e-3, align_norm: str = "all", gt_rule: str = "official"
                ) -> dict[str, Tensor]:
    """CMIN's loss (Eq. 8): alignment BCE + ``reg_weight`` * boundary regression.

    Alignment: binary cross-entropy of each valid window's confidence (``window_scores`` logits) against
    :func:`moment_labels`, summed over the valid windows and divided by every window of the batch
    (``align_norm="all"``: the official ``nn.BCELoss`` mean over B * T * K windows, the invalid ones
    contributing 0) or by the valid windows only (``"valid"``, the toolkit's earlier reading: about 2x
    the weight on ActivityNet, where about half the windows are invalid). Regression (official rule):
    the refined box (its ``anchors`` + ``window_offsets``) of each video's best-labelled window against the
    ground truth, SmoothL1 in steps. The ground truth is the official one (``gt_rule="official"``: the
    steps the start and end fall in, :func:`official_steps`) or the moment itself in continuous steps.

    Args:
        outputs: ``window_scores`` (B, N), ``window_offsets`` (B, N, 2), ``window_mask`` (B, N),
            ``windows`` (N, 2), ``num_steps`` (B,), optionally ``anchors`` (N, 2) (default: the windows).
        batch: ``moment`` (B, 2) seconds, ``duration`` (B,) seconds.

    Returns:
        ``{"loss_align": ..., "loss_reg": ...}`` (the regression already weighted).
    """
    scores = outputs["window_scores"].float()
    mask = outputs["window_mask"]
    windows = outputs["windows"].float()
    gt = _gt_steps(batch, outputs["num_steps"], gt_rule)
    labels = moment_labels(windows, mask.float(), gt, min_ratio=label_min_ratio)
    bce = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
    total = (bce * mask).sum()
    align = total / (bce.numel() if align_norm == "all" else mask.sum().clamp(min=1))
    best = labels.argmax(1)  # (B,)
    rows = torch.arange(len(best), device=best.device)
    refined = _anchors(outputs)[best] + outputs["window_offsets"].float()[rows, best]  # (B, 2)
    reg = F.smooth_l1_loss(refined, gt)
    return {"loss_align": align, "loss_reg": reg_weight * reg}


def _anchors(outputs: Mapping[str, Tensor]) -> Tensor:
    """The boxes the offsets refine: ``anchors`` (CMIN's integer anchors) or else the windows. (N, 2)."""
    return outputs.get("anchors", outputs["windows"]).float()


def refined_boxes(outputs: Mapping[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Every valid window's refined box per video, in the official inclusive step coordinates.

    Returns:
        Per video ``(boxes (N', 2) float32 [start, end] inclusive steps, scores (N',) sigmoid)``, in window
        order; the interval in continuous steps is ``[start, end + 1)``. Computed as the official code
        does (its proposal, the anchor ``[s, e - 1]``, plus the offsets, float32), so its rounding is the
        official one.
    """
    scores = torch.sigmoid(outputs["window_scores"].detach().float()).cpu()
    proposals = _anchors(outputs).detach().cpu() - torch.tensor([0.0, 1.0])  # (N, 2) inclusive
    boxes = proposals.unsqueeze(0) + outputs["window_offsets"].detach().float().cpu()  # (B, N, 2)
    mask = outputs["window_mask"].detach().cpu()
    return [(boxes[b][mask[b]], scores[b][mask[b]]) for b in range(scores.shape[0])]


def _ordered(steps: Tensor) -> Tensor:
    """(N, 2) continuous intervals with start <= end."""
    return torch.stack([steps.min(1).values, steps.max(1).values], 1)


def moment_predictions(outputs: Mapping[str, Tensor], *, durations: Tensor, nms_threshold: float = 0.5,
                       top_k: int = 5, with_steps: bool = False) -> list[tuple[Tensor, ...]]:
    """Top-k moments per video in seconds: refined valid windows, clipped, after NMS.

    Returns:
        Per video ``(moments (k', 2) seconds, scores (k',) sigmoid confidences)``, best first; with
        ``with_steps`` also their refined boxes (k', 2) in the official inclusive step coordinates.
    """
    steps = outputs["num_steps"].detach().float().cpu()
    out = []
    for b, (boxes, sc) in enumerate(refined_boxes(outputs)):
        dur = float(durations[b])
        cont = boxes + torch.tensor([0.0, 1.0])  # (N', 2) continuous steps
        sec = _ordered((cont / steps[b].clamp(min=1) * dur).clamp(0, dur))  # (N', 2)
        keep = nms_top_k(sec, sc, threshold=nms_threshold, k=top_k)
        out.append((sec[keep], sc[keep], boxes[keep]) if with_steps else (sec[keep], sc[keep]))
    return out


def _official_hits(listed: Tensor, candidates: tuple[Tensor, Tensor], gt: Tensor, num_steps: int
                   ) -> tuple[Tensor, dict[str, float]]:
    """The official protocol on one query: the IoU of each listed box (the first is the arg-max) and
    the hits of every ``R@n,IoU=m``.

    Args:
        listed: (k, 2) boxes in official inclusive steps, the arg-max window first.
        candidates: ``(boxes (N, 2), scores (N,))`` every candidate, for R@5's NMS at ``m - 0.05``.
        gt: (2,) official ground-truth steps.
    """
    ious = inclusive_iou(official_box_steps(listed, num_steps), gt.unsqueeze(0))
    hits = {f"R@1,IoU={m}": float(len(ious) > 0 and bool(ious[0] >= m)) for m in MOMENT_IOUS}
    boxes, scores = candidates
    cont = _ordered(boxes.double() + torch.tensor([0.0, 1.0], dtype=torch.float64))
    for m in MOMENT_IOUS:
        keep = nms_top_k(cont, scores, threshold=m - 0.05, k=max(MOMENT_RECALL_AT))
        best = inclusive_iou(official_box_steps(boxes[keep], num_steps), gt.unsqueeze(0))
        hits[f"R@5,IoU={m}"] = float(bool((best >= m).any()))
    return ious, hits


def moment_records(qids: Sequence[str], video_ids: Sequence[str], moments: Sequence[Tensor],
                   scores: Sequence[Tensor], gt: Tensor, durations: Tensor, *, iou: str = "official",
                   num_steps: int | Sequence[int] = 200, boxes: Sequence[Tensor] | None = None,
                   candidates: Sequence[tuple[Tensor, Tensor]] | None = None) -> list[PredictionRecord]:
    """Prediction records of ranked moments (the model's or a baseline's), scored by a protocol.

    Args:
        moments, scores: per query the listed moments (k, 2) in seconds, best first, and their scores.
        gt: (Q, 2) seconds; durations: (Q,) seconds.
        iou: the protocol (:data:`MOMENT_PROTOCOLS`).
        num_steps: T (per query, or one for all).
        boxes: ``official`` only: the listed moments in official inclusive steps (default: from seconds).
        candidates: ``official`` only: per query every candidate ``(boxes, scores)`` for R@5's NMS
            (default: the listed ones).
    """
    records = []
    for i, qid in enumerate(qids):
        m, g, dur = moments[i].double(), gt[i].double(), float(durations[i])
        T = int(num_steps if isinstance(num_steps, int) else num_steps[i])
        if iou == "official":
            listed = boxes[i] if boxes is not None else m * T / dur - torch.tensor([0.0, 1.0],
                                                                                 dtype=torch.float64)
            cand = candidates[i] if candidates is not None else (listed, scores[i])
            ious, hits = _official_hits(listed, cand, official_steps(g, dur, T), T)
        else:
            if iou == "steps":
                ious = step_iou(m, g, dur, T) if len(m) else torch.zeros(0)
            else:
                ious = temporal_iou(m, g.unsqueeze(0)) if len(m) else torch.zeros(0)
            hits = {f"R@{k},IoU={t}": float(bool((ious[:k] >= t - 1e-9).any()))
                    for k in MOMENT_RECALL_AT for t in MOMENT_IOUS}
        pred = [[round(float(s), 3), round(float(e), 3), round(float(c), 5)]
                for (s, e), c in zip(m.tolist(), scores[i].tolist(), strict=True)]
        top1 = float(ious[0]) if len(ious) else 0.0
        records.append(PredictionRecord(qid, video_ids[i], "", pred, [round(float(v), 3) for v in g.tolist()],
                                        -1, top1, ious=tuple(float(v) for v in ious),
                                        hits=tuple(sorted(hits.items()))))
    return records


def predict_moments(outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *, nms_threshold: float = 0.5,
                    iou: str = "official", **_: Any) -> list[PredictionRecord]:
    """One batch's prediction records: each query's top-5 moments after NMS at ``nms_threshold``, scored
    by the protocol ``iou`` (:func:`moment_records`)."""
    durations = batch["duration"].detach().double().cpu()
    ranked = moment_predictions(outputs, durations=durations, nms_threshold=nms_threshold, with_steps=True)
    steps = [int(s) for s in outputs["num_steps"].detach().cpu()]  # each video's own number of steps
    return moment_records(batch["qid"], batch["video_id"], [r[0] for r in ranked], [r[1] for r in ranked],
                          batch["moment"].detach().double().cpu(), durations, iou=iou, num_steps=steps,
                          boxes=[r[2] for r in ranked], candidates=refined_boxes(outputs))


def moment_metrics(records: Sequence[PredictionRecord]) -> dict[str, float]:
    """``R@n,IoU=m`` (share of queries with a hit among the top n, as the protocol ranks them) and
    ``mIoU`` (top-1). Records without ``hits`` (made elsewhere) count their listed ``ious``."""
    n = len(records)
    out: dict[str, float] = {}
    for k in MOMENT_RECALL_AT:
        for m in MOMENT_IOUS:
            name = f"R@{k},IoU={m}"
            hits = sum(dict(r.hits)[name] if r.hits else any(v >= m - 1e-9 for v in (r.ious or ())[:k])
                       for r in records)
            out[name] = hits / n if n else math.nan
    out["mIoU"] = sum(r.score for r in records) / n if n else math.nan
    out["num_questions"] = float(n)
    return out
