"""C3D (``c3d_sports1m``): the released key layout loads and computes what an independent functional
C3D computes; renamed or mis-shaped keys are refused in one line naming each; C3D's preprocessing,
geometry and layers; ``vqa-extract --features cmin --motion c3d_sports1m`` with and without ``--pca``."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from extract.backbones import BACKBONES, build_backbone
from extract.cli import cli
from extract.featuresets import FeatureOptions, build_feature_set, resolve_options
from extract.reader import FeatureReader
from extract.samplers import dense_clips
from extract.video import Video
from extract.weights import WeightsError, convert_checkpoint, load_checkpoint_file, read_checkpoint
from pipelines.videowrite import write_video

from .conftest import coded_frames

# The layout of DavideA/c3d-pytorch's c3d.pickle (the converted Sports-1M weights), written out here
# independently of extract.backbones: name -> shape.
RELEASED = OrderedDict()
for _name, _cin, _cout in [("conv1", 3, 64), ("conv2", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
                           ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512),
                           ("conv5b", 512, 512)]:
    RELEASED[f"{_name}.weight"] = (_cout, _cin, 3, 3, 3)
    RELEASED[f"{_name}.bias"] = (_cout,)
for _name, _cin, _cout in [("fc6", 8192, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 487)]:
    RELEASED[f"{_name}.weight"] = (_cout, _cin)
    RELEASED[f"{_name}.bias"] = (_cout,)
BGR_MEAN = (90.25, 97.66, 101.41)  # the Sports-1M mean volume's per-channel average, B, G, R


def _released_state(seed: int) -> OrderedDict:
    """Random weights of the released shapes, scaled so activations keep their size layer to layer."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for name, shape in RELEASED.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        state[name] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5 if len(shape) > 1 else (
            torch.randn(shape, generator=g) * 0.1)
    return state


def _caffe_pool5(x: torch.Tensor) -> torch.Tensor:
    """Caffe's max pool (kernel 2, stride 2, pooled size by ceil): windows {0,1} {2,3} ... and a last
    window holding what remains, written as slices. (N, C, 2, 7, 7) -> (N, C, 1, 4, 4)."""
    n, c, t, h, w = x.shape
    out = torch.empty(n, c, (t + 1) // 2, (h + 1) // 2, (w + 1) // 2, dtype=x.dtype)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            for k in range(out.shape[4]):
                window = x[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, 2 * k : 2 * k + 2]
                out[:, :, i, j, k] = window.amax(dim=(2, 3, 4))
    return out


def _functional_c3d(state: dict, frames: np.ndarray) -> dict[str, torch.Tensor]:
    """C3D on (N, 16, 112, 112, 3) uint8 RGB frames from F.conv3d / F.linear calls: the Caffe recipe
    (BGR minus the mean, no scaling), ReLU after every layer, the pools of the prototxt."""
    x = torch.from_numpy(frames).float()[..., [2, 1, 0]] - torch.tensor(BGR_MEAN)
    x = x.permute(0, 4, 1, 2, 3)  # (N, 3 BGR, 16, 112, 112)
    w = state

    def conv(h, name):
        return F.relu(F.conv3d(h, w[f"{name}.weight"], w[f"{name}.bias"], padding=1))

    h = F.max_pool3d(conv(x, "conv1"), (1, 2, 2))
    h = F.max_pool3d(conv(h, "conv2"), 2)
    h = F.max_pool3d(conv(conv(h, "conv3a"), "conv3b"), 2)
    h = F.max_pool3d(conv(conv(h, "conv4a"), "conv4b"), 2)
    h = _caffe_pool5(conv(conv(h, "conv5a"), "conv5b"))  # (N, 512, 1, 4, 4)
    fc6 = F.relu(F.linear(h.flatten(1), w["fc6.weight"], w["fc6.bias"]))
    fc7 = F.relu(F.linear(fc6, w["fc7.weight"], w["fc7.bias"]))
    return {"fc6": fc6, "fc7": fc7}


def test_released_layout_loads_and_matches_an_independent_forward(tmp_path):
    state = _released_state(seed=3)
    path = tmp_path / "c3d.pickle"
    torch.save(state, path, _use_new_zipfile_serialization=False)  # the 2017 file predates the zip format
    net = build_backbone("c3d_sports1m", checkpoint=path, precision="fp32")
    assert net.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    prov = net.provenance()
    assert (prov["weights_file"], prov["layer"], prov["feature_dim"]) == ("c3d.pickle", "fc7", 4096)
    frames = np.random.default_rng(0).integers(0, 256, (1, 16, 112, 112, 3), dtype=np.uint8)
    expected = _functional_c3d(state, frames)
    fc7 = net.features(frames)
    assert fc7.shape == (1, 4096) and (fc7 > 0).any()
    np.testing.assert_allclose(fc7, expected["fc7"].numpy(), rtol=1e-4, atol=1e-3 * np.abs(fc7).max())
    fc6 = net.spec.layer_output(net.module, net.preprocess(frames), "fc6").numpy()
    np.testing.assert_allclose(fc6, expected["fc6"].numpy(), rtol=1e-4, atol=1e-3 * np.abs(fc6).max())


def _cheap_file(path, state_shapes: dict) -> None:
    """A weight file of the given shapes whose tensors share one zero (a few kB on disk)."""
    torch.save(OrderedDict((k, torch.zeros(1).expand(s)) for k, s in state_shapes.items()), path)


@pytest.fixture(scope="module")
def c3d_module():
    return BACKBONES["c3d_sports1m"].build()


def test_renamed_and_misshaped_keys_are_refused_naming_each(tmp_path, c3d_module):
    shapes = dict(RELEASED)
    shapes["conv3.weight"] = shapes.pop("conv3a.weight")  # a port that names the layer otherwise
    shapes["fc8.weight"], shapes["fc8.bias"] = (101, 4096), (101,)  # fine-tuned on UCF-101
    del shapes["fc7.bias"]
    bad = tmp_path / "c3d_ucf101.pth"
    _cheap_file(bad, shapes)
    with pytest.raises(WeightsError) as err:
        load_checkpoint_file(c3d_module, bad, "c3d")
    message = str(err.value)
    assert "\n" not in message and str(bad) in message
    assert "2 missing (conv3a.weight, fc7.bias)" in message
    assert "1 unexpected (conv3.weight)" in message
    assert ("2 with other shapes (fc8.bias: file (101,), model (487,); "
            "fc8.weight: file (101, 4096), model (487, 4096))") in message
    caffe_names = tmp_path / "caffe_names.pth"  # the Caffe prototxt's blob names
    _cheap_file(caffe_names, {k.replace("fc6.", "fc6-1.").replace("conv1.", "conv1a."): s
                              for k, s in RELEASED.items()})
    named = (r"4 missing \(conv1.bias, conv1.weight, fc6.bias, fc6.weight\); "
             r"4 unexpected \(conv1a.bias, conv1a.weight, fc6-1.bias, fc6-1.weight\)")
    with pytest.raises(WeightsError, match=named):
        load_checkpoint_file(c3d_module, caffe_names, "c3d")
    wrapped = tmp_path / "wrapped.pth"  # saved from nn.DataParallel: the prefix is dropped
    torch.save(OrderedDict((f"module.{k}", torch.zeros(1).expand(s)) for k, s in RELEASED.items()), wrapped)
    assert list(convert_checkpoint(read_checkpoint(wrapped), "c3d", wrapped)) == list(RELEASED)


def test_preprocessing_resizes_the_whole_frame_crops_and_hands_bgr_minus_the_mean():
    net = build_backbone("c3d_sports1m", weights="random", precision="fp32")
    frames = np.random.default_rng(1).integers(0, 256, (2, 16, 128, 171, 3), dtype=np.uint8)
    x = net.preprocess(frames).numpy()  # (N, 3, 16, 112, 112)
    crop = frames[:, :, 8:120, 29:141].astype(np.float64)  # Caffe's test crop offsets (8, 29)
    want = (crop[..., ::-1] - np.array(BGR_MEAN)).transpose(0, 4, 1, 2, 3)
    np.testing.assert_allclose(x, want, atol=1e-3)
    np.testing.assert_allclose(net.preprocess(frames[:, :, 8:120, 29:141]).numpy(), x)  # crops as they are
    wide = np.random.default_rng(2).integers(0, 256, (1, 16, 90, 160, 3), dtype=np.uint8)
    assert net.preprocess(wide).shape == (1, 3, 16, 112, 112)  # any frame: to 128x171 first


def test_cmin_decodes_c3d_clips_from_128x171_frames(tmp_path):
    video = tmp_path / "v.mp4"
    levels = np.arange(20, dtype=np.uint8) * 12  # frame t is a flat grey of 12 t: survives any resize / crop
    write_video(video, np.broadcast_to(levels[:, None, None, None], (20, 96, 128, 3)).copy(), fps=10.0)
    fs = build_feature_set("cmin", FeatureOptions(weights="random"))
    o = fs.options  # the default cmin backbone is C3D fc7
    assert (o.motion, o.motion_size, o.motion_layer) == ("c3d_sports1m", 112, "fc7")
    (chunk,) = list(fs.decode("v", video))
    assert chunk["clips"].shape == (3, 16, 112, 112, 3)  # ceil(20 / 8) clips
    got = np.rint(chunk["clips"].mean(axis=(2, 3, 4)) / 12).astype(int)
    assert got.tolist() == dense_clips(20, 16, 8).tolist()
    np.testing.assert_allclose(chunk["clip_times"], [0.8, 1.4, 1.8])  # centres of 0-15, 8-19, 16-19 at 10 fps
    with Video(video, shape=(128, 171)) as whole:  # the whole frame to 128x171, Caffe's crop at (8, 29)
        frames = whole.read(dense_clips(20, 16, 8).reshape(-1))
    np.testing.assert_array_equal(chunk["clips"].reshape(-1, 112, 112, 3), frames[:, 8:120, 29:141])


def test_geometry_layers_and_records():
    c3d = FeatureOptions(motion="c3d_sports1m", weights="random")
    with pytest.raises(ValueError, match="takes exactly 16 frames of 112x112; got 16 frames of 32x32"):
        resolve_options("cmin", FeatureOptions(**{**c3d.__dict__, "motion_size": 32}))
    with pytest.raises(ValueError, match="got 8 frames of 112x112"):
        resolve_options("cmin", FeatureOptions(**{**c3d.__dict__, "clip_len": 8}))
    with pytest.raises(ValueError, match="has no layer 'fc8'; it offers fc7, fc6"):
        resolve_options("cmin", FeatureOptions(**{**c3d.__dict__, "motion_layer": "fc8"}))
    with pytest.raises(ValueError, match="r3d_18 has no layer 'fc6'"):
        resolve_options("cmin", FeatureOptions(motion="r3d_18", motion_layer="fc6", weights="random"))
    with pytest.raises(ValueError, match="convolutional map"):
        resolve_options("masn", c3d)
    fc6 = build_feature_set("cmin", FeatureOptions(**{**c3d.__dict__, "motion_layer": "fc6"}))
    prov = fc6.provenance()
    assert prov["backbones"]["motion"]["layer"] == "fc6" and prov["options"]["motion_layer"] == "fc6"
    assert prov["backbones"]["motion"]["preprocessing"]["frame_size"] == (128, 171)
    assert fc6.outputs["clips"].shape == (None, 4096)
    assert build_feature_set("mspan", c3d).outputs["motion"].shape == (16, 4096)
    # the other backbones' records read as before C3D existed, so their directories still resume
    r3d = build_feature_set("cmin", FeatureOptions(motion="r3d_18", weights="random")).provenance()
    assert "layer" not in r3d["backbones"]["motion"]
    assert not {"frame_size", "channel_order"} & set(r3d["backbones"]["motion"]["preprocessing"])
    assert not {"motion_layer", "pca_dim"} & set(r3d["options"])


def _pca_file(path, components: np.ndarray, mean: np.ndarray) -> None:
    with h5py.File(path, "w") as f:  # the layout of the ActivityNet challenge's PCA_activitynet_v1-3.hdf5
        group = f.create_group("data")
        group["U"], group["x_mean"] = components, mean
        group["S"] = np.linspace(2.0, 1.0, components.shape[1], dtype=np.float32)


def test_cli_extracts_c3d_fc7_and_its_pca_projection(tmp_path):
    root = tmp_path / "videos"
    write_video(root / "a.mp4", coded_frames(12, 48, 64), fps=10.0)
    rng = np.random.default_rng(0)
    components = rng.standard_normal((4096, 40)).astype(np.float32) / 64
    mean = rng.random(4096).astype(np.float32)
    _pca_file(tmp_path / "pca.hdf5", components, mean)
    base = ["--root", str(root), "--features", "cmin", "--motion", "c3d_sports1m", "--weights", "random",
            "--local", "--batch-frames", "16", "--no-progress"]

    def run(out, *extra):
        return CliRunner().invoke(cli, [*base, "--out", str(tmp_path / out), *extra], catch_exceptions=False)

    assert run("fc7").exit_code == 0
    clips = FeatureReader(tmp_path / "fc7")["a"]["clips"]
    assert clips.shape == (2, 4096) and np.isfinite(clips).all()  # ceil(12 / 8) clips
    result = run("pca", "--pca", str(tmp_path / "pca.hdf5"), "--pca-dim", "32")
    assert result.exit_code == 0, result.output
    reader = FeatureReader(tmp_path / "pca")
    projected = (clips - mean) @ components[:, :32]
    np.testing.assert_allclose(reader["a"]["clips"], projected, rtol=1e-5, atol=1e-4)
    projection = reader.provenance["projection"]
    assert projection["weights_sha256"] == hashlib.sha256((tmp_path / "pca.hdf5").read_bytes()).hexdigest()
    assert (projection["name"], projection["dim"], projection["format"]) == ("pca", 32, "activitynet-hdf5")
    _pca_file(tmp_path / "pca.hdf5", components * 2, mean)  # another projection under the same name
    refused = run("pca", "--pca", str(tmp_path / "pca.hdf5"), "--pca-dim", "32")
    assert refused.exit_code == 1 and "projection" in refused.output
    wrong = run("bad", "--pca", str(tmp_path / "pca.hdf5"), "--pca-dim", "64")
    assert wrong.exit_code == 2 and "holds 40 components; --pca-dim 64 asks for more" in wrong.output
