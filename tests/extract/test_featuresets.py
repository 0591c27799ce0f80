import json
import pickle

import numpy as np
import pytest

from extract import featuresets
from extract.featuresets import FEATURE_SETS, FeatureOptions, build_feature_set
from extract.samplers import clip_centre_times, dense_clips, hcrn_clips, uniform_indices
from extract.video import VideoDecodeError

TINY = FeatureOptions(
    appearance="resnet18",
    motion="r3d_18",
    image_size=32,
    motion_size=16,
    weights="random",
    num_frames=4,
    clip_len=4,
    batch_frames=16,
)
SETS = ["mspan", "hcrn", "siasamrea", "cmin"]
VIDEOS = ["gif", "one_frame_mp4", "large_mp4"]  # the other containers are covered in test_video.py


def _run(fs, path, video_id="v"):
    chunks = list(fs.decode(video_id, path))
    return fs.finalize(fs.infer(chunks))


def _check_shapes(fs, out, num_frames):
    assert set(out) == set(fs.outputs)
    for key, spec in fs.outputs.items():
        assert out[key].dtype == np.dtype(spec.dtype), key
        assert len(out[key].shape) == len(spec.shape), key
        for want, got in zip(spec.shape, out[key].shape, strict=True):
            assert want is None or want == got, (key, spec.shape, out[key].shape)
        assert np.isfinite(out[key]).all()


@pytest.mark.parametrize("name", SETS)
def test_output_shapes_on_every_kind_of_video(name, sample_videos):
    fs = build_feature_set(name, TINY)
    for video in VIDEOS:
        v = sample_videos[video]
        out = _run(fs, v.path)
        _check_shapes(fs, out, v.num_frames)
    assert fs.outputs[next(iter(fs.outputs))].shape[-1] == 512


def test_fixed_shapes_match_the_papers_layouts():
    default = FeatureOptions(appearance="resnet18", motion="r3d_18", weights="random")
    assert {k: v.shape for k, v in build_feature_set("mspan", default).outputs.items()} == {
        "appearance": (16, 512),
        "motion": (16, 512),
    }
    assert {k: v.shape for k, v in build_feature_set("hcrn", default).outputs.items()} == {
        "appearance_clips": (8, 16, 512),
        "motion_clips": (8, 512),
    }
    assert build_feature_set("siasamrea", default).outputs["frames"].shape == (None, 512)
    assert build_feature_set("cmin", default).outputs["clip_times"].shape == (None,)
    paper = FeatureOptions(weights="random")
    assert build_feature_set("mspan", paper).outputs["motion"].shape == (16, 2048)


def test_mspan_decodes_the_sampled_frames_and_windows(sample_videos, frame_index_of):
    v = sample_videos["square_mp4"]  # 40 frames, 48 x 48
    fs = build_feature_set("mspan", FeatureOptions(**{**TINY.__dict__, "image_size": 48, "motion_size": 48}))
    (chunk,) = list(fs.decode("v", v.path))
    idx = uniform_indices(40, 4)
    assert idx.tolist() == [0, 13, 26, 39]
    assert [frame_index_of(f) for f in chunk["frames"]] == idx.tolist()
    windows = [[frame_index_of(f) for f in clip] for clip in chunk["clips"]]
    assert windows == [[0, 0, 0, 1], [11, 12, 13, 14], [24, 25, 26, 27], [37, 38, 39, 39]]


def test_hcrn_decodes_its_clips(sample_videos, frame_index_of):
    v = sample_videos["square_mp4"]
    fs = build_feature_set("hcrn", FeatureOptions(**{**TINY.__dict__, "image_size": 48}))
    (chunk,) = list(fs.decode("v", v.path))
    assert chunk["clips"].shape == (8, 4, 48, 48, 3)
    got = [[frame_index_of(f) for f in clip] for clip in chunk["clips"]]
    assert got == hcrn_clips(40, 8, 4).tolist()


def test_long_videos_are_chunked_and_joined_in_order(sample_videos, monkeypatch):
    v = sample_videos["long_mp4"]  # 300 frames at 30 fps
    fs = build_feature_set("cmin", FeatureOptions(**{**TINY.__dict__, "stride": 8}))
    whole = _run(fs, v.path)
    monkeypatch.setattr(featuresets, "MAX_CHUNK_FRAMES", 16)
    chunks = list(fs.decode("v", v.path))
    assert len(chunks) == 10 and all(c["clips"].shape[0] * c["clips"].shape[1] <= 16 for c in chunks)
    parts = fs.infer(chunks)
    joined = fs.finalize(parts)
    assert joined["clips"].shape == (38, 512)  # ceil(300 / 8) clips
    np.testing.assert_array_equal(joined["clips"], whole["clips"])
    np.testing.assert_allclose(
        joined["clip_times"], clip_centre_times(dense_clips(300, 4, 8), 30.0), rtol=1e-6
    )

    sia = build_feature_set("siasamrea", TINY)
    chunks = list(sia.decode("v", v.path))
    assert [len(c["frames"]) for c in chunks] == [16, 16, 8]  # 10 s at 4 fps = 40 frames
    out = sia.finalize(sia.infer(chunks))
    assert out["frames"].shape == (40, 512)
    np.testing.assert_allclose(out["frame_times"], np.floor(np.arange(40) * 7.5) / 30.0, rtol=1e-6)
    strided = build_feature_set("siasamrea", FeatureOptions(**{**TINY.__dict__, "stride": 100}))
    assert strided.finalize(strided.infer(list(strided.decode("v", v.path))))["frames"].shape == (3, 512)


@pytest.mark.parametrize("name", SETS)
def test_deterministic_whatever_the_grouping(name, sample_videos):
    fs = build_feature_set(name, TINY)
    a = list(fs.decode("a", sample_videos["mp4"].path))
    b = list(fs.decode("b", sample_videos["gif"].path))
    alone = fs.finalize(fs.infer(a))
    together = fs.infer(b + a)
    again = build_feature_set(name, TINY)  # a fresh set (shared backbones are seeded identically anyway)
    grouped = fs.finalize(together[len(b) :])
    for key in fs.outputs:
        np.testing.assert_array_equal(alone[key], grouped[key])
        np.testing.assert_array_equal(alone[key], again.finalize(again.infer(a))[key])


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("bad", ["missing", "empty", "corrupt", "corrupt_mid", "not_video"])
def test_bad_videos_raise_decode_errors(name, bad, bad_videos):
    fs = build_feature_set(name, TINY)
    with pytest.raises(VideoDecodeError) as err:
        list(fs.decode("v", bad_videos[bad]))
    assert err.value.path == bad_videos[bad]


def test_pickles_without_models_and_provenance_is_json(sample_videos):
    fs = build_feature_set("mspan", TINY)
    fs.infer(list(fs.decode("v", sample_videos["gif"].path)))
    assert fs._backbones is not None
    clone = pickle.loads(pickle.dumps(fs))
    assert clone._backbones is None
    prov = json.loads(json.dumps(fs.provenance()))
    assert prov["feature_set"] == "mspan"
    assert prov["backbones"]["appearance"]["name"] == "resnet18"
    assert prov["backbones"]["motion"]["weights_sha256"] == "random"
    assert prov["samplers"]["motion"] == {
        "sampler": "centered_windows",
        "centers": "uniform_indices",
        "n": 4,
        "w": 4,
    }
    assert prov["image_size"] == 32 and prov["dtype"] == "float32"


def test_float16_and_appearance_maps(sample_videos):
    opts = FeatureOptions(**{**TINY.__dict__, "dtype": "float16", "appearance_map": True, "image_size": 64})
    fs = build_feature_set("mspan", opts)
    out = _run(fs, sample_videos["gif"].path)
    assert out["appearance"].dtype == np.float16 and out["appearance_map"].shape == (4, 512, 2, 2)
    sia = build_feature_set("siasamrea", FeatureOptions(**{**TINY.__dict__, "dtype": "float16"}))
    out = _run(sia, sample_videos["gif"].path)
    assert out["frames"].dtype == np.float16 and out["frame_times"].dtype == np.float32


def test_bad_options():
    with pytest.raises(KeyError, match="mspan"):
        build_feature_set("nope", TINY)
    with pytest.raises(ValueError, match="image backbone"):
        build_feature_set("mspan", FeatureOptions(**{**TINY.__dict__, "motion": "resnet18"}))
    with pytest.raises(ValueError, match="weights"):
        FeatureOptions(weights="imagenet")
    with pytest.raises(ValueError, match="more than one checkpoint"):
        FeatureOptions(checkpoints=(("resnet18", "a.pth"), ("resnet18", "b.pth")))
    assert set(FEATURE_SETS) >= set(SETS)


def test_each_set_resolves_its_papers_backbones_and_provenance_records_them():
    expected = {  # (appearance, image_size, motion, motion_size)
        "mspan": ("resnet152", 224, "r3d152_k700", 112),
        "hcrn": ("resnet101", 224, "resnext101_k400", 112),
        "siasamrea": ("resnet152", 224, None, None),
        "cmin": (None, None, "c3d_sports1m", 112),
        "masn": ("resnet152", 224, "i3d_r50", 224),
    }
    assert set(FEATURE_SETS) == set(expected)
    for name, (app, app_size, mot, mot_size) in expected.items():
        fs = build_feature_set(name, FeatureOptions(weights="random"))
        o = fs.options
        assert (o.appearance, o.image_size, o.motion, o.motion_size) == (app, app_size, mot, mot_size), name
        assert featuresets.resolve_options(name, o) == o  # resolving twice changes nothing
        prov = json.loads(json.dumps(fs.provenance()))
        used = {role: prov["backbones"][role]["name"] for role in prov["backbones"]}
        assert used == {k: v for k, v in (("appearance", app), ("motion", mot)) if v}, name
        assert prov["options"]["appearance"] == app and prov["options"]["motion"] == mot
        assert prov["image_size"] == app_size and prov["motion_size"] == mot_size
        # spelling the defaults out gives the same provenance: such runs resume into each other
        explicit = {"appearance": app, "motion": mot, "image_size": app_size, "motion_size": mot_size}
        spelled = FeatureOptions(weights="random", **{k: v for k, v in explicit.items() if v})
        assert build_feature_set(name, spelled).provenance() == fs.provenance(), name
    assert build_feature_set("mspan", FeatureOptions(weights="random")).outputs["motion"].shape == (16, 2048)
    assert build_feature_set("hcrn", FeatureOptions(weights="random")).outputs["appearance_clips"].shape == (
        8, 16, 2048,
    )  # fmt: skip


def test_resolution_clears_unused_fields_and_foreign_checkpoints():
    given = FeatureOptions(
        motion="r3d_18",
        num_frames=4,
        max_frames=7,
        appearance_map=True,
        detector="fasterrcnn_resnet50_fpn",
        checkpoints=(("resnet152", "/w/r152.pth"), ("r3d_18", "/w/r3d.pth")),
    )
    sia = featuresets.resolve_options("siasamrea", given)
    assert sia.motion is None and sia.num_frames is None and sia.max_frames is None
    assert sia.appearance_map is False and sia.detector is None
    assert sia.checkpoints == (("resnet152", "/w/r152.pth"),)  # only the network the set loads
    cmin = featuresets.resolve_options("cmin", given)
    assert (cmin.motion, cmin.motion_size, cmin.clip_len, cmin.stride) == ("r3d_18", 112, 16, 8)
    assert cmin.appearance is None and cmin.checkpoints == (("r3d_18", "/w/r3d.pth"),)
    mspan = featuresets.resolve_options("mspan", given)
    assert (mspan.num_frames, mspan.clip_len, mspan.appearance_map) == (4, 16, True)
    with pytest.raises(ValueError, match="min_objects"):
        FeatureOptions(min_objects=-1)
    with pytest.raises(ValueError, match="score_threshold"):
        FeatureOptions(score_threshold=1.5)
    with pytest.raises(ValueError, match="image_size"):
        FeatureOptions(image_size=0)
