import numpy as np
import pytest
import torch

from extract.backbones import BACKBONES, build_backbone
from extract.video_backbones import ResNet3d, hara_resnet3d, hara_resnext3d, i3d_resnet50


@pytest.fixture(scope="module")
def resnet18():
    return build_backbone("resnet18", weights="random")


@pytest.fixture(scope="module")
def r3d18():
    return build_backbone("r3d_18", weights="random")


def _normalised(value, backbone):
    mean = torch.tensor(backbone.preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(backbone.preprocessing.std).view(3, 1, 1)
    return (value / 255.0 - mean) / std


def test_image_preprocess_crops_the_centre_and_normalises(resnet18):
    frames = np.zeros((2, 32, 48, 3), dtype=np.uint8)
    frames[:] = (np.arange(48, dtype=np.uint8) * 5)[None, None, :, None]  # column w has value 5 w
    x = resnet18.preprocess(frames, 32)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    expected = _normalised(
        torch.arange(8, 40, dtype=torch.float32).mul(5).view(1, 1, 32).expand(3, 32, 32), resnet18
    )
    assert torch.allclose(x[1], expected, atol=1e-6)


def test_preprocess_resizes_the_shorter_side(resnet18, r3d18):
    frames = np.full((1, 64, 96, 3), 200, dtype=np.uint8)
    x = resnet18.preprocess(frames, 16)
    assert x.shape == (1, 3, 16, 16)
    assert torch.allclose(x[0], _normalised(torch.full((3, 16, 16), 200.0), resnet18), atol=1e-5)
    clips = np.zeros((2, 4, 20, 30, 3), dtype=np.uint8)
    clips[:, :] = (np.arange(4, dtype=np.uint8) * 40)[None, :, None, None, None]  # frame t has value 40 t
    v = r3d18.preprocess(clips, 16)
    assert v.shape == (2, 3, 4, 16, 16)  # (N, C, T, S, S)
    for t in range(4):
        assert torch.allclose(v[1, :, t], _normalised(torch.full((3, 16, 16), 40.0 * t), r3d18), atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        resnet18.preprocess(frames.astype(np.float32), 16)
    with pytest.raises(ValueError, match=r"\(N, T, H, W, 3\)"):
        r3d18.preprocess(frames, 16)


def test_feature_map_and_pool_follow_the_networks_own_forward(resnet18, r3d18):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    x = resnet18.preprocess(frames, 64)
    fmap = resnet18.feature_map(x)
    assert fmap.shape == (3, 512, 2, 2)
    pooled = resnet18.pool(fmap)
    with torch.inference_mode():
        assert torch.allclose(resnet18.module.fc(pooled), resnet18.module(x), atol=1e-4)
    clips = rng.integers(0, 256, (2, 8, 32, 32, 3), dtype=np.uint8)
    v = r3d18.preprocess(clips, 32)
    vmap = r3d18.feature_map(v)
    assert vmap.shape == (2, 512, 1, 2, 2)
    with torch.inference_mode():
        assert torch.allclose(r3d18.module.fc(r3d18.pool(vmap)), r3d18.module(v), atol=1e-4)
    feats, maps = r3d18.features(clips, size=32, batch_size=1, return_map=True)
    assert feats.shape == (2, 512) and feats.dtype == np.float32 and maps.shape == (2, 512, 1, 2, 2)


def test_hara_and_i3d_features_match_their_classifiers():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 32, 32)
    for net in (hara_resnet3d(depth=18, num_classes=5, widen_factor=0.125),
                hara_resnext3d(depth=50, cardinality=4, num_classes=5, widen_factor=0.25)):  # fmt: skip
        net.eval()
        with torch.inference_mode():
            fmap = net.forward_features(x)
            assert fmap.shape[2:] == (1, 1, 1)
            assert torch.allclose(net.fc(fmap.mean(dim=(2, 3, 4))), net(x), atol=1e-5)
    i3d = i3d_resnet50(num_classes=5, stem_dim_out=8).eval()
    spec = BACKBONES["i3d_r50"]
    clip = torch.randn(1, 3, 8, 224, 224)
    with torch.inference_mode():
        fmap = spec.feature_map(i3d, clip)
        assert fmap.shape == (1, 256, 4, 7, 7)  # (t/2, 7, 7) at 8 x 224; 2048 channels at full width
        assert torch.allclose(i3d.blocks[-1].proj(fmap.mean(dim=(2, 3, 4))), i3d(clip), atol=1e-5)


def test_registry_metadata_matches_the_architectures():
    for name, spec in BACKBONES.items():
        with torch.device("meta"):
            net = spec.build()
        if spec.layers:  # C3D: read at fc7 or fc6, both feature_dim wide
            dims = {getattr(net, layer).out_features for layer in spec.layers}
        else:
            dims = {(net.blocks[-1].proj if name == "i3d_r50" else net.fc).in_features}
        assert dims == {spec.feature_dim}, name
        assert spec.kind in ("image", "video") and spec.weight_format in (
            "torchvision",
            "hara",
            "pytorchvideo",
            "c3d",
        )
        assert (spec.preprocessing.clip_len is None) == (spec.kind == "image")
    with torch.device("meta"):
        r152 = hara_resnet3d(depth=152)
        rx101 = hara_resnext3d(depth=101)
    assert [len(getattr(r152, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]
    assert (
        r152.conv1.stride == (1, 2, 2) and r152.conv1.kernel_size == (7, 7, 7) and r152.fc.out_features == 700
    )
    assert [len(getattr(rx101, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert (
        rx101.layer1[0].conv2.groups == 32 and rx101.fc.in_features == 2048 and rx101.fc.out_features == 400
    )
    assert isinstance(r152, ResNet3d)


def test_random_weights_are_fixed_and_leave_the_global_rng_alone(resnet18):
    state = torch.get_rng_state()
    again = build_backbone("resnet18", weights="random")
    assert torch.equal(torch.get_rng_state(), state)
    for (k, a), b in zip(
        resnet18.module.state_dict().items(), again.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    assert again.weights_sha256 == "random" and again.provenance()["weights"] == "random"
    assert not any(p.requires_grad for p in again.module.parameters()) and not again.module.training


def test_batch_size_does_not_change_features(resnet18):
    frames = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    a = resnet18.features(frames, size=32, batch_size=5)
    b = resnet18.features(frames, size=32, batch_size=2)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # equal up to float summation order


def test_unknown_backbone():
    with pytest.raises(KeyError, match="resnet152"):
        build_backbone("vgg16", weights="random")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu(resnet18):
    frames = np.random.default_rng(2).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    cpu = resnet18.features(frames, size=64)
    gpu = build_backbone("resnet18", weights="random", device="cuda")
    x = gpu.preprocess(frames, 64)
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    out = gpu.features(frames, size=64)
    assert out.dtype == np.float32
    assert np.abs(out - cpu).max() <= 0.05 * np.abs(cpu).max()  # bf16 autocast
