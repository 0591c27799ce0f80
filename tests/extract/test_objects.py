"""Object features: box selection and padding, spatial features, coordinate scaling, RoIAlign pooling
on constructed 2D / 3D maps, and the torchvision detector wrapper (random weights, local checkpoints)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extract.objects import DetectorSettings, load_detector
from extract.regions import (
    roi_mean_features,
    roi_mean_features_3d,
    scale_boxes,
    select_batch,
    select_objects,
    spatial_features,
)
from extract.weights import WeightsError, torch_cache_checkpoint

SMALL = dict(name="fasterrcnn_mobilenet_v3_large_fpn", min_size=64, max_size=128, num_proposals=50)


# ---------------------------------------------------------------- selection and padding


def test_fewer_than_max_detections_are_padded_with_mask():
    boxes = [[1, 2, 10, 12], [5, 5, 20, 30], [0, 0, 4, 4]]
    scores = [0.9, 0.5, 0.3]
    sel = select_objects(boxes, scores, [3, 1, 7], max_objects=10, score_threshold=0.2)
    assert sel.boxes.shape == (10, 4) and sel.boxes.dtype == np.float32
    assert sel.mask.dtype == bool and sel.mask.tolist() == [True] * 3 + [False] * 7
    np.testing.assert_array_equal(sel.boxes[:3], np.asarray(boxes, np.float32))
    assert np.all(sel.boxes[3:] == 0) and np.all(sel.scores[3:] == 0) and np.all(sel.labels[3:] == -1)
    assert sel.labels[:3].tolist() == [3, 1, 7]


def test_zero_detections_give_all_padding():
    sel = select_objects(np.zeros((0, 4)), np.zeros(0), np.zeros(0), max_objects=10, min_objects=10)
    assert sel.boxes.shape == (10, 4) and not sel.mask.any() and np.all(sel.boxes == 0)


def test_class_agnostic_top_k_by_score():
    rng = np.random.default_rng(0)
    k = 30
    scores = rng.permutation(np.linspace(0.21, 0.99, k)).astype(np.float32)  # all pass the threshold
    labels = np.arange(k) % 3  # three classes interleaved
    boxes = np.stack([np.arange(k), np.arange(k), np.arange(k) + 5, np.arange(k) + 5], axis=1)
    sel = select_objects(boxes, scores, labels, max_objects=10, score_threshold=0.2)
    top = np.argsort(-scores)[:10]
    assert sel.mask.all()
    np.testing.assert_array_equal(sel.scores, scores[top])
    np.testing.assert_array_equal(sel.labels, labels[top])
    np.testing.assert_array_equal(sel.boxes, boxes[top].astype(np.float32))
    assert set(sel.labels.tolist()) == {0, 1, 2}  # no per-class quota: ranking is across classes


def test_threshold_and_minimum_fill():
    scores = np.array([0.05, 0.9, 0.1, 0.4, 0.15], np.float32)
    boxes = np.arange(20, dtype=np.float32).reshape(5, 4)
    only = select_objects(boxes, scores, max_objects=4, min_objects=0, score_threshold=0.2)
    assert only.mask.tolist() == [True, True, False, False]
    np.testing.assert_allclose(only.scores[:2], [0.9, 0.4])
    filled = select_objects(boxes, scores, max_objects=4, min_objects=3, score_threshold=0.2)
    assert filled.mask.tolist() == [True, True, True, False]
    np.testing.assert_allclose(filled.scores[:3], [0.9, 0.4, 0.15])
    capped = select_objects(boxes, scores, max_objects=2, min_objects=0, score_threshold=0.0)
    np.testing.assert_allclose(capped.scores, [0.9, 0.4])  # never more than max_objects rows


def test_optional_class_agnostic_nms_removes_same_region_of_two_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    plain = select_objects(boxes, scores, [1, 2, 1], max_objects=3, score_threshold=0.2)
    assert plain.mask.sum() == 3
    dedup = select_objects(boxes, scores, [1, 2, 1], max_objects=3, score_threshold=0.2, agnostic_nms_iou=0.5)
    assert dedup.mask.tolist() == [True, True, False]
    np.testing.assert_allclose(dedup.scores[:2], [0.9, 0.7])


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="unknown detector"):
        DetectorSettings(name="yolo")
    with pytest.raises(ValueError, match="min_objects"):
        DetectorSettings(max_objects=5, min_objects=6)


# ---------------------------------------------------------------- spatial features and scaling


def test_spatial_features_non_square_frame():
    h, w = 100, 200  # landscape: x and y normalised by different sides
    boxes = np.array([[20, 10, 120, 60], [0, 0, 200, 100], [0, 0, 0, 0]], np.float32)
    feats = spatial_features(boxes, np.array([True, True, False]), h, w)
    assert feats.shape == (3, 6) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[0], [0.1, 0.1, 0.6, 0.6, 0.5, 0.5])
    np.testing.assert_allclose(feats[1], [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(feats[2], np.zeros(6))


def test_scale_boxes_per_axis_and_composition():
    frame_hw, input_hw, map_hw = (90, 160), (64, 64), (2, 2)
    box = np.array([[40, 45, 120, 90]], np.float32)  # x: quarter to three quarters, y: lower half
    in_input = scale_boxes(box, frame_hw, input_hw)
    np.testing.assert_allclose(in_input, [[16, 32, 48, 64]])
    in_map = scale_boxes(in_input, input_hw, map_hw)
    np.testing.assert_allclose(in_map, [[0.5, 1, 1.5, 2]])
    np.testing.assert_allclose(scale_boxes(box, frame_hw, map_hw), in_map, rtol=1e-6)  # composes
    as_tensor = scale_boxes(torch.from_numpy(box), frame_hw, map_hw)
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_allclose(as_tensor.numpy(), in_map, rtol=1e-6)


# ---------------------------------------------------------------- RoIAlign on constructed maps


def _coordinate_map(t: int, h: int, w: int) -> torch.Tensor:
    """(1, 4, t, h, w): channel 0 = x index, 1 = y index, 2 = t index, 3 = constant 1."""
    tt, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xx, yy, tt, torch.ones_like(xx)]).float()[None]


def test_roi_mean_of_linear_map_is_box_centre():
    # Bilinear sampling of a linear map is exact, so the mean over a symmetric grid is the value at the
    # box centre; aligned=True puts continuous coordinate c at index c - 0.5.
    fmap = _coordinate_map(1, 7, 9)[:, [0, 1, 3], 0]  # (1, 3, 7, 9)
    boxes = torch.tensor([[[1.0, 2.0, 5.0, 4.0], [2.5, 0.75, 8.0, 6.5]]])
    feats = roi_mean_features(fmap, boxes, output_size=4, sampling_ratio=2)
    assert feats.shape == (1, 2, 3) and feats.dtype == torch.float32
    centres = torch.stack([(boxes[0, :, 0] + boxes[0, :, 2]) / 2, (boxes[0, :, 1] + boxes[0, :, 3]) / 2], 1)
    torch.testing.assert_close(feats[0, :, :2], centres - 0.5)
    torch.testing.assert_close(feats[0, :, 2], torch.ones(2))


def test_roi_mean_of_cell_aligned_box_equals_cell_average():
    gen = torch.Generator().manual_seed(0)
    fmap = torch.randn(2, 5, 7, 7, generator=gen)
    # Frame 90x160 squashed to the 224x224 input of a 7x7 map; the box covers cells x 2..4, y 1..3.
    frame_hw = (90, 160)
    box = torch.tensor([160 * 2 / 7, 90 * 1 / 7, 160 * 5 / 7, 90 * 4 / 7])
    in_map = scale_boxes(scale_boxes(box, frame_hw, (224, 224)), (224, 224), (7, 7))
    torch.testing.assert_close(in_map, torch.tensor([2.0, 1.0, 5.0, 4.0]))
    boxes = torch.stack([in_map, torch.tensor([0.0, 0.0, 7.0, 7.0])])[None].repeat(2, 1, 1)  # (2, 2, 4)
    feats = roi_mean_features(fmap, boxes, output_size=3, sampling_ratio=1)
    torch.testing.assert_close(feats[:, 0], fmap[:, :, 1:4, 2:5].mean(dim=(2, 3)))
    whole = roi_mean_features(fmap, boxes, output_size=7, sampling_ratio=1)[:, 1]
    torch.testing.assert_close(whole, fmap.mean(dim=(2, 3)))  # whole-frame box = global average


def test_roi_mask_zeroes_padded_rows():
    fmap = torch.ones(1, 3, 4, 4)
    boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]]])
    feats = roi_mean_features(fmap, boxes, torch.tensor([[True, False]]))
    torch.testing.assert_close(feats[0, 0], torch.ones(3))
    torch.testing.assert_close(feats[0, 1], torch.zeros(3))


def test_roi_3d_time_average_and_scaling_on_non_square_map():
    t, h, w = 4, 4, 6  # a non-square 3D map, e.g. from a 64x96 motion input at stride 16
    fmap = _coordinate_map(t, h, w) + torch.randn(1, 4, t, h, w, generator=torch.Generator().manual_seed(1))
    frame_hw = (90, 120)
    box = torch.tensor([[[30.0, 22.5, 90.0, 67.5]]])  # centre half of the frame
    in_map = scale_boxes(box, frame_hw, (h, w))
    torch.testing.assert_close(in_map, torch.tensor([[[1.5, 1.0, 4.5, 3.0]]]))
    feats = roi_mean_features_3d(fmap, in_map, output_size=3, sampling_ratio=2)
    per_slice = torch.stack(
        [roi_mean_features(fmap[:, :, i], in_map, output_size=3, sampling_ratio=2) for i in range(t)]
    ).mean(0)
    torch.testing.assert_close(feats, per_slice)  # RoIAlign is linear: time-first average is exact
    exact = _coordinate_map(t, h, w)
    lin = roi_mean_features_3d(exact, in_map, output_size=3, sampling_ratio=2)[0, 0]
    torch.testing.assert_close(lin, torch.tensor([3.0 - 0.5, 2.0 - 0.5, (t - 1) / 2, 1.0]))


def test_whole_frame_box_on_real_backbone_map_equals_global_pool():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    trunk = torch.nn.Sequential(*list(resnet18().children())[:-2]).eval()
    frame = torch.rand(1, 3, 48, 80)  # non-square frame
    x = torch.nn.functional.interpolate(frame, size=(64, 64), mode="bilinear", align_corners=False)
    with torch.no_grad():
        fmap = trunk(x)  # (1, 512, 2, 2)
    box = torch.tensor([[[0.0, 0.0, 80.0, 48.0]]])
    in_map = scale_boxes(box, (48, 80), tuple(fmap.shape[-2:]))
    feats = roi_mean_features(fmap, in_map, output_size=fmap.shape[-1], sampling_ratio=1)
    torch.testing.assert_close(feats[0, 0], fmap.mean(dim=(0, 2, 3)))


# ---------------------------------------------------------------- detector wrapper


def test_random_detector_batches_and_selection_shapes():
    settings = DetectorSettings(**SMALL, score_threshold=0.0, min_objects=0)
    det = load_detector(settings, weights="random")
    assert det.weights_sha256 == "random"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    one = det.detect(images, batch_size=3)
    split = det.detect(images, batch_size=1)
    assert len(one) == 3
    for a, b in zip(one, split, strict=True):
        assert a.boxes.shape[1] == 4 and a.boxes.dtype == np.float32
        assert np.all(a.boxes[:, [0, 2]] <= 64) and np.all(a.boxes[:, [1, 3]] <= 48)  # own pixel coords
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6)
    sel = select_batch(one, settings)
    assert sel.boxes.shape == (3, 10, 4) and sel.mask.shape == (3, 10)
    assert sel.mask.all()  # a threshold of 0 keeps the random detector's (low-score) boxes


def test_random_detector_at_default_threshold_finds_nothing_and_pads():
    settings = DetectorSettings(**SMALL)
    det = load_detector(settings, weights="random")
    dets = det.detect([np.full((48, 64, 3), 128, np.uint8)])
    sel = select_batch(dets, settings)
    assert sel.boxes.shape == (1, 10, 4)
    assert not sel.mask.any() and np.all(sel.boxes == 0)  # honest padding; no invented boxes


def test_missing_pretrained_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth"):
        load_detector(DetectorSettings(**SMALL), weights="pretrained")


def test_local_checkpoint_and_cache_load_with_sha256(tmp_path, monkeypatch):
    settings = DetectorSettings(**SMALL, score_threshold=0.0, min_objects=0)
    source = load_detector(settings, weights="random", seed=3)
    ckpt = tmp_path / "det.pth"
    torch.save(source.module.state_dict(), ckpt)
    loaded = load_detector(settings, weights="pretrained", checkpoint=ckpt)
    import hashlib

    assert loaded.weights_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    image = [np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)]
    np.testing.assert_array_equal(source.detect(image)[0].boxes, loaded.detect(image)[0].boxes)
    # the torchvision cache path is used when no checkpoint is given
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    from extract.objects import DETECTORS

    cached = torch_cache_checkpoint(DETECTORS[settings.name].weights.url.rsplit("/", 1)[1])
    cached.parent.mkdir(parents=True)
    cached.write_bytes(ckpt.read_bytes())
    assert load_detector(settings, weights="pretrained").weights_sha256 == loaded.weights_sha256
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)  # a real checkpoint, but not of this detector
    with pytest.raises(WeightsError, match="bad.pth"):
        load_detector(settings, weights="pretrained", checkpoint=bad)
