"""Atomic writes: complete files only, and the mode an ordinary open() would give (the umask)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from extract.featuredir import write_feature_dir
from pipelines.atomic import atomic_path, current_umask, write_json_atomic


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda mask: os.umask(mask)
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027


def test_files_honour_umask_022(umask, tmp_path):
    write_json_atomic(tmp_path / "m.json", {"a": 1})
    with atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"abc")
    out = write_feature_dir(tmp_path / "feats", "mspan", {"v1": {"a": np.zeros((2, 3), np.float32)}},
                            provenance={"weights": "synthetic"})
    for path in (tmp_path / "m.json", tmp_path / "x.bin", out / "manifest.json",
                 out / "shards" / "shard-00000.h5"):
        assert _mode(path) == 0o644, path  # readable by group and others


def test_files_honour_a_private_umask(umask, tmp_path):
    umask(0o077)
    write_json_atomic(tmp_path / "m.json", {"a": 1})
    assert _mode(tmp_path / "m.json") == 0o600
