"""Shard files and the manifest: layout, attributes, validation, atomicity."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from extract.featuredir import write_feature_dir
from extract.manifest import load_manifest, plan_shards
from extract.shards import (
    FORMAT,
    MANIFEST_NAME,
    SHARD_DIR,
    FeatureSpec,
    ManifestError,
    ShardWriter,
    normalize_outputs,
    read_shard_attrs,
)

OUTPUTS = normalize_outputs(
    {
        "appearance": {"shape": (4, 8), "dtype": "float32"},
        "clips": {"shape": (None, 8), "dtype": "float16"},
        "mask": {"shape": (4,), "dtype": "bool"},
    }
)
PROV = {
    "backbones": {"appearance": {"name": "resnet18", "weights_sha256": "random"}},
    "image_size": 32,
    "outputs": {"appearance": {"backbone": "resnet18"}},
}


def item(seed: int, length: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "appearance": rng.standard_normal((4, 8)).astype(np.float32),
        "clips": rng.standard_normal((length, 8)).astype(np.float32),
        "mask": rng.random(4) > 0.5,
    }


def test_plan_is_sorted_chunks_and_rejects_duplicates():
    assert plan_shards(["c", "a", "b", "e", "d"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert plan_shards([], 3) == []
    with pytest.raises(ValueError, match="'a' is listed twice"):
        plan_shards(["a", "b", "a"], 2)
    with pytest.raises(ValueError, match="shard_size"):
        plan_shards(["a"], 0)


def test_shard_layout_fixed_and_ragged_with_provenance(tmp_path):
    items = [item(0, 3), item(1, 0), item(2, 5)]
    path = ShardWriter(
        tmp_path / "shard-00000.h5",
        feature_set="toy",
        outputs=OUTPUTS,
        provenance=PROV,
        options={"image_size": 32},
        shard=0,
        planned=["v0", "v1", "v2", "bad"],
    ).write(["v0", "v1", "v2"], items, [{"video_id": "bad", "path": "/x/bad.mp4", "reason": "corrupt"}])
    with h5py.File(path, "r") as f:
        assert [s.decode() for s in f["ids"][()]] == ["v0", "v1", "v2"]
        assert f["appearance"].shape == (3, 4, 8) and f["appearance"].dtype == np.float32
        assert f["mask"].dtype == np.bool_
        np.testing.assert_array_equal(f["clips__offsets"][()], [0, 3, 3, 8])
        assert f["clips"].shape == (8, 8) and f["clips"].dtype == np.float16
        np.testing.assert_allclose(f["clips"][3:8], items[2]["clips"].astype(np.float16))
        assert f.attrs["format"] == FORMAT and f.attrs["feature_set"] == "toy"
        assert json.loads(f.attrs["provenance"]) == PROV
        assert f.attrs["weights"] == "random" and "RANDOM" in f.attrs["WARNING"]
        assert json.loads(f.attrs["failures"])[0]["reason"] == "corrupt"
        assert f.attrs["toolkit_version"] and f.attrs["created"].endswith("Z")
        assert json.loads(f["appearance"].attrs["provenance"]) == {"backbone": "resnet18"}
        assert json.loads(f["clips"].attrs["provenance"]) == PROV  # no per-output entry: the whole provenance
        assert json.loads(f["clips"].attrs["shape"]) == [None, 8]
    attrs = read_shard_attrs(path)
    assert attrs["ids"] == ["v0", "v1", "v2"] and attrs["planned"][-1] == "bad"
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00000.h5"]  # no temporary left


def test_wrong_shapes_name_the_video_and_leave_no_file(tmp_path):
    writer = ShardWriter(tmp_path / "s.h5", feature_set="toy", outputs=OUTPUTS, provenance={})
    bad = item(0, 2)
    bad["appearance"] = np.zeros((3, 8), np.float32)
    with pytest.raises(ValueError, match=r"video 'v7'.*'appearance'.*\(3, 8\)"):
        writer.write(["v7"], [bad])
    missing = item(0, 2)
    del missing["mask"]
    with pytest.raises(ValueError, match="'v8': missing feature"):
        writer.write(["v8"], [missing])
    assert list(tmp_path.iterdir()) == []


def test_empty_shard_is_valid(tmp_path):
    path = ShardWriter(tmp_path / "s.h5", feature_set="toy", outputs=OUTPUTS, provenance={}).write([], [])
    with h5py.File(path, "r") as f:
        assert f["ids"].shape == (0,) and f["appearance"].shape == (0, 4, 8) and f["clips"].shape == (0, 8)
        assert f["clips__offsets"][()].tolist() == [0]
        assert f.attrs["weights"] == "pretrained"


def test_feature_spec_and_normalize_validation():
    spec = FeatureSpec((None, 3), "float32")
    assert spec.ragged and spec.check("v", "x", np.ones((5, 3), np.float64)).dtype == np.float32
    with pytest.raises(ValueError, match="'v'.*'x'"):
        spec.check("v", "x", np.ones((5, 4)))
    with pytest.raises(ValueError, match="bool"):
        FeatureSpec((2,), "float32").check("v", "x", np.ones(2, bool))
    with pytest.raises(ValueError, match="reserved"):
        normalize_outputs({"ids": {"shape": (1,), "dtype": "float32"}})
    with pytest.raises(ValueError, match="unsupported dtype"):
        normalize_outputs({"x": {"shape": (1,), "dtype": "complex64"}})


def test_write_feature_dir_manifest(tmp_path):
    items = {f"vid{i}": item(i, i + 1) for i in range(5)}
    out = write_feature_dir(
        tmp_path / "feat",
        "toy",
        items,
        provenance=PROV,
        shard_size=2,
        failures=[{"video_id": "z", "path": "z.mp4", "reason": "missing"}],
    )
    manifest = load_manifest(out)
    assert manifest["feature_set"] == "toy" and manifest["status"] == "complete"
    assert [s["name"] for s in manifest["shards"]] == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    assert [s["ids"] for s in manifest["shards"]] == [["vid0", "vid1"], ["vid2", "vid3"], ["vid4"]]
    assert manifest["outputs"]["clips"] == {"shape": [None, 8], "dtype": "float32"}  # inferred ragged
    assert manifest["outputs"]["mask"] == {"shape": [4], "dtype": "bool"}
    assert manifest["counts"]["done"] == 5 and manifest["failures"][0]["video_id"] == "z"
    assert manifest["provenance"]["toolkit_version"]
    assert sorted(p.name for p in (out / SHARD_DIR).iterdir()) == [s["name"] for s in manifest["shards"]]


def test_load_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(ManifestError, match="manifest.json not found"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="unreadable manifest"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(ManifestError, match="unknown manifest format 'other/9'"):
        load_manifest(tmp_path)


def test_a_full_disk_raises_one_oserror_naming_the_shard_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import io

    import extract.shards

    class FullDisk(io.FileIO):  # the file system takes 2 kB, then reports ENOSPC
        def write(self, data):
            if self.tell() + len(memoryview(data)) > 2048:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(extract.shards, "open", lambda path, mode: io.BufferedRandom(FullDisk(path, "w+")),
                        raising=False)
    final = tmp_path / SHARD_DIR / "shard-00000.h5"
    writer = ShardWriter(final, feature_set="toy", outputs=OUTPUTS, provenance=PROV)
    with pytest.raises(OSError) as info:
        writer.write(["a", "b"], [item(0, 3), item(1, 2)])
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(final)
    assert info.value.strerror == "No space left on device"
    assert list(final.parent.iterdir()) == []  # neither the shard nor its temporary file
