"""From detections to MASN's object rows: box selection and padding, the spatial box features, the
scaling of boxes between images, and RoIAlign pooling on 2D and 3D feature maps.

The selection rule (steps 2-4 of ``extract/objects.py``'s docstring; step 1 runs inside the detector):
rank every surviving (box, class) detection by score across classes, optionally drop the same region
found as two classes (class-agnostic NMS), keep those scoring at least ``score_threshold`` up to
``max_objects``, fill up to ``min_objects`` from below the threshold, and pad to exactly ``max_objects``
rows (boxes of zeros, score 0, label -1, ``mask`` False).

Coordinates: boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates of the image they refer
to (pixel ``i`` covers ``[i, i + 1)``), as torchvision's detectors return them. A box is moved
between images of different sizes (original frame, detector input, backbone input, feature map)
with ``scale_boxes``, which scales x by ``W_to / W_from`` and y by ``H_to / H_from`` separately:
frames are rarely square and backbone inputs are square-resized. RoIAlign is then called on
feature-map coordinates with ``spatial_scale=1`` and ``aligned=True`` (the half-pixel shift that
makes a box aligned with cells sample exactly at the cell centres).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import nms, roi_align

from extract.objects import Detections, DetectorSettings

__all__ = [
    "REGION_FIELDS",
    "RoISettings",
    "SelectedObjects",
    "region_rows",
    "roi_mean_features",
    "roi_mean_features_3d",
    "scale_boxes",
    "select_batch",
    "select_objects",
    "spatial_features",
]


# --------------------------------------------------------------------------------------------------
# Box selection and spatial features
# --------------------------------------------------------------------------------------------------


class SelectedObjects(NamedTuple):
    """Exactly ``max_objects`` rows for one frame.

    boxes: (M, 4) float32 (zeros on padding); scores: (M,) float32 (0 on padding);
    labels: (M,) int64 (-1 on padding); mask: (M,) bool (False on padding); index: (M,) int64, the row
    of the detections each one is (-1 on padding). Real rows come first, sorted by score (descending).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    index: np.ndarray


def select_objects(
    boxes,
    scores,
    labels=None,
    *,
    max_objects: int = 10,
    min_objects: int = 0,
    score_threshold: float = 0.2,
    agnostic_nms_iou: float | None = None,
) -> SelectedObjects:
    """Class-agnostic top-``max_objects`` selection with threshold, minimum fill and padding.

    Args:
        boxes: (K, 4) ``x1, y1, x2, y2`` detections of every class (after the detector's per-class NMS).
        scores: (K,) their scores.
        labels: (K,) their class ids, or None.
        max_objects: M, rows returned.
        min_objects: when fewer than this pass ``score_threshold``, the best remaining detections fill
            up to ``min_objects`` (0 = pure thresholding).
        score_threshold: detections scoring at least this are kept.
        agnostic_nms_iou: when set, NMS across classes at this IoU before selecting.

    Returns:
        ``SelectedObjects`` with exactly M rows: the kept detections by descending score, then padding
        (zero boxes, score 0, label -1, mask False).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    k = len(scores)
    labels = np.full(k, -1, np.int64) if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(boxes) != k or len(labels) != k:
        raise ValueError(f"boxes, scores and labels disagree in length: {len(boxes)}, {k}, {len(labels)}")
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    order = np.argsort(-scores, kind="stable")  # class-agnostic ranking over all classes' detections
    if agnostic_nms_iou is not None and k > 0:
        keep = nms(torch.from_numpy(boxes[order]), torch.from_numpy(scores[order]), agnostic_nms_iou).numpy()
        order = order[np.sort(keep)]  # nms returns kept indices by descending score; keep the stable order
    passing = int((scores[order] >= score_threshold).sum())  # sorted, so the passing ones come first
    count = min(max(passing, min(min_objects, len(order))), max_objects)
    chosen = order[:count]
    out_boxes = np.zeros((max_objects, 4), np.float32)
    out_scores = np.zeros(max_objects, np.float32)
    out_labels = np.full(max_objects, -1, np.int64)
    mask = np.zeros(max_objects, bool)
    index = np.full(max_objects, -1, np.int64)
    out_boxes[:count] = boxes[chosen]
    out_scores[:count] = scores[chosen]
    out_labels[:count] = labels[chosen]
    mask[:count] = True
    index[:count] = chosen
    return SelectedObjects(out_boxes, out_scores, out_labels, mask, index)


def scale_boxes(boxes, from_hw: tuple[int, int], to_hw: tuple[int, int]):
    """Map boxes between two views of the same image that differ only by (per-axis) resizing.

    x is multiplied by ``W_to / W_from`` and y by ``H_to / H_from`` (continuous coordinates, pixel i
    covering [i, i + 1)). For a feature map ``to_hw`` is the map's (h, w) and ``from_hw`` the size of
    the input that produced it: this is RoIAlign's ``spatial_scale``, one per axis.

    Args:
        boxes: (..., 4) ``x1, y1, x2, y2`` (numpy array or tensor).
        from_hw: (H, W) the boxes refer to.
        to_hw: (H', W') of the target image or map.

    Returns:
        (..., 4) boxes in the target's coordinates, same type as the input.
    """
    sx = to_hw[1] / from_hw[1]
    sy = to_hw[0] / from_hw[0]
    if isinstance(boxes, Tensor):
        factor = torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)
    else:
        boxes = np.asarray(boxes, dtype=np.float32)
        factor = np.array([sx, sy, sx, sy], dtype=boxes.dtype)
    return boxes * factor


def spatial_features(boxes, mask, height: int, width: int) -> np.ndarray:
    """MASN's 6-d box features ``[x1/w, y1/h, x2/w, y2/h, bw/w, bh/h]`` (paper Sec. 3.1).

    Args:
        boxes: (..., 4) boxes in the pixel coordinates of a frame of size (height, width).
        mask: (...) bool, False on padded rows (their features are zeros).
        height, width: the frame's size (the original frame's, for MASN).

    Returns:
        (..., 6) float32.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    w, h = float(width), float(height)
    x1, y1, x2, y2 = boxes[..., 0] / w, boxes[..., 1] / h, boxes[..., 2] / w, boxes[..., 3] / h
    out = np.stack([x1, y1, x2, y2, x2 - x1, y2 - y1], axis=-1).astype(np.float32)
    out[~mask] = 0.0
    return out


# --------------------------------------------------------------------------------------------------
# RoIAlign pooling
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoISettings:
    """RoIAlign grid: ``output_size`` bins per axis, ``sampling_ratio`` bilinear samples per bin axis
    (<= 0: adaptive, ceil(box size / bins)). The bins are then averaged (mean pooling to C dims)."""

    output_size: int = 7
    sampling_ratio: int = 2

    def __post_init__(self):
        if self.output_size < 1:
            raise ValueError(f"output_size must be >= 1, got {self.output_size}")


def roi_mean_features(
    fmap: Tensor,
    boxes: Tensor,
    mask: Tensor | None = None,
    *,
    output_size: int = 7,
    sampling_ratio: int = 2,
) -> Tensor:
    """RoIAlign (``aligned=True``) of M boxes per image on a 2D feature map, mean-pooled over the bins.

    Args:
        fmap: (N, C, h, w) feature maps.
        boxes: (N, M, 4) boxes already in feature-map coordinates (see ``scale_boxes``).
        mask: (N, M) bool; rows that are False come out as zeros. None = all valid.
        output_size: bins per axis.
        sampling_ratio: samples per bin axis (<= 0: adaptive).

    Returns:
        (N, M, C) float32.
    """
    n, c = fmap.shape[:2]
    m = boxes.shape[1]
    if boxes.shape != (n, m, 4):
        raise ValueError(f"boxes must be (N={n}, M, 4), got {tuple(boxes.shape)}")
    fmap = fmap.float()
    if m == 0:
        return fmap.new_zeros((n, 0, c))
    batch_index = torch.arange(n, device=fmap.device, dtype=fmap.dtype).repeat_interleave(m)  # (N*M,)
    rois = torch.cat([batch_index[:, None], boxes.reshape(n * m, 4).to(fmap)], dim=1)  # (N*M, 5)
    pooled = roi_align(
        fmap, rois, output_size=output_size, spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True
    )  # (N*M, C, s, s)
    feats = pooled.mean(dim=(2, 3)).reshape(n, m, c)  # (N, M, C)
    if mask is not None:
        feats = feats * mask.to(device=feats.device, dtype=feats.dtype)[..., None]
    return feats


def roi_mean_features_3d(
    fmap: Tensor,
    boxes: Tensor,
    mask: Tensor | None = None,
    *,
    output_size: int = 7,
    sampling_ratio: int = 2,
) -> Tensor:
    """RoIAlign of M boxes per clip on a 3D (video) feature map, averaged over time and bins.

    The map is averaged over its time axis first and RoIAlign runs on the result. RoIAlign is linear
    in the map's values, so this equals RoIAlign on each time slice followed by the average over time
    (tested), at 1/t of the cost.

    Args:
        fmap: (N, C, t, h, w) video feature maps (e.g. I3D's last conv block).
        boxes: (N, M, 4) boxes in the map's (h, w) coordinates.
        mask: (N, M) bool or None, as ``roi_mean_features``.

    Returns:
        (N, M, C) float32.
    """
    if fmap.ndim != 5:
        raise ValueError(f"a 3D feature map must be (N, C, t, h, w), got {tuple(fmap.shape)}")
    return roi_mean_features(
        fmap.float().mean(dim=2), boxes, mask, output_size=output_size, sampling_ratio=sampling_ratio
    )


def select_batch(detections: Sequence[Detections], settings: DetectorSettings) -> SelectedObjects:
    """``select_objects`` for many frames, stacked.

    Returns:
        ``SelectedObjects`` of boxes (N, M, 4), scores (N, M), labels (N, M), mask (N, M).
    """
    rows = [
        select_objects(
            d.boxes,
            d.scores,
            d.labels,
            max_objects=settings.max_objects,
            min_objects=settings.min_objects,
            score_threshold=settings.score_threshold,
            agnostic_nms_iou=settings.agnostic_nms_iou,
        )
        for d in detections
    ]
    m = settings.max_objects
    if not rows:
        return SelectedObjects(
            np.zeros((0, m, 4), np.float32),
            np.zeros((0, m), np.float32),
            np.zeros((0, m), np.int64),
            np.zeros((0, m), bool),
            np.full((0, m), -1, np.int64),
        )
    return SelectedObjects(*(np.stack(parts) for parts in zip(*rows, strict=True)))


#: Detections fields a detector may add per row, and their padding value in ``region_rows``
REGION_FIELDS = {"features": 0.0, "label_scores": 0.0, "attributes": -1, "attribute_scores": 0.0}


def region_rows(detections: Sequence[Detections], selected: SelectedObjects) -> dict[str, np.ndarray]:
    """The selected rows of the detections' region outputs (``REGION_FIELDS``), padded like ``selected``.

    Args:
        detections: N frames' detections (as given to ``select_batch``).
        selected: their selection (N, M).

    Returns:
        field -> (N, M, ...) array for each field every frame's detections carry (features (N, M, D)
        float32, label_scores, attribute_scores (N, M) float32, attributes (N, M) int64), padded rows
        0 (attributes -1); {} for detectors without region outputs.
    """
    out: dict[str, np.ndarray] = {}
    for field, pad in REGION_FIELDS.items():
        values = [getattr(d, field) for d in detections]
        if not values or any(v is None for v in values):
            continue
        rows = []
        for v, index in zip(values, selected.index, strict=True):
            filled = np.full((len(index), *v.shape[1:]), pad, dtype=v.dtype)
            real = index >= 0
            filled[real] = v[index[real]]
            rows.append(filled)
        out[field] = np.stack(rows)
    return out
