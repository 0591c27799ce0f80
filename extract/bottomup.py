"""Bottom-up attention object features: the Visual Genome Faster R-CNN, in torch and torchvision parts.

Anderson et al., "Bottom-Up and Top-Down Attention for Image Captioning and Visual Question Answering",
CVPR 2018: a Faster R-CNN (ResNet-101, C4) trained on Visual Genome with 1,600 object classes and 400
attribute classes, whose mean-pooled 2048-d region features (10 to 100 per image) are what MASN (and most
VQA work since) calls "object features". This file rebuilds the released test network and its feature
extraction rule; it loads the PyTorch conversion of the released Caffe weights in its native detectron2
key layout (``bua-caffe-frcn-r101_with_attributes.pth`` / ``bua-caffe-frcn-r101-k10-100.pth`` of
MILVLG/bottom-up-attention.pytorch, "caffe" mode). Nothing is downloaded.

Read from the public sources (architecture and defaults only; no code copied):

- peteanderson80/bottom-up-attention: ``models/vg/ResNet-101/faster_rcnn_end2end_final/test.prototxt``
  (the network, attribute head included), ``lib/rpn/generate_anchors.py`` and ``lib/rpn/proposal_layer.py``
  (anchors, proposal selection), ``lib/fast_rcnn/config.py`` (``TEST.*`` defaults),
  ``lib/fast_rcnn/bbox_transform.py`` (box coding), ``tools/generate_tsv.py`` (the extraction rule).
- MILVLG/bottom-up-attention.pytorch: ``configs/caffe/test-caffe-r101.yaml``, ``bua/caffe/config.py``,
  ``bua/caffe/modeling/{backbone,rpn,rpn_outputs,box_regression,roi_heads,fast_rcnn}.py``,
  ``bua/caffe/modeling/layers/csrc/nms/nms_cpu.cpp`` and ``utils/extract_utils.py`` (the key layout of its
  converted weights and its extraction rule, which equals generate_tsv.py's).

The network (N images of one size, H x W after the resize; shapes for one image)::

    image: RGB uint8 -> BGR float, minus the Caffe pixel means (102.9801, 115.9465, 122.7717), no std;
           resized (bilinear) so the shorter side is 600 unless the longer would pass 1000 (TEST.SCALES,
           TEST.MAX_SIZE); the scale s is kept
    backbone  stem: conv 7x7/2 (64) + BN + ReLU + max pool 3x3/2 with ceil (Caffe pooling)
              res2 (3 blocks, 256), res3 (4, 512), res4 (23, 1024): bottlenecks with the stride in the
              first 1x1 conv (MSRA / Caffe, detectron2 STRIDE_IN_1X1), every BN frozen (eval statistics,
              eps 1e-5: y = (x - mean) / sqrt(var + eps) * w + b)        -> C4 (1024, H/16, W/16)
    RPN       3x3 conv 512 + ReLU; 1x1 -> 2A objectness (Caffe layout: A background then A foreground
              logits, softmax over the pair) and 1x1 -> 4A deltas; A = 12 anchors per cell, Caffe's
              generate_anchors (base 16, ratios 0.5/1/2, scales 4/8/16/32: 64 to 512 px), stride 16
    proposals deltas decoded with the legacy "+1" box coding (dw, dh clamped at log(1000/16)), clipped
              to [0, W-1] x [0, H-1], boxes thinner than 16 s dropped, the 6000 best by foreground
              probability, NMS 0.7, the 300 best kept (RPN.PRE/POST_NMS_TOPK_TEST, RPN_MIN_SIZE 16)
    box head  RoI max pooling 14 x 14 at 1/16 (Caffe ROIPooling = torchvision.ops.roi_pool) on C4,
              res5 (3 blocks, 2048, stride 1, dilation 2, as the prototxt's res5a), mean over 14 x 14
              -> region features (R, 2048)
    predictor cls_score (1601 = background + 1600 classes), bbox_pred (1601 x 4), attributes: the class
              argmax (background included) -> embedding 256, concat with the features -> fc 512 + ReLU
              -> fc 401 (background + 400) -> softmax

Extraction rule (generate_tsv.py; MILVLG ``save_roi_features``): for every class but background, NMS at
0.3 over the proposals scored by that class; each proposal's confidence is its best class score among the
classes where it survived. Proposals with confidence >= 0.2 are kept; fewer than ``min_boxes`` (10): the
``min_boxes`` most confident; more than ``max_boxes`` (100; MASN 10): the ``max_boxes`` most confident.
The boxes kept are the **proposals** (RoIs) whose features were pooled, divided by s, not the
class-specific regressed boxes: "Keep the original boxes, don't worry about the regression bbox outputs"
(generate_tsv.py), and MILVLG's default ``roi_feats`` mode does the same, so that a box and its feature
describe the same region. Each kept region also gets its object class (argmax over the 1600, 1-based: 0
is background) with that probability, and its attribute class (argmax over the 400, 1-based) with its.

NMS everywhere uses the legacy "+1" overlap (area (x2 - x1 + 1)(y2 - y1 + 1), as py-faster-rcnn and
maskrcnn-benchmark's nms_cpu): computed with ``torchvision.ops.nms`` on boxes shifted by (0, 0, 1, 1),
which gives exactly that overlap. Where the Caffe tools and MILVLG's port differ in details, we follow the
port whose weights we load: the dw/dh clamp (Caffe has none), dropping degenerate boxes before the size
filter and the strict size test (w + 1 > 16 s; Caffe: >=), IoU ties (torchvision suppresses IoU > t,
the legacy kernels IoU >= t). Batches hold images of one size only, so nothing is padded (the Caffe
net runs one image at a time; padding would change the features at the right and bottom edges).

Weights: ``load_released_weights`` reads a detectron2 checkpoint (``{"model": state}`` or a plain state
dict) with ``weights_only=True``; our module's parameter and buffer names are the released keys
(``backbone.stem.conv1.weight``, ``backbone.res4.22.conv3.norm.running_var``,
``proposal_generator.rpn_head.objectness_logits.weight``, ``roi_heads.res5.0.shortcut.weight``,
``roi_heads.box_predictor.cls_score.weight``, ``...attr_linear2.bias``, ...). BN ``num_batches_tracked``
entries are ignored; ``proposal_generator.anchor_generator.cell_anchors.0`` (the (12, 4) anchors the
converted file carries: detectron2 of 2020 stored anchors as a persistent buffer, and the released config's
``ANCHOR_GENERATOR.SIZES [[4, 8, 16, 32]]`` only sets their number) is used when present, else Caffe's
generate_anchors values are. Any other missing, unexpected or mis-shaped key is refused, all named.

Random weights (``--weights random``, tests): seeded; convolutions He-initialised, the stem's frozen BN
scaled for 0-255 pixel values and each block's last BN at 0.2 so that activations stay bounded through
the 33 blocks, the heads as MILVLG initialises them (normal 0.01 / 0.001, zero bias).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms, roi_pool
from torchvision.ops.misc import FrozenBatchNorm2d

from extract.weights import WeightsError, convert_checkpoint, read_checkpoint, sha256_file

__all__ = [
    "ANCHOR_KEY",
    "BottomUpConfig",
    "BottomUpRCNN",
    "Regions",
    "caffe_anchors",
    "legacy_nms",
    "load_released_weights",
    "preprocess",
    "select_regions",
    "resize_scale",
    "vg_vocabulary",
]

ANCHOR_KEY = "proposal_generator.anchor_generator.cell_anchors.0"
PIXEL_MEANS_BGR = (102.9801, 115.9465, 122.7717)  # cfg.PIXEL_MEANS (Caffe) = MODEL.PIXEL_MEAN (MILVLG)
BBOX_CLAMP = math.log(1000.0 / 16)  # MILVLG's BUABox2BoxTransform scale_clamp
DATA = Path(__file__).resolve().parent / "data"
ROI_CHUNK = 100  # RoIs per res5 call (values do not depend on it)


@dataclass(frozen=True)
class BottomUpConfig:
    """The released R101 test network (test.prototxt; test-caffe-r101.yaml); defaults as released.

    Attributes:
        stage_blocks: bottleneck blocks of res2, res3, res4 (ResNet-101: 3, 4, 23).
        res5_blocks: blocks of the res5 box head (3).
        anchor_scales, anchor_ratios, feat_stride: Caffe anchors (scales x 16 px; ratios h / w).
        rpn_channels: the RPN's 3x3 conv width (MODEL.BUA.RPN.CONV_OUT_CHANNELS 512).
        pre_nms_topk, post_nms_topk, rpn_nms_iou, rpn_min_size: proposal selection at test time
            (6000, 300, 0.7, 16 input pixels).
        pooler_resolution: RoI pooling grid (14, spatial scale 1/16).
        num_classes, num_attributes: 1601 and 401, background included.
    """

    stage_blocks: tuple[int, int, int] = (3, 4, 23)
    res5_blocks: int = 3
    anchor_scales: tuple[float, ...] = (4, 8, 16, 32)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    feat_stride: int = 16
    rpn_channels: int = 512
    pre_nms_topk: int = 6000
    post_nms_topk: int = 300
    rpn_nms_iou: float = 0.7
    rpn_min_size: float = 16.0
    pooler_resolution: int = 14
    num_classes: int = 1601
    num_attributes: int = 401

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_scales) * len(self.anchor_ratios)


class Regions(NamedTuple):
    """One image's kept regions (K rows, in the extraction rule's order).

    boxes (K, 4) float32 ``x1, y1, x2, y2`` in the pixels of the image given to ``detect`` (the
    proposals divided by the resize scale; legacy inclusive convention, x2 <= W - 1); scores (K,) the
    confidence the rule ranks by; labels (K,) int64 object class 1..1600 (0 = background) and
    label_scores its probability; attributes (K,) int64 1..400 and attribute_scores; features (K, 2048).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    label_scores: Tensor
    attributes: Tensor
    attribute_scores: Tensor
    features: Tensor


# ================================================================================================ blocks
class ConvNorm(nn.Conv2d):
    """detectron2's ``Conv2d(..., norm=...)``: a bias-free convolution followed by a frozen BN (``.norm``)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, *, stride: int = 1, padding: int = 0, dilation: int = 1
    ):
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.norm = FrozenBatchNorm2d(cout)  # eps 1e-5, as Caffe's BatchNorm and detectron2's BN

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck with the stride in the first 1x1 conv (the MSRA / Caffe models)."""

    def __init__(self, cin: int, width: int, cout: int, *, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.shortcut = ConvNorm(cin, cout, 1, stride=stride) if cin != cout else None
        self.conv1 = ConvNorm(cin, width, 1, stride=stride)
        self.conv2 = ConvNorm(width, width, 3, padding=dilation, dilation=dilation)
        self.conv3 = ConvNorm(width, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def _stage(cin: int, width: int, cout: int, blocks: int, *, stride: int, dilation: int = 1) -> nn.Sequential:
    layers = [Bottleneck(cin, width, cout, stride=stride, dilation=dilation)]
    layers += [Bottleneck(cout, width, cout, dilation=dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = ConvNorm(3, 64, 7, stride=2, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        # Caffe's pooling rounds the output size up: ceil_mode, no padding
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=0, ceil_mode=True)


class Backbone(nn.Module):
    """Stem + res2..res4 (``backbone.*``): the C4 map at stride 16."""

    def __init__(self, cfg: BottomUpConfig):
        super().__init__()
        b2, b3, b4 = cfg.stage_blocks
        self.stem = Stem()
        self.res2 = _stage(64, 64, 256, b2, stride=1)
        self.res3 = _stage(256, 128, 512, b3, stride=2)
        self.res4 = _stage(512, 256, 1024, b4, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.res4(self.res3(self.res2(self.stem(x))))  # (N, 1024, H/16, W/16)


class RPNHead(nn.Module):
    def __init__(self, channels: int, hidden: int, anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1)
        self.objectness_logits = nn.Conv2d(hidden, 2 * anchors, 1)
        self.anchor_deltas = nn.Conv2d(hidden, 4 * anchors, 1)

    def forward(self, c4: Tensor) -> tuple[Tensor, Tensor]:
        t = F.relu(self.conv(c4))
        return self.objectness_logits(t), self.anchor_deltas(t)  # (N, 2A, h, w), (N, 4A, h, w)


class _BufferList(nn.Module):
    """detectron2's BufferList: buffers named "0", "1", ... (one per feature map; one here)."""

    def __init__(self, *buffers: Tensor):
        super().__init__()
        for i, b in enumerate(buffers):
            self.register_buffer(str(i), b)


class AnchorGenerator(nn.Module):
    def __init__(self, cfg: BottomUpConfig):
        super().__init__()
        self.cell_anchors = _BufferList(caffe_anchors(cfg.anchor_scales, cfg.anchor_ratios, cfg.feat_stride))
        self.stride = cfg.feat_stride

    def forward(self, h: int, w: int) -> Tensor:
        """(h * w * A, 4) anchors, cell-major (y, then x) and anchor-minor, in input pixels."""
        cell = getattr(self.cell_anchors, "0")  # (A, 4)
        ys = torch.arange(h, device=cell.device, dtype=cell.dtype) * self.stride
        xs = torch.arange(w, device=cell.device, dtype=cell.dtype) * self.stride
        sy, sx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)  # (h*w, 1, 4)
        return (shifts + cell[None]).reshape(-1, 4)


class ProposalGenerator(nn.Module):
    def __init__(self, cfg: BottomUpConfig):
        super().__init__()
        self.rpn_head = RPNHead(1024, cfg.rpn_channels, cfg.num_anchors)
        self.anchor_generator = AnchorGenerator(cfg)


class BoxPredictor(nn.Module):
    """cls_score, bbox_pred and the attribute head (class embedding, attr_linear1/2)."""

    def __init__(self, cfg: BottomUpConfig, dim: int = 2048):
        super().__init__()
        self.cls_score = nn.Linear(dim, cfg.num_classes)
        self.bbox_pred = nn.Linear(dim, 4 * cfg.num_classes)
        self.cls_embed = nn.Embedding(cfg.num_classes, 256)
        self.attr_linear1 = nn.Linear(dim + 256, 512)
        self.attr_linear2 = nn.Linear(512, cfg.num_attributes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (R, 2048) -> class probabilities (R, 1601), box deltas (R, 6404), attribute probs (R, 401)."""
        logits = self.cls_score(x)
        embed = self.cls_embed(logits.argmax(dim=1))  # the predicted class, background included
        attr = self.attr_linear2(F.relu(self.attr_linear1(torch.cat([x, embed], dim=1))))
        return logits.softmax(dim=1), self.bbox_pred(x), attr.softmax(dim=1)


class RoIHeads(nn.Module):
    def __init__(self, cfg: BottomUpConfig):
        super().__init__()
        self.res5 = _stage(1024, 512, 2048, cfg.res5_blocks, stride=1, dilation=2)
        self.box_predictor = BoxPredictor(cfg)


# ================================================================================================ model
class BottomUpRCNN(nn.Module):
    """The bottom-up-attention R101 test network; ``state_dict()`` keys are the released ones.

    Use ``detect`` for frames; the steps (``backbone``, ``proposals``, ``region_features``,
    ``roi_heads.box_predictor``, ``select_regions``) are public for tests and inspection.
    """

    def __init__(self, cfg: BottomUpConfig | None = None):
        super().__init__()
        self.cfg = cfg or BottomUpConfig()
        self.backbone = Backbone(self.cfg)
        self.proposal_generator = ProposalGenerator(self.cfg)
        self.roi_heads = RoIHeads(self.cfg)

    # -- random initialisation (tests, --weights random) ---------------------------------------------
    @torch.no_grad()
    def init_random(self, generator: torch.Generator) -> BottomUpRCNN:
        """Seeded random weights that keep activations bounded (see the module docstring)."""
        for name, m in self.named_modules():
            if isinstance(m, ConvNorm):
                m.weight.normal_(
                    0, math.sqrt(2.0 / (m.out_channels * m.kernel_size[0] ** 2)), generator=generator
                )
                m.norm.weight.fill_(0.2 if name.endswith("conv3") else 1.0)
        self.backbone.stem.conv1.norm.running_var.fill_(64.0**2)  # 0-255 pixels minus the means
        head, pred = self.proposal_generator.rpn_head, self.roi_heads.box_predictor
        for layer, std in ((head.conv, 0.01), (head.objectness_logits, 0.01), (head.anchor_deltas, 0.01),
                           (pred.cls_score, 0.01), (pred.bbox_pred, 0.001), (pred.cls_embed, 0.01),
                           (pred.attr_linear1, 0.01), (pred.attr_linear2, 0.01)):  # fmt: skip
            layer.weight.normal_(0, std, generator=generator)
            if getattr(layer, "bias", None) is not None:
                layer.bias.zero_()
        return self

    # -- steps ----------------------------------------------------------------------------------------
    def proposals(self, c4: Tensor, image_hw: tuple[int, int], scale: float) -> list[tuple[Tensor, Tensor]]:
        """RPN proposals of each image: (boxes (R, 4) in input pixels, foreground probabilities (R,)).

        Args:
            c4: (N, 1024, h, w) backbone maps of N images of size ``image_hw`` (after the resize).
            scale: the resize scale s (the size filter drops boxes thinner than rpn_min_size * s).
        """
        cfg = self.cfg
        logits, deltas = self.proposal_generator.rpn_head(c4)
        n, _, h, w = logits.shape
        a = cfg.num_anchors
        fg = logits.view(n, 2, a, h, w).softmax(dim=1)[:, 1].permute(0, 2, 3, 1).reshape(n, -1)  # (N, h*w*A)
        deltas = deltas.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)  # (N, h*w*A, 4)
        anchors = self.proposal_generator.anchor_generator(h, w)  # (h*w*A, 4)
        out = []
        for i in range(n):
            boxes = apply_deltas(deltas[i], anchors)
            out.append(
                select_proposals(boxes, fg[i], image_hw, min_side=cfg.rpn_min_size * scale,
                                 pre_nms=cfg.pre_nms_topk, post_nms=cfg.post_nms_topk, iou=cfg.rpn_nms_iou)
            )  # fmt: skip
        return out

    def region_features(self, c4: Tensor, boxes: list[Tensor]) -> Tensor:
        """RoI max pooling 14x14 at 1/16 on C4, res5, mean over the grid: (sum R_i, 2048)."""
        rois = torch.cat(
            [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)]
        )  # (R, 5): batch index, x1, y1, x2, y2 in input pixels
        if len(rois) == 0:
            return c4.new_zeros((0, 2048))
        res = self.cfg.pooler_resolution
        out = []
        for part in rois.split(ROI_CHUNK):  # bounded memory: res5 on 14x14 maps is ~5 MB per RoI
            pooled = roi_pool(c4, part, output_size=(res, res), spatial_scale=1.0 / self.cfg.feat_stride)
            out.append(self.roi_heads.res5(pooled).mean(dim=(2, 3)))  # (r, 2048)
        return torch.cat(out)

    @torch.inference_mode()
    def detect(
        self,
        frames: Tensor,
        *,
        min_size: int = 600,
        max_size: int = 1000,
        nms_iou: float = 0.3,
        score_threshold: float = 0.2,
        min_boxes: int = 10,
        max_boxes: int = 100,
    ) -> list[Regions]:
        """The kept regions of each of N frames of one size (the extraction rule of the docstring).

        Args:
            frames: (N, H, W, 3) uint8 RGB, on the model's device.
            min_size, max_size: the resize (TEST.SCALES 600, TEST.MAX_SIZE 1000).
            nms_iou, score_threshold, min_boxes, max_boxes: the extraction rule (0.3, 0.2, 10, 100).
        """
        x, scale = preprocess(frames, min_size=min_size, max_size=max_size)
        hw = (x.shape[2], x.shape[3])
        c4 = self.backbone(x)
        props = self.proposals(c4, hw, scale)
        feats = self.region_features(c4, [b for b, _ in props])
        probs, _, attrs = self.roi_heads.box_predictor(feats)
        out, start = [], 0
        for boxes, _ in props:
            r = len(boxes)
            rows = slice(start, start + r)
            start += r
            keep, conf = select_regions(boxes / scale, probs[rows], nms_iou=nms_iou,
                                        score_threshold=score_threshold, min_boxes=min_boxes,
                                        max_boxes=max_boxes)  # fmt: skip
            label_scores, labels = probs[rows][keep, 1:].max(dim=1)
            attribute_scores, attributes = attrs[rows][keep, 1:].max(dim=1)
            out.append(Regions((boxes / scale)[keep], conf[keep], labels + 1, label_scores, attributes + 1,
                               attribute_scores, feats[rows][keep]))  # fmt: skip
        return out


# ================================================================================================ pieces
def resize_scale(height: int, width: int, min_size: int = 600, max_size: int = 1000) -> float:
    """The resize factor of ``_get_image_blob``: shorter side to ``min_size`` unless the longer side
    would then round to more than ``max_size`` (then longer side to ``max_size``)."""
    short, long = min(height, width), max(height, width)
    scale = min_size / short
    if round(scale * long) > max_size:
        scale = max_size / long
    return scale


def preprocess(frames: Tensor, *, min_size: int = 600, max_size: int = 1000) -> tuple[Tensor, float]:
    """(N, H, W, 3) uint8 RGB -> ((N, 3, H', W') float32 BGR minus the pixel means, scale s).

    H' = round(H s), W' = round(W s) as cv2.resize(fx=s); bilinear with half-pixel centres, no
    antialiasing (cv2 INTER_LINEAR). The means are subtracted before the resize, as Caffe does (the same
    values: bilinear weights sum to one).
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(
            f"bottom-up input must be (N, H, W, 3) uint8, got {tuple(frames.shape)} {frames.dtype}"
        )
    h, w = frames.shape[1:3]
    scale = resize_scale(h, w, min_size, max_size)
    mean = torch.tensor(PIXEL_MEANS_BGR, device=frames.device).view(1, 3, 1, 1)
    x = frames.permute(0, 3, 1, 2).flip(1).float() - mean  # (N, 3, H, W) BGR
    size = (int(round(h * scale)), int(round(w * scale)))
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.contiguous(), scale


def caffe_anchors(scales=(4, 8, 16, 32), ratios=(0.5, 1.0, 2.0), base: int = 16) -> Tensor:
    """py-faster-rcnn's generate_anchors: (len(ratios) * len(scales), 4), ratio-major.

    The (0, 0, base-1, base-1) window is reshaped to each ratio (widths rounded), then scaled; boxes in the
    inclusive "+1" convention centred at (base - 1) / 2.
    """
    size = float(base * base)
    ctr = (base - 1) / 2.0
    out = []
    for ratio in ratios:
        ws = round(math.sqrt(size / ratio))
        hs = round(ws * ratio)
        for s in scales:
            w, h = ws * s, hs * s
            out.append([ctr - 0.5 * (w - 1), ctr - 0.5 * (h - 1), ctr + 0.5 * (w - 1), ctr + 0.5 * (h - 1)])
    return torch.tensor(out, dtype=torch.float32)


def apply_deltas(deltas: Tensor, boxes: Tensor, clamp: float = BBOX_CLAMP) -> Tensor:
    """Legacy R-CNN box decoding (widths x2 - x1 + 1; weights 1, 1, 1, 1): (R, 4k) deltas on (R, 4)."""
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    cx = boxes[:, 0] + 0.5 * widths
    cy = boxes[:, 1] + 0.5 * heights
    dx, dy = deltas[:, 0::4], deltas[:, 1::4]
    dw, dh = deltas[:, 2::4].clamp(max=clamp), deltas[:, 3::4].clamp(max=clamp)
    px, py = dx * widths[:, None] + cx[:, None], dy * heights[:, None] + cy[:, None]
    pw, ph = dw.exp() * widths[:, None], dh.exp() * heights[:, None]
    return torch.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], dim=2).reshape(
        deltas.shape
    )


def legacy_nms(boxes: Tensor, scores: Tensor, iou: float) -> Tensor:
    """NMS with the "+1" overlap of py-faster-rcnn: kept indices by decreasing score."""
    return nms(boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0]), scores, iou)


def select_proposals(
    boxes: Tensor, scores: Tensor, image_hw: tuple[int, int], *, min_side: float, pre_nms: int,
    post_nms: int, iou: float,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """One image's proposals: clip, drop degenerate and thin boxes, best pre_nms, NMS, best post_nms."""
    h, w = image_hw
    x1, y1 = boxes[:, 0].clamp(0, w - 1), boxes[:, 1].clamp(0, h - 1)
    x2, y2 = boxes[:, 2].clamp(0, w - 1), boxes[:, 3].clamp(0, h - 1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1)
    keep = (x2 > x1) & (y2 > y1) & (x2 - x1 + 1 > min_side) & (y2 - y1 + 1 > min_side)
    boxes, scores = boxes[keep], scores[keep]
    order = torch.argsort(scores, descending=True, stable=True)[:pre_nms]
    boxes, scores = boxes[order], scores[order]
    kept = legacy_nms(boxes, scores, iou)[:post_nms]
    return boxes[kept], scores[kept]


def select_regions(
    boxes: Tensor, probs: Tensor, *, nms_iou: float = 0.3, score_threshold: float = 0.2, min_boxes: int = 10,
    max_boxes: int = 100,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """generate_tsv.py's rule: per-class NMS over the regions, confidence = best surviving class score.

    Args:
        boxes: (R, 4) the regions (the proposals, in any pixel scale: NMS is scale-free up to the +1).
        probs: (R, C) class probabilities, column 0 background (never counted).

    Returns:
        keep: indices of the kept regions (at most ``max_boxes``; at least ``min(min_boxes, R)``): those
            with confidence >= ``score_threshold`` in index order, else the most confident first.
        conf: (R,) every region's confidence.
    """
    conf = probs.new_zeros(len(boxes))
    for c in range(1, probs.shape[1]):
        kept = legacy_nms(boxes, probs[:, c], nms_iou)
        conf[kept] = torch.maximum(conf[kept], probs[kept, c])
    keep = torch.nonzero(conf >= score_threshold).flatten()
    if len(keep) < min_boxes:
        keep = torch.argsort(conf, descending=True, stable=True)[:min_boxes]
    elif len(keep) > max_boxes:
        keep = torch.argsort(conf, descending=True, stable=True)[:max_boxes]
    return keep, conf


# ================================================================================================ weights
def load_released_weights(model: BottomUpRCNN, path: str | Path) -> str:
    """Load a released detectron2 checkpoint strictly; return its sha256.

    Raises:
        WeightsError: unreadable file, or keys that do not fit: every missing, unexpected and mis-shaped
            key is named (one line).
    """
    path = Path(path)
    state = convert_checkpoint(read_checkpoint(path), "detectron2", path)
    own = model.state_dict()
    missing = [k for k in own if k not in state and k != ANCHOR_KEY]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
             for k in own if k in state and state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or wrong:
        parts = [f"{label} {len(keys)}: {', '.join(keys)}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong))
                 if keys]  # fmt: skip
        raise WeightsError(
            f"{path} is not a bottom-up-attention R101 checkpoint in the released detectron2 layout "
            f"(MILVLG/bottom-up-attention.pytorch, caffe mode): {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=False)  # strict above; only the anchors may be absent
    return sha256_file(path)


@lru_cache(maxsize=1)
def vg_vocabulary() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The 1600 object and 400 attribute names (Visual Genome 1600-400-20, bottom-up-attention's
    ``data/genome/1600-400-20/{objects,attributes}_vocab.txt``), first synonym of each line.

    Class id k (1-based; 0 = background) is ``objects[k - 1]``; likewise attributes.
    """

    def read(name: str) -> tuple[str, ...]:
        lines = (DATA / name).read_text(encoding="utf-8").splitlines()
        return tuple(line.split(",")[0].strip() for line in lines if line.strip())

    return read("vg_objects_vocab.txt"), read("vg_attributes_vocab.txt")
