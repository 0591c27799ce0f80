"""Each native weight layout round-trips: random weights saved in the foreign layout load into our
modules unchanged, and the file's sha256 is recorded."""

import hashlib
import pickle

import numpy as np
import pytest
import torch
import torchvision

from extract.backbones import backbone_provenance, build_backbone
from extract.video_backbones import hara_resnet3d, hara_resnext3d, i3d_resnet50
from extract.weights import WeightsError, convert_checkpoint, load_checkpoint_file, read_checkpoint


def _random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        if v.dtype.is_floating_point:
            out[k] = torch.randn(v.shape, generator=g, dtype=v.dtype)
        else:
            out[k] = torch.randint(0, 100, v.shape, generator=g, dtype=v.dtype)
    return out


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_equal_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = module.state_dict()
    assert set(own) == set(state)
    for k, v in state.items():
        assert torch.equal(own[k].cpu(), v), k


def test_torchvision_state_dict_checkpoint(tmp_path):
    state = _random_state(torchvision.models.resnet18(weights=None), seed=1)
    path = tmp_path / "my_resnet18.pth"
    torch.save(state, path)
    backbone = build_backbone("resnet18", weights="pretrained", checkpoint=path)
    _assert_equal_state(backbone.module, state)
    assert backbone.weights_sha256 == _sha(path)
    prov = backbone.provenance()
    assert prov["weights"] == "checkpoint" and prov["weights_file"] == "my_resnet18.pth"
    assert backbone_provenance("resnet18", checkpoint=path)["weights_sha256"] == _sha(path)


def test_torchvision_weights_from_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as err:
        build_backbone("resnet18", weights="pretrained")
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in str(err.value) and "--weights random" in str(err.value)
    expected.parent.mkdir(parents=True)
    state = _random_state(torchvision.models.resnet18(weights=None), seed=2)
    torch.save(state, expected)
    backbone = build_backbone("resnet18")
    _assert_equal_state(backbone.module, state)
    assert backbone.weights_sha256 == _sha(expected)
    assert backbone.provenance()["weights"] == "torchvision-cache"


def _hara_file(tmp_path, name: str, state: dict[str, torch.Tensor]):
    path = tmp_path / name
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in state.items()}, "arch": "resnet", "epoch": 200}, path
    )
    return path


@pytest.mark.parametrize("depth", [18, 50])
def test_hara_resnet_checkpoint_with_module_prefix(tmp_path, depth):
    model = hara_resnet3d(depth=depth, num_classes=7, widen_factor=0.125)  # Hara's widths / 8
    state = _random_state(model, seed=depth)
    assert "conv1.weight" in state and "fc.weight" in state and "layer2.0.downsample.0.weight" in state
    if depth == 50:
        assert "layer1.0.downsample.1.running_mean" in state and "layer1.0.conv3.weight" in state
    path = _hara_file(tmp_path, f"r3d{depth}_K_200ep.pth", state)
    sha = load_checkpoint_file(model, path, "hara")
    _assert_equal_state(model, state)
    assert sha == _sha(path)


def test_full_size_hara_key_layout_matches_the_small_one():
    # the released r3d152_K_200ep.pth has exactly these names; built on the meta device (no memory, no init)
    with torch.device("meta"):
        full = hara_resnet3d(depth=50, num_classes=700).state_dict()
    small = hara_resnet3d(depth=50, num_classes=7, widen_factor=0.125).state_dict()
    assert list(full) == list(small)
    assert full["conv1.weight"].shape == (64, 3, 7, 7, 7) and full["fc.weight"].shape == (700, 2048)


def test_hara_resnext_checkpoint(tmp_path):
    model = hara_resnext3d(depth=50, cardinality=4, num_classes=5, widen_factor=0.25)
    state = _random_state(model, seed=7)
    assert state["layer1.0.conv2.weight"].shape == (4, 1, 3, 3, 3)  # grouped: 4 groups of 1 channel
    path = _hara_file(tmp_path, "resnext-50-kinetics.pth", state)
    assert load_checkpoint_file(model, path, "hara") == _sha(path)
    _assert_equal_state(model, state)


def test_pytorchvideo_checkpoint(tmp_path):
    model = i3d_resnet50(num_classes=5, stem_dim_out=8)
    state = _random_state(model, seed=3)
    assert "blocks.0.conv.weight" in state and "blocks.6.proj.weight" in state
    wrapped = tmp_path / "I3D_8x8_R50.pyth"
    torch.save({"model_state": state, "model_epoch": 196}, wrapped)
    assert load_checkpoint_file(model, wrapped, "pytorchvideo") == _sha(wrapped)
    _assert_equal_state(model, state)
    plain = tmp_path / "plain.pth"
    torch.save(state, plain)
    assert convert_checkpoint(read_checkpoint(plain), "pytorchvideo", plain).keys() == state.keys()
    with torch.device("meta"):
        full = i3d_resnet50().state_dict()
    assert list(full) == list(state) and full["blocks.6.proj.weight"].shape == (400, 2048)


def test_mismatched_checkpoint_names_file_and_keys(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(_random_state(hara_resnet3d(depth=18, num_classes=7, widen_factor=0.125), seed=0), path)
    with pytest.raises(WeightsError, match="wrong.pth does not fit"):
        build_backbone("resnet18", checkpoint=path)
    fc_only = tmp_path / "fc400.pth"
    state = _random_state(hara_resnet3d(depth=18, num_classes=400, widen_factor=0.125), seed=0)
    torch.save({"state_dict": state}, fc_only)
    with pytest.raises(
        WeightsError, match=r"2 with other shapes \(fc.bias: file \(400,\), model \(700,\); fc.weight: "
    ):
        load_checkpoint_file(hara_resnet3d(depth=18, num_classes=700, widen_factor=0.125), fc_only, "hara")


def test_unsafe_or_garbage_files_are_refused(tmp_path):
    pickled_module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled_module)  # needs unpickling code: weights_only refuses it
    with pytest.raises(WeightsError, match="weights_only"):
        read_checkpoint(pickled_module)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(WeightsError, match="junk.pth"):
        read_checkpoint(junk)
    good = tmp_path / "good.pth"
    torch.save({"w": torch.zeros(64)}, good)
    garbage = {
        "random.pth": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty.pth": b"",
        "truncated.pth": good.read_bytes()[: good.stat().st_size // 2],  # damaged zip archive
        "pickled_str.pth": pickle.dumps("a plain pickle, not a checkpoint"),
    }
    for name, data in garbage.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(WeightsError) as err:
            read_checkpoint(path)
        message = str(err.value)
        assert str(path) in message and "state-dict checkpoint" in message, message
        assert "set to `False`" not in message  # torch's advice to drop weights_only is not relayed
    with pytest.raises(WeightsError, match="the file is empty"):
        read_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(WeightsError, match="Unsupported global"):
        read_checkpoint(pickled_module)
    with pytest.raises(WeightsError, match="does not exist"):
        read_checkpoint(tmp_path / "absent.pth")


def test_non_torchvision_backbone_needs_a_checkpoint():
    with pytest.raises(WeightsError, match="r3d152_K_200ep.pth"):
        build_backbone("r3d152_k700", weights="pretrained")
    with pytest.raises(WeightsError, match="resnext-101-kinetics.pth"):
        backbone_provenance("resnext101_k400")
    with pytest.raises(ValueError, match="random"):
        build_backbone("resnet18", weights="random", checkpoint="x.pth")
