"""HCRN export: HCRN's file names and keys, and ids exactly as HCRN's loader looks them up.

HCRN (thaolmk54/hcrn-videoqa, DataLoader.py) maps ``str(id)`` of the feature file's ``ids`` to a row and
looks up ``str(video_id)`` of each question, where ``video_id`` is the TGIF-QA CSV ``key`` column and
the MSVD-QA / MSRVTT-QA annotation's integer ``video_id``. ``hcrn_lookup`` below replays that rule on
the raw annotation files of the demo data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from extract.cli import cli
from extract.hcrn import HCRNExportError, export_hcrn, hcrn_rows
from extract.reader import write_feature_dir
from pipelines.datasets import get_dataset
from pipelines.demo import generate_demo


def hcrn_items(ids, da=32, dm=24):
    rng = np.random.default_rng(1)
    return {
        vid: {
            "appearance_clips": rng.standard_normal((8, 16, da)).astype(np.float32),
            "motion_clips": rng.standard_normal((8, dm)).astype(np.float32),
        }
        for vid in ids
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_demo(out, seed=0, scale=0.01)
    return out


def hcrn_lookup(path: Path, key: str, wanted: list[int]) -> dict[int, np.ndarray]:
    """HCRN's DataLoader: ``{str(id): index}`` over ``ids``, then ``features[index[str(video_id)]]``."""
    with h5py.File(path, "r") as f:
        index = {str(i): n for n, i in enumerate(f["ids"][()])}
        return {v: f[key][index[str(v)]] for v in wanted}


def test_tgif_ids_are_the_csv_key_column(demo, tmp_path):
    root = demo / "tgif"
    adapter = get_dataset("tgif")(root, task="frameqa")
    items = hcrn_items(sorted({v.video_id for v in adapter.videos()}))
    feat = write_feature_dir(tmp_path / "feat", "hcrn", items, provenance={"appearance": "resnet18"})
    result = export_hcrn(feat, tmp_path / "hcrn", adapter=adapter)
    assert result.paths["appearance"].name == "tgif-qa_frameqa_appearance_feat.h5"
    assert result.paths["motion"].name == "tgif-qa_frameqa_motion_feat.h5"
    rows = []
    for split in ("Train", "Test"):
        with open(root / "dataset" / f"{split}_frameqa_question.csv", newline="") as fh:
            rows += list(csv.DictReader(fh, delimiter="\t"))
    assert result.rows == len({r["key"] for r in rows}) == len(rows)  # one row per question key
    app = hcrn_lookup(result.paths["appearance"], "resnet_features", [int(r["key"]) for r in rows])
    mot = hcrn_lookup(result.paths["motion"], "resnext_features", [int(r["key"]) for r in rows])
    for r in rows:
        np.testing.assert_array_equal(app[int(r["key"])], items[r["gif_name"]]["appearance_clips"])
        np.testing.assert_array_equal(mot[int(r["key"])], items[r["gif_name"]]["motion_clips"])
    with h5py.File(result.paths["appearance"], "r") as f:
        assert f["ids"].dtype.kind == "i" and f["resnet_features"].shape[1:] == (8, 16, 32)
        assert "resnet18" in f.attrs["provenance"]


def test_msrvtt_ids_are_the_annotation_video_ids(demo, tmp_path):
    root = demo / "msrvtt-qa"
    adapter = get_dataset("msrvtt-qa")(root)
    items = hcrn_items(sorted({v.video_id for v in adapter.videos()}))
    feat = write_feature_dir(tmp_path / "feat", "hcrn", items, provenance={})
    result = export_hcrn(feat, tmp_path / "hcrn", adapter=adapter)
    assert result.paths["motion"].name == "msrvtt-qa_motion_feat.h5"
    questions = [q for s in ("train", "val", "test") for q in json.loads((root / f"{s}_qa.json").read_text())]
    wanted = [int(q["video_id"]) for q in questions]
    got = hcrn_lookup(result.paths["motion"], "resnext_features", wanted)
    for q in questions:
        np.testing.assert_array_equal(got[int(q["video_id"])], items[f"video{q['video_id']}"]["motion_clips"])


def test_msvd_ids_are_the_vid_numbers_of_the_mapping(tmp_path):
    root = tmp_path / "msvd"
    root.mkdir()
    (root / "youtube_mapping.txt").write_text("-abc_1_5 vid1\nxyz_3_9 vid2\nqq_0_4 vid7\n")
    for split, vids in (("train", [1, 7]), ("val", [2]), ("test", [7])):
        (root / f"{split}_qa.json").write_text(json.dumps(
            [{"question": "what is it?", "answer": "dog", "video_id": v, "id": f"{split}{v}"} for v in vids]))
    adapter = get_dataset("msvd-qa")(root)
    assert hcrn_rows(adapter) == [(1, "-abc_1_5"), (2, "xyz_3_9"), (7, "qq_0_4")]
    items = hcrn_items(["-abc_1_5", "xyz_3_9", "qq_0_4"])
    feat = write_feature_dir(tmp_path / "feat", "hcrn", items, provenance={})
    result = export_hcrn(feat, tmp_path / "hcrn", adapter=adapter)
    got = hcrn_lookup(result.paths["appearance"], "resnet_features", [1, 2, 7])
    np.testing.assert_array_equal(got[7], items["qq_0_4"]["appearance_clips"])
    np.testing.assert_array_equal(got[2], items["xyz_3_9"]["appearance_clips"])


def test_missing_videos_and_other_feature_sets_are_refused(demo, tmp_path):
    adapter = get_dataset("msrvtt-qa")(demo / "msrvtt-qa")
    ids = sorted({v.video_id for v in adapter.videos()})
    feat = write_feature_dir(tmp_path / "feat", "hcrn", hcrn_items(ids[1:]), provenance={})
    with pytest.raises(HCRNExportError, match=f"HCRN ids name videos without features.*{ids[0]}"):
        export_hcrn(feat, tmp_path / "out", adapter=adapter)
    result = export_hcrn(feat, tmp_path / "out", adapter=adapter, allow_missing=True)
    assert [v for _, v in result.skipped] == [ids[0]] and result.rows == len(ids) - 1

    other = write_feature_dir(
        tmp_path / "mspan", "mspan", {"v": {"appearance": np.zeros((16, 4), np.float32)}}, provenance={}
    )
    with pytest.raises(HCRNExportError, match="'mspan' feature set.*--features hcrn"):
        export_hcrn(other, tmp_path / "out2", adapter=adapter)
    assert not (tmp_path / "out2").exists()


def test_export_command(demo, tmp_path):
    root = demo / "tgif"
    adapter = get_dataset("tgif")(root, task="count")
    items = hcrn_items(sorted({v.video_id for v in adapter.videos()}))
    feat = write_feature_dir(tmp_path / "feat", "hcrn", items, provenance={})
    args = ["export-hcrn", "--features-dir", str(feat), "--out", str(tmp_path / "o"), "--dataset", "tgif",
            "--root", str(root), "--task", "count"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "tgif-qa_count_appearance_feat.h5").is_file() and "rows" in res.output
    res = CliRunner().invoke(cli, args[:-2])
    assert res.exit_code != 0 and "needs --task" in res.output
