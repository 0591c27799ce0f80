"""bottom-up-attention's Visual Genome Faster R-CNN (``extract/bottomup.py``).

The reference here is independent of the module: the released key layout is written out from
detectron2's naming, and the forward pass is recomputed layer by layer with functional ops and numpy
(Caffe's ROIPooling, py-faster-rcnn's anchors, box coding and greedy "+1" NMS, generate_tsv.py's rule)
from the same random weights. Tiny images and a few proposals keep it fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from extract import bottomup
from extract.objects import DetectorSettings, load_detector
from extract.weights import WeightsError

ANCHORS = "proposal_generator.anchor_generator.cell_anchors.0"


# ---------------------------------------------------------------- the released layout, written independently
def released_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released detectron2 checkpoint (ResNet-101 C4, RPN 512, res5 head, attributes)."""
    spec: dict[str, tuple[int, ...]] = {}

    def conv_norm(prefix: str, cin: int, cout: int, k: int) -> None:
        spec[f"{prefix}.weight"] = (cout, cin, k, k)
        for buf in ("weight", "bias", "running_mean", "running_var"):
            spec[f"{prefix}.norm.{buf}"] = (cout,)

    conv_norm("backbone.stem.conv1", 3, 64, 7)
    cin = 64
    stages = (("backbone.res2", 3, 64, 256), ("backbone.res3", 4, 128, 512),
              ("backbone.res4", 23, 256, 1024), ("roi_heads.res5", 3, 512, 2048))  # fmt: skip
    for stage, blocks, width, cout in stages:
        for i in range(blocks):
            prefix, inp = f"{stage}.{i}", cin if i == 0 else cout
            if inp != cout:
                conv_norm(f"{prefix}.shortcut", inp, cout, 1)
            conv_norm(f"{prefix}.conv1", inp, width, 1)
            conv_norm(f"{prefix}.conv2", width, width, 3)
            conv_norm(f"{prefix}.conv3", width, cout, 1)
        cin = cout
    rpn, pred = "proposal_generator.rpn_head", "roi_heads.box_predictor"
    for name, shape in ((f"{rpn}.conv", (512, 1024, 3, 3)), (f"{rpn}.objectness_logits", (24, 512, 1, 1)),
                        (f"{rpn}.anchor_deltas", (48, 512, 1, 1)), (f"{pred}.cls_score", (1601, 2048)),
                        (f"{pred}.bbox_pred", (6404, 2048)), (f"{pred}.attr_linear1", (512, 2304)),
                        (f"{pred}.attr_linear2", (401, 512))):  # fmt: skip
        spec[f"{name}.weight"], spec[f"{name}.bias"] = shape, shape[:1]
    spec[f"{pred}.cls_embed.weight"] = (1601, 256)
    spec[ANCHORS] = (12, 4)
    return spec


def generate_anchors_np(scales, ratios=(0.5, 1, 2), base=16) -> np.ndarray:
    """py-faster-rcnn's generate_anchors, restated with numpy (ratio enumeration, then scales)."""
    w = h = float(base)
    cx = cy = (base - 1) / 2.0
    out = []
    for r in ratios:
        ws = np.round(np.sqrt(w * h / r))
        hs = np.round(ws * r)
        for s in scales:
            a, b = ws * s, hs * s
            out.append([cx - (a - 1) / 2, cy - (b - 1) / 2, cx + (a - 1) / 2, cy + (b - 1) / 2])
    return np.array(out, np.float32)


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the released layout, scaled so activations stay finite through 33 blocks."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in released_layout().items():
        if key == ANCHORS:
            state[key] = torch.from_numpy(generate_anchors_np((4, 8, 16, 32)))
        elif key.endswith("norm.running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("norm.running_mean") or key.endswith("norm.bias"):
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif key.endswith("norm.weight"):
            state[key] = (torch.rand(shape, generator=g) * 0.5 + 0.5) * (0.2 if ".conv3." in key else 1.0)
        elif len(shape) == 4 and "rpn_head" not in key:
            state[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / (shape[0] * shape[2] * shape[3]))
        elif key.endswith(".bias"):
            state[key] = torch.randn(shape, generator=g) * 0.01
        else:  # RPN and predictor: peaky enough that scores are well separated and some classes pass 0.2
            std = 0.3 if "cls_score" in key else 0.1 if "objectness" in key else 0.01
            state[key] = torch.randn(shape, generator=g) * std
    state["backbone.stem.conv1.norm.running_var"] = torch.full((64,), 64.0**2)
    return state


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    state = random_state()
    path = tmp_path_factory.mktemp("bua") / "bua-caffe-frcn-r101_with_attributes.pth"
    # detectron2's checkpointer wraps the state under "model"; BN counters are dropped by the loader
    counter = {"backbone.res4.0.conv1.norm.num_batches_tracked": torch.tensor(0)}
    torch.save({"model": {**state, **counter}}, path)
    return state, path


# ---------------------------------------------------------------- loading
def test_our_module_has_exactly_the_released_keys():
    own = {k: tuple(v.shape) for k, v in bottomup.BottomUpRCNN().state_dict().items()}
    assert own == released_layout()


def test_released_file_loads_with_sha256_and_bad_keys_are_named(released, tmp_path):
    state, path = released
    det = load_detector(DetectorSettings(name="bottomup_r101_vg"), weights="pretrained", checkpoint=path)
    prov = det.provenance()
    assert prov["weights_file"] == path.name and len(prov["weights_sha256"]) == 64
    assert torch.equal(det.module.state_dict()["roi_heads.box_predictor.cls_score.weight"],
                       state["roi_heads.box_predictor.cls_score.weight"])  # fmt: skip

    renamed = dict(state)
    p = "roi_heads.box_predictor"
    renamed[f"{p}.attr_linear3.weight"] = renamed.pop(f"{p}.attr_linear2.weight")
    bad = tmp_path / "renamed.pth"
    torch.save(renamed, bad)
    with pytest.raises(WeightsError) as err:
        load_detector(DetectorSettings(name="bottomup_r101_vg"), weights="pretrained", checkpoint=bad)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg
    assert "missing 1: roi_heads.box_predictor.attr_linear2.weight" in msg
    assert "unexpected 1: roi_heads.box_predictor.attr_linear3.weight" in msg

    shaped = dict(state)
    shaped["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(91, 2048)  # a COCO head
    shaped["backbone.res3.2.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    torch.save(shaped, bad)
    expected = (r"mis-shaped 2: .*backbone\.res3\.2\.conv2\.weight \(128, 128, 1, 1\) "
                r"\(expected \(128, 128, 3, 3\)\).*cls_score\.weight \(91, 2048\)")  # fmt: skip
    with pytest.raises(WeightsError, match=expected):
        load_detector(DetectorSettings(name="bottomup_r101_vg"), weights="pretrained", checkpoint=bad)


def test_pretrained_without_a_file_says_which_file_to_give():
    with pytest.raises(WeightsError, match=r"bua-caffe-frcn-r101.*--checkpoint bottomup_r101_vg=PATH"):
        load_detector(DetectorSettings(name="bottomup_r101_vg"), weights="pretrained")


# ---------------------------------------------------------------- pieces against the Caffe tools
def test_caffe_anchors_equal_py_faster_rcnn():
    # what py-faster-rcnn's generate_anchors() returns for its default scales (8, 16, 32); the table in its
    # docstring is off by one pixel on every side (a known discrepancy): the networks used these values
    table = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199], [-56, -56, 71, 71],
             [-120, -120, 135, 135], [-248, -248, 263, 263], [-36, -80, 51, 95], [-80, -168, 95, 183],
             [-168, -344, 183, 359]]  # fmt: skip
    ours = bottomup.caffe_anchors(scales=(8, 16, 32)).numpy()
    np.testing.assert_array_equal(ours, np.array(table, np.float32))
    np.testing.assert_array_equal(bottomup.caffe_anchors().numpy(), generate_anchors_np((4, 8, 16, 32)))


def test_resize_rule_and_pixel_means():
    assert bottomup.resize_scale(480, 640) == 1.25  # shorter side to 600
    assert bottomup.resize_scale(240, 1000) == 1.0  # 600/240 would make the longer side 2500 > 1000
    frames = torch.zeros((1, 40, 60, 3), dtype=torch.uint8)
    frames[..., 0] = 200  # red
    x, scale = bottomup.preprocess(frames, min_size=60, max_size=1000)
    assert scale == 1.5 and x.shape == (1, 3, 60, 90)
    bgr = [-102.9801, -115.9465, 200 - 122.7717]
    np.testing.assert_allclose(x[0, :, 5, 5].numpy(), bgr, rtol=1e-6)


# ---------------------------------------------------------------- the reference forward
def _conv_norm(x, sd, p, stride=1, padding=0, dilation=1):
    y = F.conv2d(x, sd[f"{p}.weight"], stride=stride, padding=padding, dilation=dilation)
    keys = ("running_mean", "running_var", "weight", "bias")
    m, v, w, b = (sd[f"{p}.norm.{k}"][None, :, None, None] for k in keys)
    return (y - m) / torch.sqrt(v + 1e-5) * w + b


def _block(x, sd, p, stride, dilation):
    out = F.relu(_conv_norm(x, sd, f"{p}.conv1", stride=stride))  # stride in the first 1x1
    out = F.relu(_conv_norm(out, sd, f"{p}.conv2", padding=dilation, dilation=dilation))
    out = _conv_norm(out, sd, f"{p}.conv3")
    short = _conv_norm(x, sd, f"{p}.shortcut", stride=stride) if f"{p}.shortcut.weight" in sd else x
    return F.relu(out + short)


def _stage(x, sd, name, stride, dilation=1):
    i = 0
    while f"{name}.{i}.conv1.weight" in sd:
        x = _block(x, sd, f"{name}.{i}", stride if i == 0 else 1, dilation)
        i += 1
    return x


def ref_c4(x, sd):
    x = F.relu(_conv_norm(x, sd, "backbone.stem.conv1", stride=2, padding=3))
    x = F.max_pool2d(x, 3, 2, 0, ceil_mode=True)
    for name, stride in (("backbone.res2", 1), ("backbone.res3", 2), ("backbone.res4", 2)):
        x = _stage(x, sd, name, stride)
    return x


def ref_nms(boxes, scores, thr):
    """Greedy NMS with the '+1' overlap, suppressing overlap >= thr (maskrcnn-benchmark nms_cpu)."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep, dead = [], np.zeros(len(boxes), bool)
    for i in order:
        if dead[i]:
            continue
        keep.append(i)
        w = np.maximum(0, np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]) + 1)
        h = np.maximum(0, np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]) + 1)
        inter = w * h
        dead |= inter / (area[i] + area - inter) >= thr
    return np.array(keep, np.int64)


def ref_proposals(c4, sd, hw, scale, post):
    t = F.relu(F.conv2d(c4, sd["proposal_generator.rpn_head.conv.weight"],
                        sd["proposal_generator.rpn_head.conv.bias"], padding=1))  # fmt: skip
    logits = F.conv2d(t, sd["proposal_generator.rpn_head.objectness_logits.weight"],
                      sd["proposal_generator.rpn_head.objectness_logits.bias"])[0].numpy()  # fmt: skip
    deltas = F.conv2d(t, sd["proposal_generator.rpn_head.anchor_deltas.weight"],
                      sd["proposal_generator.rpn_head.anchor_deltas.bias"])[0].numpy()  # fmt: skip
    a, h, w = 12, c4.shape[2], c4.shape[3]
    bg, fg = logits[:a], logits[a:]  # Caffe layout: all background logits, then all foreground ones
    prob = (1 / (1 + np.exp(bg - fg))).transpose(1, 2, 0).reshape(-1)  # (h*w*A,) cell-major
    d = deltas.reshape(a, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4)
    sx, sy = np.meshgrid(np.arange(w) * 16, np.arange(h) * 16)
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], 1)
    anchors = (generate_anchors_np((4, 8, 16, 32))[None] + shifts[:, None]).reshape(-1, 4)
    aw, ah = anchors[:, 2] - anchors[:, 0] + 1, anchors[:, 3] - anchors[:, 1] + 1
    cx, cy = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    px, py = d[:, 0] * aw + cx, d[:, 1] * ah + cy
    clamp = math.log(1000 / 16)
    pw, ph = np.exp(np.minimum(d[:, 2], clamp)) * aw, np.exp(np.minimum(d[:, 3], clamp)) * ah
    boxes = np.stack([px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, hw[1] - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, hw[0] - 1)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ok = (bw > 0) & (bh > 0) & (bw + 1 > 16 * scale) & (bh + 1 > 16 * scale)
    boxes, prob = boxes[ok], prob[ok]
    order = np.argsort(-prob, kind="stable")[:6000]
    boxes, prob = boxes[order], prob[order]
    keep = ref_nms(boxes, prob, 0.7)[:post]
    return boxes[keep], prob[keep]


def ref_roi_pool(c4, boxes, res=14, scale=1 / 16):
    """Caffe's ROIPooling: rounded RoI corners, floor / ceil bins, max (0 for empty bins)."""
    fmap = c4[0].numpy()
    c, h, w = fmap.shape
    out = np.zeros((len(boxes), c, res, res), np.float32)
    for r, (x1, y1, x2, y2) in enumerate(boxes):
        sw, sh = int(np.floor(x1 * scale + 0.5)), int(np.floor(y1 * scale + 0.5))
        ew, eh = int(np.floor(x2 * scale + 0.5)), int(np.floor(y2 * scale + 0.5))
        bw, bh = max(ew - sw + 1, 1) / res, max(eh - sh + 1, 1) / res
        for i in range(res):
            hs = min(max(int(np.floor(i * bh)) + sh, 0), h)
            he = min(max(int(np.ceil((i + 1) * bh)) + sh, 0), h)
            for j in range(res):
                ws = min(max(int(np.floor(j * bw)) + sw, 0), w)
                we = min(max(int(np.ceil((j + 1) * bw)) + sw, 0), w)
                if he > hs and we > ws:
                    out[r, :, i, j] = fmap[:, hs:he, ws:we].max(axis=(1, 2))
    return torch.from_numpy(out)


def ref_head(pooled, sd):
    x = _stage(pooled, sd, "roi_heads.res5", 1, dilation=2).mean(dim=(2, 3))  # (R, 2048)
    p = "roi_heads.box_predictor"
    logits = F.linear(x, sd[f"{p}.cls_score.weight"], sd[f"{p}.cls_score.bias"])
    emb = sd[f"{p}.cls_embed.weight"][logits.argmax(1)]
    hid = F.linear(torch.cat([x, emb], 1), sd[f"{p}.attr_linear1.weight"], sd[f"{p}.attr_linear1.bias"])
    hid = hid.relu()
    attr = F.linear(hid, sd[f"{p}.attr_linear2.weight"], sd[f"{p}.attr_linear2.bias"])
    return x, logits.softmax(1), attr.softmax(1)


def ref_select(boxes, probs, thr=0.2, min_boxes=10, max_boxes=100):
    """generate_tsv.py: per-class NMS 0.3, best surviving class score, threshold, min / max boxes."""
    conf = np.zeros(len(boxes))
    for c in range(1, probs.shape[1]):
        keep = ref_nms(boxes, probs[:, c], 0.3)
        conf[keep] = np.maximum(conf[keep], probs[keep, c])
    keep = np.nonzero(conf >= thr)[0]
    if len(keep) < min_boxes:
        keep = np.argsort(-conf, kind="stable")[:min_boxes]
    elif len(keep) > max_boxes:
        keep = np.argsort(-conf, kind="stable")[:max_boxes]
    return keep, conf


def test_forward_equals_the_reference_layer_by_layer(released, monkeypatch):
    state, path = released
    monkeypatch.setattr(bottomup, "ROI_CHUNK", 3)  # res5 in several chunks: values must not change
    post = 8
    model = bottomup.BottomUpRCNN(bottomup.BottomUpConfig(post_nms_topk=post)).eval()
    bottomup.load_released_weights(model, path)
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (1, 40, 56, 3), dtype=np.uint8))
    x, scale = bottomup.preprocess(frames, min_size=48, max_size=100)
    assert scale == 1.2 and x.shape == (1, 3, 48, 67)
    sd = {k: v.double() for k, v in state.items()}
    with torch.no_grad():
        c4 = model.backbone(x)
        ref = ref_c4(x.double(), sd)
        assert c4.shape == (1, 1024, 3, 5)
        np.testing.assert_allclose(c4.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4 * ref.abs().max().item())

        (boxes, scores), = model.proposals(c4, (48, 67), scale)
        ref_boxes, ref_scores = ref_proposals(c4.double(), sd, (48, 67), scale, post)
        assert len(boxes) == len(ref_boxes) == post
        np.testing.assert_allclose(boxes.numpy(), ref_boxes, atol=1e-3)
        np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-5)

        feats = model.region_features(c4, [boxes])
        ref_feats, ref_probs, ref_attrs = ref_head(ref_roi_pool(c4, boxes.numpy()).double(), sd)
        tol = 1e-4 * ref_feats.abs().max().item()
        np.testing.assert_allclose(feats.numpy(), ref_feats.numpy(), rtol=1e-4, atol=tol)
        probs, _, attrs = model.roi_heads.box_predictor(feats)
        np.testing.assert_allclose(probs.numpy(), ref_probs.numpy(), atol=1e-5)
        np.testing.assert_allclose(attrs.numpy(), ref_attrs.numpy(), atol=1e-5)

    for min_boxes, max_boxes in ((10, 100), (2, 3), (1, 100)):  # fill, cap and threshold branches
        keep, conf = bottomup.select_regions(boxes / scale, probs, min_boxes=min_boxes, max_boxes=max_boxes)
        ref_keep, ref_conf = ref_select(ref_boxes / scale, ref_probs.numpy(), min_boxes=min_boxes,
                                        max_boxes=max_boxes)  # fmt: skip
        np.testing.assert_allclose(conf.numpy(), ref_conf, atol=1e-6)
        assert keep.tolist() == ref_keep.tolist()
    assert 1 <= (ref_conf >= 0.2).sum() < post  # the threshold branch kept some and dropped some

    regions = model.detect(frames, min_size=48, max_size=100, min_boxes=10, max_boxes=100)[0]
    ref_keep, ref_conf = ref_select(ref_boxes / scale, ref_probs.numpy())
    np.testing.assert_allclose(regions.boxes.numpy(), ref_boxes[ref_keep] / scale, atol=1e-3)  # proposals / s
    np.testing.assert_allclose(regions.features.numpy(), ref_feats.numpy()[ref_keep], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(regions.labels.numpy(), ref_probs.numpy()[ref_keep, 1:].argmax(1) + 1)
    np.testing.assert_array_equal(regions.attributes.numpy(), ref_attrs.numpy()[ref_keep, 1:].argmax(1) + 1)
    np.testing.assert_allclose(regions.scores.numpy(), ref_conf[ref_keep], atol=1e-6)


def test_vocabulary_is_visual_genome_1600_400():
    objects, attributes = bottomup.vg_vocabulary()
    assert len(objects) == 1600 and len(attributes) == 400
    assert objects[:3] == ("yolk", "goal", "bathroom") and objects[-1] == "buoy"
    assert "stop sign" in objects and attributes[0] == "gray"  # first synonym of "gray,grey"
