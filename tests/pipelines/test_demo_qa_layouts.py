"""The demo's How2QA and ActivityNet-QA layouts (SiaSamRea's demo): read by the adapters, and every
answer follows from the decoded pixels (How2QA: from the pixels inside the question's segment)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (torch must be loaded before decord: see extract/video.py)

import decord  # isort: skip

from pipelines.datasets import get_dataset
from pipelines.demo import PALETTE, QA_SIZE, SHAPES, generate_demo, shape_mask

_NAMES = list(PALETTE)
_VALUES = np.array([PALETTE[c] for c in _NAMES], float)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "out"
    return out, generate_demo(out, seed=0, scale=0.15)


def _frames(path: Path) -> np.ndarray:
    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy(), float(vr.get_avg_fps())


def _colour(frame: np.ndarray) -> str | None:
    """Nearest palette colour to the median saturated pixel, None when there is no object."""
    f = frame.reshape(-1, 3).astype(float)
    sat = f[f.max(-1) - f.min(-1) > 80]
    if len(sat) < 20:
        return None
    return _NAMES[int(np.argmin(np.linalg.norm(_VALUES - np.median(sat, 0), axis=1)))]


def _shape(frame: np.ndarray) -> str:
    """The shape whose mask (drawn at the object's centre) overlaps the saturated pixels best (IoU)."""
    f = frame.astype(float)
    mask = f.max(-1) - f.min(-1) > 80
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    iou = {s: (mask & (m := shape_mask(s, cx, cy, QA_SIZE))).sum() / (mask | m).sum() for s in SHAPES}
    return max(iou, key=iou.get)


def test_adapters_read_both_layouts(demo):
    out, summary = demo
    for name in ("how2qa", "activitynet-qa"):
        adapter = get_dataset(name)(out / name)
        assert not adapter.missing_videos()
        for split in ("train", "val", "test"):
            assert len(adapter.records(split)) == summary["datasets"][name]["questions"][split] > 0
    recs = get_dataset("how2qa")(out / "how2qa").records("train")
    assert all(r.segment is not None and len(r.candidates) == 4 for r in recs)
    anet = get_dataset("activitynet-qa")(out / "activitynet-qa")
    assert {r.qtype for r in anet.records("test")} == {"color"}


def test_how2qa_answers_follow_from_the_segment(demo):
    out, _ = demo
    adapter = get_dataset("how2qa")(out / "how2qa")
    frames = {}
    for split in ("train", "val", "test"):
        for r in adapter.records(split):
            if r.video_id not in frames:
                frames[r.video_id] = _frames(out / "how2qa" / "videos" / f"{r.video_id}.mp4")
            video, fps = frames[r.video_id]
            t = np.arange(len(video)) / fps
            inside = (t >= r.segment[0] - 1e-6) & (t <= r.segment[1] + 1e-6)
            kind = "colour" if "colour" in r.question else "shape"
            read = _colour if kind == "colour" else _shape
            seen = Counter(read(f) for f in video[inside])
            if kind == "colour":
                assert set(seen) == {r.candidates[r.answer]}, (r.qid, seen)
            else:  # read back from lossy mp4 frames: a clear majority
                assert seen[r.candidates[r.answer]] >= 0.75 * inside.sum(), (r.qid, seen)
            if kind == "colour":  # two distractors are the colours of the other scenes
                outside = {read(f) for f in video[~inside]}
                assert len(outside & set(r.candidates)) == 2, (r.qid, outside)


def test_how2qa_subtitles_name_the_shape_of_their_scene_only(demo):
    out, summary = demo
    assert (out / "how2qa" / "how2_subtitles.jsonl").is_file()
    assert "subtitles" in summary["datasets"]["how2qa"]
    recs = [r for s in ("train", "val", "test") for r in get_dataset("how2qa")(out / "how2qa").records(s)]
    with_text = [r for r in recs if r.subtitle]
    assert 0.6 * len(recs) <= len(with_text) < len(recs)  # most scenes narrated, some not
    for r in with_text:
        assert sum(s in r.subtitle for s in SHAPES) == 1  # one narration line: its own scene's
        assert not any(c in r.subtitle for c in PALETTE)  # never the colour: they do not give the answer


def test_activitynet_qa_answers_follow_from_the_frames(demo):
    out, _ = demo
    adapter = get_dataset("activitynet-qa")(out / "activitynet-qa")
    for split in ("train", "val", "test"):
        for r in adapter.records(split):
            video, _ = _frames(out / "activitynet-qa" / "videos" / f"{r.video_id}.mp4")
            n = len(video)
            visible = [f for f in video if _colour(f) is not None]
            assert len(visible) >= n // 2
            mid = video[n // 2]  # the object always covers the middle of the video
            want = _colour(mid) if r.qtype == "color" else _shape(mid)
            assert want == r.answer, r.qid


def test_answers_are_not_in_the_question_text(demo):
    out, _ = demo
    rows = json.loads((out / "activitynet-qa" / "train_a.json").read_text())
    qs = {q["question_id"]: q["question"]
          for q in json.loads((out / "activitynet-qa" / "train_q.json").read_text())}
    assert not any(a["answer"] in qs[a["question_id"]] for a in rows)
    lines = [x for s in ("train", "val", "test")
             for x in (out / "how2qa" / f"how2qa_{s}.jsonl").read_text().splitlines()]
    counts = np.bincount([json.loads(x)["answer_idx"] for x in lines], minlength=4)
    assert counts.max() - counts.min() <= 1  # the right position is balanced over the whole dataset
