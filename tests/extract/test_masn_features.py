"""The ``masn`` feature set end to end on tiny real videos: sampling, shapes, masks, box geometry,
independence from chunking / batching, determinism across instances, the engine and the reader.

Small settings keep it fast: ResNet-18 at 64 px, I3D ResNet-50 at 32 px, the MobileNet-v3 Faster R-CNN
at 64 px with 20 proposals, random weights, T = 8.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import extract.masn as masn
from extract.featuresets import FeatureOptions
from extract.masn import MasnFeatures, build_masn_feature_set, masn_frame_indices, squash_frames
from extract.objects import DetectorSettings
from extract.video import VideoDecodeError
from pipelines.videowrite import write_video

T = 8
OPTIONS = FeatureOptions(
    appearance="resnet18",
    motion="i3d_r50",
    image_size=64,
    motion_size=32,
    max_frames=T,
    weights="random",
    batch_frames=8,
)
# score_threshold 0: the random detector's (low-score) boxes are kept, so the RoI path is exercised.
DETECTOR = DetectorSettings(
    name="fasterrcnn_mobilenet_v3_large_fpn", min_size=64, max_size=128, num_proposals=20, score_threshold=0.0
)


def build_small(name: str, options: FeatureOptions) -> MasnFeatures:
    assert name == "masn"
    return MasnFeatures(options, detector=DETECTOR)


def _frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    frames = np.repeat(np.repeat(base, 8, 0), 8, 1)[None].repeat(n, 0)  # (n, h, w, 3) blocky texture
    for t in range(n):  # a bright square moving right: motion for the motion branch
        x = (t * 2) % (w - 12)
        frames[t, h // 3 : h // 3 + 12, x : x + 12] = 255
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("masn_videos")
    wide, tall = root / "wide.mp4", root / "tall.gif"
    write_video(wide, _frames(40, 48, 80, 0), fps=12.0)  # 6 fps stream: 20 samples -> 5 kept frames
    write_video(tall, _frames(12, 64, 48, 1), fps=10.0)  # portrait; 8 samples -> 2 kept frames
    return {"wide": wide, "tall": tall}


@pytest.fixture(scope="module")
def extracted(videos):
    """Both videos decoded and inferred in ONE infer call (batched across videos), then finalized."""
    fs = build_small("masn", OPTIONS)
    chunks = {vid: list(fs.decode(vid, path)) for vid, path in videos.items()}
    flat = [c for vid in videos for c in chunks[vid]]
    outs = fs.infer(flat)
    result, i = {}, 0
    for vid in videos:
        n = len(chunks[vid])
        result[vid] = fs.finalize(outs[i : i + n])
        i += n
    return fs, chunks, result


def test_sampling_six_fps_one_in_four_and_windows():
    frames, windows = masn_frame_indices(40, 12.0, max_frames=20)
    np.testing.assert_array_equal(frames, [0, 8, 16, 24, 32])  # stream 0, 2, 4, ...; every 4th sample kept
    assert windows.shape == (5, 8)
    np.testing.assert_array_equal(windows[0], [0, 0, 0, 0, 0, 2, 4, 6])  # samples -4..3, clamped
    np.testing.assert_array_equal(windows[2], [8, 10, 12, 14, 16, 18, 20, 22])  # centred on frame 16
    short, _ = masn_frame_indices(400, 12.0, max_frames=3, sampling="first")
    np.testing.assert_array_equal(short, [0, 8, 16])  # truncated to T


def test_a_longer_video_gives_t_frames_spread_over_all_of_it():
    # 400 frames at 12 fps: a 6 fps stream of 200 samples, 50 kept (frames 0, 8, ..., 392)
    frames, windows = masn_frame_indices(400, 12.0, max_frames=3)
    np.testing.assert_array_equal(frames, [0, 192, 392])  # kept samples 0, 24, 49: the whole video
    np.testing.assert_array_equal(windows[1], np.arange(184, 200, 2))  # stream samples 92..99 around 96
    np.testing.assert_array_equal(windows[2], np.arange(384, 400, 2))  # samples 192..199 around 196
    many, _ = masn_frame_indices(400, 12.0, max_frames=20)
    assert len(set(many.tolist())) == 20 and many[0] == 0 and many[-1] == 392 and (np.diff(many) > 0).all()
    for sampling in ("uniform", "first"):  # at most T kept samples: every one, whatever the rule
        short, _ = masn_frame_indices(40, 12.0, max_frames=20, sampling=sampling)
        np.testing.assert_array_equal(short, [0, 8, 16, 24, 32])
    with pytest.raises(ValueError, match="frame sampling"):
        masn_frame_indices(40, 12.0, sampling="random")


def test_frame_sampling_is_an_option_the_decoder_and_provenance_follow(videos):
    uniform = build_small("masn", dataclasses.replace(OPTIONS, max_frames=3))
    first = build_small("masn", dataclasses.replace(OPTIONS, max_frames=3, frame_sampling="first"))
    decoded = {fs.options.frame_sampling: np.concatenate(
        [c["frame_index"] for c in fs.decode("w", videos["wide"])]) for fs in (uniform, first)}
    np.testing.assert_array_equal(decoded["uniform"], [0, 16, 32])  # 5 kept frames (0, 8, .., 32), T = 3
    np.testing.assert_array_equal(decoded["first"], [0, 8, 16])
    prov_u, prov_f = uniform.provenance(), first.provenance()
    assert (prov_u["options"]["frame_sampling"], prov_f["options"]["frame_sampling"]) == ("uniform", "first")
    older = {k: v for k, v in prov_u["samplers"]["frames"].items() if k != "longer"}
    assert prov_f["samplers"]["frames"] == older  # "first" is recorded as it was before the option
    assert uniform.legacy_options() == first.legacy_options() == {"frame_sampling": "first"}
    with pytest.raises(ValueError, match="frame_sampling"):
        FeatureOptions(frame_sampling="random")


def test_squash_keeps_the_whole_frame():
    frame = np.zeros((1, 40, 100, 3), np.uint8)
    frame[:, :, 50:] = 200  # right half bright
    out = squash_frames(frame, 20)
    assert out.shape == (1, 20, 20, 3) and out.dtype == np.uint8
    assert out[0, :, :9].max() == 0 and out[0, :, 11:].min() == 200  # the split stays in the middle


def test_outputs_shapes_dtypes_and_masks(extracted):
    fs, chunks, result = extracted
    assert set(fs.outputs) == {
        "appearance", "motion", "objects", "object_boxes", "motion_objects", "frame_mask", "object_mask",
    }  # fmt: skip
    assert fs.outputs["objects"].shape == (T, 10, 512) and fs.outputs["motion_objects"].shape == (T, 10, 2048)
    for vid, n_real in (("wide", 5), ("tall", 2)):
        out = result[vid]
        for key, spec in fs.outputs.items():
            assert out[key].shape == spec.shape and out[key].dtype == np.dtype(spec.dtype), key
        assert out["frame_mask"].tolist() == [True] * n_real + [False] * (T - n_real)
        assert not out["object_mask"][n_real:].any()
        for key in ("appearance", "motion", "objects", "object_boxes", "motion_objects"):
            assert np.all(out[key][n_real:] == 0), key  # padded frames are zeros
            assert np.abs(out[key][:n_real]).sum() > 0, key
        real = out["object_mask"]
        assert real[:n_real].all()  # threshold 0: the random detector's boxes fill all 10 rows
        assert np.all(out["objects"][~real] == 0) and np.all(out["object_boxes"][~real] == 0)


def test_object_boxes_are_normalised_to_the_original_frame(extracted, videos):
    _, chunks, result = extracted
    for vid in videos:
        boxes = result[vid]["object_boxes"][result[vid]["object_mask"]]  # (K, 6)
        assert boxes.min() >= 0 and boxes[:, :4].max() <= 1 + 1e-6
        np.testing.assert_allclose(boxes[:, 4], boxes[:, 2] - boxes[:, 0], atol=1e-6)
        np.testing.assert_allclose(boxes[:, 5], boxes[:, 3] - boxes[:, 1], atol=1e-6)
    assert chunks["wide"][0]["frame_hw"].tolist() == [48, 80]
    assert chunks["tall"][0]["frame_hw"].tolist() == [64, 48]
    assert chunks["wide"][0]["app_frames"].shape[1:] == (64, 64, 3)
    assert chunks["wide"][0]["motion_clips"].shape[1:] == (8, 32, 32, 3)


def test_boxes_and_roi_features_agree_with_direct_computation(extracted):
    """Recompute one frame's object features by hand from its boxes and the backbone's conv5 map."""
    fs, chunks, result = extracted
    out, chunk = result["wide"], chunks["wide"][0]
    backbone = fs.backbone("appearance")
    fmap = backbone.feature_map(backbone.preprocess(chunk["app_frames"][:1], 64))  # (1, 512, 2, 2)
    np.testing.assert_allclose(out["appearance"][0], fmap.mean(dim=(2, 3))[0].numpy(), rtol=1e-4, atol=1e-5)
    nb = torch.from_numpy(out["object_boxes"][0, :, :4])  # normalised x1, y1, x2, y2
    h, w = fmap.shape[-2:]
    map_boxes = nb * torch.tensor([w, h, w, h], dtype=torch.float32)
    from torchvision.ops import roi_align

    rois = torch.cat([torch.zeros(10, 1), map_boxes], dim=1)
    expected = roi_align(fmap, rois, output_size=7, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    np.testing.assert_allclose(out["objects"][0], expected.mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5)


def test_chunking_and_batching_do_not_change_values(extracted, videos, monkeypatch):
    fs, _, result = extracted
    monkeypatch.setattr(masn, "CHUNK_FRAMES", 2)
    chunks = list(fs.decode("wide", videos["wide"]))
    assert [len(c["frame_index"]) for c in chunks] == [2, 2, 1]
    alone = fs.finalize(fs.infer(chunks))  # this video alone, in three chunks
    for key in result["wide"]:
        np.testing.assert_array_equal(alone[key], result["wide"][key], err_msg=key)


def test_engine_writes_masn_shards_and_reader_returns_them(extracted, videos, tmp_path):
    from extract.engine import EngineConfig, ExtractionJob, run_extraction
    from extract.reader import FeatureReader
    from pipelines.datasets.base import VideoRef

    _, _, result = extracted
    corrupt = videos["wide"].parent / "corrupt.mp4"
    corrupt.write_bytes(videos["wide"].read_bytes()[:64] + bytes(range(256)) * 8)
    refs = [VideoRef("tall", videos["tall"]), VideoRef("corrupt", corrupt)]
    job = ExtractionJob(
        out_dir=tmp_path / "out",
        feature_set="masn",
        options=OPTIONS,
        videos=refs,
        root=videos["wide"].parent,
        builder=build_small,
    )
    summary = run_extraction(job, EngineConfig(backend="local", progress=False))
    assert summary.done == 1 and summary.failed == 1  # the corrupt video is a failure, not zeros
    reader = FeatureReader(tmp_path / "out")
    assert reader.ids == ["tall"] and "corrupt" not in reader
    assert reader.feature_set == "masn"
    assert reader.provenance["detector"]["weights_sha256"] == "random"
    got = reader["tall"]  # a fresh feature set (new detector) in the engine gives the same values
    for key, value in result["tall"].items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_a_resume_with_other_frame_sampling_is_refused(videos, tmp_path):
    from extract.engine import EngineConfig, ExtractionJob, ResumeMismatchError, run_extraction
    from extract.manifest import MANIFEST_NAME
    from pipelines.datasets.base import VideoRef

    def extract(sampling: str | None) -> None:
        job = ExtractionJob(out_dir=tmp_path / "out", feature_set="masn",
                            videos=[VideoRef("tall", videos["tall"])],
                            options=dataclasses.replace(OPTIONS, frame_sampling=sampling),
                            root=videos["tall"].parent, builder=build_small)
        run_extraction(job, EngineConfig(backend="local", progress=False))

    extract("first")
    with pytest.raises(ResumeMismatchError, match='frame_sampling: was "first", now "uniform"'):
        extract(None)  # the default, uniform
    # a directory written before the option existed: it ran "first"; it resumes with that and no other
    path = tmp_path / "out" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    del manifest["options"]["frame_sampling"], manifest["provenance"]["options"]["frame_sampling"]
    path.write_text(json.dumps(manifest))
    extract("first")
    with pytest.raises(ResumeMismatchError, match="frame_sampling"):
        extract("uniform")


@pytest.mark.parametrize("name", ["mspan", "masn"])
def test_directories_written_before_the_option_resume_as_they_ran(name):
    from extract.featuresets import build_feature_set
    from extract.manifest import identity_differences, new_manifest
    from extract.shards import normalize_outputs

    def manifest(fs, drop: bool = False) -> dict:
        options = json.loads(json.dumps(dataclasses.asdict(fs.options)))
        prov = json.loads(json.dumps(fs.provenance()))
        if drop:  # as written before frame_sampling existed
            del options["frame_sampling"], prov["options"]["frame_sampling"]
        return new_manifest(feature_set=name, outputs=normalize_outputs(fs.outputs), options=options,
                            provenance=prov, source={}, shard_size=4, plan=[[("v", "v.mp4")]])

    first = build_feature_set(name, FeatureOptions(weights="random", frame_sampling="first"))
    default = build_feature_set(name, FeatureOptions(weights="random"))
    older = manifest(first, drop=True)
    assert identity_differences(older, manifest(first), legacy=first.legacy_options()) == []
    refused = identity_differences(older, manifest(default), legacy=default.legacy_options())
    assert bool(refused) == (name == "masn")  # masn's default is now uniform; mspan has no such option
    assert identity_differences(older, manifest(first))  # without the legacy rule even "first" is refused


def test_decode_errors_are_failures(tmp_path):
    fs = build_small("masn", OPTIONS)
    bad = tmp_path / "empty.mp4"
    bad.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty.mp4"):
        list(fs.decode("empty", bad))


def test_builder_defaults_follow_the_paper():
    fs = build_masn_feature_set(FeatureOptions(weights="random"))
    assert fs.backbone_name("appearance") == "resnet152" and fs.backbone_name("motion") == "i3d_r50"
    assert fs.motion_size == 224 and fs.t == 20 and fs.w == 8
    assert (
        fs.detector_settings.name == "fasterrcnn_resnet50_fpn_v2" and fs.detector_settings.max_objects == 10
    )
    assert fs.detector_settings.num_proposals == 300  # bottom-up-attention's RPN.POST_NMS_TOPK_TEST
    assert (fs.options.detector, fs.options.num_proposals, fs.options.detector_min_size) == (
        "fasterrcnn_resnet50_fpn_v2", 300, 600,
    )  # fmt: skip
    prov = fs.provenance()
    assert prov["options"]["max_frames"] == 20 and prov["options"]["motion"] == "i3d_r50"
    assert prov["detector"]["settings"]["num_proposals"] == 300
    assert fs.outputs["objects"].shape == (20, 10, 2048) and fs.outputs["motion_objects"].shape == (
        20,
        10,
        2048,
    )
    msvd = build_masn_feature_set(
        FeatureOptions(weights="random", max_frames=30, motion="r3d_18", dtype="float16")
    )
    assert msvd.outputs["motion"].shape == (30, 512) and msvd.motion_size == 112
    assert msvd.outputs["objects"].dtype == "float16" and msvd.outputs["object_boxes"].dtype == "float32"
    with pytest.raises(ValueError, match="motion"):
        build_masn_feature_set(FeatureOptions(weights="random", motion="resnet18"))


def test_registry_and_detector_options():
    from extract.featuresets import FEATURE_SETS, build_feature_set, resolve_options

    assert "masn" in FEATURE_SETS
    opts = FeatureOptions(
        weights="random",
        detector="fasterrcnn_mobilenet_v3_large_fpn",
        max_objects=5,
        score_threshold=0.5,
        nms_iou=0.4,
        detector_min_size=320,
        num_proposals=50,
        checkpoints=(("fasterrcnn_resnet50_fpn", "/w/other.pth"), ("r3d152_k700", "/w/r3d.pth")),
    )
    fs = build_feature_set("masn", opts)
    assert isinstance(fs, MasnFeatures)
    det = fs.detector_settings
    # min_objects follows a smaller max_objects
    assert (det.name, det.max_objects, det.min_objects, det.score_threshold) == (
        "fasterrcnn_mobilenet_v3_large_fpn", 5, 5, 0.5,
    )  # fmt: skip
    assert (det.nms_iou, det.min_size, det.max_size, det.num_proposals) == (0.4, 320, 1000, 50)
    assert fs.outputs["objects"].shape == (20, 5, 2048) and fs.outputs["object_mask"].shape == (20, 5)
    assert fs.options.checkpoints == ()  # neither the chosen detector nor a masn backbone
    resolved = resolve_options("masn", opts)
    assert resolved.min_objects == 5 and resolve_options("masn", resolved) == resolved
    kept = FeatureOptions(checkpoints=(("fasterrcnn_resnet50_fpn_v2", "/w/det.pth"),))
    assert resolve_options("masn", kept).checkpoints == kept.checkpoints
    with pytest.raises(ValueError, match="unknown detector"):
        build_feature_set("masn", FeatureOptions(detector="yolo"))
    with pytest.raises(ValueError, match="min_objects"):
        build_feature_set("masn", FeatureOptions(max_objects=3, min_objects=4))
