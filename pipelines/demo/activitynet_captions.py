"""The ActivityNet-Captions layout: videos of objects in lanes doing scripted events (move, jump, blink),
one sentence per event with its seconds; val_2 an independent re-annotation of val_1's videos; the
layout's summary with the moment baselines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.demo.common import _BACKGROUND, _ID_CHARS, FLASH_RGB, FRAME_SIZE, PALETTE, SHAPES, shape_mask

ANET_ACTIONS: dict[str, tuple[str, ...]] = {  # the wordings of each event kind (any split may use any)
    "left": ("moves to the left", "slides to the left", "travels left"),
    "right": ("moves to the right", "slides to the right", "travels right"),
    "jump": ("jumps up and down", "hops up and lands again", "bounces up once"),
    "blink": ("blinks", "flashes white", "flickers"),
}


ANET_JITTER = 1  # val_2's boundaries differ from the event's by up to this many frames at each end


ANET_FPS = 5.0


ANET_SIZE = 12


ANET_X_RANGE = (10, 54)


ANET_JUMP = (1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0)  # vertical offsets over a jump's frames


ANET_GAP = 5  # frames of rest before, between and after events


# ActivityNet-Captions videos added after the first ``anet`` ones, from their own random stream (so the
# other datasets' data stay as they were): enough training queries for CMIN to learn to localise
ANET_EXTRA, ANET_EXTRA_MIN = 100, 0


@dataclass(frozen=True)
class _Event:
    obj: int
    kind: str  # an ANET_ACTIONS key
    start: int  # first frame that changes
    end: int  # one past the last frame that changes
    x0: int  # object x before the event


@dataclass(frozen=True)
class _AnetVideo:
    name: str
    num_frames: int
    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    lanes: tuple[int, ...]
    start_x: tuple[int, ...]
    events: tuple[_Event, ...]


def _plan_anet(rng: np.random.Generator, n: int, used: set[str] | None = None) -> list[_AnetVideo]:
    videos, used = [], set() if used is None else used
    lo, hi = ANET_X_RANGE
    for _ in range(n):
        while True:
            name = "v_" + "".join(_ID_CHARS[j] for j in rng.integers(0, len(_ID_CHARS), size=11))
            if name not in used:
                used.add(name)
                break
        n_obj = int(rng.integers(2, 4))
        shapes = tuple(SHAPES[j] for j in rng.permutation(len(SHAPES))[:n_obj])
        colours = tuple(list(PALETTE)[j] for j in rng.permutation(len(PALETTE))[:n_obj])
        lanes = (18, 46) if n_obj == 2 else (12, 32, 52)
        xs = [int(rng.integers(14, 51)) for _ in range(n_obj)]
        start_x = tuple(xs)
        num_frames = int(round(ANET_FPS * rng.uniform(20.0, 40.0)))
        # Choose the events in order (each a distinct (object, kind) pair), then place them in time.
        n_events, picked, specs = int(rng.integers(3, 6)), set(), []
        budget = num_frames - ANET_GAP
        for _attempt in range(40):
            if len(specs) == n_events:
                break
            obj, kind = int(rng.integers(n_obj)), str(rng.choice(["move", "jump", "blink"]))
            if kind == "move":
                length = int(rng.integers(10, 31))
                room = {"left": xs[obj] - lo, "right": hi - xs[obj]}
                kind = max(room, key=lambda d: (room[d] >= length, rng.random()))
                length = min(length, room[kind])
                if length < 10:
                    continue
            elif kind == "jump":
                length = len(ANET_JUMP)
            else:
                length = 4 * int(rng.integers(2, 6)) + 2  # white 2, colour 2, ..., white 2
            if (obj, kind) in picked or length + ANET_GAP > budget:
                continue
            picked.add((obj, kind))
            budget -= length + ANET_GAP
            specs.append((obj, kind, length, xs[obj]))
            if kind in ("left", "right"):
                xs[obj] += length if kind == "right" else -length
        # Spread the spare frames randomly over the rests between events.
        spare = budget
        cuts = np.sort(rng.integers(0, spare + 1, size=len(specs)))
        extra = np.diff(np.concatenate([[0], cuts]))
        events, t = [], 0
        for (obj, kind, length, x0), e in zip(specs, extra, strict=True):
            t += ANET_GAP + int(e)
            events.append(_Event(obj, kind, t, t + length, x0))
            t += length
        videos.append(_AnetVideo(name, num_frames, shapes, colours, lanes, start_x, tuple(events)))
    return videos


def _anet_state(v: _AnetVideo, obj: int, t: int) -> tuple[int, int, bool]:
    """(x, y offset, white) of object ``obj`` at frame ``t``."""
    x, dy, white = v.start_x[obj], 0, False
    for e in v.events:
        if e.obj != obj or t < e.start:
            continue
        i = t - e.start
        if e.kind in ("left", "right"):
            step = min(i + 1, e.end - e.start)
            x = e.x0 + step if e.kind == "right" else e.x0 - step
        elif e.kind == "jump" and t < e.end:
            dy = -ANET_JUMP[i]
        elif e.kind == "blink" and t < e.end:
            white = (i // 2) % 2 == 0
    return x, dy, white


def _render_anet(v: _AnetVideo) -> np.ndarray:
    frames = np.empty((v.num_frames, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    for t in range(v.num_frames):
        frames[t] = _BACKGROUND
        for obj in range(len(v.shapes)):
            x, dy, white = _anet_state(v, obj, t)
            rgb = FLASH_RGB if white else PALETTE[v.colours[obj]]
            frames[t][shape_mask(v.shapes[obj], x, v.lanes[obj] + dy, ANET_SIZE)] = rgb
    return frames


def _sentence(v: _AnetVideo, e: _Event, wording: int) -> str:
    return f"The {v.colours[e.obj]} {v.shapes[e.obj]} {ANET_ACTIONS[e.kind][wording]}."


def _anet_entry(v: _AnetVideo, events: Sequence[_Event], wordings: Sequence[int],
                jitter: Sequence[tuple[int, int]] | None = None) -> dict:
    """One video's annotation; ``jitter`` moves each event's (start, end) by whole frames."""
    spans = [(e.start, e.end) for e in events]
    if jitter is not None:
        spans = [(max(0, s + a), min(v.num_frames, t + b))
                 for (s, t), (a, b) in zip(spans, jitter, strict=True)]
    return {
        "duration": round(v.num_frames / ANET_FPS, 2),
        "timestamps": [[round(s / ANET_FPS, 2), round(t / ANET_FPS, 2)] for s, t in spans],
        "sentences": [_sentence(v, e, w) for e, w in zip(events, wordings, strict=True)],
    }


def _anet_annotations(rng: np.random.Generator, videos: list[_AnetVideo]) -> dict[str, dict[str, dict]]:
    """train / val_1 / val_2; val_2 is a second, independent annotation of val_1's videos.

    As in the official release (two annotators): val_2 describes a random subset of each video's events,
    every one in a different wording than val_1's, with boundaries jittered by up to ANET_JITTER frames.
    """
    n_train = min(max(int(round(0.6 * len(videos))), 1), len(videos) - 1)
    out: dict[str, dict[str, dict]] = {"train": {}, "val_1": {}, "val_2": {}}
    for i, v in enumerate(videos):
        wordings = [int(rng.integers(len(ANET_ACTIONS[e.kind]))) for e in v.events]
        if i < n_train:
            out["train"][v.name] = _anet_entry(v, v.events, wordings)
            continue
        out["val_1"][v.name] = _anet_entry(v, v.events, wordings)
        k = int(rng.integers(min(2, len(v.events)), len(v.events) + 1))
        keep = sorted(rng.choice(len(v.events), size=k, replace=False).tolist())
        other = [(wordings[j] + int(rng.integers(1, len(ANET_ACTIONS[v.events[j].kind])))) % len(
            ANET_ACTIONS[v.events[j].kind]) for j in keep]  # never val_1's wording of the event
        jitter = [tuple(int(x) for x in rng.integers(-ANET_JITTER, ANET_JITTER + 1, size=2)) for _ in keep]
        out["val_2"][v.name] = _anet_entry(v, [v.events[j] for j in keep], other, jitter)
    return out


def _tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def _moment_prior(train: dict[str, dict], test: dict[str, dict]) -> dict[str, float]:
    """R@1 at IoU 0.3/0.5/0.7 and mean IoU of predicting the mean normalised training moment."""
    spans = np.array([[s / e["duration"], t / e["duration"]]
                      for e in train.values() for s, t in e["timestamps"]])
    mean = spans.mean(axis=0)
    ious = [_tiou((mean[0] * e["duration"], mean[1] * e["duration"]), (s, t))
            for e in test.values() for s, t in e["timestamps"]]
    out = {f"r1_iou{m}": round(float(np.mean([i >= m for i in ious])), 4) for m in (0.3, 0.5, 0.7)}
    out["mean_iou"] = round(float(np.mean(ious)), 4)
    return out


def _anet_summary(ann: dict[str, dict[str, dict]], n_videos: int) -> dict:
    return {
        "root": "activitynet-captions", "videos": n_videos, "fps": ANET_FPS, "frame_size": FRAME_SIZE,
        "moments": {s: sum(len(e["sentences"]) for e in v.values()) for s, v in ann.items()},
        "split_videos": {s: len(v) for s, v in ann.items()},
        "depends_on": "each sentence names one object by colour and shape (unique within its video) and one "
                      "scripted event: moves to the left/right (one pixel per frame), jumps up and down, or "
                      "blinks; [start, end] are the seconds of its first and one past its last changed frame "
                      "(val_2: an independent re-wording with boundaries within one frame of those)",
        "chance": {"val_2_train_mean_moment": _moment_prior(ann["train"], ann["val_2"]),
                   "val_1_train_mean_moment": _moment_prior(ann["train"], ann["val_1"]),
                   "note": "predicting the mean normalised training moment for every query"},
    }
