"""FeatureReader: O(1) id lookup, ragged rows, lazy per-process files, pickling, errors."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from pathlib import Path

import h5py
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


# ---------------------------------------------------------------------------------------- direct reads
def mixed_items(n: int) -> dict[str, dict[str, np.ndarray]]:
    """Every dtype a shard stores, and ragged rows of length 0..3."""
    rng = np.random.default_rng(1)
    return {
        f"v{i:02d}": {
            "half": rng.standard_normal((4, 6)).astype(np.float16),
            "single": rng.standard_normal((3,)).astype(np.float32),
            "double": rng.standard_normal((2, 2)),
            "count": rng.integers(-5, 5, (2,)),
            "small": rng.integers(0, 255, (5,)).astype(np.uint8),
            "mask": rng.random((4,)) > 0.5,
            "clips": rng.standard_normal((i % 4, 6)).astype(np.float16),
        }
        for i in range(n)
    }


def _h5py_values(path, name, row, offsets=None):
    with h5py.File(path, "r") as f:
        if offsets is None:
            return f[name][row]
        start, stop = f[name + "__offsets"][row : row + 2]
        return f[name][start:stop]


def test_direct_reads_equal_h5py_for_every_dtype_and_ragged_rows(tmp_path):
    items = mixed_items(9)
    out = write_feature_dir(tmp_path / "f", "toy", items, provenance={}, shard_size=4, ragged=["clips"])
    reader = FeatureReader(out)
    for vid in reversed(reader.ids):
        got = reader[vid]
        shard, row = reader._index[vid]
        path = reader._shard_paths[shard]
        for name, want in items[vid].items():
            assert got[name].dtype == want.dtype and got[name].flags.writeable, name
            np.testing.assert_array_equal(got[name], want)
            h5 = _h5py_values(path, name, row, offsets=name == "clips" or None)
            assert got[name].dtype == h5.dtype and got[name].shape == h5.shape
            np.testing.assert_array_equal(got[name], h5)
    assert all(all(k.extents.values()) for k in reader._known.values())  # no feature went through h5py


def _rewrite_chunked(path):
    """The shard rewritten as other HDF5 writers may store it: chunked, gzip-compressed datasets."""
    tmp = path.with_suffix(".tmp")
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name, ds in src.items():
            kw = {} if name == "ids" or ds.size == 0 else {"chunks": True, "compression": "gzip"}
            new = dst.create_dataset(name, data=ds[()], dtype=ds.dtype, **kw)
            for key, value in ds.attrs.items():
                new.attrs[key] = value
    tmp.replace(path)


def test_chunked_compressed_shards_are_read_through_h5py_with_the_same_values(tmp_path):
    items = mixed_items(9)
    out = write_feature_dir(tmp_path / "f", "toy", items, provenance={}, shard_size=4, ragged=["clips"])
    _rewrite_chunked(out / SHARD_DIR / "shard-00001.h5")
    reader = FeatureReader(out)
    for vid in reader.ids:
        for name, want in reader[vid].items():
            np.testing.assert_array_equal(want, items[vid][name])
    assert not any(reader._known[1].extents.values())  # every dataset of the rewritten shard: h5py
    assert all(reader._known[0].extents.values())


def test_contiguous_features_are_read_without_h5py(feature_dir, monkeypatch):
    out, items = feature_dir
    reader = FeatureReader(out)
    for vid in reader.ids:  # opens and checks every shard
        reader[vid]
    calls = []
    original = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda ds, key: calls.append(key) or original(ds, key))
    for vid in reader.ids:
        np.testing.assert_array_equal(reader[vid]["appearance"], items[vid]["appearance"])
    assert calls == []


def test_an_unchanged_shard_is_checked_once_per_process_a_replaced_one_again(feature_dir, monkeypatch):
    out, _ = feature_dir
    opened = []
    original = h5py.File

    def counting(path, *a, **k):
        opened.append(Path(path).name)
        return original(path, *a, **k)

    monkeypatch.setattr("extract.reader.h5py.File", counting)
    reader = FeatureReader(out, max_open=1)
    first, second = reader.ids[0], reader.ids[5]  # shards 0 and 1
    for _ in range(3):  # each read evicts the other shard's handle
        reader[first], reader[second]
    assert opened == ["shard-00000.h5", "shard-00001.h5"]
    shards = out / SHARD_DIR
    (shards / "shard-00000.h5").rename(shards / "kept.h5")
    (shards / "shard-00002.h5").rename(shards / "shard-00000.h5")  # another shard's file in its place
    with pytest.raises(ManifestError, match="shard-00000.h5.*holds the videos of another shard"):
        reader[first]


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
