"""``vqa-extract`` end to end on real video files with small random-weight backbones.

One uninterrupted run (in-process, ``--local``) is the reference; a run killed with SIGKILL in the middle
of writing a shard (a subprocess) and then resumed must give the same ids and the same values; a run on
a real local Ray runtime must give the same values too.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from extract.cli import cli
from extract.engine import CRASH_ENV
from extract.manifest import load_manifest
from extract.reader import FeatureReader
from extract.shards import SHARD_DIR

SMALL = [
    "--features", "mspan", "--appearance", "resnet18", "--motion", "r3d_18", "--image-size", "32",
    "--motion-size", "32", "--num-frames", "4", "--clip-len", "4", "--weights", "random", "--device", "cpu",
    "--batch-frames", "16", "--shard-size", "3", "--no-progress",
]  # fmt: skip
GOOD = ["mp4", "avi", "gif", "gray_gif", "gray_mp4", "one_frame_mp4", "large_mp4"]


@pytest.fixture(scope="module")
def video_root(tmp_path_factory, sample_videos, bad_videos, video_tree) -> Path:
    """Every kind of sample video, the same-named pair a/x.mp4 + b/x.mp4, and corrupt / empty files."""
    root = tmp_path_factory.mktemp("cli_videos")
    for name in GOOD:
        src = sample_videos[name].path
        (root / f"{name}{src.suffix}").write_bytes(src.read_bytes())
    for rel in ("a/x.mp4", "b/x.mp4"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((video_tree / rel).read_bytes())
    (root / "bad").mkdir()
    (root / "bad" / "corrupt.mp4").write_bytes(bad_videos["corrupt"].read_bytes())
    (root / "bad" / "empty.mp4").write_bytes(b"")
    return root


def invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def reference(video_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    result = invoke(["--root", str(video_root), "--out", str(out), "--local", *SMALL])
    return out, result


def values(out: Path) -> dict[str, dict[str, np.ndarray]]:
    reader = FeatureReader(out)
    return {vid: reader[vid] for vid in reader.ids}


def test_extract_folder_shapes_failures_and_random_warning(reference):
    out, result = reference
    assert result.exit_code == 3, result.output
    assert "WARNING: --weights random" in result.output
    assert "2 video(s) FAILED" in result.output and str(out) in result.output
    reader = FeatureReader(out)
    expected = sorted([*GOOD, "a/x", "b/x"])
    assert reader.ids == expected
    for vid in expected:
        feats = reader[vid]
        assert feats["appearance"].shape == (4, 512) and feats["motion"].shape == (4, 512)
        assert feats["appearance"].dtype == np.float32 and np.isfinite(feats["appearance"]).all()
    assert not np.allclose(reader["a/x"]["appearance"], reader["b/x"]["appearance"])  # no id collision
    failures = {f["video_id"]: f["reason"] for f in load_manifest(out)["failures"]}
    assert set(failures) == {"bad/corrupt", "bad/empty"} and "empty" in failures["bad/empty"]
    manifest = load_manifest(out)
    assert manifest["provenance"]["backbones"]["appearance"]["weights_sha256"] == "random"
    with h5py.File(out / SHARD_DIR / manifest["shards"][0]["name"], "r") as f:
        assert f.attrs["weights"] == "random"
        assert json.loads(f.attrs["provenance"])["samplers"]["appearance"]["sampler"] == "uniform_indices"

    info = invoke(["info", str(out)])
    assert info.exit_code == 0
    assert "9 done, 2 failed" in info.output and "RANDOM" in info.output and "bad/empty" in info.output


def test_kill_9_while_writing_a_shard_then_resume_equals_uninterrupted(reference, video_root, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "extract.cli",
        "--root",
        str(video_root),
        "--out",
        str(out),
        "--local",
        *SMALL,
    ]
    env = dict(os.environ, **{CRASH_ENV: "in-shard:2", "OMP_NUM_THREADS": "1"})
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    shard_files = sorted(p.name for p in (out / SHARD_DIR).iterdir())
    # one shard complete; the second one was being written: only a temporary file, no final name
    assert len(shard_files) == 2 and "shard-00000.h5" in shard_files
    assert [n for n in shard_files if n != "shard-00000.h5"][0].startswith(".tmp-shard-00001.h5")
    assert sum(s["complete"] for s in load_manifest(out)["shards"]) == 1
    total = len(load_manifest(out)["shards"])
    info = invoke(["info", str(out)])  # the manifest cannot say "running": nobody is
    assert "INCOMPLETE: the run started" in info.output and "was killed before it finished" in info.output
    assert f"1 of {total} shards complete" in info.output
    assert "Re-run the same vqa-extract command" in info.output
    checked = CliRunner().invoke(cli, ["verify", str(out)])
    assert checked.exit_code == 1 and f"1 of {total} shard(s) complete and verified" in checked.output
    assert "INCOMPLETE" in checked.output

    result = invoke(["--root", str(video_root), "--out", str(out), "--local", *SMALL])
    assert result.exit_code == 3, result.output
    assert "1 already complete" in result.output
    assert not any(p.name.startswith(".tmp-") for p in (out / SHARD_DIR).iterdir())
    want, got = values(ref_out), values(out)
    assert list(got) == list(want)
    for vid in want:
        for key in want[vid]:
            np.testing.assert_array_equal(got[vid][key], want[vid][key])
    assert load_manifest(out)["failures"] == load_manifest(ref_out)["failures"]

    changed = invoke(["--root", str(video_root), "--out", str(out), "--local", *SMALL, "--image-size", "48"])
    assert changed.exit_code != 0 and "--overwrite" in changed.output and "image_size" in changed.output


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: a write past `limit` bytes fails (EFBIG), as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_while_writing_a_shard_is_one_line_naming_it(reference, video_root, tmp_path):
    """Every shard is larger than the file system lets a file grow: HDF5 used to report it from the file's
    close as "Can't decrement id ref count" and the process then died of SIGSEGV (exit 139)."""
    ref_out, _ = reference
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "extract.cli", "--root", str(video_root), "--out", str(out), "--local",
           *SMALL]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=_file_size_limit(20_000))
    assert proc.returncode == 1, proc.stderr[-3000:]  # not -11 / 139 (SIGSEGV)
    assert "Traceback" not in proc.stderr and "decrement" not in proc.stderr, proc.stderr[-3000:]
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith(f"vqa-extract: error: cannot use {out / SHARD_DIR / 'shard-00000.h5'}: "), last
    assert ".tmp-" not in last and "choose another --out" in last
    assert list((out / SHARD_DIR).iterdir()) == []  # no partial shard under any name
    info = invoke(["info", str(out)])
    assert "INCOMPLETE: the run failed at" in info.output and "File too large" in info.output

    result = invoke(["--root", str(video_root), "--out", str(out), "--local", *SMALL])  # space again
    assert result.exit_code == 3, result.output
    assert values(out).keys() == values(ref_out).keys()
    assert "status complete" in invoke(["info", str(out)]).output


@pytest.mark.slow
def test_ray_runtime_gives_the_same_features(reference, video_root, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "ray_out"
    result = invoke(["--root", str(video_root), "--out", str(out), "--num-cpus", "2", *SMALL])
    assert result.exit_code == 3, result.output
    assert "backend: ray, 1 inference actor(s)" in result.output
    want, got = values(ref_out), values(out)
    assert list(got) == list(want)
    for vid in want:
        for key in want[vid]:
            np.testing.assert_allclose(got[vid][key], want[vid][key], rtol=1e-5, atol=1e-6)
    assert {f["video_id"] for f in load_manifest(out)["failures"]} == {"bad/corrupt", "bad/empty"}


def test_hcrn_features_and_export(video_root, tmp_path):
    out = tmp_path / "hcrn"
    args = [a if a != "mspan" else "hcrn" for a in SMALL]
    result = invoke(["--root", str(video_root), "--out", str(out), "--local", "--limit", "3", *args])
    assert result.exit_code == 0, result.output
    reader = FeatureReader(out)
    assert reader[reader.ids[0]]["appearance_clips"].shape == (8, 4, 512)
    # MSVD-QA annotations naming these videos vid1..vid3 (HCRN's ids are those numbers)
    msvd = tmp_path / "msvd"
    msvd.mkdir()
    (msvd / "youtube_mapping.txt").write_text("".join(f"{v} vid{n + 1}\n" for n, v in enumerate(reader.ids)))
    for split in ("train", "val", "test"):
        qs = [{"question": "what is it?", "answer": "x", "video_id": n + 1} for n in range(3)]
        (msvd / f"{split}_qa.json").write_text(json.dumps(qs))
    exported = invoke(["export-hcrn", "--features-dir", str(out), "--out", str(tmp_path / "h"),
                       "--dataset", "msvd-qa", "--root", str(msvd)])
    assert exported.exit_code == 0, exported.output
    with h5py.File(tmp_path / "h" / "msvd-qa_appearance_feat.h5", "r") as f:
        assert f["resnet_features"].shape == (3, 8, 4, 512) and f["ids"][()].tolist() == [1, 2, 3]
    with h5py.File(tmp_path / "h" / "msvd-qa_motion_feat.h5", "r") as f:
        assert f["resnext_features"].shape == (3, 8, 512)
        np.testing.assert_array_equal(f["resnext_features"][0], reader[reader.ids[0]]["motion_clips"])


def test_dataset_adapter_missing_videos_and_demo_data(tmp_path):
    demo = tmp_path / "demo"
    result = invoke(["demo-data", "--out", str(demo), "--scale", "0.02"])
    assert result.exit_code == 0, result.output
    assert "msrvtt-qa" in result.output and (demo / "DEMO.json").is_file()
    root = demo / "msrvtt-qa"
    videos = sorted((root / "video").glob("*.mp4"))
    videos[0].unlink()
    out = tmp_path / "out"
    args = ["--dataset", "msrvtt-qa", "--root", str(root), "--out", str(out), "--local", "--limit", "3"]
    result = invoke([*args, *SMALL])
    assert result.exit_code == 3, result.output
    manifest = load_manifest(out)
    assert manifest["source"]["dataset"] == "msrvtt-qa"
    [failure] = manifest["failures"]
    assert failure["video_id"] == videos[0].stem and failure["reason"].startswith("missing")
    assert FeatureReader(out).ids == [p.stem for p in videos[1:3]]


def test_help_lists_registries_and_usage_errors_name_the_problem(video_root, tmp_path):
    result = invoke(["--help"])
    assert result.exit_code == 0
    for name in (
        "folder",
        "msrvtt-qa",
        "tgif",
        "mspan",
        "hcrn",
        "cmin",
        "masn",
        "resnet152",
        "r3d152_k700",
        "i3d_r50",
        "fasterrcnn_resnet50_fpn_v2",
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "resnet101@224 + resnext101_k400@112",
        "resnet152@224 + i3d_r50@224",
    ):
        assert name in result.output
    base = ["--root", str(video_root), "--out", str(tmp_path / "o"), "--local"]
    det_file = tmp_path / "det.pth"
    det_file.write_bytes(b"x")
    det_ckpt = ["--checkpoint", f"fasterrcnn_resnet50_fpn_v2={det_file}"]  # a detector name is accepted
    cases = [
        ([*base, "--features", "masn", "--weights", "random", *det_ckpt], "cannot be combined with"),
        (["--dataset", "nope", *base], "unknown --dataset 'nope'"),
        (["--features", "nope", *base], "unknown --features 'nope'"),
        (["--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "is not a directory"),
        (["--out", str(tmp_path / "o")], "--root is required"),
        ([*base, "--checkpoint", "resnet18"], "expected NAME=PATH"),
        ([*base, "--checkpoint", "resnet999=/x.pth"], "unknown backbone or detector 'resnet999'"),
        ([*base, "--detector", "yolo"], "unknown --detector 'yolo'"),
        ([*base, "--features", "masn", "--max-objects", "3", "--min-objects", "4"], "min_objects"),
        ([*base, "--checkpoint", f"resnet18={tmp_path / 'none.pth'}"], "does not exist"),
        ([*base, "--appearance", "r3d_18"], "appearance"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    assert not (tmp_path / "o").exists()


def test_unsafe_ids_from_annotations_are_refused(tmp_path):
    root = tmp_path / "tgif"
    (root / "dataset").mkdir(parents=True)
    (root / "gifs").mkdir()
    header = "gif_name\tquestion\tanswer\tvid_id\tkey\n"
    (root / "dataset" / "Train_count_question.csv").write_text(header + "../../escape\thow many?\t2\t1\t1\n")
    (root / "dataset" / "Test_count_question.csv").write_text(header + "ok\thow many?\t2\t2\t2\n")
    result = CliRunner().invoke(cli, ["--dataset", "tgif", "--task", "count", "--root", str(root), "--out",
                                      str(tmp_path / "o"), "--local", *SMALL])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "escape" in result.output and "outside" in result.output


def test_missing_pretrained_weights_fail_fast_naming_the_file(video_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))  # no cached weights whatever the machine
    out = tmp_path / "o"
    args = ["--root", str(video_root), "--out", str(out), "--local", "--appearance", "resnet18"]
    result = CliRunner().invoke(cli, [*args, "--motion", "r3d_18"])
    assert result.exit_code == 1, result.output
    assert "resnet18" in result.output and "torch cache" in result.output and ".pth" in result.output
    assert not out.exists()


MASN_SMALL = [
    "--features", "masn", "--appearance", "resnet18", "--motion", "r3d_18", "--image-size", "32",
    "--motion-size", "32", "--clip-len", "4", "--max-frames", "4", "--weights", "random",
    "--detector", "fasterrcnn_mobilenet_v3_large_320_fpn", "--detector-size", "64",
    "--detector-max-size", "96", "--num-proposals", "10", "--max-objects", "5", "--score-threshold", "0",
    "--batch-frames", "8", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def masn_root(tmp_path_factory, sample_videos, bad_videos) -> Path:
    root = tmp_path_factory.mktemp("masn_videos")
    for name in ("gif", "mp4"):  # 12 frames at 10 fps: 2 kept frames; 40 frames: 6 kept, truncated to 4
        src = sample_videos[name].path
        (root / f"{name}{src.suffix}").write_bytes(src.read_bytes())
    (root / "corrupt.mp4").write_bytes(bad_videos["corrupt"].read_bytes())
    return root


def _check_masn(out: Path) -> dict[str, dict[str, np.ndarray]]:
    reader = FeatureReader(out)
    assert reader.feature_set == "masn" and reader.ids == ["gif", "mp4"] and "corrupt" not in reader
    shapes = {
        "appearance": (4, 512), "motion": (4, 512), "objects": (4, 5, 512), "object_boxes": (4, 5, 6),
        "motion_objects": (4, 5, 512), "frame_mask": (4,), "object_mask": (4, 5),
    }  # fmt: skip
    got = values(out)
    for vid, n_real in (("gif", 2), ("mp4", 4)):
        feats = got[vid]
        assert {k: v.shape for k, v in feats.items()} == shapes
        assert feats["frame_mask"].tolist() == [True] * n_real + [False] * (4 - n_real)
        # threshold 0: every frame keeps its 5 best boxes, padded frames have none
        assert feats["object_mask"][:n_real].all() and not feats["object_mask"][n_real:].any()
        for key in ("appearance", "motion", "objects", "motion_objects", "object_boxes"):
            assert np.all(feats[key][n_real:] == 0) and np.abs(feats[key][:n_real]).sum() > 0, key
        boxes = feats["object_boxes"][:n_real]
        assert boxes.min() >= 0 and boxes[..., :4].max() <= 1 + 1e-6
        np.testing.assert_allclose(boxes[..., 4], boxes[..., 2] - boxes[..., 0], atol=1e-6)
    prov = reader.provenance
    assert prov["backbones"]["motion"]["name"] == "r3d_18" and prov["motion_size"] == 32
    assert prov["options"]["motion"] == "r3d_18" and prov["options"]["num_proposals"] == 10
    assert prov["detector"]["name"] == "fasterrcnn_mobilenet_v3_large_320_fpn"
    assert prov["detector"]["weights_sha256"] == "random"
    settings = prov["detector"]["settings"]
    assert settings["max_objects"] == 5 and settings["min_objects"] == 5  # min_objects follows max_objects
    assert load_manifest(out)["options"] == prov["options"]  # the job ran with the resolved options
    assert [f["video_id"] for f in reader.failures] == ["corrupt"]
    return got


def test_masn_features_end_to_end(masn_root, tmp_path):
    out = tmp_path / "masn"
    result = invoke(["--root", str(masn_root), "--out", str(out), "--local", *MASN_SMALL])
    assert result.exit_code == 3, result.output  # the corrupt video failed; the others are complete
    assert "1 video(s) FAILED" in result.output and "RANDOM weights" in result.output
    _check_masn(out)
    again = invoke(["--root", str(masn_root), "--out", str(out), "--local", *MASN_SMALL])
    assert again.exit_code == 3 and "already complete" in again.output, again.output


def test_masn_with_bottom_up_objects_writes_ten_named_objects_per_frame(masn_root, tmp_path):
    """--detector bottomup_r101_vg (random weights, tiny inputs): 10 regions per real frame with their own
    2048-d features, Visual Genome classes and attributes; the MIN_BOXES rule fills up to 10 (the frames
    are upscaled to 96 px so that 10 proposals survive the RPN: the rule keeps no more than exist)."""
    out = tmp_path / "bua"
    small = list(MASN_SMALL)
    changes = {"--detector": "bottomup_r101_vg", "--detector-size": "96", "--detector-max-size": "160",
               "--num-proposals": "12", "--max-objects": "10", "--score-threshold": "0.2"}  # fmt: skip
    for flag, value in changes.items():
        small[small.index(flag) + 1] = value
    result = invoke(["--root", str(masn_root), "--out", str(out), "--local", *small])
    assert result.exit_code == 3, result.output  # the corrupt video failed
    assert "gives 2048-d objects but --appearance resnet18 512-d" in result.output  # the size warning
    got = values(out)
    for vid, n_real in (("gif", 2), ("mp4", 4)):
        feats = got[vid]
        assert feats["objects"].shape == (4, 10, 2048) and feats["object_labels"].dtype == np.int64
        assert feats["object_mask"][:n_real].all() and not feats["object_mask"][n_real:].any()
        labels, attrs = feats["object_labels"][:n_real], feats["attribute_labels"][:n_real]
        assert labels.min() >= 1 and labels.max() <= 1600 and attrs.min() >= 1 and attrs.max() <= 400
        assert np.all(feats["object_labels"][n_real:] == -1) and np.all(feats["objects"][n_real:] == 0)
        assert (feats["object_scores"][:n_real] > 0).all() and np.abs(feats["objects"][:n_real]).sum() > 0
    prov = FeatureReader(out).provenance
    assert prov["detector"]["name"] == "bottomup_r101_vg" and prov["detector"]["num_classes"] == 1601
    assert "region features" in prov["objects"] or "detector's own" in prov["objects"]


@pytest.mark.slow
def test_masn_features_on_ray_equal_local(masn_root, tmp_path):
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    invoke(["--root", str(masn_root), "--out", str(local), "--local", *MASN_SMALL])
    result = invoke(["--root", str(masn_root), "--out", str(ray_out), "--num-cpus", "2", *MASN_SMALL])
    assert result.exit_code == 3, result.output
    want, got = _check_masn(local), _check_masn(ray_out)
    for vid in want:
        for key in want[vid]:
            np.testing.assert_allclose(got[vid][key], want[vid][key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_defaults_are_resolved_per_feature_set_and_unused_flags_reported(masn_root, tmp_path):
    from extract.featuresets import FeatureOptions, resolve_options

    hcrn = resolve_options("hcrn", FeatureOptions())
    assert (hcrn.appearance, hcrn.motion, hcrn.image_size, hcrn.motion_size) == (
        "resnet101", "resnext101_k400", 224, 112,
    )  # fmt: skip
    args = [a for a in SMALL if a not in ("--motion", "r3d_18")]
    args[args.index("mspan")] = "siasamrea"
    out = tmp_path / "sia"
    result = invoke(["--root", str(masn_root), "--out", str(out), "--local", *args, "--detector-size", "64"])
    assert result.exit_code == 3, result.output
    assert "does not use --motion-size, --num-frames, --clip-len, --detector-size (ignored)" in result.output
    assert load_manifest(out)["options"]["motion_size"] is None


def test_verify_and_repair_commands(tmp_path):
    from extract.featuredir import write_feature_dir

    items = {f"v{i}": {"a": np.full((2, 3), i, np.float32)} for i in range(4)}
    out = write_feature_dir(tmp_path / "feats", "mspan", items, provenance={"weights": "synthetic"},
                            shard_size=2)
    runner = CliRunner()
    res = runner.invoke(cli, ["verify", str(out)])
    assert res.exit_code == 0 and "2 of 2 shard(s) complete and verified" in res.output
    with open(out / SHARD_DIR / "shard-00001.h5", "r+b") as fh:
        fh.truncate(fh.seek(0, 2) - 10)
    res = runner.invoke(cli, ["verify", str(out)])
    assert res.exit_code == 1
    assert "shard-00001.h5" in res.output and "truncated" in res.output and "Traceback" not in res.output
    assert "DAMAGED shard shard-00001.h5" in runner.invoke(cli, ["info", str(out)]).output

    manifest = load_manifest(out)
    (out / "manifest.json").unlink()
    res = runner.invoke(cli, ["repair", str(out)])
    assert res.exit_code == 1 and "shard-00001.h5" in res.output  # the truncated shard is unreadable
    write_feature_dir(out, "mspan", items, provenance={"weights": "synthetic"}, shard_size=2)
    (out / "manifest.json").unlink()
    res = runner.invoke(cli, ["repair", str(out)])
    assert res.exit_code == 0 and "rebuilt from 2 shard(s): 4 videos" in res.output
    assert load_manifest(out)["shards"][1]["ids"] == manifest["shards"][1]["ids"]
    assert runner.invoke(cli, ["repair", str(out)]).exit_code == 1  # refuses to replace a manifest
    assert runner.invoke(cli, ["verify", str(out)]).exit_code == 0
