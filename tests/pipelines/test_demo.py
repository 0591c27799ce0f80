"""The demo generator writes the official layouts, deterministically, and every answer follows from
the pixels of the decoded videos (read back with decord, as the extractor does)."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, deque
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (torch must be loaded before decord: see extract/video.py)

import decord  # isort: skip

from pipelines.demo import (
    ACTIONS,
    ANET_ACTIONS,
    ANET_JITTER,
    FLASH_RGB,
    LOCATIONS,
    NUMBER_WORDS,
    PALETTE,
    SHAPES,
    TGIF_COLUMNS,
    generate_demo,
)

SCALE = 0.1
TASKS = ("action", "transition", "count", "frameqa")
_COLOUR_NAMES = list(PALETTE)
_COLOUR_VALUES = np.array([PALETTE[c] for c in _COLOUR_NAMES], float)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "out"
    return out, generate_demo(out, seed=0, scale=SCALE)


def _read_tsv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as fh:
        lines = list(csv.reader(fh, delimiter="\t"))
    header = lines[0]
    assert all(len(fields) == len(header) for fields in lines[1:]), path
    return header, [dict(zip(header, fields, strict=True)) for fields in lines[1:]]


def _rows(out: Path, task: str, split: str | None = None) -> list[dict[str, str]]:
    splits = (split,) if split else ("Train", "Test")
    return [r for s in splits for r in _read_tsv(out / "tgif" / "dataset" / f"{s}_{task}_question.csv")[1]]


def _decode(path: Path) -> np.ndarray:
    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def _object_pixels(frame: np.ndarray, colour: str | None = None, tol: float = 60.0) -> np.ndarray:
    """(H, W) mask of object pixels: saturated colour (or one named colour) or white."""
    f = frame.astype(float)
    if colour is not None:
        return np.linalg.norm(f - np.array(PALETTE[colour], float), axis=-1) < tol
    saturated = f.max(-1) - f.min(-1) > 80
    return saturated | (f.min(-1) > 225)


def _white(frame: np.ndarray) -> np.ndarray:
    return frame.astype(int).min(-1) > 225


def _colour_of(frame: np.ndarray) -> str:
    """Nearest palette colour to the median saturated pixel."""
    f = frame.reshape(-1, 3).astype(float)
    sat = f[f.max(-1) - f.min(-1) > 80]
    assert len(sat) > 20, "no coloured object in the frame"
    return _COLOUR_NAMES[int(np.argmin(np.linalg.norm(_COLOUR_VALUES - np.median(sat, 0), axis=1)))]


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    assert len(xs), "empty mask"
    return np.array([xs.mean(), ys.mean()])


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components (boolean masks) of ``mask``."""
    seen, comps = np.zeros_like(mask), []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        comp, todo = np.zeros_like(mask), deque([(y0, x0)])
        seen[y0, x0] = True
        while todo:
            y, x = todo.popleft()
            comp[y, x] = True
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    todo.append((ny, nx))
        comps.append(comp)
    return comps


def _shape_of(mask: np.ndarray) -> str:
    """Classify a single object's mask by how much of its bounding box it fills and by its bottom row."""
    ys, xs = np.nonzero(mask)
    box = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    fill = box.mean()
    bottom = box[-1].mean()
    if fill > 0.93:
        return "square"
    if bottom > 0.75:
        return "triangle"
    return "circle" if fill > 0.68 else "cross"


def _runs(flags: np.ndarray) -> int:
    """Number of runs of consecutive True values."""
    flags = np.asarray(flags, bool)
    return int(flags[0]) + int(np.sum(flags[1:] & ~flags[:-1]))


# --------------------------------------------------------------------------------------------------
# Layouts


def test_tgif_csvs_have_the_official_headers_and_rows(demo):
    out, summary = demo
    for task in TASKS:
        for split in ("Train", "Test"):
            header, rows = _read_tsv(out / "tgif" / "dataset" / f"{split}_{task}_question.csv")
            assert tuple(header) == TGIF_COLUMNS[task]
            assert rows, (task, split)
            assert len({r["key"] for r in rows}) == len(rows)
            for r in rows:
                assert (out / "tgif" / "gifs" / f"{r['gif_name']}.gif").is_file()
                if task in ("action", "transition"):
                    assert 0 <= int(r["answer"]) <= 4
                elif task == "count":
                    assert 1 <= int(r["answer"]) <= 5
                else:
                    assert r["type"] in ("0", "1", "2", "3") and r["answer"] and r["description"]
            assert summary["datasets"]["tgif"]["tasks"][task][split.lower()] == len(rows)
    # Keys are unique across Train and Test of a task too.
    for task in TASKS:
        keys = [r["key"] for r in _rows(out, task)]
        assert len(set(keys)) == len(keys)


def test_msrvtt_and_activitynet_json_structure(demo):
    out, summary = demo
    ids = []
    for split in ("train", "val", "test"):
        items = json.loads((out / "msrvtt-qa" / f"{split}_qa.json").read_text())
        assert isinstance(items, list) and items
        for item in items:
            assert set(item) == {"id", "video_id", "question", "answer", "category_id"}
            assert isinstance(item["video_id"], int) and isinstance(item["id"], int)
            assert (out / "msrvtt-qa" / "video" / f"video{item['video_id']}.mp4").is_file()
            ids.append(item["id"])
        assert summary["datasets"]["msrvtt-qa"]["questions"][split] == len(items)
    assert len(set(ids)) == len(ids)

    anet = {s: json.loads((out / "activitynet-captions" / f"{s}.json").read_text())
            for s in ("train", "val_1", "val_2")}
    assert set(anet["val_1"]) == set(anet["val_2"]) and not set(anet["train"]) & set(anet["val_1"])
    for entries in anet.values():
        assert entries
        for vid, e in entries.items():
            assert re.fullmatch(r"v_[A-Za-z0-9_-]{11}", vid)
            assert (out / "activitynet-captions" / "videos" / f"{vid}.mp4").is_file()
            assert set(e) == {"duration", "timestamps", "sentences"}
            assert len(e["timestamps"]) == len(e["sentences"]) >= 1
            assert len(set(e["sentences"])) == len(e["sentences"])
            for s, t in e["timestamps"]:
                assert 0 <= s < t <= e["duration"]


def test_demo_json_records_dependencies_and_chance(demo):
    out, summary = demo
    assert json.loads((out / "DEMO.json").read_text()) == summary
    assert summary["seed"] == 0 and summary["scale"] == SCALE and summary["complete"] is True
    tasks = summary["datasets"]["tgif"]["tasks"]
    assert tasks["action"]["chance"]["accuracy"] == 0.2 and tasks["transition"]["chance"]["accuracy"] == 0.2
    assert tasks["count"]["chance"]["mse_train_mean"] > 0
    assert {t["chance_accuracy"] for t in tasks["frameqa"]["types"].values()} == {0.25, round(1 / 6, 4)}
    for task in TASKS:
        assert tasks[task]["depends_on"]
    assert summary["datasets"]["activitynet-captions"]["depends_on"]
    assert sum(summary["bytes"].values()) < 2_000_000


# --------------------------------------------------------------------------------------------------
# Nothing can be answered from the text


def test_answers_cannot_be_read_from_question_or_candidates(demo):
    out, _ = demo
    action = _rows(out, "action")
    for r in action:
        assert sorted(r[f"a{i}"] for i in range(1, 6)) == sorted(ACTIONS)
    transition = _rows(out, "transition")
    for r in transition:
        start = re.match(r"what color does the (\w+) \w+ turn into\?", r["question"]).group(1)
        assert sorted(r[f"a{i}"] for i in range(1, 6)) == sorted(c for c in PALETTE if c != start)
    for rows in (action, transition):  # correct indices balanced (train and test together)
        counts = Counter(int(r["answer"]) for r in rows)
        assert set(counts) == set(range(5)) and max(counts.values()) - min(counts.values()) <= 1
    for r in _rows(out, "frameqa"):
        assert r["answer"] not in r["question"].replace("?", "").split()


# --------------------------------------------------------------------------------------------------
# Answers follow from the decoded videos


def test_tgif_action_transition_count_follow_from_frames(demo):
    out, _ = demo
    action = {r["gif_name"]: r for r in _rows(out, "action")}
    transition = {r["gif_name"]: r for r in _rows(out, "transition")}
    count = {r["gif_name"]: r for r in _rows(out, "count")}
    assert set(action) == set(transition) == set(count)
    for gif, r in action.items():
        frames = _decode(out / "tgif" / "gifs" / f"{gif}.gif")
        assert len(frames) == 32  # no frame merged away
        masks = [_object_pixels(f) for f in frames]
        (x0, y0), (x1, y1) = _centroid(masks[0]), _centroid(masks[-1])
        dx, dy, growth = x1 - x0, y1 - y0, masks[-1].sum() / masks[0].sum()
        if growth > 3:
            seen = "grow bigger"
            assert abs(dx) < 3 and abs(dy) < 8
        else:
            assert 0.8 < growth < 1.25 and max(abs(dx), abs(dy)) > 25
            if abs(dx) > abs(dy):
                seen = "move to the right" if dx > 0 else "move to the left"
            else:
                seen = "move down" if dy > 0 else "move up"
        assert r[f"a{int(r['answer']) + 1}"] == seen, gif

        t = transition[gif]
        start = re.match(r"what color does the (\w+)", t["question"]).group(1)
        assert _colour_of(frames[0]) == start
        assert _colour_of(frames[-1]) == t[f"a{int(t['answer']) + 1}"] != start

        # A flash turns the whole object white (exactly the palette's white, GIFs are lossless).
        white = np.array([(f == FLASH_RGB).all(-1).sum() > 20 for f in frames])
        assert not white[:2].any() and not white[-2:].any()
        assert _runs(white) == int(count[gif]["answer"]), gif


def test_tgif_frameqa_follows_from_frames(demo):
    out, _ = demo
    seen_types = set()
    for r in _rows(out, "frameqa"):
        frames = _decode(out / "tgif" / "gifs" / f"{r['gif_name']}.gif")
        assert len(frames) == 16
        frame = frames[len(frames) // 2]
        mask = _object_pixels(frame)
        qtype = int(r["type"])
        seen_types.add(qtype)
        if qtype == 2:  # colour: the object's pixels are exactly that palette colour
            assert r["answer"] in PALETTE
            assert (frame[mask] == PALETTE[r["answer"]]).all()
        elif qtype == 0:
            assert r["answer"] in SHAPES and _shape_of(mask) == r["answer"]
        elif qtype == 3:
            cx, cy = _centroid(mask) - frame.shape[0] / 2
            where = ("right" if cx > 0 else "left") if abs(cx) > abs(cy) else ("bottom" if cy > 0 else "top")
            assert r["answer"] in LOCATIONS and where == r["answer"]
        else:
            assert NUMBER_WORDS.index(r["answer"]) + 1 == len(_components(mask))
    assert seen_types == {0, 1, 2, 3}


def test_msrvtt_answers_follow_from_frames(demo):
    out, _ = demo
    by_video: dict[int, list[dict]] = {}
    for split in ("train", "val", "test"):
        for item in json.loads((out / "msrvtt-qa" / f"{split}_qa.json").read_text()):
            by_video.setdefault(item["video_id"], []).append(item)
    for vid, items in by_video.items():
        frames = _decode(out / "msrvtt-qa" / "video" / f"video{vid}.mp4")
        assert len(frames) == 32
        answers = {item["question"].split()[0] + " " + item["question"].split()[1]: item["answer"]
                   for item in items}
        colour = answers["what color"]
        assert _colour_of(frames[0]) == colour and answers["what is"] in SHAPES
        masks = [_object_pixels(f, colour) for f in frames]
        (x0, y0), (x1, y1) = _centroid(masks[0]), _centroid(masks[-1])
        if abs(x1 - x0) > abs(y1 - y0):
            moved = "right" if x1 > x0 else "left"
        else:
            moved = "down" if y1 > y0 else "up"
        assert max(abs(x1 - x0), abs(y1 - y0)) > 25 and answers["where does"] == moved
        white = np.array([_white(f).sum() > 20 for f in frames])
        assert NUMBER_WORDS.index(answers["how many"]) + 1 == _runs(white)


_KIND_OF = {phrase: kind for kind, phrases in ANET_ACTIONS.items() for phrase in phrases}


def _anet(out: Path) -> dict[str, dict[str, dict]]:
    return {s: json.loads((out / "activitynet-captions" / f"{s}.json").read_text())
            for s in ("train", "val_1", "val_2")}


def test_activitynet_val_2_is_an_independent_second_annotation(demo):
    """val_2 never repeats a (video, sentence) of val_1 or train: selecting on val_1 never sees a test query.

    It re-words a subset of val_1's events (same object, same kind) with boundaries within ANET_JITTER frames.
    """
    out, _ = demo
    anet = _anet(out)
    seen = {(vid, sent) for split in ("train", "val_1") for vid, e in anet[split].items()
            for sent in e["sentences"]}
    pairs = [(vid, sent) for vid, e in anet["val_2"].items() for sent in e["sentences"]]
    assert pairs and not seen & set(pairs)
    words = re.compile(r"The (\w+) (\w+) (.+)\.")
    shifted = 0
    for vid, e in anet["val_2"].items():
        first = anet["val_1"][vid]
        v1 = {words.fullmatch(s).group(1, 2) + (_KIND_OF[words.fullmatch(s).group(3)],): span
              for s, span in zip(first["sentences"], first["timestamps"], strict=True)}
        for sentence, (start, end) in zip(e["sentences"], e["timestamps"], strict=True):
            colour, shape, phrase = words.fullmatch(sentence).groups()
            s1, t1 = v1[colour, shape, _KIND_OF[phrase]]  # the same event as one of val_1's
            assert abs(start - s1) <= ANET_JITTER / 5.0 + 1e-9 and abs(end - t1) <= ANET_JITTER / 5.0 + 1e-9
            shifted += (start, end) != (s1, t1)
    assert shifted > 0  # boundaries differ, as two annotators' do


def test_activitynet_timestamps_match_the_events_in_the_frames(demo):
    out, _ = demo
    pattern = re.compile(r"The (\w+) (\w+) (.+)\.")
    anet = _anet(out)
    for split, entries in anet.items():
        if split == "val_2":
            continue  # val_1's events re-worded and jittered (test_activitynet_val_2_is_an_independent_...)
        for vid, e in entries.items():
            vr = decord.VideoReader(str(out / "activitynet-captions" / "videos" / f"{vid}.mp4"))
            fps = vr.get_avg_fps()
            frames = vr.get_batch(list(range(len(vr)))).asnumpy()
            assert abs(len(frames) / fps - e["duration"]) < 1e-6
            for sentence, (start, end) in zip(e["sentences"], e["timestamps"], strict=True):
                colour, shape, phrase = pattern.fullmatch(sentence).groups()
                action = ANET_ACTIONS[_KIND_OF[phrase]][0]
                assert shape in SHAPES
                s, t = int(round(start * fps)), int(round(end * fps))
                present = [_object_pixels(f, colour) for f in frames]
                if action == "blinks":
                    # White frames inside the object's lane: exactly the event's first and last frames.
                    lane = _centroid(present[s - 1])[1]
                    rows = slice(max(0, int(lane) - 8), int(lane) + 8)
                    white = np.array([_white(f[rows]).sum() > 10 for f in frames])
                    inside = np.flatnonzero(white[s - 2:t + 2]) + s - 2
                    assert inside.min() == s and inside.max() == t - 1, (vid, sentence)
                    continue
                # The object's colour is gone only while it blinks (its own events never overlap).
                centres = np.array([_centroid(m) if m.sum() > 10 else (np.nan, np.nan) for m in present])
                with np.errstate(invalid="ignore"):
                    moving = np.flatnonzero(np.abs(np.diff(centres, axis=0)).max(1) > 0.5) + 1
                window = moving[(moving >= s - 3) & (moving <= t + 2)]
                assert window.min() == s and window.max() == t - 1, (vid, sentence, window)
                if action == "jumps up and down":
                    rest = centres[s - 1, 1]
                    assert centres[s:t, 1].min() < rest - 4 and abs(centres[t, 1] - rest) < 1
                else:
                    dx = centres[t, 0] - centres[s - 1, 0]
                    assert (dx < -8) if action == "moves to the left" else (dx > 8)


# --------------------------------------------------------------------------------------------------
# Determinism, reuse, refusals


def _annotation_bytes(out: Path) -> dict[str, bytes]:
    files = sorted((out / "tgif" / "dataset").glob("*.csv")) + sorted(out.glob("*/*.json"))
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def test_same_seed_same_data_other_seed_other_data(demo, tmp_path):
    out, summary = demo
    again = generate_demo(tmp_path / "again", seed=0, scale=SCALE)
    assert again == summary  # "bytes" included: the videos are written byte for byte the same
    assert _annotation_bytes(tmp_path / "again") == _annotation_bytes(out)
    videos = sorted(p.relative_to(out) for p in out.rglob("*") if p.suffix in (".gif", ".mp4"))
    assert videos == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*")
                            if p.suffix in (".gif", ".mp4"))
    for rel in videos:  # what the data means: every frame of every video
        assert np.array_equal(_decode(out / rel), _decode(tmp_path / "again" / rel)), rel
        assert (out / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel

    other = tmp_path / "other"
    generate_demo(other, seed=1, scale=0.01)
    assert _annotation_bytes(other) != _annotation_bytes(out)
    first_gif = sorted((out / "tgif" / "gifs").glob("*.gif"))[0]
    assert not np.array_equal(_decode(first_gif), _decode(other / "tgif" / "gifs" / first_gif.name))


def test_reuse_and_regeneration(tmp_path):
    out = tmp_path / "demo"
    first = generate_demo(out, seed=3, scale=0.01)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert generate_demo(out, seed=3, scale=0.01) == first  # reused: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes
    # Another seed in the same directory replaces the data (stale videos of ours removed).
    (out / "tgif" / "gifs" / "demo_move9999.gif").write_bytes(b"stale")
    second = generate_demo(out, seed=4, scale=0.01)
    assert second["seed"] == 4 and not (out / "tgif" / "gifs" / "demo_move9999.gif").exists()
    assert len(list((out / "tgif" / "gifs").glob("*.gif"))) == second["datasets"]["tgif"]["videos"]


def test_refuses_foreign_directories_and_bad_arguments(tmp_path):
    foreign = tmp_path / "real_dataset"
    foreign.mkdir()
    (foreign / "video0.mp4").write_bytes(b"precious")
    with pytest.raises(ValueError, match="no DEMO.json"):
        generate_demo(foreign)
    assert (foreign / "video0.mp4").read_bytes() == b"precious"
    for scale in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="scale"):
            generate_demo(tmp_path / "x", scale=scale)
    with pytest.raises(ValueError, match="seed"):
        generate_demo(tmp_path / "x", seed=-1)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_the_same_frames_are_written_byte_for_byte_the_same(tmp_path, suffix):
    """x264's macroblock tree made 64 x 64 clips differ between encodings of the same frames (the cause of
    the demo's same-seed flake); nor may a file record the FFmpeg version or a creation time."""
    from pipelines.videowrite import write_video

    rng = np.random.default_rng(0)
    frames = np.cumsum(rng.integers(0, 40, (60, 64, 64, 3), dtype=np.uint8), axis=0).astype(np.uint8)
    written = {write_video(tmp_path / f"v{k}{suffix}", frames, fps=5).read_bytes() for k in range(8)}
    assert len(written) == 1
    data = written.pop()
    assert b"Lavf6" not in data and b"Lavf5" not in data and b"creation_time" not in data
    assert len(_decode(tmp_path / f"v0{suffix}")) == 60
