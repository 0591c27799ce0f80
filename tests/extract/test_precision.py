"""``--precision``: ``auto`` resolved from the hardware, the resolved value recorded in the manifest and
every shard and compared on resume, and bf16 features within the stated tolerance of fp32 ones.

The suite pins ``VQA_CPU_BF16=0`` (tests/conftest.py); tests here change it or simulate the CPU flags.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import extract.accel as accel
from extract.accel import Accelerator, bf16_native, resolve_precision
from extract.backbones import build_backbone
from extract.cli import cli
from extract.featuresets import FeatureOptions, build_feature_set
from extract.manifest import load_manifest
from extract.shards import SHARD_DIR

SMALL = [
    "--features", "mspan", "--appearance", "resnet18", "--motion", "r3d_18", "--image-size", "32",
    "--motion-size", "32", "--num-frames", "2", "--clip-len", "2", "--weights", "random", "--device", "cpu",
    "--batch-frames", "4", "--no-progress", "--local",
]  # fmt: skip
#: bf16 features of a small backbone against fp32 ones: least cosine similarity per frame (measured:
#: 0.99999 for resnet18 at 64 px; docs/benchmarks.md has ResNet-152 and the 3D backbone)
MIN_COSINE = 0.999


@pytest.fixture()
def cpu_flags(monkeypatch):
    """Set the simulated CPU flags (and no torch-level support) with the override unset."""
    monkeypatch.delenv("VQA_CPU_BF16", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)

    def set_flags(flags: set[str]) -> None:
        monkeypatch.setattr(accel, "cpu_flags", lambda: set(flags))
        accel._cpu_bf16_detected.cache_clear()

    yield set_flags
    accel._cpu_bf16_detected.cache_clear()


def test_auto_resolves_from_the_cpu_flags(cpu_flags, monkeypatch):
    cpu_flags({"avx", "avx2", "fma"})  # e.g. this project's AMD EPYC (Zen 3): no bf16 instructions
    assert not bf16_native("cpu") and resolve_precision("auto", "cpu") == "fp32"
    for flags in ({"avx512f", "avx512_bf16"}, {"amx_tile", "amx_bf16"}):
        cpu_flags(flags)
        assert bf16_native("cpu") and resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv("VQA_CPU_BF16", "0")  # the override wins over the flags
    assert resolve_precision("auto", "cpu") == "fp32"
    assert [resolve_precision(p, "cpu") for p in ("bf16", "fp32")] == ["bf16", "fp32"]  # as given
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", "cpu")
    assert Accelerator.on("cpu", "bf16").precision == "bf16"
    with pytest.raises(ValueError, match="precision"):
        FeatureOptions(precision="half")


def test_feature_options_resolve_and_record_the_precision(monkeypatch):
    opts = FeatureOptions(appearance="resnet18", motion="r3d_18", weights="random")
    fs = build_feature_set("mspan", opts)
    assert fs.options.precision == "fp32" and fs.provenance()["options"]["precision"] == "fp32"
    monkeypatch.setenv("VQA_CPU_BF16", "1")
    resolved = build_feature_set("mspan", opts).options
    assert resolved.precision == "bf16"
    # resolved options stay as they are on another machine (an inference actor receives them resolved)
    monkeypatch.setenv("VQA_CPU_BF16", "0")
    assert build_feature_set("mspan", resolved).options.precision == "bf16"


def test_precision_is_recorded_per_shard_and_compared_on_resume(sample_videos, tmp_path, monkeypatch):
    root, out = tmp_path / "videos", tmp_path / "out"
    root.mkdir()
    (root / "a.mp4").write_bytes(sample_videos["mp4"].path.read_bytes())
    args = ["--root", str(root), "--out", str(out), *SMALL]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "precision fp32 on cpu" in res.output
    manifest = load_manifest(out)
    assert manifest["options"]["precision"] == "fp32"
    with h5py.File(out / SHARD_DIR / "shard-00000.h5", "r") as f:
        assert json.loads(f.attrs["options"])["precision"] == "fp32"

    res = CliRunner().invoke(cli, [*args, "--precision", "bf16"])
    assert res.exit_code != 0 and "options.precision: was \"fp32\", now \"bf16\"" in res.output
    monkeypatch.setenv("VQA_CPU_BF16", "1")  # the same command on a CPU with native bf16
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0 and "precision" in res.output and "--overwrite" in res.output
    monkeypatch.setenv("VQA_CPU_BF16", "0")

    # a manifest written before precision was recorded: fp32 ran on the CPU, so it resumes with fp32
    del manifest["options"]["precision"], manifest["provenance"]["options"]["precision"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, [*args, "--precision", "bf16"])
    assert res.exit_code != 0 and "precision" in res.output


def test_bf16_features_stay_close_to_fp32(sample_videos):
    from extract.video import read_frames

    frames = read_frames(sample_videos["mp4"].path, [0, 3, 6, 9])  # (4, H, W, 3) uint8
    feats = {p: build_backbone("resnet18", weights="random", precision=p).features(frames, size=64)
             for p in ("fp32", "bf16")}
    a, b = feats["fp32"], feats["bf16"]
    assert a.dtype == b.dtype == np.float32 and not np.array_equal(a, b)  # bf16 really ran
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= MIN_COSINE, cosine
