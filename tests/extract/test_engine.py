"""The extraction engine on real video files, with a small model-free feature set (in-process backend).

``PixelStats`` decodes every frame of a video in chunks of 4 (real decord decoding, real failures) and its
"model" is the per-frame channel mean, so the expected features can be computed independently. The Ray
backend with the real backbones is tested in test_extract_cli.py.
"""

from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from extract import engine as engine_mod
from extract.engine import (
    EngineConfig,
    ExtractionJob,
    OutputInUseError,
    ResumeMismatchError,
    run_extraction,
)
from extract.featuredir import rebuild_manifest
from extract.manifest import MANIFEST_NAME, ManifestError, load_manifest, verify
from extract.reader import FeatureReader
from extract.shards import SHARD_DIR, ShardWriter
from extract.video import Video
from pipelines.datasets.base import VideoRef
from pipelines.paths import UnsafePathError
from pipelines.videowrite import write_video

LOCAL = EngineConfig(backend="local", progress=False)


@dataclass(frozen=True)
class StatsOptions:
    chunk: int = 4
    size: int = 32
    scale: float = 1.0
    batch_frames: int = 8


class PixelStats:
    """Per-frame RGB means (ragged ``frames`` (T, 3)) and their average over the video (``mean`` (3,))."""

    name = "pixelstats"

    def __init__(self, options: StatsOptions, log: dict | None = None) -> None:
        self.options = options
        self.outputs = {
            "frames": {"shape": (None, 3), "dtype": "float32"},
            "mean": {"shape": (3,), "dtype": "float32"},
        }
        self.log = log if log is not None else {}

    def decode(self, video_id, path):
        with Video(path, size=self.options.size) as video:
            t = video.info.num_frames
            for start in range(0, t, self.options.chunk):
                idx = np.arange(start, min(t, start + self.options.chunk))
                self.log["alive"] = self.log.get("alive", 0) + 1
                self.log["max_alive"] = max(self.log.get("max_alive", 0), self.log["alive"])
                yield {"frames": video.read(idx), "video": np.array([video_id])}

    def infer(self, chunks):
        self.log.setdefault("batches", []).append([str(c["video"][0]) for c in chunks])
        out = []
        for chunk in chunks:
            self.log["alive"] -= 1
            if str(chunk["video"][0]).endswith("poison"):
                raise RuntimeError("model rejected this input")
            out.append(
                {"means": chunk["frames"].reshape(len(chunk["frames"]), -1, 3).mean(1) * self.options.scale}
            )
        return out

    def finalize(self, partials):
        frames = np.concatenate([p["means"] for p in partials]).astype(np.float32)
        return {"frames": frames, "mean": frames.mean(0)}

    def provenance(self):
        return {
            "backbone": "pixel-mean",
            "weights_sha256": "none",
            "sampler": {"name": "all", "chunk": 4},
            "size": self.options.size,
        }


LOGS: dict = {}


def build_stats(name: str, options: StatsOptions) -> PixelStats:
    return PixelStats(options, LOGS.setdefault("current", {}))


def expected_means(path: Path, size: int = 32) -> np.ndarray:
    with Video(path, size=size) as video:
        frames = video.read(np.arange(video.info.num_frames))
    return frames.reshape(len(frames), -1, 3).mean(1).astype(np.float32)


def refs_under(root: Path) -> list[VideoRef]:
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".mp4", ".gif", ".avi"):
            out.append(VideoRef(path.relative_to(root).with_suffix("").as_posix(), path))
    return out


@pytest.fixture()
def mixed_root(tmp_path, video_tree, bad_videos) -> Path:
    """Three good videos (two named x.mp4 in different folders) plus corrupt, empty and not-a-video files."""
    root = tmp_path / "root"
    for path in video_tree.rglob("*"):
        if path.is_file():
            dest = root / path.relative_to(video_tree)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(path.read_bytes())
    (root / "bad").mkdir()
    for name in ("corrupt", "empty", "not_video"):
        src = bad_videos[name]
        (root / "bad" / (name + src.suffix)).write_bytes(src.read_bytes())
    return root


def job(root: Path, out: Path, refs=None, **kw) -> ExtractionJob:
    options = kw.pop("options", StatsOptions())
    return ExtractionJob(
        out_dir=out,
        feature_set="pixelstats",
        options=options,
        videos=refs if refs is not None else refs_under(root),
        root=root,
        source={"dataset": "test", "root": str(root)},
        builder=build_stats,
        **kw,
    )


def read_all(out: Path) -> dict[str, dict[str, np.ndarray]]:
    reader = FeatureReader(out)
    return {vid: reader[vid] for vid in reader.ids}


def test_extracts_values_records_failures_and_never_writes_zeros(mixed_root, tmp_path):
    LOGS["current"] = {}
    out = tmp_path / "out"
    summary = run_extraction(job(mixed_root, out, shard_size=2), LOCAL)

    assert summary.exit_code == 3
    assert (summary.done, summary.failed, summary.planned) == (3, 3, 6)
    assert "3 video(s) FAILED" in summary.format()
    reader = FeatureReader(out)
    # a/x and b/x have the same file name in different folders and keep distinct features
    assert reader.ids == ["a/x", "b/x", "c/sub/y"]
    for vid, rel in [("a/x", "a/x.mp4"), ("b/x", "b/x.mp4"), ("c/sub/y", "c/sub/y.gif")]:
        want = expected_means(mixed_root / rel)
        np.testing.assert_allclose(reader[vid]["frames"], want, rtol=1e-6)
        np.testing.assert_allclose(reader[vid]["mean"], want.mean(0), rtol=1e-6)
    assert not np.allclose(reader["a/x"]["frames"], reader["b/x"]["frames"])

    manifest = load_manifest(out)
    failures = {f["video_id"]: f for f in manifest["failures"]}
    assert set(failures) == {"bad/corrupt", "bad/empty", "bad/notes"} or set(failures) == {
        "bad/corrupt",
        "bad/empty",
        "bad/not_video",
    }
    assert "empty" in failures["bad/empty"]["reason"]
    assert all(f["path"] and f["reason"] for f in failures.values())
    # failed videos are absent from the shards (never zero rows); each shard holds only its successes
    for entry in manifest["shards"]:
        with h5py.File(out / SHARD_DIR / entry["name"], "r") as f:
            ids = [s.decode() for s in f["ids"][()]]
            assert ids == entry["ids"]
            assert f["frames__offsets"][-1] == len(f["frames"])
            assert f["mean"].shape == (len(ids), 3)
            assert json.loads(f.attrs["planned"]) == entry["videos"]
            assert set(ids).isdisjoint(failures)
    # deterministic plan: sorted ids cut into runs of shard_size
    planned = [vid for entry in manifest["shards"] for vid in entry["videos"]]
    assert planned == sorted(planned) and [len(e["videos"]) for e in manifest["shards"]] == [2, 2, 2]
    with pytest.raises(KeyError, match="bad/empty.*extraction failed"):
        reader["bad/empty"]


def test_known_missing_videos_are_failures_without_decoding(mixed_root, tmp_path):
    refs = refs_under(mixed_root) + [VideoRef("gone/v1", mixed_root / "gone" / "v1.mp4")]
    summary = run_extraction(
        job(mixed_root, tmp_path / "out", refs=refs, missing={"gone/v1": "missing"}), LOCAL
    )
    failures = {f["video_id"]: f["reason"] for f in load_manifest(tmp_path / "out")["failures"]}
    assert failures["gone/v1"] == "missing"
    assert summary.failed == 4


def test_runs_are_deterministic_and_resume_equals_uninterrupted(mixed_root, tmp_path, monkeypatch):
    ref_out = tmp_path / "ref"
    run_extraction(job(mixed_root, ref_out, shard_size=2), LOCAL)
    reference = read_all(ref_out)

    # interrupt after the second shard file is written, before its manifest update
    out = tmp_path / "out"
    real_write = ShardWriter.write
    calls = []

    def crashing_write(self, *args, **kwargs):
        path = real_write(self, *args, **kwargs)
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(ShardWriter, "write", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        run_extraction(job(mixed_root, out, shard_size=2), LOCAL)
    monkeypatch.setattr(ShardWriter, "write", real_write)
    manifest = load_manifest(out)
    assert sum(s["complete"] for s in manifest["shards"]) == 1  # the 2nd file exists, the manifest lags
    done_files = {p.name: p.stat().st_mtime_ns for p in (out / SHARD_DIR).glob("*.h5")}
    assert len(done_files) == 2

    summary = run_extraction(job(mixed_root, out, shard_size=2), LOCAL)
    assert summary.skipped_shards == 2 and summary.done_this_run + summary.failed_this_run == 2
    for name, mtime in done_files.items():  # finished shards were not redone
        assert (out / SHARD_DIR / name).stat().st_mtime_ns == mtime
    resumed = read_all(out)
    assert list(resumed) == list(reference)
    for vid in reference:
        for key in reference[vid]:
            np.testing.assert_array_equal(resumed[vid][key], reference[vid][key])
    assert load_manifest(out)["failures"] == load_manifest(ref_out)["failures"]

    # a re-run of a complete output does nothing and reports the same failures
    again = run_extraction(job(mixed_root, out, shard_size=2), LOCAL)
    assert again.done_this_run == 0 and again.failed == 3 and again.exit_code == 3


def test_resume_with_other_options_is_refused_then_overwrite_works(mixed_root, tmp_path):
    out = tmp_path / "out"
    run_extraction(job(mixed_root, out), LOCAL)
    with pytest.raises(ResumeMismatchError, match=r"(?s)options\.size: was 32, now 48.*--overwrite"):
        run_extraction(job(mixed_root, out, options=StatsOptions(size=48)), LOCAL)
    with pytest.raises(ResumeMismatchError, match="list of videos"):
        run_extraction(job(mixed_root, out, refs=refs_under(mixed_root)[:2]), LOCAL)
    # every option counts, the batch size included (it may change float rounding)
    with pytest.raises(ResumeMismatchError, match="batch_frames"):
        run_extraction(job(mixed_root, out, options=StatsOptions(batch_frames=4)), LOCAL)
    run_extraction(job(mixed_root, out, options=StatsOptions(size=48), overwrite=True), LOCAL)
    assert load_manifest(out)["options"]["size"] == 48
    assert FeatureReader(out)["a/x"]["frames"].shape[1] == 3


def test_no_partial_shard_under_its_final_name(mixed_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_write = ShardWriter.write

    def failing_write(self, ids, items, failures=(), **kwargs):
        def boom(tmp):
            assert tmp.exists() and tmp.name.startswith(".tmp-")
            raise OSError("disk full")

        return real_write(self, ids, items, failures, before_rename=boom)

    monkeypatch.setattr(ShardWriter, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        run_extraction(job(mixed_root, out, shard_size=2), LOCAL)
    assert list((out / SHARD_DIR).iterdir()) == []
    assert not any(s["complete"] for s in load_manifest(out)["shards"])


def test_ids_and_paths_escaping_the_root_are_refused(mixed_root, tmp_path):
    outside = tmp_path / "outside.mp4"
    outside.write_bytes((mixed_root / "a" / "x.mp4").read_bytes())
    with pytest.raises(UnsafePathError, match=r"\.\./evil"):
        run_extraction(
            job(mixed_root, tmp_path / "o1", refs=[VideoRef("../evil", mixed_root / "a/x.mp4")]), LOCAL
        )
    with pytest.raises(UnsafePathError, match="outside the dataset root"):
        run_extraction(job(mixed_root, tmp_path / "o2", refs=[VideoRef("fine", outside)]), LOCAL)
    inside = mixed_root / "a" / "x.mp4"
    with pytest.raises(ValueError, match="listed twice"):
        run_extraction(
            job(mixed_root, tmp_path / "o3", refs=[VideoRef("a", inside), VideoRef("a", inside)]), LOCAL
        )


def test_a_failing_batch_is_split_so_only_the_bad_video_fails(tmp_path, video_tree):
    root = tmp_path / "root"
    root.mkdir()
    frames = np.zeros((6, 32, 32, 3), np.uint8)
    for name in ("a1", "b_poison", "c1"):
        write_video(root / f"{name}.mp4", frames + 40, fps=10.0)
    LOGS["current"] = {}
    summary = run_extraction(job(root, tmp_path / "out", options=StatsOptions(batch_frames=64)), LOCAL)
    assert summary.done == 2 and summary.failed == 1
    failure = load_manifest(tmp_path / "out")["failures"][0]
    assert failure["video_id"] == "b_poison" and "model rejected" in failure["reason"]
    batches = LOGS["current"]["batches"]
    assert any(len(set(b)) > 1 for b in batches)  # chunks of several videos were batched together


def test_decoded_chunks_in_memory_are_bounded(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(12):
        write_video(root / f"v{i:02d}.mp4", np.full((8, 32, 32, 3), i * 10, np.uint8), fps=10.0)
    LOGS["current"] = {}
    config = EngineConfig(backend="local", progress=False, max_buffered_chunks=3, max_active_decodes=2)
    summary = run_extraction(
        job(root, tmp_path / "out", options=StatsOptions(chunk=2, batch_frames=100)), config
    )
    assert summary.done == 12
    # 48 chunks were decoded, never more than the configured bound alive at once
    assert LOGS["current"]["max_alive"] <= 3
    assert summary.frames == 12 * 8


def test_a_second_writer_on_the_same_output_is_refused(mixed_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / engine_mod.LOCK_NAME, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(OutputInUseError, match="another vqa-extract"):
            run_extraction(job(mixed_root, out), LOCAL)
    assert not (out / MANIFEST_NAME).exists()


def test_a_finished_output_is_rerun_without_starting_workers(mixed_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = run_extraction(job(mixed_root, out), LOCAL)
    before = read_all(out)

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start when every shard is complete")

    from extract.engine import ray_backend

    monkeypatch.setattr(ray_backend, "RayBackend", no_ray)
    again = run_extraction(job(mixed_root, out), EngineConfig(backend="ray", progress=False))
    assert again.done_this_run == 0 and again.failed_this_run == 0
    assert (again.done, again.failed) == (first.done, first.failed)
    assert again.backend.startswith("none")
    after = read_all(out)
    assert after.keys() == before.keys()
    for vid in before:
        np.testing.assert_array_equal(after[vid]["frames"], before[vid]["frames"])


def _flip_byte(path: Path, dataset: str) -> None:
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_offset()  # contiguous data: flip a byte of the features themselves
    with open(path, "r+b") as fh:
        fh.seek(offset + 1)
        byte = fh.read(1)
        fh.seek(offset + 1)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_swapped_and_bit_flipped_shards_are_detected_and_extracted_again(mixed_root, tmp_path):
    out = tmp_path / "out"
    run_extraction(job(mixed_root, out, shard_size=2), LOCAL)
    reference = read_all(out)
    checked, problems = verify(out)
    assert (checked, problems) == (3, [])
    shards = out / SHARD_DIR
    # shard 0 holds a/x, b/x; shard 2 holds c/sub/y: swap their files, then damage the features of shard 1
    a, c = shards / "shard-00000.h5", shards / "shard-00002.h5"
    a.rename(shards / "tmp"), c.rename(a), (shards / "tmp").rename(c)
    with pytest.raises(ManifestError, match="shard-00000.h5: holds the videos of another shard"):
        FeatureReader(out)["a/x"]  # the reader checks a shard's ids whenever it opens it
    _flip_byte(c, "frames")  # now at shard 2's name: a/x's and b/x's frames
    _, problems = verify(out)
    assert sorted(p.path.name for p in problems) == ["shard-00000.h5", "shard-00002.h5"]

    summary = run_extraction(job(mixed_root, out, shard_size=2), LOCAL)
    assert sorted(p.path.name for p in summary.reextracted) == ["shard-00000.h5", "shard-00002.h5"]
    assert "DAMAGED shard extracted again" in summary.format()
    assert summary.done_this_run == 3 and summary.skipped_shards == 1
    assert verify(out)[1] == []
    repaired = read_all(out)
    for vid in reference:
        for key in reference[vid]:
            np.testing.assert_array_equal(repaired[vid][key], reference[vid][key])

    # a flipped bit that keeps size and ids is caught by the checksum on the next run (the file changed)
    _flip_byte(shards / "shard-00002.h5", "mean")
    assert "checksum" in verify(out)[1][0].reason
    summary = run_extraction(job(mixed_root, out, shard_size=2), LOCAL)
    assert [p.path.name for p in summary.reextracted] == ["shard-00002.h5"]
    assert "checksum" in summary.reextracted[0].reason


def test_a_lost_manifest_is_rebuilt_from_the_shards(mixed_root, tmp_path):
    out = tmp_path / "out"
    run_extraction(job(mixed_root, out, shard_size=2), LOCAL)
    original = load_manifest(out)
    (out / MANIFEST_NAME).unlink()
    with pytest.raises(ManifestError, match="vqa-extract repair"):
        FeatureReader(out)

    def same(m):
        return {k: m[k] for k in ("feature_set", "outputs", "options", "source", "shard_size", "shards",
                                  "failures", "counts", "status")}

    rebuilt = rebuild_manifest(out)
    assert same(rebuilt) == same(original) and rebuilt["provenance"] == original["provenance"]
    assert list(FeatureReader(out).ids) == ["a/x", "b/x", "c/sub/y"]

    # a re-run of the extraction command rebuilds it too, from its plan, without extracting anything
    (out / MANIFEST_NAME).unlink()
    summary = run_extraction(job(mixed_root, out, shard_size=2), LOCAL)
    assert summary.rebuilt_manifest and summary.done_this_run == 0 and summary.failed_this_run == 0
    assert same(load_manifest(out)) == same(original)

    # a missing shard of the plan cannot be rebuilt from the others: the message says to re-run
    (out / MANIFEST_NAME).unlink()
    (out / SHARD_DIR / "shard-00001.h5").unlink()
    with pytest.raises(ManifestError, match="shard-00001.h5 of the plan were never written; re-run"):
        rebuild_manifest(out)
