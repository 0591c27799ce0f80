"""HCRN export: HCRN's file names, keys, shapes and id mapping."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from extract.hcrn import HCRNExportError, export_hcrn, hcrn_ids
from extract.reader import write_feature_dir


def hcrn_items(ids, da=32, dm=24):
    rng = np.random.default_rng(1)
    return {
        vid: {
            "appearance_clips": rng.standard_normal((8, 16, da)).astype(np.float32),
            "motion_clips": rng.standard_normal((8, dm)).astype(np.float32),
        }
        for vid in ids
    }


def test_export_writes_hcrn_layout(tmp_path):
    items = hcrn_items(["video7", "video12", "video3"])
    feat = write_feature_dir(
        tmp_path / "feat", "hcrn", items, provenance={"appearance": "resnet18"}, shard_size=2
    )
    paths = export_hcrn(feat, tmp_path / "hcrn", name="msrvtt-qa")
    assert paths["appearance"].name == "msrvtt-qa_appearance_feat.h5"
    assert paths["motion"].name == "msrvtt-qa_motion_feat.h5"
    with h5py.File(paths["appearance"], "r") as app, h5py.File(paths["motion"], "r") as mot:
        assert app["resnet_features"].shape == (3, 8, 16, 32) and app["resnet_features"].dtype == np.float32
        assert mot["resnext_features"].shape == (3, 8, 24)
        # HCRN's own reader: id -> row via str(id)
        for f, key, src in (
            (app, "resnet_features", "appearance_clips"),
            (mot, "resnext_features", "motion_clips"),
        ):
            row_of = {str(i): r for r, i in enumerate(f["ids"][()])}
            assert set(row_of) == {"7", "12", "3"}
            for vid in items:
                np.testing.assert_array_equal(f[key][row_of[vid[5:]]], items[vid][src])
        names = [s.decode() for s in app["video_names"][()]]
        assert names == sorted(items)
        assert "resnet18" in app.attrs["provenance"]
    assert sorted(p.name for p in (tmp_path / "hcrn").iterdir()) == [
        "msrvtt-qa_appearance_feat.h5",
        "msrvtt-qa_motion_feat.h5",
    ]


def test_string_ids_when_not_numeric(tmp_path):
    items = hcrn_items(["tumblr_abc", "tumblr_xyz"])
    feat = write_feature_dir(tmp_path / "feat", "hcrn", items, provenance={})
    paths = export_hcrn(feat, tmp_path / "out")
    with h5py.File(paths["motion"], "r") as f:
        assert [s.decode() for s in f["ids"][()]] == ["tumblr_abc", "tumblr_xyz"]
    assert paths["motion"].name == "tgif-qa_frameqa_motion_feat.h5"


def test_id_rules():
    assert hcrn_ids(["vid1", "vid20"]).tolist() == [1, 20]
    assert hcrn_ids(["1", "2"]).dtype == np.int64
    assert hcrn_ids(["a1", "b2"]).dtype == object  # two prefixes: keep strings
    assert hcrn_ids(["v1", "v01"]).dtype == object  # numbers collide
    assert hcrn_ids(["vid1"], "str").dtype == object
    with pytest.raises(HCRNExportError, match="'x' does not end in a number"):
        hcrn_ids(["x", "v1"], "int")


def test_refuses_other_feature_sets(tmp_path):
    feat = write_feature_dir(
        tmp_path / "feat", "mspan", {"v": {"appearance": np.zeros((16, 4), np.float32)}}, provenance={}
    )
    with pytest.raises(HCRNExportError, match="'mspan' feature set.*--features hcrn"):
        export_hcrn(feat, tmp_path / "out")
    assert not (tmp_path / "out").exists()
