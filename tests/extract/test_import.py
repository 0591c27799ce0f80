"""``vqa-extract import``: files written in each official layout with known contents -> a feature directory
whose ``FeatureReader`` returns exactly those arrays; every bad input in one line; resume.

The layouts are the ones the official loaders read (docs/features.md, "Importing released features"):
ActivityNet's challenge C3D file (``v_<id>/c3d_features``) and its per-video split (``<id>.h5`` /
``feature``, CMIN), TACoS's ``tall_c3d_features.hdf5`` (``<id>.avi``) and per-video ``<id>.npy`` (CMIN),
MASN's four HDF5 files keyed by ``str(key)``, MSPAN's ``<dir>/<key>.npy`` pair and HCRN's ``ids`` pair.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from extract.cli import cli
from extract.engine import ResumeMismatchError
from extract.hcrn import export_hcrn
from extract.importer import ImportJob, run_import
from extract.reader import FeatureReader, write_feature_dir
from extract.shards import ShardWriter, read_shard_attrs
from pipelines.datasets import get_dataset

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- annotations
def _captions(root: Path, durations: dict[str, float]) -> Path:
    """ActivityNet Captions train / val_1 / val_2 over ``durations`` (id -> seconds)."""
    ids = sorted(durations)
    parts = {"train.json": ids[:-2], "val_1.json": ids[-2:-1], "val_2.json": ids[-1:]}
    root.mkdir(parents=True, exist_ok=True)
    for name, vids in parts.items():
        data = {v: {"duration": durations[v], "timestamps": [[0.5, 2.0]], "sentences": ["a man runs ."]}
                for v in vids}
        (root / name).write_text(json.dumps(data))
    return root


def _tacos(root: Path, videos: dict[str, tuple[int, float]]) -> Path:
    """TACoS train / val / test (2D-TAN JSON) over ``videos`` (id -> (num_frames, fps))."""
    ids = sorted(videos)
    root.mkdir(parents=True, exist_ok=True)
    for name, vids in {"train.json": ids[:-2], "val.json": ids[-2:-1], "test.json": ids[-1:]}.items():
        data = {f"{v}.avi": {"num_frames": videos[v][0], "fps": videos[v][1], "timestamps": [[0, 20]],
                             "sentences": ["the person cuts a leek ."]} for v in vids}
        (root / name).write_text(json.dumps(data))
    return root


def tgif_frameqa(root: Path, keys: dict[str, list[int]]) -> Path:
    """TGIF-QA FrameQA CSVs: GIF -> its question keys (the last GIF's questions are the Test split)."""
    header = ["gif_name", "question", "answer", "type", "vid_id", "key", "description"]
    gifs = sorted(keys)
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    for split, names in (("Train", gifs[:-1]), ("Test", gifs[-1:])):
        with open(root / "dataset" / f"{split}_frameqa_question.csv", "w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t")
            w.writerow(header)
            for gif in names:
                for k in keys[gif]:
                    w.writerow([gif, "what color is the ball ?", "red", 2, 1, k, "a red ball"])
    return root


def _import(*args: str, code: int = 0):
    res = CliRunner().invoke(cli, ["import", *args])
    assert res.exit_code == code, res.output
    return res


def _clips(t: int, d: int = 6) -> np.ndarray:
    return RNG.standard_normal((t, d)).astype(np.float32)


def _check_clips(out: Path, arrays: dict[str, np.ndarray], durations: dict[str, float]) -> None:
    reader = FeatureReader(out)
    assert reader.feature_set == "cmin" and reader.outputs["clips"].shape == (None, 6)
    for vid, x in arrays.items():
        got = reader[vid]
        assert np.array_equal(got["clips"], x)
        t = len(x)  # CMIN's loader: second s is step int(s * T / duration): step i centred at (i + .5) D / T
        assert np.allclose(got["clip_times"], (np.arange(t) + 0.5) * durations[vid] / t)
    assert CliRunner().invoke(cli, ["verify", str(out)]).exit_code == 0


# ----------------------------------------------------------------------------- C3D formats
def test_activitynet_challenge_file(tmp_path):
    durations = {f"v_{i:011d}": 10.0 + i for i in range(5)}
    ann = _captions(tmp_path / "ann", durations)
    arrays = {v: _clips(3 + i) for i, v in enumerate(durations)}
    src = tmp_path / "sub_activitynet_v1-3.c3d.hdf5"
    with h5py.File(src, "w") as f:
        for v, x in arrays.items():
            f.create_group(v).create_dataset("c3d_features", data=x)
        f.create_group("v_notannotated").create_dataset("c3d_features", data=_clips(2))
    res = _import("activitynet-c3d", str(src), "--out", str(tmp_path / "out"), "--dataset",
                  "activitynet-captions", "--root", str(ann), "--shard-size", "2")
    assert "5 done, 0 failed, 5 planned (3 shards" in res.output
    _check_clips(tmp_path / "out", arrays, durations)
    reader = FeatureReader(tmp_path / "out")
    assert "v_notannotated" not in reader
    files = reader.provenance["imported"]["files"]
    assert files["c3d"] == {"file": src.name, "bytes": src.stat().st_size,
                            "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}
    assert reader.provenance["imported"]["features"] == "features released by the authors"
    assert reader.provenance["backbones"] == {}
    assert reader.provenance["samplers"]["clips"]["clip_len"] == 16
    assert reader.provenance["samplers"]["clips"]["stride"] == 8
    info = CliRunner().invoke(cli, ["info", str(tmp_path / "out")]).output
    assert "imported: activitynet-c3d (features released by the authors)" in info


def test_activitynet_per_video_h5_records_each_files_sha256(tmp_path):
    durations = {f"v_{i:011d}": 12.0 for i in range(4)}
    ann = _captions(tmp_path / "ann", durations)
    arrays = {v: _clips(4 + i) for i, v in enumerate(durations)}
    (tmp_path / "c3d").mkdir()
    for v, x in arrays.items():
        with h5py.File(tmp_path / "c3d" / f"{v}.h5", "w") as f:
            f.create_dataset("feature", data=x)
    _import("activitynet-c3d-h5", str(tmp_path / "c3d"), "--out", str(tmp_path / "out"), "--dataset",
            "activitynet-captions", "--root", str(ann))
    _check_clips(tmp_path / "out", arrays, durations)
    attrs = read_shard_attrs(tmp_path / "out" / "shards" / "shard-00000.h5")
    sources = json.loads(attrs["sources"])
    v = next(iter(arrays))
    data = (tmp_path / "c3d" / f"{v}.h5").read_bytes()
    assert sources[v] == [{"file": f"{v}.h5", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}]


def test_tacos_single_file_and_per_video_npy(tmp_path):
    videos = {f"s{i}-d2{i}": (300 + 30 * i, 29.4) for i in range(4)}
    durations = {v: n / fps for v, (n, fps) in videos.items()}
    ann = _tacos(tmp_path / "ann", videos)
    arrays = {v: _clips(5 + i) for i, v in enumerate(videos)}
    with h5py.File(tmp_path / "tall_c3d_features.hdf5", "w") as f:
        for v, x in arrays.items():
            f.create_dataset(f"{v}.avi", data=x)  # 2D-TAN: the annotation key, with .avi
    _import("tacos-c3d", str(tmp_path), "--out", str(tmp_path / "out"), "--dataset", "tacos", "--root",
            str(ann))
    _check_clips(tmp_path / "out", arrays, durations)
    (tmp_path / "npy").mkdir()
    for v, x in arrays.items():
        np.save(tmp_path / "npy" / f"{v}.npy", x)  # CMIN: '%s.npy' % vid[:-4]
    _import("tacos-c3d-npy", str(tmp_path / "npy"), "--out", str(tmp_path / "out2"), "--dataset", "tacos",
            "--root", str(ann))
    _check_clips(tmp_path / "out2", arrays, durations)
    _import("tacos-c3d-npy", str(tmp_path / "npy"), "--out", str(tmp_path / "out3"), "--dataset", "tacos",
            "--root", str(ann), "--dtype", "float16")
    half = FeatureReader(tmp_path / "out3")
    assert half.outputs["clips"].dtype == "float16" and half.outputs["clip_times"].dtype == "float32"
    assert all(np.array_equal(half[v]["clips"], x.astype(np.float16)) for v, x in arrays.items())


# ----------------------------------------------------------------------------- MASN
def masn_raw(t: int, m: int = 3, d: int = 8) -> dict[str, np.ndarray]:
    """One video as MASN's files hold it: (t, d) globals, (t, m, d) objects, MASN-encoded boxes."""
    x1y1 = RNG.uniform(0, 0.5, (t, m, 2))
    wh = RNG.uniform(0.1, 0.5, (t, m, 2))
    boxes = np.concatenate([x1y1, x1y1 + wh, wh], axis=-1).astype(np.float32)
    return {"appearance": _clips(t, d), "motion": _clips(t, d), "objects": RNG.standard_normal((t, m, d)),
            "object_boxes": boxes, "motion_objects": RNG.standard_normal((t, m, d))}


def write_masn(directory: Path, videos: dict[str, dict[str, np.ndarray]]) -> Path:
    """MASN's four TGIF-QA files under ``feat_r6_vsync2/`` (data_utils/dataset.py), keyed by ``str(key)``."""
    d = directory / "feat_r6_vsync2"
    d.mkdir(parents=True)
    names = {"appearance": "res152_avgpool.hdf5", "motion": "tgif_i3d_hw7_perclip_avgpool.hdf5",
             "motion_objects": "tgif_i3d_roialign_hw7_perclip_avgpool_obj10.hdf5"}
    for part, name in names.items():
        with h5py.File(d / name, "w") as f:
            for key, raw in videos.items():
                f.create_dataset(key, data=raw[part])
    with h5py.File(d / "tgif_btup_f_obj10.hdf5", "w") as f:
        for key, raw in videos.items():
            f.create_dataset(f"image_features/{key}", data=raw["objects"])
            f.create_dataset(f"spatial_features/{key}", data=raw["object_boxes"])
    return directory


def masn_expected(raw: dict[str, np.ndarray], t: int, m: int) -> dict[str, np.ndarray]:
    """The official loader's padding (video_pad, video_3d_pad): first t rows, zeros after, masks."""
    n, k = min(len(raw["appearance"]), t), raw["objects"].shape[1]
    out = {}
    for part, x in raw.items():
        full = np.zeros((t, *((m,) if x.ndim == 3 else ()), x.shape[-1]), np.float32)
        if x.ndim == 3:
            full[:n, :k] = x[:n]
        else:
            full[:n] = x[:n]
        out[part] = full
    out["frame_mask"] = np.arange(t) < n
    out["object_mask"] = out["frame_mask"][:, None] & (np.arange(m) < k)
    return out


def test_masn_four_files_keyed_by_question_key(tmp_path):
    root = tgif_frameqa(tmp_path / "tgif", {"g0": [11, 12], "g1": [13], "g2": [14], "g3": [15]})
    raws = {"11": masn_raw(3), "13": masn_raw(7, m=2), "15": masn_raw(5)}  # g2 (key 14) is missing
    write_masn(tmp_path / "masn", raws)
    res = _import("masn", str(tmp_path / "masn"), "--out", str(tmp_path / "out"), "--dataset", "tgif",
                  "--task", "frameqa", "--root", str(root), "--max-frames", "5", "--max-objects", "3", code=3)
    assert "g2: missing:" in res.output and "keys 14, g2" in res.output and "feed zeros" in res.output
    reader = FeatureReader(tmp_path / "out")
    assert reader.outputs["objects"].shape == (5, 3, 8) and reader.ids == ["g0", "g1", "g3"]
    for gif, key in (("g0", "11"), ("g1", "13"), ("g3", "15")):
        want = masn_expected(raws[key], 5, 3)
        got = reader[gif]
        assert set(got) == set(want)
        for name in want:
            assert np.array_equal(got[name], want[name]), (gif, name)
    assert [f["video_id"] for f in reader.failures] == ["g2"]


# ----------------------------------------------------------------------------- MSPAN and HCRN
def write_mspan(directory: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Path]:
    """MSPAN's two directories of ``<key>.npy`` (DataLoader.py: '<dir>/%s.npy' % video_id)."""
    dirs = {r: directory / f"tgif-qa_frameqa_{r}_feat" for r in ("appearance_pool5_16", "motion_16")}
    for d in dirs.values():
        d.mkdir(parents=True)
    for key, (app, mot) in arrays.items():
        np.save(dirs["appearance_pool5_16"] / f"{key}.npy", app)
        np.save(dirs["motion_16"] / f"{key}.npy", mot)
    return {"appearance": dirs["appearance_pool5_16"], "motion": dirs["motion_16"]}


def test_mspan_directories_lowest_key_of_a_gif(tmp_path):
    root = tgif_frameqa(tmp_path / "tgif", {"g0": [21, 20], "g1": [22], "g2": [23]})
    arrays = {k: (_clips(16, 8), _clips(16, 5)) for k in ("20", "21", "22", "23")}
    write_mspan(tmp_path / "mspan", arrays)
    _import("mspan", str(tmp_path / "mspan"), "--out", str(tmp_path / "out"), "--dataset", "tgif", "--task",
            "frameqa", "--root", str(root))
    reader = FeatureReader(tmp_path / "out")
    assert reader.outputs["appearance"].shape == (16, 8) and reader.outputs["motion"].shape == (16, 5)
    for gif, key in (("g0", "20"), ("g1", "22"), ("g2", "23")):
        assert np.array_equal(reader[gif]["appearance"], arrays[key][0])
        assert np.array_equal(reader[gif]["motion"], arrays[key][1])


def test_hcrn_pair_reads_back_what_export_hcrn_wrote(tmp_path):
    root = tgif_frameqa(tmp_path / "tgif", {"g0": [31, 30], "g1": [32], "g2": [33]})
    items = {g: {"appearance_clips": RNG.standard_normal((8, 16, 4)).astype(np.float32),
                 "motion_clips": RNG.standard_normal((8, 3)).astype(np.float32)} for g in ("g0", "g1", "g2")}
    ours = write_feature_dir(tmp_path / "hcrn_feats", "hcrn", items, provenance={"weights": "synthetic"})
    adapter = get_dataset("tgif")(root, task="frameqa")
    export_hcrn(ours, tmp_path / "hcrn", adapter=adapter)
    for name in ("tgif-qa_frameqa_appearance_feat.h5", "tgif-qa_frameqa_motion_feat.h5"):
        with h5py.File(tmp_path / "hcrn" / name, "a") as f:  # HCRN's own files: ids only, rows shuffled
            del f["video_names"]
            order = np.array([2, 0, 3, 1])
            for key in list(f):
                data = f[key][()][order]
                del f[key]
                f.create_dataset(key, data=data)
    _import("hcrn", str(tmp_path / "hcrn"), "--out", str(tmp_path / "out"), "--dataset", "tgif", "--task",
            "frameqa", "--root", str(root))
    back = FeatureReader(tmp_path / "out")
    assert back.ids == ["g0", "g1", "g2"]
    for gif, want in items.items():
        assert all(np.array_equal(back[gif][k], v) for k, v in want.items())


# ----------------------------------------------------------------------------- bad input
def _anet_file(tmp_path: Path, arrays: dict[str, np.ndarray], durations=None) -> tuple[Path, Path]:
    durations = durations or {v: 10.0 for v in arrays}
    ann = _captions(tmp_path / "ann", durations)
    src = tmp_path / "c3d.hdf5"
    with h5py.File(src, "w") as f:
        for v, x in arrays.items():
            if x is not None:
                f.create_group(v).create_dataset("c3d_features", data=x)
    return ann, src


def test_per_video_problems_are_recorded_in_one_line_each(tmp_path):
    nan, inf = _clips(5), _clips(4)
    nan[1, 2] = np.nan
    inf[3, 0] = np.inf
    arrays = {"v_a": _clips(4), "v_b": _clips(4, d=5), "v_c": nan, "v_d": inf, "v_e": _clips(6)[0],
              "v_f": None, "v_g": _clips(3)}
    ann, src = _anet_file(tmp_path, arrays, {v: 10.0 for v in arrays})
    res = _import("activitynet-c3d", f"c3d={src}", "--out", str(tmp_path / "out"), "--dataset",
                  "activitynet-captions", "--root", str(ann), code=3)
    reasons = {f["video_id"]: f["reason"] for f in FeatureReader(tmp_path / "out").failures}
    assert set(reasons) == {"v_b", "v_c", "v_d", "v_e", "v_f"}
    assert reasons["v_b"] == (f"{src}[v_b/c3d_features]: video 'v_b': feature 'clips' has shape (4, 5), "
                              "expected (*, 6)")
    assert reasons["v_c"] == (f"{src}[v_c/c3d_features] (video 'v_c'): 1 of 5 rows of 'clips' hold NaN or "
                              "inf, first row 1")
    assert reasons["v_d"].endswith("1 of 4 rows of 'clips' hold NaN or inf, first row 3")
    assert reasons["v_e"] == (f"{src}[v_e/c3d_features] (video 'v_e'): shape (6,), expected (T, D) with "
                              "T >= 1")
    assert reasons["v_f"] == f"missing: {src} has no 'v_f' (video 'v_f')"
    assert all("\n" not in r for r in reasons.values())
    assert all(f"    {vid}: {reason}\n" in res.output for vid, reason in reasons.items())
    assert FeatureReader(tmp_path / "out").ids == ["v_a", "v_g"]


def test_files_disagreeing_on_a_video_are_recorded(tmp_path):
    root = tgif_frameqa(tmp_path / "tgif", {"g0": [1], "g1": [2], "g2": [3]})
    raws = {"1": masn_raw(4), "2": masn_raw(4), "3": masn_raw(4)}
    raws["2"]["motion"] = raws["2"]["motion"][:3]  # the motion file has 3 frames of key 2, the others 4
    write_masn(tmp_path / "masn", raws)
    with h5py.File(tmp_path / "masn" / "feat_r6_vsync2" / "tgif_i3d_hw7_perclip_avgpool.hdf5", "a") as f:
        del f["3"]  # key 3 only in three of the four files
    _import("masn", str(tmp_path / "masn"), "--out", str(tmp_path / "out"), "--dataset", "tgif", "--task",
            "frameqa", "--root", str(root), "--max-objects", "3", code=3)
    reasons = {f["video_id"]: f["reason"] for f in FeatureReader(tmp_path / "out").failures}
    d = tmp_path / "masn" / "feat_r6_vsync2"
    assert reasons["g1"] == (f"files disagree on 'g1': {d / 'res152_avgpool.hdf5'}[2] has 4 frames, "
                             f"{d / 'tgif_i3d_hw7_perclip_avgpool.hdf5'}[2] has 3")
    assert reasons["g2"].startswith("files disagree on key '3' (video 'g2'): in ")
    assert "tgif_i3d_hw7_perclip_avgpool.hdf5" in reasons["g2"]
    # MSPAN: a key whose appearance file exists without its motion file; a wrong number of rows
    root = tgif_frameqa(tmp_path / "tgif2", {"g0": [1], "g1": [2]})
    dirs = write_mspan(tmp_path / "mspan", {"1": (_clips(15, 4), _clips(15, 4)), "2": (_clips(16, 4),) * 2})
    (dirs["motion"] / "2.npy").unlink()
    _import("mspan", f"appearance={dirs['appearance']}", f"motion={dirs['motion']}", "--out",
            str(tmp_path / "out2"), "--dataset", "tgif", "--task", "frameqa", "--root", str(root),
            "--overwrite", code=1)  # nothing readable at all: a one-line error
    np.save(dirs["appearance"] / "3.npy", _clips(16, 4))
    np.save(dirs["motion"] / "3.npy", _clips(16, 4))
    root = tgif_frameqa(tmp_path / "tgif3", {"g0": [1], "g1": [2], "g2": [3]})
    _import("mspan", f"appearance={dirs['appearance']}", f"motion={dirs['motion']}", "--out",
            str(tmp_path / "out3"), "--dataset", "tgif", "--task", "frameqa", "--root", str(root), code=3)
    reasons = {f["video_id"]: f["reason"] for f in FeatureReader(tmp_path / "out3").failures}
    assert reasons["g0"] == (f"{dirs['appearance'] / '1.npy'} (video 'g0'): 15 rows, expected 16 "
                             "(--num-frames; the official loader asserts it)")
    assert reasons["g1"] == (f"files disagree on key '2' (video 'g1'): {dirs['appearance'] / '2.npy'} exists "
                             f"but {dirs['motion'] / '2.npy'} does not")


def test_a_file_not_of_the_format_stops_in_one_line_with_nothing_half_written(tmp_path):
    arrays = {f"v_{i}": _clips(3) for i in range(6)}
    ann, src = _anet_file(tmp_path, arrays)
    with h5py.File(src, "a") as f:  # v_4 is a bare dataset: the layout of a TACoS file, not ActivityNet's
        del f["v_4"]
        f.create_dataset("v_4", data=_clips(3))
    out = tmp_path / "out"
    res = _import("activitynet-c3d", str(src), "--out", str(out), "--dataset", "activitynet-captions",
                  "--root", str(ann), "--shard-size", "2", code=1)
    line = (f"Error: {src}: 'v_4' is not a group holding 'c3d_features'; expected the ActivityNet challenge "
            "layout: a group per video holding 'c3d_features' (T, D)")
    assert res.output.strip() == line
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["complete"] for s in manifest["shards"]] == [True, True, False]
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000.h5", "shard-00001.h5"]
    res = CliRunner().invoke(cli, ["verify", str(out)])  # what is written verifies; the rest is missing
    assert res.exit_code == 1 and "2 of 3 shard(s) complete and verified" in res.output, res.output
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    res = _import("activitynet-c3d", str(text), "--out", str(tmp_path / "o2"), "--dataset",
                  "activitynet-captions", "--root", str(ann), code=1)
    assert res.output.startswith(f"Error: {text}: not a readable HDF5 file (") and res.output.count("\n") == 1
    assert not (tmp_path / "o2" / "manifest.json").exists()


def test_an_id_that_climbs_out_of_the_source_directory_is_refused(tmp_path):
    ann = _tacos(tmp_path / "ann", {"s1-d1": (100, 25.0), "s2-d2": (100, 25.0), "../s3-d3": (100, 25.0)})
    (tmp_path / "npy").mkdir()
    res = _import("tacos-c3d-npy", str(tmp_path / "npy"), "--out", str(tmp_path / "out"), "--dataset",
                  "tacos", "--root", str(ann), code=1)
    assert "'../s3-d3'" in res.output and "outside" in res.output and res.output.count("\n") == 1


# ----------------------------------------------------------------------------- resume
def test_an_interrupted_import_resumes_and_keeps_its_shards(tmp_path, monkeypatch):
    arrays = {f"v_{i}": _clips(3 + i) for i in range(6)}
    ann, src = _anet_file(tmp_path, arrays)
    adapter = get_dataset("activitynet-captions")(ann)
    job = ImportJob(out_dir=tmp_path / "out", format="activitynet-c3d", sources={"c3d": src}, adapter=adapter,
                    source={"dataset": "activitynet-captions"}, shard_size=2)
    real, calls = ShardWriter.write, []

    def crash_on_second(self, *args, **kwargs):
        calls.append(self.path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ShardWriter, "write", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_import(job)
    first = (tmp_path / "out" / "shards" / "shard-00000.h5").stat().st_mtime_ns
    monkeypatch.setattr(ShardWriter, "write", real)
    summary = run_import(job)
    assert summary.skipped_shards == 1 and summary.done_this_run == 4 and summary.done == 6
    assert (tmp_path / "out" / "shards" / "shard-00000.h5").stat().st_mtime_ns == first
    reader = FeatureReader(tmp_path / "out")
    assert all(np.array_equal(reader[v]["clips"], x) for v, x in arrays.items())
    again = run_import(job)  # finished: nothing to do, the source hash comes from the manifest's cache
    assert again.done_this_run == 0 and again.skipped_shards == 3
    with h5py.File(src, "a") as f:  # the released file changed: its sha256 differs, resuming is refused
        f.create_group("v_new").create_dataset("c3d_features", data=_clips(2))
    with pytest.raises(ResumeMismatchError, match=r"differently:\n  provenance.imported.files.c3d.bytes"):
        run_import(job)
