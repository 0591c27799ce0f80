"""Object detectors: the registry (``DETECTORS``), their settings and selection rule, the loaded detector
and its weights (box selection, spatial features and RoIAlign: ``extract/regions.py``).

These are the parts of MASN's inputs (Seo et al., ACL 2021, Sec. 3.1 and 4.2) that concern objects;
``extract/masn.py`` assembles them into the ``masn`` feature set. MASN takes its objects from the
bottom-up-attention Faster R-CNN (Visual Genome) and publishes no extraction code. Two kinds of detector
are registered in ``DETECTORS``:

- ``bottomup_r101_vg``: that very network (``extract/bottomup.py``, loading the released weights): it
  applies bottom-up-attention's own extraction rule inside (per-class NMS 0.3, confidence >= 0.2, at
  least ``min_objects`` and at most ``max_objects`` regions) and gives each kept region its 2048-d
  feature, object class and attribute (``Detections.features`` etc.). This is what matches MASN's
  released object features.
- torchvision's COCO Faster R-CNNs (ResNet-50 FPN v2 by default), which give boxes only (their features
  are RoIAlign on the appearance backbone's map, ``extract/masn.py``), with the same selection rule:

1. The detector scores every proposal for every class, drops candidates below a floor
   (``candidate_floor``, torchvision's own 0.05) and applies NMS per class (IoU ``nms_iou``; 0.3 as
   bottom-up-attention).
2. All surviving (box, class) detections are ranked by score across classes (class-agnostic ranking);
   optionally a class-agnostic NMS (``agnostic_nms_iou``) removes the same region found as two classes.
3. Detections scoring at least ``score_threshold`` (0.2) are kept, at most ``max_objects`` (10). When
   fewer than ``min_objects`` pass, the best remaining candidates fill up to ``min_objects``
   (bottom-up-attention's MIN_BOXES rule: MASN's frames always carry 10 objects). ``min_objects=0``
   gives pure thresholding.
4. The result is padded to exactly ``max_objects`` rows. Padded rows are boxes of zeros, score 0,
   label -1 and ``mask`` False; their spatial and RoI features are zeros. A frame where the detector
   finds nothing (as a randomly initialised detector usually does: its scores are ~1/91 < the floor)
   is all padding, and the mask says so; nothing is invented.

Steps 2-4, the spatial box features, the scaling of boxes between images and RoIAlign pooling are in
``extract/regions.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models import detection as tv_detection

from extract import bottomup
from extract.accel import Accelerator
from extract.weights import WeightsError, load_checkpoint_file, sha256_file, torch_cache_checkpoint

__all__ = [
    "DETECTORS",
    "DetectorSettings",
    "Detections",
    "LoadedDetector",
    "detector_provenance",
    "load_detector",
    "resolve_detector_weights",
]


# --------------------------------------------------------------------------------------------------
# Detector registry (written out by hand)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorEntry:
    """A selectable torchvision detector: its builder and its COCO weights enum entry.

    Every registry entry offers ``build``, ``default_file``, ``load_weights``, ``loaded_class``,
    ``architecture``, ``num_classes``, ``feature_dim`` (its own region features' size, or None),
    ``region_fields`` (the ``REGION_FIELDS`` its ``Detections`` carry), ``vocabulary`` (a function
    giving the class and attribute names, or None) and ``description``.
    """

    builder: Callable[..., nn.Module]
    weights: object  # a torchvision WeightsEnum member (carries the checkpoint url and metadata)
    num_classes: int = 91  # COCO, background included, as torchvision's detection weights
    feature_dim: int | None = None  # boxes only: region features come from RoIAlign on a backbone map
    region_fields: tuple[str, ...] = ()
    vocabulary: Callable[[], tuple[tuple[str, ...], tuple[str, ...]]] | None = None

    @property
    def architecture(self) -> str:
        return f"torchvision.models.detection.{self.builder.__name__}"

    @property
    def description(self) -> str:
        return f"torchvision, COCO ({self.num_classes - 1} classes), boxes only"

    @property
    def loaded_class(self) -> type[LoadedDetector]:
        return LoadedDetector

    def build(self, settings: DetectorSettings) -> nn.Module:
        """The torchvision model with ``settings`` (random initialisation; seed it outside)."""
        return self.builder(
            weights=None,
            weights_backbone=None,
            num_classes=self.num_classes,
            min_size=settings.min_size,
            max_size=settings.max_size,
            box_score_thresh=min(settings.candidate_floor, settings.score_threshold),
            box_nms_thresh=settings.nms_iou,
            box_detections_per_img=max(100, settings.max_objects),
            rpn_post_nms_top_n_test=settings.num_proposals,
            rpn_pre_nms_top_n_test=max(settings.num_proposals, 1000),
        )

    def default_file(self, name: str) -> Path:
        """torchvision's COCO file in the torch hub cache (a clear error when it is not there)."""
        path = torch_cache_checkpoint(Path(self.weights.url).name)
        if not path.is_file():
            raise WeightsError(
                f"pretrained weights for detector {name!r} are not in the torchvision cache: "
                f"place {path.name} (from {self.weights.url}) at {path}, or pass a local checkpoint "
                f"(vqa-extract --checkpoint {name}=PATH), or use random weights. Nothing is downloaded."
            )
        return path

    def load_weights(self, module: nn.Module, path: Path) -> str:
        return load_checkpoint_file(module, path, "torchvision")


@dataclass(frozen=True)
class BottomUpEntry:
    """bottom-up-attention's Visual Genome Faster R-CNN (``extract/bottomup.py``); same interface as
    ``DetectorEntry``. Its weights are the released detectron2 conversion, given with ``--checkpoint``."""

    num_classes: int = 1601
    num_attributes: int = 401
    feature_dim: int = 2048
    region_fields: tuple[str, ...] = ("features", "label_scores", "attributes", "attribute_scores")
    release: str = "bua-caffe-frcn-r101_with_attributes.pth (MILVLG/bottom-up-attention.pytorch, caffe mode)"
    architecture: str = "bottom-up-attention ResNet-101 C4 Faster R-CNN, Visual Genome (extract.bottomup)"
    description: str = "bottom-up attention R101, Visual Genome 1600 classes + 400 attributes, 2048-d regions"

    @property
    def vocabulary(self) -> Callable[[], tuple[tuple[str, ...], tuple[str, ...]]]:
        return bottomup.vg_vocabulary

    @property
    def loaded_class(self) -> type[LoadedDetector]:
        return BottomUpDetector

    def build(self, settings: DetectorSettings) -> nn.Module:
        """The network with seeded-random weights (seed the global generator outside, as torchvision's)."""
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        cfg = bottomup.BottomUpConfig(post_nms_topk=settings.num_proposals)
        return bottomup.BottomUpRCNN(cfg).init_random(generator)

    def default_file(self, name: str) -> Path:
        raise WeightsError(
            f"detector {name!r} has no weights in any cache: give the released file {self.release} "
            f"with vqa-extract --checkpoint {name}=PATH, or use random weights. Nothing is downloaded."
        )

    def load_weights(self, module: nn.Module, path: Path) -> str:
        return bottomup.load_released_weights(module, path)


DETECTORS: dict[str, DetectorEntry | BottomUpEntry] = {
    "fasterrcnn_resnet50_fpn_v2": DetectorEntry(
        tv_detection.fasterrcnn_resnet50_fpn_v2, tv_detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1
    ),
    "fasterrcnn_resnet50_fpn": DetectorEntry(
        tv_detection.fasterrcnn_resnet50_fpn, tv_detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": DetectorEntry(
        tv_detection.fasterrcnn_mobilenet_v3_large_fpn,
        tv_detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
    ),
    "fasterrcnn_mobilenet_v3_large_320_fpn": DetectorEntry(
        tv_detection.fasterrcnn_mobilenet_v3_large_320_fpn,
        tv_detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
    ),
    "bottomup_r101_vg": BottomUpEntry(),
}


@dataclass(frozen=True)
class DetectorSettings:
    """How boxes are detected and selected (see the module docstring for the rule).

    Attributes:
        name: a key of ``DETECTORS``.
        max_objects: rows per frame (MASN: 10; bottom-up-attention's MAX_BOXES).
        min_objects: fill up to this many from below ``score_threshold`` (bottom-up-attention: 10).
        score_threshold: keep detections scoring at least this (bottom-up-attention: 0.2).
        nms_iou: per-class NMS IoU inside the detector (bottom-up-attention: 0.3; its "+1" overlap for
            ``bottomup_r101_vg``).
        agnostic_nms_iou: optional class-agnostic NMS IoU after ranking; None = off.
        candidate_floor: the detector drops candidates scoring at or below this before NMS
            (torchvision's default 0.05); bounds the NMS work. Not used by ``bottomup_r101_vg``.
        min_size, max_size: the detector rescales images so the shorter side is ``min_size`` unless
            the longer would exceed ``max_size`` (bottom-up-attention: 600 / 1000).
        num_proposals: RPN proposals kept per image after NMS at test time (torchvision: 1000;
            bottom-up-attention: 300).
    """

    name: str = "fasterrcnn_resnet50_fpn_v2"
    max_objects: int = 10
    min_objects: int = 10
    score_threshold: float = 0.2
    nms_iou: float = 0.3
    agnostic_nms_iou: float | None = None
    candidate_floor: float = 0.05
    min_size: int = 600
    max_size: int = 1000
    num_proposals: int = 1000

    def __post_init__(self):
        if self.name not in DETECTORS:
            raise ValueError(f"unknown detector {self.name!r}; choose one of {sorted(DETECTORS)}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"min_objects must lie in [0, max_objects={self.max_objects}], got {self.min_objects}"
            )
        for field in ("score_threshold", "nms_iou", "candidate_floor"):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field} must lie in [0, 1], got {value}")
        if self.agnostic_nms_iou is not None and not 0.0 <= self.agnostic_nms_iou <= 1.0:
            raise ValueError(f"agnostic_nms_iou must lie in [0, 1] or be None, got {self.agnostic_nms_iou}")
        if self.min_size < 1 or self.max_size < self.min_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        if self.num_proposals < 1:
            raise ValueError(f"num_proposals must be >= 1, got {self.num_proposals}")

    def to_dict(self) -> dict:
        return asdict(self)


class Detections(NamedTuple):
    """One image's raw detections, sorted by score (descending) for torchvision's detectors.

    boxes: (K, 4) float32 ``x1, y1, x2, y2`` in the pixel coordinates of the image given to the
    detector; scores: (K,) float32; labels: (K,) int64 (COCO category ids, 1..90; Visual Genome classes
    1..1600 for ``bottomup_r101_vg``). A detector with region outputs (``bottomup_r101_vg``) also gives
    features (K, D) float32, label_scores (K,) (its class's probability), attributes (K,) int64 and
    attribute_scores (K,); the others leave them None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    features: np.ndarray | None = None
    label_scores: np.ndarray | None = None
    attributes: np.ndarray | None = None
    attribute_scores: np.ndarray | None = None


# --------------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------------


class LoadedDetector:
    """A torchvision detector in eval mode with its settings and weights identity.

    Use ``load_detector`` to build one. ``detect`` takes a list of frames of any sizes and runs the
    detector on them in fixed-size batches of same-size images (one list per call). The detector runs
    in float32 also on GPU: box decoding, proposal ranking and NMS under bf16 would change which boxes
    are kept; it is the most expensive network of the ``masn`` set (``benchmarks/objects_bench.py``),
    so a faster GPU path (fp16 backbone only) is a possible later step.
    """

    def __init__(
        self,
        module: nn.Module,
        settings: DetectorSettings,
        weights_sha256: str,
        device: str,
        weights_file: str | None = None,
    ):
        self.module = module
        self.weights_file = weights_file
        self.settings = settings
        self.weights_sha256 = weights_sha256
        self.accel = Accelerator.on(device)
        self.device = self.accel.device

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray | Tensor], *, batch_size: int = 8) -> list[Detections]:
        """Detect objects in each image.

        Images are grouped by size and every detector call gets exactly ``batch_size`` images of one
        size (the last call of a group is filled with repeats of its first image): torchvision pads the
        images of a call to a common size, so mixing sizes, or varying the batch, would make a frame's
        boxes depend on the other frames it was batched with. This way they do not.

        Args:
            images: N frames, each (H_i, W_i, 3) uint8 RGB (numpy or tensor); sizes may differ.
            batch_size: images per detector call.

        Returns:
            N ``Detections`` (in input order) with boxes in each image's own pixel coordinates, at
            most 100 per image, sorted by score across classes.
        """
        tensors = [torch.as_tensor(image) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            if t.ndim != 3 or t.shape[-1] != 3 or t.dtype != torch.uint8:
                raise ValueError(f"detector input must be (H, W, 3) uint8, got {tuple(t.shape)} {t.dtype}")
            groups.setdefault((t.shape[0], t.shape[1]), []).append(i)
        out: list[Detections | None] = [None] * len(tensors)
        for members in groups.values():
            for start in range(0, len(members), batch_size):
                ids = members[start : start + batch_size]
                batch = torch.stack([tensors[i] for i in ids])  # (b, H, W, 3) uint8
                if len(ids) < batch_size:
                    batch = torch.cat([batch, batch[:1].expand(batch_size - len(ids), -1, -1, -1)])
                for i, result in zip(ids, self._run(self.accel.upload(batch)), strict=False):
                    out[i] = result  # drops the filler images' results
        return out

    def _run(self, batch: Tensor) -> list[Detections]:
        """One detector call on (B, H, W, 3) uint8 images of one size, on the device."""
        results = self.module(list(batch.permute(0, 3, 1, 2).float().div_(255.0)))  # (B, 3, H, W) in [0, 1]
        return [
            Detections(
                boxes=r["boxes"].float().cpu().numpy(),
                scores=r["scores"].float().cpu().numpy(),
                labels=r["labels"].cpu().numpy().astype(np.int64),
            )
            for r in results
        ]

    def provenance(self) -> dict:
        """JSON-able: detector name, weights file and sha256 (or "random"), selection settings."""
        path = None if self.weights_file is None else Path(self.weights_file)
        return _provenance_dict(self.settings, path, self.weights_sha256)


class BottomUpDetector(LoadedDetector):
    """``bottomup_r101_vg``: each image's kept regions (bottom-up-attention's rule, settings from
    ``DetectorSettings``: min_size / max_size, nms_iou, score_threshold, min_objects, max_objects), in the
    rule's order, with their features, classes and attributes."""

    def _run(self, batch: Tensor) -> list[Detections]:
        s = self.settings
        regions = self.module.detect(batch, min_size=s.min_size, max_size=s.max_size, nms_iou=s.nms_iou,
                                     score_threshold=s.score_threshold, min_boxes=s.min_objects,
                                     max_boxes=s.max_objects)  # fmt: skip
        out = []
        for r in regions:
            r = [t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy().astype(np.int64)
                 for t in r]  # fmt: skip
            boxes, scores, labels, label_scores, attributes, attribute_scores, features = r
            out.append(Detections(boxes, scores, labels, features, label_scores, attributes,
                                  attribute_scores))  # fmt: skip
        return out


def resolve_detector_weights(
    settings: DetectorSettings, *, weights: str = "pretrained", checkpoint: str | os.PathLike | None = None
) -> Path | None:
    """The weight file ``load_detector`` would read (None for random weights), without building anything.

    Raises:
        WeightsError: pretrained weights requested and neither the checkpoint nor the cache file exists.
    """
    if weights not in ("pretrained", "random"):
        raise ValueError(f"weights must be 'pretrained' or 'random', got {weights!r}")
    if weights == "random":
        if checkpoint is not None:
            raise ValueError(f"detector {settings.name}: checkpoint {checkpoint} given with weights='random'")
        return None
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise WeightsError(f"checkpoint for detector {settings.name} not found: {path}")
        return path
    return DETECTORS[settings.name].default_file(settings.name)


def detector_provenance(
    settings: DetectorSettings, *, weights: str = "pretrained", checkpoint: str | os.PathLike | None = None
) -> dict:
    """What ``load_detector(...).provenance()`` returns, without building the detector."""
    path = resolve_detector_weights(settings, weights=weights, checkpoint=checkpoint)
    return _provenance_dict(settings, path, "random" if path is None else sha256_file(path))


def _provenance_dict(settings: DetectorSettings, path: Path | None, sha: str) -> dict:
    entry = DETECTORS[settings.name]
    out = {
        "name": settings.name,
        "weights": "random" if path is None else "pretrained",
        "weights_file": None if path is None else path.name,
        "weights_sha256": sha,
        "architecture": entry.architecture,
        "num_classes": entry.num_classes,
        "settings": settings.to_dict(),
        "dtype": "float32",
    }
    if entry.feature_dim is not None:
        out["region_features"] = f"{entry.feature_dim}-d, the detector's own (res5, mean over 14x14 RoI pool)"
        out["boxes"] = "the kept RPN proposals (RoIs) in frame pixels, as bottom-up's generate_tsv.py"
    return out


def load_detector(
    settings: DetectorSettings,
    *,
    weights: str = "pretrained",
    checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> LoadedDetector:
    """Build a torchvision detector and load its weights without ever downloading.

    Args:
        settings: detector name and selection settings.
        weights: ``"pretrained"``: ``checkpoint`` when given, else torchvision's COCO weights from the
            torch hub cache (a clear error names the file to place there when it is absent;
            ``bottomup_r101_vg`` needs ``checkpoint``); ``"random"``: random initialisation, seeded.
        checkpoint: a local state-dict file in the detector's native layout (torchvision's; the released
            detectron2 layout for ``bottomup_r101_vg``), loaded with ``weights_only=True``.
        device: ``"cpu"`` or ``"cuda"``.
        seed: seed of the random initialisation (deterministic features with random weights).

    Returns:
        A ``LoadedDetector``; ``weights_sha256`` is the checkpoint file's sha256 or ``"random"``.

    Raises:
        WeightsError: pretrained weights requested and neither the checkpoint nor the cache file
            exists, or the file cannot be read (``weights_only=True``) or does not fit the detector.
    """
    entry = DETECTORS[settings.name]
    path = resolve_detector_weights(settings, weights=weights, checkpoint=checkpoint)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = entry.build(settings)
    sha = "random" if path is None else entry.load_weights(module, path)
    module.eval().to(device)
    return entry.loaded_class(module, settings, sha, device, None if path is None else path.name)
