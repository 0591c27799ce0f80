"""FeatureReader: O(1) id lookup, ragged rows, lazy per-process files, pickling, errors."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import numpy as np
import pytest

from extract.reader import FeatureReader, ManifestError, write_feature_dir
from extract.shards import SHARD_DIR


def make_items(n: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        f"dir{i % 3}/video{i:03d}": {
            "appearance": rng.standard_normal((16, 8)).astype(np.float32),
            "frame_times": np.arange(i % 4 + 1, dtype=np.float32) / 2,
        }
        for i in range(n)
    }


@pytest.fixture()
def feature_dir(tmp_path):
    items = make_items(11)
    out = write_feature_dir(
        tmp_path / "f",
        "toy",
        items,
        provenance={"backbone": "x"},
        shard_size=4,
        failures=[{"video_id": "broken", "path": "/d/broken.mp4", "reason": "corrupt file"}],
    )
    return out, items


def test_lookup_values_ragged_and_metadata(feature_dir):
    out, items = feature_dir
    reader = FeatureReader(out)
    assert reader.ids == sorted(items) and len(reader) == 11
    assert "dir0/video000" in reader and "nope" not in reader
    for vid in reversed(reader.ids):  # any order, across shards
        got = reader[vid]
        assert set(got) == {"appearance", "frame_times"}
        np.testing.assert_array_equal(got["appearance"], items[vid]["appearance"])
        np.testing.assert_array_equal(got["frame_times"], items[vid]["frame_times"])
    assert reader.feature_set == "toy" and reader.provenance["backbone"] == "x"
    assert reader.outputs["frame_times"].ragged and not reader.outputs["appearance"].ragged
    assert reader.get("nope") is None
    assert len(reader._files) == 3  # one handle per shard touched


def test_missing_ids_raise_keyerror_naming_id_and_directory(feature_dir):
    out, _ = feature_dir
    reader = FeatureReader(out)
    with pytest.raises(KeyError, match=rf"'nope'.*{out}"):
        reader["nope"]
    with pytest.raises(KeyError, match="'broken'.*extraction failed.*corrupt file"):
        reader["broken"]


def test_lazy_open_lru_bound_and_pickling(feature_dir):
    out, items = feature_dir
    reader = FeatureReader(out, max_open=2)
    assert reader._files == {}  # nothing opened until a lookup
    for vid in reader.ids:
        reader[vid]
    assert len(reader._files) <= 2
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._files == {}
    np.testing.assert_array_equal(clone["dir1/video001"]["appearance"], items["dir1/video001"]["appearance"])
    reader.close()


def _child_read(reader, vid, queue):
    queue.put(reader[vid]["appearance"].sum())


def test_reader_is_safe_after_fork(feature_dir):
    out, items = feature_dir
    reader = FeatureReader(out)
    reader["dir0/video000"]  # the parent holds an open handle
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_read, args=(reader, "dir2/video002", queue))
    proc.start()
    value = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert np.isclose(value, items["dir2/video002"]["appearance"].sum())
    assert reader["dir0/video000"]["appearance"].shape == (16, 8)  # the parent still reads


def test_manifest_problems_are_clear(tmp_path, feature_dir):
    with pytest.raises(ManifestError, match="not a feature directory"):
        FeatureReader(tmp_path / "empty")
    out, _ = feature_dir
    (out / SHARD_DIR / "shard-00001.h5").unlink()
    reader = FeatureReader(out)
    with pytest.raises(ManifestError, match="shard-00001.h5.*cannot be opened"):
        reader[reader.ids[5]]


def test_checksums_are_read_once_then_trusted_by_size_and_mtime(tmp_path, feature_dir, monkeypatch):
    import os
    import shutil

    import extract.manifest

    hashed = []
    real = extract.manifest.shard_stamp
    monkeypatch.setattr(extract.manifest, "shard_stamp", lambda p: hashed.append(p) or real(p))
    out, _ = feature_dir
    cache = tmp_path / "verified.json"
    assert FeatureReader(out).verify_checksums(cache) == 3 and hashed == []  # as extracted
    copy = shutil.copytree(out, tmp_path / "copy", copy_function=shutil.copy)  # new mtimes
    assert FeatureReader(copy).verify_checksums(cache) == 3 and len(hashed) == 3
    assert FeatureReader(copy).verify_checksums(cache) == 3 and len(hashed) == 3  # cached: not read again
    shard = copy / SHARD_DIR / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 1  # one bit of the last bytes: the file still opens, same size
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(1, 1))
    with pytest.raises(ManifestError, match=r"shard-00001\.h5: its checksum \(sha256\) differs.*verify"):
        FeatureReader(copy).verify_checksums(cache)
