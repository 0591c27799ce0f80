"""CMIN against the official code's computations (ikuinen/CMIN_moment_retrieval), re-expressed here.

Each ``_official_*`` helper is our own re-expression of what the official code computes (read, not copied):
the ground-truth steps (``datasets/ActivityNet.py``, ``dataloaders/clip_loader.py``), the evaluation
(``runners/runner_final.py`` ``eval``, ``criteria.calculate_IoU_batch``), the unused R@n convention
(``criteria.nms_temporal`` at ``m - 0.05``) and the training loss (``models_/gcn_final.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.cmin import integer_anchors, valid_windows, window_layout
from train.tasks import compute_metrics, predict
from train.tasks.moment_losses import moment_loss, official_steps, step_iou

THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


# ----------------------------------------------------------------------------- the official rules
def _official_gt(start_s, end_s, duration, steps):
    """Seconds -> inclusive steps: int(fps * t), the end capped, then the frame -> step map of a video with
    as many clip features as steps (clip_loader's linspace index is the identity then)."""
    fps = steps / duration
    s, e = int(fps * start_s), int(fps * end_s)
    e = min(e, steps - 1)
    s = min(s, e)
    index = np.linspace(0, steps - 1, steps).astype(np.int32)
    s2 = int(min(np.where(index >= s)[0]))
    e2 = steps - 1 if e == steps - 1 else int(max(np.where(index <= e)[0]))
    return min(s2, e2), e2


def _official_iou(pred, gt):
    """criteria.calculate_IoU_batch: (n, 2) inclusive intervals against (n, 2)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    union = (np.minimum(pred[:, 0], gt[:, 0]), np.maximum(pred[:, 1], gt[:, 1]))
    inter = (np.maximum(pred[:, 0], gt[:, 0]), np.minimum(pred[:, 1], gt[:, 1]))
    iou = 1.0 * (inter[1] - inter[0] + 1) / (union[1] - union[0] + 1)
    iou[union[1] - union[0] < -1e-5] = 0
    iou[iou < 0] = 0.0
    return iou


def _official_proposals(widths, steps):
    """The official proposals (float64) of every step and width, step-major: [t - (w-1)/2, t + (w-1)/2]."""
    w = np.asarray(widths, dtype=np.float64)
    centres = np.arange(steps)
    start = centres[:, None] - 0.5 * (w[None] - 1)
    end = centres[:, None] + 0.5 * (w[None] - 1)
    return np.stack([start, end], -1).reshape(-1, 2)


def _official_eval(scores, reg, widths, steps, gts):
    """runner_final.eval: arg-max of the masked sigmoid scores, the int32-cast proposal plus its offsets,
    rounded, start raised to 0 and end lowered to steps - 1; IoU against the ground truth."""
    proposals = _official_proposals(widths, steps)
    illegal = (proposals[:, 0] < 0) | (proposals[:, 1] >= steps)
    B = scores.shape[0]
    label_mask = torch.from_numpy(1 - illegal.astype(np.uint8)).float()
    predict_flatten = torch.sigmoid(scores).view(B, -1) * label_mask
    indices = torch.argmax(predict_flatten, -1)
    prop = torch.from_numpy(proposals).type_as(torch.zeros(1, dtype=torch.int32)).float()
    boxes = (prop[indices] + reg[torch.arange(B), indices]).numpy()
    boxes = np.round(boxes).astype(np.int32)
    starts, ends = boxes[:, 0], boxes[:, 1]
    starts[starts < 0] = 0
    ends[ends >= steps] = steps - 1
    return _official_iou(np.stack([starts, ends], 1), gts), proposals, illegal


def _official_nms(scores, windows, overlap):
    """criteria.nms_temporal: greedy, the highest score first, overlap inter / (len_i + len_j - inter)."""
    starts, ends = windows[:, 0], windows[:, 1]
    lengths = ends - starts
    order = [i for i, _ in sorted(enumerate(scores), key=lambda x: x[1])]
    picks = []
    while order:
        i = order[-1]
        picks.append(i)
        rest = []
        for j in order[:-1]:
            inter = max(0.0, min(ends[i], ends[j]) - max(starts[i], starts[j]))
            if inter / (lengths[i] + lengths[j] - inter) <= overlap:
                rest.append(j)
        order = rest
    return picks


def _batch_and_outputs(seed, B=48, steps=40, widths=(4, 8, 16), reg_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    K = len(widths)
    scores = 3 * torch.randn(B, steps, K, generator=g)
    reg = reg_scale * torch.randn(B, steps * K, 2, generator=g)
    duration = rng.uniform(5.0, 200.0, B)
    ends = rng.uniform(0, 1, (B, 2))
    ends.sort(1)
    moment = ends * duration[:, None]
    moment[:5, 1] = duration[:5]  # moments reaching the end of the video
    moment[5:8, 1] = moment[5:8, 0]  # zero-length moments
    windows = window_layout(steps, widths)
    outputs = {
        "window_scores": scores.reshape(B, -1), "window_offsets": reg,
        "window_mask": valid_windows(windows, torch.full((B,), steps)),
        "windows": windows, "anchors": integer_anchors(windows), "num_steps": torch.full((B,), steps),
    }
    batch = {"qid": [f"q{i}" for i in range(B)], "video_id": [f"v{i}" for i in range(B)],
             "moment": torch.from_numpy(moment), "duration": torch.from_numpy(duration)}
    gts = np.array([_official_gt(s, e, d, steps) for (s, e), d in zip(moment, duration, strict=True)])
    return scores, reg, outputs, batch, gts


# ----------------------------------------------------------------------------- IoU
@pytest.mark.parametrize("pred, gt, want", [
    ((2.5, 7.25), (2.5, 7.25), 1.0),  # a perfect prediction: [2, 7] both
    ((0.0, 10.0), (5.0, 10.0), 0.5),  # [0, 9] (end capped) vs [5, 9]: 5 / 10
    ((3.2, 6.9), (4.0, 8.0), 0.5),  # [3, 6] vs [4, 8]: 3 / 6
    ((1.0, 4.0), (2.0, 4.0), 0.75),  # [1, 4] vs [2, 4]: 3 / 4
    ((0.0, 2.5), (3.0, 5.0), 0.0),  # [0, 2] vs [3, 5]: adjacent, no common step
    ((8.0, 10.0), (9.5, 10.0), 0.5),  # [8, 9] vs [9, 9]: 1 / 2
    ((4.0, 4.45), (4.2, 4.2), 1.0),  # [4, 4] vs [4, 4]: a zero-length moment found
])
def test_step_iou_maps_prediction_and_truth_alike(pred, gt, want):
    """Hand-computed with the official IoU, (min end - max start + 1) / (max end - min start + 1), on the
    official steps int(t * T / duration) with the end capped at T - 1: T = 10 steps over 10 s."""
    got = float(step_iou(torch.tensor([pred], dtype=torch.float64), torch.tensor(gt, dtype=torch.float64),
                         10.0, 10)[0])
    assert got == pytest.approx(want, abs=1e-12)
    official = _official_iou([_official_gt(*pred, 10.0, 10)], [_official_gt(*gt, 10.0, 10)])[0]
    assert got == pytest.approx(float(official), abs=1e-12)


def test_official_steps_is_the_official_ground_truth_rule():
    rng = np.random.default_rng(0)
    for steps in (16, 200):
        d = rng.uniform(1, 300, 500)
        m = np.sort(rng.uniform(0, 1, (500, 2)), 1) * d[:, None]
        m[:50, 1] = d[:50]
        got = official_steps(torch.from_numpy(m), torch.from_numpy(d), steps).numpy()
        want = np.array([_official_gt(s, e, dd, steps) for (s, e), dd in zip(m, d, strict=True)])
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- the evaluation protocol
@pytest.mark.parametrize("seed", range(4))
def test_official_protocol_reproduces_the_official_r1(seed):
    """The same network outputs through the official evaluation and through ours: R@1 at every threshold
    identical, mIoU equal to rounding (the official code averages batch means)."""
    scores, reg, outputs, batch, gts = _batch_and_outputs(seed)
    ious, _, _ = _official_eval(scores, reg, (4, 8, 16), 40, gts)
    metrics = compute_metrics("moment", predict("moment", outputs, batch, iou="official", nms_threshold=0.5))
    for m in THRESHOLDS:
        assert metrics[f"R@1,IoU={m}"] == np.mean(ious >= m), m
    assert metrics["mIoU"] == pytest.approx(float(np.mean(ious)), abs=1e-12)
    assert 0 < metrics["R@1,IoU=0.1"] < 1  # the random inputs reach both sides of the thresholds


@pytest.mark.parametrize("seed", range(2))
def test_official_protocol_r5_follows_the_official_nms_convention(seed):
    """R@5 (the official code computes none): the top 5 after criteria.nms_temporal at m - 0.05 among the
    valid windows' refined boxes, each mapped and scored as the arg-max one is. Offsets below a step keep
    every box ordered, where nms_temporal's lengths are defined."""
    scores, reg, outputs, batch, gts = _batch_and_outputs(seed, reg_scale=0.3)
    _, proposals, illegal = _official_eval(scores, reg, (4, 8, 16), 40, gts)
    prop = torch.from_numpy(proposals).to(torch.int32).float()
    metrics = compute_metrics("moment", predict("moment", outputs, batch, iou="official", nms_threshold=0.5))
    B = scores.shape[0]
    for m in THRESHOLDS:
        hits = []
        for b in range(B):
            valid = np.flatnonzero(~illegal)
            boxes = (prop[valid] + reg[b, valid]).numpy()  # official inclusive boxes
            sc = torch.sigmoid(scores[b].reshape(-1))[valid].numpy()
            picks = _official_nms(sc, boxes + np.array([0.0, 1.0], dtype=np.float32), m - 0.05)[:5]
            top = np.round(boxes[picks]).astype(np.int32)
            top[:, 0][top[:, 0] < 0] = 0
            top[:, 1][top[:, 1] >= 40] = 39
            hits.append(bool((_official_iou(top, np.repeat(gts[b:b + 1], len(top), 0)) >= m).any()))
        assert metrics[f"R@5,IoU={m}"] == np.mean(hits), m
        assert metrics[f"R@5,IoU={m}"] >= metrics[f"R@1,IoU={m}"]


# ----------------------------------------------------------------------------- the training loss
def _official_loss(scores, reg, widths, steps, gts):
    """gcn_final.Model.forward in training: BCELoss(sigmoid * label_mask, label) over all B * T * K windows
    + 1e-3 * SmoothL1(int32 proposal of the best label + offsets, ground truth); clip_loader's labels (IoU of
    the float proposals with the ground truth, zero when illegal or below 0.3 * max, divided by the max).
    In float64: the official float32 BCE of probabilities loses about 1e-3 of 1 - p near p = 1, which ours
    (BCE with logits) does not, so float64 compares the formulas."""
    proposals = _official_proposals(widths, steps)
    illegal = (proposals[:, 0] < 0) | (proposals[:, 1] >= steps)
    labels = []
    for g in gts:
        iou = _official_iou(proposals, np.repeat(g[None], len(proposals), 0))
        iou[illegal] = 0.0
        best = iou.max()
        iou[iou < 0.3 * best] = 0.0
        labels.append(iou / best)
    label = torch.from_numpy(np.stack(labels))
    B = scores.shape[0]
    mask = torch.from_numpy(1 - illegal.astype(np.uint8)).double()
    predict_flatten = torch.sigmoid(scores.double()).view(B, -1) * mask
    cls = torch.nn.BCELoss()(predict_flatten, label)
    prop = torch.from_numpy(proposals).type_as(torch.zeros(1, dtype=torch.int32)).double()
    idx = torch.argmax(label, -1)
    refine = prop[idx] + reg.double()[torch.arange(B), idx]
    return (cls + 1e-3 * torch.nn.SmoothL1Loss()(refine, torch.from_numpy(gts).double())).float()


@pytest.mark.parametrize("seed", range(3))
def test_moment_loss_defaults_are_the_official_loss(seed):
    """Official normalisation (all windows), ground truth (whole steps) and anchors (int32 proposals)."""
    scores, reg, outputs, batch, gts = _batch_and_outputs(seed, B=16, steps=30, widths=(4, 6, 16, 24))
    losses = moment_loss(outputs, batch)
    want = _official_loss(scores, reg, (4, 6, 16, 24), 30, gts)
    torch.testing.assert_close(losses["loss_align"] + losses["loss_reg"], want, rtol=1e-5, atol=1e-6)
    valid = moment_loss(outputs, batch, align_norm="valid")
    mask = outputs["window_mask"]
    ratio = float(mask.numel() / mask.sum())
    assert float(valid["loss_align"]) == pytest.approx(ratio * float(losses["loss_align"]), rel=1e-5)
    assert ratio > 1.3  # many windows reach outside these 30-step videos
