"""The demo dataset generator: small synthetic datasets in the official layouts, generated at run time.

``generate_demo(out_dir, seed=0, scale=1.0)`` writes, deterministically from ``seed``::

    out/tgif/gifs/<gif_name>.gif
    out/tgif/dataset/{Train,Test}_{action,transition,count,frameqa}_question.csv   (TAB-separated)
    out/msrvtt-qa/video/video<id>.mp4
    out/msrvtt-qa/{train,val,test}_qa.json
    out/activitynet-captions/videos/v_<11 chars>.mp4
    out/activitynet-captions/{train,val_1,val_2}.json
    out/how2qa/videos/demo_how2qa_<n>.mp4
    out/how2qa/how2qa_{train,val,test}.jsonl
    out/how2qa/how2_subtitles.jsonl                         (HERO / VALUE subtitle layout)
    out/activitynet-qa/videos/v_<11 chars>.mp4
    out/activitynet-qa/{train,val,test}_{q,a}.json
    out/DEMO.json                                           (what each question depends on, chance levels)

Every answer is a function of the pixels and nothing else: coloured shapes (six saturated colours
far apart in RGB, four shapes) on a background of four grey quadrants, doing scripted things. The
grey quadrants are deliberate: globally pooled CNN features hardly see *where* an object is on a
plain background, but an object that covers a darker or a lighter quadrant changes the pooled
features, so location and direction of motion stay visible to randomly initialised backbones.
Answer values and correct-candidate positions are drawn from balanced (shuffled, cycled) lists and
independently of each other, so neither the question nor the candidates tell anything about the
answer: candidate sets are always the same options in a shuffled order.

TGIF-QA layout, GIFs of 64x64 pixels at 10 fps:

- *mover* GIFs (32 frames): one object of a fixed shape moves left/right/up/down by one pixel per
  frame (31 pixels in all) or grows; it changes colour once, near the middle of the clip; it turns
  white ("flashes") 1 to 5 times, 3 frames per flash with at least 3 frames in between (so that every
  flash and every gap contains a frame of a 16-frame uniform sample). Each mover GIF carries one
  Action question (what does the object do, 5 fixed options), one Transition question (which colour
  it turns into, the 5 colours other than the starting colour named in the question) and one Count
  question (how many times it flashes).
- *still* GIFs (16 frames): one object wobbling by one pixel at the left/right/top/bottom of the
  frame; FrameQA questions of type 2 (its colour), 0 (its shape) and 3 (its location).
- *group* GIFs (16 frames): 1 to 4 identical objects in distinct quadrants; FrameQA type 1 (how many).
  Every frame of every GIF differs from the previous one, so the GIF habit of merging identical
  consecutive frames never changes the frame count.

MSRVTT-QA layout: 32-frame mp4 clips at 10 fps, one object moving in one of four directions and
flashing 1 to 3 times; four questions per video: ``what color ...`` (colour), ``what is ...``
(shape), ``where does ... move`` (direction), ``how many times ...`` (flashes). Split by video:
the first 70% of ids train, the next 10% val, the rest test, as in MSRVTT.

ActivityNet-Captions layout: 120 videos (the first 20, then 100 more from their own random stream so the
other datasets are unchanged; enough training queries for CMIN), 20-40 s mp4 at 5 fps with 2 or 3
objects in horizontal lanes;
3 to 5 non-overlapping scripted events (an object moves to the left/right by one pixel per frame,
jumps up and back down, or blinks), one sentence per event (``The red square moves to the left.``, in
one of three wordings of each kind, ANET_ACTIONS) naming an object unique in its video.
``[start, end]`` = ``[first frame, last frame + 1] / fps`` of
the event: the object's position changes at every frame of a move or jump and at no other frame
(its rest position is the same before and after a jump), and a blink shows it white in the first
two and the last two frames of the event, alternating two white and two coloured frames.
``val_1`` and ``val_2`` annotate the same videos independently (as the two annotators of the official
release): ``val_2`` re-describes a random subset of each video's events, each in a different wording
than val_1's, with boundaries moved by up to ANET_JITTER frame at each end, so no (video, sentence)
of val_2 (the test split) occurs in val_1 (model selection) or train. Train/val videos: 60/40%.

How2QA layout (the SiaSamRea demo's multiple-choice set): 12 s mp4 videos at 5 fps made of three 4 s
scenes, each one wobbling object whose colour and shape are unique in its video. One question per
scene (``what colour is the object in this clip?``) with the scene's seconds as ``ts``; the four
candidates are the three colours of the video plus one more, so only the segment tells which is right.
Subtitles in HERO's / VALUE's ``how2_subtitles.jsonl`` layout: a narration line over most scenes (every
fourth scene, counted over the layout, has none) naming the scene's shape, never its colour, so they
exercise the subtitle input without deciding the answer; they are a function of the plan (no random
draws), so adding them changed no other data.
ActivityNet-QA layout (open-ended): 10-20 s mp4 videos at 5 fps, one object visible over a window that
covers at least the middle half of the video; one question, ``what color is the <shape>`` (type 4,
color). Both split by video 60/20/20%, drawn from a random stream of their own (the other layouts are
unchanged by them). Only colour is asked: the demo extracts features with RANDOM backbone weights at
64 px, and a linear probe on those features (scene-mean, standardised) reads the colour (0.85 held-out)
but not the shape (0.27, chance 0.25), so shape questions would not be decidable from the features.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.atomic import atomic_path, write_json_atomic
from pipelines.version import toolkit_version
from pipelines.videowrite import write_video

__all__ = [
    "ACTIONS", "ANET_ACTIONS", "BACKGROUND_LEVELS", "DEMO_FORMAT", "FLASH_RGB", "FRAME_SIZE", "LOCATIONS",
    "NUMBER_WORDS", "PALETTE", "SHAPES", "TGIF_COLUMNS", "generate_demo",
]

DEMO_FORMAT = 1  # bump when the generated data change for the same seed and scale
# Bumped instead of DEMO_FORMAT (which seeds every layout's random stream) when only the
# ActivityNet-Captions layout changes: 2 = val_2 an independent second annotation of val_1's videos.
ANET_FORMAT = 2
# Bumped when the videos' encoding changes (same frames, other bytes): 2 = mp4 written byte-deterministically
# (pipelines.videowrite: x264 without mbtree, one thread, bit-exact muxing).
VIDEO_FORMAT = 2
# Bumped when only the How2QA layout's files change: 2 = how2_subtitles.jsonl added.
HOW2QA_FORMAT = 2
FRAME_SIZE = 64
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 70, 230),
    "yellow": (235, 215, 30),
    "magenta": (215, 40, 215),
    "cyan": (30, 200, 215),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
PLURALS = {"square": "squares", "circle": "circles", "triangle": "triangles", "cross": "crosses"}
BACKGROUND_LEVELS: tuple[int, int, int, int] = (40, 85, 130, 175)  # grey of quadrants TL, TR, BL, BR
FLASH_RGB = (255, 255, 255)
NUMBER_WORDS: tuple[str, ...] = ("one", "two", "three", "four", "five")
LOCATIONS: tuple[str, ...] = ("left", "right", "top", "bottom")
ACTIONS: tuple[str, ...] = ("move to the left", "move to the right", "move up", "move down", "grow bigger")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
ANET_ACTIONS: dict[str, tuple[str, ...]] = {  # the wordings of each event kind (any split may use any)
    "left": ("moves to the left", "slides to the left", "travels left"),
    "right": ("moves to the right", "slides to the right", "travels right"),
    "jump": ("jumps up and down", "hops up and lands again", "bounces up once"),
    "blink": ("blinks", "flashes white", "flickers"),
}
ANET_JITTER = 1  # val_2's boundaries differ from the event's by up to this many frames at each end
TGIF_COLUMNS: dict[str, tuple[str, ...]] = {
    "action": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"),
    "transition": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"),
    "count": ("gif_name", "question", "answer", "vid_id", "key"),
    "frameqa": ("gif_name", "question", "answer", "type", "vid_id", "key", "description"),
}
FRAMEQA_TYPE_IDS = {"object": 0, "number": 1, "color": 2, "location": 3}

TGIF_FPS = 10.0
MOVER_FRAMES = 32
STILL_FRAMES = 16
MOVER_SIZE = 22
FLASH_LEN = 3
FLASH_GAP = 3
MAX_FLASHES = 5
MSRVTT_FPS = 10.0
MSRVTT_FRAMES = 32
MSRVTT_MAX_FLASHES = 3
ANET_FPS = 5.0
ANET_SIZE = 12
ANET_X_RANGE = (10, 54)
ANET_JUMP = (1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0)  # vertical offsets over a jump's frames
ANET_GAP = 5  # frames of rest before, between and after events

# Videos at scale 1.0 and the minimum at any scale.
BASE_COUNTS = {"tgif_mover": 200, "tgif_still": 70, "tgif_group": 50, "msrvtt": 60, "anet": 20}
MIN_COUNTS = {"tgif_mover": 5, "tgif_still": 4, "tgif_group": 4, "msrvtt": 5, "anet": 2}
BASE_COUNTS.update(how2qa=40, anetqa=60)  # the SiaSamRea demo's How2QA / ActivityNet-QA layouts
MIN_COUNTS.update(how2qa=5, anetqa=5)
# ActivityNet-Captions videos added after the first ``anet`` ones, from their own random stream (so the
# other datasets' data stay as they were): enough training queries for CMIN to learn to localise
ANET_EXTRA, ANET_EXTRA_MIN = 100, 0
TGIF_TRAIN_FRACTION = 0.8

_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_YY, _XX = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float32) + 0.5  # pixel centres


# --------------------------------------------------------------------------------------------------
# Drawing


def _background() -> np.ndarray:
    """(S, S, 3) uint8 frame of four grey quadrants (TL, TR, BL, BR = BACKGROUND_LEVELS)."""
    s, h = FRAME_SIZE, FRAME_SIZE // 2
    frame = np.empty((s, s, 3), np.uint8)
    (tl, tr, bl, br) = BACKGROUND_LEVELS
    frame[:h, :h], frame[:h, h:], frame[h:, :h], frame[h:, h:] = tl, tr, bl, br
    return frame


_BACKGROUND = _background()


def shape_mask(shape: str, cx: float, cy: float, size: float) -> np.ndarray:
    """Pixels covered by a shape of side/diameter ``size`` centred on ``(cx, cy)`` (hard edges).

    Args:
        shape: one of SHAPES; the triangle points up, the cross has arms ``size / 3`` thick.
        cx, cy: centre in pixels (x to the right, y down).
        size: side of the bounding square in pixels.

    Returns:
        (S, S) bool mask.
    """
    dx, dy, h = np.abs(_XX - cx), _YY - cy, size / 2.0
    if shape == "square":
        return (dx <= h) & (np.abs(dy) <= h)
    if shape == "circle":
        return dx * dx + dy * dy <= h * h
    if shape == "triangle":
        return (np.abs(dy) <= h) & (dx <= (dy + h) / 2.0)
    if shape == "cross":
        t = size / 6.0
        return ((dx <= t) & (np.abs(dy) <= h)) | ((np.abs(dy) <= t) & (dx <= h))
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def _check_distinct(frames: np.ndarray, name: str) -> None:
    """Every frame must differ from the previous one (else a GIF merges them and loses frames)."""
    same = np.flatnonzero((frames[1:] == frames[:-1]).all(axis=(1, 2, 3)))
    if len(same):
        raise RuntimeError(f"demo generator bug: {name} frame {int(same[0]) + 1} repeats its predecessor")


# --------------------------------------------------------------------------------------------------
# Scripts (plans): everything a video shows and every annotation, decided before any rendering


@dataclass(frozen=True)
class _Mover:
    """A TGIF mover GIF or an MSRVTT clip: one object moving (or growing), changing colour, flashing."""

    name: str
    shape: str
    colour: str
    new_colour: str  # == colour when it never changes
    change_frame: int  # first frame in new_colour
    action: str  # a DIRECTIONS entry or "grow"
    lane: int  # the fixed coordinate (y for left/right, x for up/down); centre x for "grow"
    lane2: int  # centre y for "grow"
    flashes: tuple[int, ...]  # first frame of each flash
    num_frames: int


@dataclass(frozen=True)
class _Scene:
    """A TGIF still/group GIF: identical objects wobbling in place."""

    name: str
    shape: str
    colour: str
    size: int
    centres: tuple[tuple[int, int], ...]
    num_frames: int


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


def _balanced(rng: np.random.Generator, options: Sequence[Any], n: int) -> list[Any]:
    """``n`` draws that use every option equally often (up to one), in a random order."""
    out: list[Any] = []
    while len(out) < n:
        out.extend(options[i] for i in rng.permutation(len(options)))
    out = out[:n]
    return [out[i] for i in rng.permutation(n)]


def _flash_starts(rng: np.random.Generator, k: int, num_frames: int) -> tuple[int, ...]:
    """``k`` flash start frames: flashes of FLASH_LEN frames, FLASH_GAP frames apart at least, none in
    the first or last two frames (so the colours before and after are visible)."""
    lo, hi = 2, num_frames - 2 - FLASH_LEN  # first and last allowed start
    step = FLASH_LEN + FLASH_GAP
    slack = hi - lo - step * (k - 1)
    if slack < 0:
        raise ValueError(f"{k} flashes do not fit in {num_frames} frames")
    offsets = np.sort(rng.choice(slack + 1 + k - 1, size=k, replace=False)) - np.arange(k)
    return tuple(int(lo + o + step * i) for i, o in enumerate(offsets))


def _scaled(kind: str, scale: float) -> int:
    return max(MIN_COUNTS[kind], int(round(BASE_COUNTS[kind] * scale)))


def _split_flags(rng: np.random.Generator, n: int, fraction: float) -> list[bool]:
    """True = train; at least one item on each side."""
    n_train = min(max(int(round(fraction * n)), 1), n - 1)
    train = set(rng.permutation(n)[:n_train].tolist())
    return [i in train for i in range(n)]


def _plan_movers(rng: np.random.Generator, n: int, *, name_fmt: str, num_frames: int, actions: Sequence[str],
                 max_flashes: int, colour_change: bool) -> list[_Mover]:
    shapes = _balanced(rng, SHAPES, n)
    colours = _balanced(rng, list(PALETTE), n)
    shift = _balanced(rng, range(1, len(PALETTE)), n)  # new colour = colours[(i0 + shift) % 6]
    acts = _balanced(rng, actions, n)
    counts = _balanced(rng, range(1, max_flashes + 1), n)
    names = list(PALETTE)
    out = []
    for i in range(n):
        new = names[(names.index(colours[i]) + shift[i]) % len(names)] if colour_change else colours[i]
        change = int(rng.integers(num_frames // 2 - 4, num_frames // 2 + 5)) if colour_change else num_frames
        out.append(_Mover(
            name=name_fmt.format(i), shape=shapes[i], colour=colours[i], new_colour=new, change_frame=change,
            action=acts[i], lane=int(rng.integers(24, 41)), lane2=int(rng.integers(26, 39)),
            flashes=_flash_starts(rng, counts[i], num_frames), num_frames=num_frames,
        ))
    return out


_LOCATION_CENTRES = {"left": (16, 32), "right": (48, 32), "top": (32, 16), "bottom": (32, 48)}
_QUADRANT_CENTRES = ((16, 16), (48, 16), (16, 48), (48, 48))


def _plan_stills(rng: np.random.Generator, n: int) -> tuple[list[_Scene], list[str]]:
    shapes, colours = _balanced(rng, SHAPES, n), _balanced(rng, list(PALETTE), n)
    locations = _balanced(rng, LOCATIONS, n)
    scenes = []
    for i in range(n):
        cx, cy = _LOCATION_CENTRES[locations[i]]
        jitter = int(rng.integers(-3, 4))
        centre = (cx, cy + jitter) if locations[i] in ("left", "right") else (cx + jitter, cy)
        scenes.append(_Scene(f"demo_still{i:04d}", shapes[i], colours[i], int(rng.integers(20, 27)),
                             (centre,), STILL_FRAMES))
    return scenes, locations


def _plan_groups(rng: np.random.Generator, n: int) -> list[_Scene]:
    shapes, colours = _balanced(rng, SHAPES, n), _balanced(rng, list(PALETTE), n)
    numbers = _balanced(rng, range(1, 5), n)
    out = []
    for i in range(n):
        slots = sorted(rng.choice(4, size=numbers[i], replace=False).tolist())
        out.append(_Scene(f"demo_group{i:04d}", shapes[i], colours[i], int(rng.integers(16, 21)),
                          tuple(_QUADRANT_CENTRES[s] for s in slots), STILL_FRAMES))
    return out


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


# --------------------------------------------------------------------------------------------------
# Rendering


def _render_mover(m: _Mover) -> np.ndarray:
    """(T, S, S, 3) uint8 frames of a mover script."""
    frames = np.empty((m.num_frames, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    flashing = np.zeros(m.num_frames, bool)
    for f in m.flashes:
        flashing[f:f + FLASH_LEN] = True
    start = (FRAME_SIZE - (m.num_frames - 1)) // 2  # one pixel per frame, centred travel
    for t in range(m.num_frames):
        size = float(MOVER_SIZE)
        if m.action == "grow":
            cx, cy, size = m.lane + t % 2, m.lane2, 10.0 + 0.6 * t
        elif m.action in ("left", "right"):
            along = start + t if m.action == "right" else start + m.num_frames - 1 - t
            cx, cy = along, m.lane
        else:
            along = start + t if m.action == "down" else start + m.num_frames - 1 - t
            cx, cy = m.lane, along
        rgb = FLASH_RGB if flashing[t] else PALETTE[m.colour if t < m.change_frame else m.new_colour]
        frames[t] = _BACKGROUND
        frames[t][shape_mask(m.shape, cx, cy, size)] = rgb
    _check_distinct(frames, m.name)
    return frames


_WOBBLE = ((0, 0), (1, 0), (1, 1), (0, 1))


def _render_scene(s: _Scene) -> np.ndarray:
    frames = np.empty((s.num_frames, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    for t in range(s.num_frames):
        ox, oy = _WOBBLE[t % len(_WOBBLE)]
        frames[t] = _BACKGROUND
        for cx, cy in s.centres:
            frames[t][shape_mask(s.shape, cx + ox, cy + oy, s.size)] = PALETTE[s.colour]
    _check_distinct(frames, s.name)
    return frames


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


# --------------------------------------------------------------------------------------------------
# Annotations


def _tsv(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c] for c in columns])
    return buf.getvalue()


def _mc(index: int, correct: str, options: Sequence[str], rng: np.random.Generator) -> list[str]:
    """The options in a random order with ``correct`` at ``index``."""
    others = [o for o in options if o != correct]
    others = [others[i] for i in rng.permutation(len(others))]
    return others[:index] + [correct] + others[index:]


def _tgif_annotations(rng: np.random.Generator, movers: list[_Mover], stills: list[_Scene],
                      locations: list[str], groups: list[_Scene]) -> dict[str, dict[str, list[dict]]]:
    """{task: {"Train"|"Test": rows}}; keys are unique per task, vid_id names the GIF."""
    tables: dict[str, dict[str, list[dict]]] = {t: {"Train": [], "Test": []} for t in TGIF_COLUMNS}
    vid = {}
    for i, name in enumerate([m.name for m in movers] + [s.name for s in stills] + [g.name for g in groups]):
        vid[name] = f"D{i + 1}"
    keys = Counter()

    def add(task: str, split: str, row: dict) -> None:
        keys[task] += 1
        row["key"] = keys[task]
        tables[task][split].append(row)

    mover_train = _split_flags(rng, len(movers), TGIF_TRAIN_FRACTION)
    action_idx = _balanced(rng, range(5), len(movers))
    trans_idx = _balanced(rng, range(5), len(movers))
    action_phrase = dict(zip((*DIRECTIONS, "grow"), ACTIONS, strict=True))
    for m, train, ai, ti in zip(movers, mover_train, action_idx, trans_idx, strict=True):
        split, base = ("Train" if train else "Test"), {"gif_name": m.name, "vid_id": vid[m.name]}
        cands = _mc(ai, action_phrase[m.action], ACTIONS, rng)
        add("action", split, {**base, "question": f"what does the {m.shape} do?",
                              **{f"a{j + 1}": c for j, c in enumerate(cands)}, "answer": ai})
        colours = [c for c in PALETTE if c != m.colour]
        cands = _mc(ti, m.new_colour, colours, rng)
        add("transition", split, {**base, "question": f"what color does the {m.colour} {m.shape} turn into?",
                                  **{f"a{j + 1}": c for j, c in enumerate(cands)}, "answer": ti})
        add("count", split, {**base, "question": f"how many times does the {m.shape} flash?",
                             "answer": len(m.flashes)})
    for flags, scenes, kind in ((_split_flags(rng, len(stills), TGIF_TRAIN_FRACTION), stills, "still"),
                                (_split_flags(rng, len(groups), TGIF_TRAIN_FRACTION), groups, "group")):
        for i, (s, train) in enumerate(zip(scenes, flags, strict=True)):
            split, base = ("Train" if train else "Test"), {"gif_name": s.name, "vid_id": vid[s.name]}
            if kind == "still":
                loc = locations[i]
                desc = f"a {s.colour} {s.shape} sits at the {loc} of the frame."
                qas = [(f"what color is the {s.shape}?", s.colour, "color"),
                       (f"what is the {s.colour} object?", s.shape, "object"),
                       (f"where is the {s.colour} {s.shape}?", loc, "location")]
            else:
                n = len(s.centres)
                noun = s.shape if n == 1 else PLURALS[s.shape]
                desc = f"{NUMBER_WORDS[n - 1]} {s.colour} {noun} sit in the corners of the frame."
                qas = [(f"how many {PLURALS[s.shape]} are there?", NUMBER_WORDS[n - 1], "number")]
            for question, answer, qtype in qas:
                add("frameqa", split, {**base, "question": question, "answer": answer,
                                       "type": FRAMEQA_TYPE_IDS[qtype], "description": desc})
    return tables


def _msrvtt_annotations(rng: np.random.Generator, clips: list[_Mover]) -> dict[str, list[dict]]:
    n = len(clips)
    n_train = max(1, int(round(0.7 * n)))
    n_val = max(1, int(round(0.1 * n)))
    n_train = min(n_train, n - n_val - 1)
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    qid = 0
    for vid, m in enumerate(clips):
        split = "train" if vid < n_train else "val" if vid < n_train + n_val else "test"
        category = int(rng.integers(0, 20))
        for question, answer in (
            (f"what color is the {m.shape}?", m.colour),
            (f"what is the {m.colour} object?", m.shape),
            (f"where does the {m.colour} {m.shape} move?", m.action),
            (f"how many times does the {m.shape} flash?", NUMBER_WORDS[len(m.flashes) - 1]),
        ):
            out[split].append({"answer": answer, "category_id": category, "id": qid, "question": question,
                               "video_id": vid})
            qid += 1
    return out


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


# --------------------------------------------------------------------------------------------------
# Chance levels (computed from the generated annotations: what a model that never looks at the video
# can reach)


def _prior_accuracy(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> float:
    """Accuracy on ``test`` of answering each question group's most frequent training answer.

    Args:
        train, test: (group, answer) pairs; the group is what the question text reveals (its type).
    """
    best: dict[str, str] = {}
    for group in {g for g, _ in train}:
        counts = Counter(a for g, a in train if g == group)
        best[group] = min(counts, key=lambda a: (-counts[a], a))
    return float(np.mean([best.get(g) == a for g, a in test])) if test else 0.0


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


def _tgif_summary(tables: dict[str, dict[str, list[dict]]], n_gifs: int) -> dict:
    tasks: dict[str, Any] = {}
    for task in ("action", "transition"):
        index_pairs = {s: [("", str(r["answer"])) for r in tables[task][s]] for s in ("Train", "Test")}
        tasks[task] = {
            "task_type": "mc", "num_candidates": 5,
            "chance": {"accuracy": 0.2,
                       "train_majority_index_test_accuracy": round(
                           _prior_accuracy(index_pairs["Train"], index_pairs["Test"]), 4),
                       "note": "the correct index is balanced over a1..a5 (train and test together)"},
        }
    tasks["action"]["depends_on"] = (
        "what the single object does over the 32 frames: moves left/right/up/down by one pixel per frame "
        "(31 pixels in all) or grows from 10 to 29 pixels; the five candidates are always the same five "
        "phrases in a shuffled order")
    tasks["transition"]["depends_on"] = (
        "the colour the object has after its single colour change (frames 12-20) and at the end of the "
        "clip; the candidates are the five colours other than the starting colour named in the question")
    train_counts = np.array([r["answer"] for r in tables["count"]["Train"]], float)
    test_counts = np.array([r["answer"] for r in tables["count"]["Test"]], float)
    mean = float(train_counts.mean())
    tasks["count"] = {
        "task_type": "count", "answer_range": [1, MAX_FLASHES],
        "depends_on": f"how many times the object turns white ({FLASH_LEN} frames per flash, at least "
                      f"{FLASH_GAP} frames apart, never in the first or last two frames)",
        "chance": {"mse_train_mean": round(float(((test_counts - mean) ** 2).mean()), 4),
                   "mse_rounded_train_mean": round(float(((test_counts - round(mean)) ** 2).mean()), 4),
                   "train_mean": round(mean, 4),
                   "note": "MSE on Test of always predicting the Train mean (raw and rounded)"},
    }
    names = {v: k for k, v in FRAMEQA_TYPE_IDS.items()}
    types: dict[str, Any] = {}
    answers_of = {"object": list(SHAPES), "number": list(NUMBER_WORDS[:4]), "color": list(PALETTE),
                  "location": list(LOCATIONS)}
    depends = {
        "object": "the shape of the only object in a still GIF",
        "number": "how many identical objects (1-4, one per quadrant) a group GIF shows",
        "color": "the colour of the only object in a still GIF",
        "location": "where the only object of a still GIF sits (left/right/top/bottom of the frame)",
    }
    for tid in range(4):
        name = names[tid]
        types[str(tid)] = {"name": name, "answers": answers_of[name], "depends_on": depends[name],
                           "chance_accuracy": round(1 / len(answers_of[name]), 4),
                           "train": sum(r["type"] == tid for r in tables["frameqa"]["Train"]),
                           "test": sum(r["type"] == tid for r in tables["frameqa"]["Test"])}
    pairs = {s: [(str(r["type"]), r["answer"]) for r in tables["frameqa"][s]] for s in ("Train", "Test")}
    tasks["frameqa"] = {
        "task_type": "open", "types": types,
        "depends_on": "see types; the description column states the scene (it contains the answer, like the "
                      "official captions the questions were generated from) and is not model input",
        "chance": {"accuracy_type_prior": round(_prior_accuracy(pairs["Train"], pairs["Test"]), 4),
                   "accuracy_majority": round(_prior_accuracy([("", a) for _, a in pairs["Train"]],
                                                              [("", a) for _, a in pairs["Test"]]), 4),
                   "note": "Test accuracy of the most frequent Train answer, per question type / overall"},
    }
    for task in tasks:
        tasks[task]["train"] = len(tables[task]["Train"])
        tasks[task]["test"] = len(tables[task]["Test"])
    return {"root": "tgif", "videos": n_gifs, "fps": TGIF_FPS, "frame_size": FRAME_SIZE,
            "frames_per_video": {"mover": MOVER_FRAMES, "still": STILL_FRAMES, "group": STILL_FRAMES},
            "tasks": tasks,
            "questions_per_gif": "mover GIFs: one action, one transition, one count question; still GIFs: "
                                 "FrameQA color, object and location; group GIFs: FrameQA number"}


def _msrvtt_summary(qa: dict[str, list[dict]], n_videos: int) -> dict:
    word = {"what color": "what", "what is": "what", "where": "where", "how many": "how"}
    groups = {"what color": "color", "what is": "shape", "where": "direction", "how many": "flashes"}

    def group(q: str) -> str:
        return next(groups[p] for p in groups if q.startswith(p))

    pairs = {s: [(group(r["question"]), r["answer"]) for r in qa[s]] for s in qa}
    return {
        "root": "msrvtt-qa", "videos": n_videos, "fps": MSRVTT_FPS, "frames_per_video": MSRVTT_FRAMES,
        "frame_size": FRAME_SIZE,
        "questions": {s: len(v) for s, v in qa.items()},
        "depends_on": {
            "what color is the <shape>? (what)": "the object's colour",
            "what is the <colour> object? (what)": "its shape: square/circle/triangle/cross",
            "where does the <colour> <shape> move? (where)": "direction of motion: left/right/up/down",
            "how many times does the <shape> flash? (how)": "number of white flashes: one/two/three",
        },
        "question_words": sorted(set(word.values())),
        "chance": {"accuracy_by_group": {"color": round(1 / 6, 4), "shape": 0.25, "direction": 0.25,
                                         "flashes": round(1 / MSRVTT_MAX_FLASHES, 4)},
                   "accuracy_type_prior": round(_prior_accuracy(pairs["train"], pairs["test"]), 4),
                   "note": "accuracy_type_prior: test accuracy of the most frequent train answer per "
                           "question pattern"},
    }


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


# --------------------------------------------------------------------------------------------------
# How2QA and ActivityNet-QA layouts (the SiaSamRea demo): plans, rendering, annotations, summaries

QA_FPS = 5.0
QA_SIZE = 22
HOW2QA_SCENES = 3
HOW2QA_SCENE_FRAMES = 20  # 4 s a scene
ANETQA_SECONDS = (10.0, 20.0)
ANETQA_COLOR = 4  # ActivityNet-QA's official type id of colour questions


@dataclass(frozen=True)
class _QAScene:
    """One object wobbling at ``centre`` over frames ``start .. end - 1`` of a How2QA/ActivityNet-QA video."""

    shape: str
    colour: str
    centre: tuple[int, int]
    start: int
    end: int


@dataclass(frozen=True)
class _QAVideo:
    name: str
    num_frames: int
    scenes: tuple[_QAScene, ...]


def _qa_rng(seed: int) -> np.random.Generator:
    """A stream of its own, so that adding these layouts left the other datasets unchanged."""
    return np.random.default_rng([DEMO_FORMAT, seed, 13])


def _centre(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(16, 49)), int(rng.integers(16, 49))


def _plan_how2qa(rng: np.random.Generator, n: int) -> list[_QAVideo]:
    """Three consecutive 4 s scenes per video, each one object of a colour and shape unique in the video."""
    videos = []
    for i in range(n):
        colours = [list(PALETTE)[j] for j in rng.permutation(len(PALETTE))[:HOW2QA_SCENES]]
        shapes = [SHAPES[j] for j in rng.permutation(len(SHAPES))[:HOW2QA_SCENES]]
        f = HOW2QA_SCENE_FRAMES
        scenes = tuple(_QAScene(shapes[k], colours[k], _centre(rng), k * f, (k + 1) * f)
                       for k in range(HOW2QA_SCENES))
        videos.append(_QAVideo(f"demo_how2qa_{i:04d}", HOW2QA_SCENES * f, scenes))
    return videos


def _plan_anetqa(rng: np.random.Generator, n: int) -> list[_QAVideo]:
    """One object per 10-20 s video, visible over a window that always covers the middle half."""
    videos, used = [], set()
    colours, shapes = _balanced(rng, list(PALETTE), n), _balanced(rng, SHAPES, n)
    for i in range(n):
        while True:
            name = "".join(_ID_CHARS[j] for j in rng.integers(0, len(_ID_CHARS), size=11))
            if name not in used:
                used.add(name)
                break
        t = int(round(QA_FPS * rng.uniform(*ANETQA_SECONDS)))
        start, end = int(rng.integers(0, t // 4 + 1)), int(rng.integers(3 * t // 4, t + 1))
        videos.append(_QAVideo(name, t, (_QAScene(shapes[i], colours[i], _centre(rng), start, end),)))
    return videos


def _render_qa(v: _QAVideo) -> np.ndarray:
    """(T, S, S, 3) uint8 frames: the quadrant background with each scene's object in its frames."""
    frames = np.empty((v.num_frames, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    for t in range(v.num_frames):
        frames[t] = _BACKGROUND
        ox, oy = _WOBBLE[t % len(_WOBBLE)]
        for sc in v.scenes:
            if sc.start <= t < sc.end:
                frames[t][shape_mask(sc.shape, sc.centre[0] + ox, sc.centre[1] + oy, QA_SIZE)] = (
                    PALETTE[sc.colour])
    return frames


def _split_of(i: int, n: int) -> str:
    """Split by video: the first 60% train, the next 20% val, the rest test (each at least one)."""
    n_val = max(1, int(round(0.2 * n)))
    n_train = max(1, min(int(round(0.6 * n)), n - 2 * n_val))
    return "train" if i < n_train else "val" if i < n_train + n_val else "test"


def _how2qa_annotations(rng: np.random.Generator, videos: list[_QAVideo]) -> dict[str, list[dict]]:
    """JSON lines per split. Each scene gets a colour question; its ``ts`` is the scene's seconds, and
    the candidates hold the other scenes' colours too, so the segment decides. (No shape questions:
    random-weight 64 px features do not decide shape; see the module docstring.)"""
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    n_q = len(videos) * HOW2QA_SCENES
    positions = _balanced(rng, range(4), n_q)
    q = 0
    for i, v in enumerate(videos):
        split = _split_of(i, len(videos))
        for k, sc in enumerate(v.scenes):
            ts = f"{sc.start / QA_FPS:.1f}-{(sc.end - 1) / QA_FPS:.1f}"
            in_video = {"colour": [s.colour for s in v.scenes]}
            options = {"colour": list(PALETTE)}
            for kind, answer in (("colour", sc.colour),):
                rest = [o for o in options[kind] if o not in in_video[kind]]
                extra = rest[int(rng.integers(len(rest)))]
                distractors = [o for o in in_video[kind] if o != answer] + [extra]
                cands = _mc(positions[q], answer, [answer, *distractors], rng)
                q += 1
                out[split].append({
                    "vid_name": v.name, "ts": ts, "q": f"what {kind} is the object in this clip?",
                    **{f"a{j}": c for j, c in enumerate(cands)}, "answer_idx": cands.index(answer),
                    "qid": f"{split}-{v.name}-{k}-{kind}",
                })
    return out


_NARRATION = ("now we look at the {}", "here the {} stays for a while", "and this one is a {}")


def _how2qa_subtitles(videos: list[_QAVideo]) -> list[dict]:
    """One ``how2_subtitles.jsonl`` line per video: a narration entry naming each scene's shape over the
    scene's seconds (scene ``j`` of the layout, counted over all videos, has none when ``j % 4 == 3``)."""
    lines, j = [], 0
    for v in videos:
        sub = []
        for sc in v.scenes:
            if j % 4 != 3:
                start, end = round(sc.start / QA_FPS + 0.2, 1), round(sc.end / QA_FPS - 0.2, 1)
                sub.append({"text": _NARRATION[j % len(_NARRATION)].format(sc.shape), "start": start,
                            "end": end})
            j += 1
        lines.append({"vid_name": v.name, "sub": sub})
    return lines


def _anetqa_annotations(videos: list[_QAVideo]) -> dict[str, dict[str, list[dict]]]:
    """``{split: {"q": [...], "a": [...]}}``: a colour question per video (no shape question: see the
    module docstring)."""
    out: dict[str, dict[str, list[dict]]] = {s: {"q": [], "a": []} for s in ("train", "val", "test")}
    for i, v in enumerate(videos):
        split, sc = _split_of(i, len(videos)), v.scenes[0]
        for k, (question, answer, qtype) in enumerate((
            (f"what color is the {sc.shape}", sc.colour, ANETQA_COLOR),
        )):
            qid = f"v_{v.name}_{k}"
            out[split]["q"].append({"question_id": qid, "question": question, "video_name": v.name})
            out[split]["a"].append({"question_id": qid, "answer": answer, "type": qtype})
    return out


def _how2qa_summary(ann: dict[str, list[dict]], n_videos: int) -> dict:
    return {
        "root": "how2qa", "videos": n_videos, "fps": QA_FPS, "frame_size": FRAME_SIZE,
        "seconds_per_video": HOW2QA_SCENES * HOW2QA_SCENE_FRAMES / QA_FPS,
        "questions": {s: len(v) for s, v in ann.items()},
        "depends_on": "three 4 s scenes per video, one object each (colour and shape unique in the video); "
                      "each question asks the colour of the object in its ts segment, and three of "
                      "the four candidates appear somewhere in the video",
        "subtitles": "how2_subtitles.jsonl: a narration line over most scenes naming the shape, never "
                     "the colour (they do not decide the answer)",
        "chance": {"accuracy": 0.25,
                   "ignoring_the_segment": round(1 / HOW2QA_SCENES, 4),
                   "note": "ignoring_the_segment: picking among the candidates seen in the video"},
    }


def _anetqa_summary(ann: dict[str, dict[str, list[dict]]], n_videos: int) -> dict:
    pairs = {s: [(str(a["type"]), a["answer"]) for a in v["a"]] for s, v in ann.items()}
    return {
        "root": "activitynet-qa", "videos": n_videos, "fps": QA_FPS, "frame_size": FRAME_SIZE,
        "seconds_per_video": list(ANETQA_SECONDS),
        "questions": {s: len(v["q"]) for s, v in ann.items()},
        "depends_on": {"what color is the <shape> (color, type 4)": "the object's colour; the object is "
                                                                    "visible over a window covering the "
                                                                    "middle half of the video"},
        "chance": {"accuracy_by_type": {"color": round(1 / len(PALETTE), 4)},
                   "accuracy_type_prior": round(_prior_accuracy(pairs["train"], pairs["test"]), 4),
                   "note": "accuracy_type_prior: test accuracy of the most frequent train answer per type"},
    }


def _write_qa_layouts(out: Path, plan: dict[str, Any], paths: dict[str, list[Path]]) -> None:
    for video, path in zip(plan["how2qa"] + plan["anetqa"], paths["how2qa"] + paths["activitynet-qa"],
                           strict=True):
        write_video(path, _render_qa(video), fps=QA_FPS)
    for split, rows in plan["how2qa_ann"].items():
        _write_text(out / "how2qa" / f"how2qa_{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _write_text(out / "how2qa" / "how2_subtitles.jsonl",
                "".join(json.dumps(r) + "\n" for r in _how2qa_subtitles(plan["how2qa"])))
    for split, files in plan["anetqa_ann"].items():
        for kind, rows in files.items():
            write_json_atomic(out / "activitynet-qa" / f"{split}_{kind}.json", rows)


# --------------------------------------------------------------------------------------------------
# Entry point


def _plan(seed: int, scale: float) -> dict[str, Any]:
    rng = np.random.default_rng([DEMO_FORMAT, seed])
    movers = _plan_movers(rng, _scaled("tgif_mover", scale), name_fmt="demo_move{:04d}",
                          num_frames=MOVER_FRAMES, actions=(*DIRECTIONS, "grow"), max_flashes=MAX_FLASHES,
                          colour_change=True)
    stills, locations = _plan_stills(rng, _scaled("tgif_still", scale))
    groups = _plan_groups(rng, _scaled("tgif_group", scale))
    clips = _plan_movers(rng, _scaled("msrvtt", scale), name_fmt="video{}", num_frames=MSRVTT_FRAMES,
                         actions=DIRECTIONS, max_flashes=MSRVTT_MAX_FLASHES, colour_change=False)
    anet = _plan_anet(rng, _scaled("anet", scale))
    qa_rng = _qa_rng(seed)
    how2qa = _plan_how2qa(qa_rng, _scaled("how2qa", scale))
    anetqa = _plan_anetqa(qa_rng, _scaled("anetqa", scale))
    extra = max(ANET_EXTRA_MIN, int(round(ANET_EXTRA * scale)))
    anet += _plan_anet(np.random.default_rng([DEMO_FORMAT, seed, 1]), extra, used={v.name for v in anet})
    return {
        "how2qa": how2qa, "anetqa": anetqa, "how2qa_ann": _how2qa_annotations(qa_rng, how2qa),
        "anetqa_ann": _anetqa_annotations(anetqa),
        "movers": movers, "stills": stills, "groups": groups, "clips": clips, "anet": anet,
        "tgif": _tgif_annotations(rng, movers, stills, locations, groups),
        "msrvtt": _msrvtt_annotations(rng, clips),
        "anet_ann": _anet_annotations(rng, anet),
    }


def _video_paths(out: Path, plan: dict[str, Any]) -> dict[str, list[Path]]:
    gifs = plan["movers"] + plan["stills"] + plan["groups"]
    return {
        "tgif": [out / "tgif" / "gifs" / f"{v.name}.gif" for v in gifs],
        "msrvtt-qa": [out / "msrvtt-qa" / "video" / f"{m.name}.mp4" for m in plan["clips"]],
        "activitynet-captions": [out / "activitynet-captions" / "videos" / f"{v.name}.mp4"
                                 for v in plan["anet"]],
        "how2qa": [out / "how2qa" / "videos" / f"{v.name}.mp4" for v in plan["how2qa"]],
        "activitynet-qa": [out / "activitynet-qa" / "videos" / f"v_{v.name}.mp4" for v in plan["anetqa"]],
    }


_VIDEO_PATTERNS = {
    "tgif/gifs": re.compile(r"demo_(move|still|group)\d{4}\.gif"),
    "msrvtt-qa/video": re.compile(r"video\d+\.mp4"),
    "activitynet-captions/videos": re.compile(r"v_[A-Za-z0-9_-]{11}\.mp4"),
    "how2qa/videos": re.compile(r"demo_how2qa_\d{4}\.mp4"),
    "activitynet-qa/videos": re.compile(r"v_[A-Za-z0-9_-]{11}\.mp4"),
}


def _remove_stale(out: Path, keep: set[Path]) -> None:
    """Delete videos of an earlier demo generation (our names only) that the new plan does not list."""
    for sub, pattern in _VIDEO_PATTERNS.items():
        folder = out / sub
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.is_file() and pattern.fullmatch(p.name) and p not in keep:
                p.unlink()


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def generate_demo(out_dir: str | os.PathLike, *, seed: int = 0, scale: float = 1.0) -> dict:
    """Write the demo datasets (TGIF-QA, MSRVTT-QA and ActivityNet-Captions layouts) under ``out_dir``.

    The output depends only on ``seed`` and ``scale`` (and DEMO_FORMAT). Every file is written
    atomically; ``DEMO.json`` is written first with ``"complete": false`` and rewritten last, so a
    directory whose ``DEMO.json`` is complete and matches the arguments is reused as it is (nothing is
    rewritten), and an interrupted run is simply redone. Videos of an earlier generation in the same
    directory that the new one does not list are removed.

    Args:
        out_dir: output directory; created if missing. It must be empty or hold an earlier demo
            (a ``DEMO.json``), so that real datasets are never overwritten.
        seed: random seed; the same seed and scale give byte-identical annotations and identical
            decoded frames.
        scale: multiplies the number of videos (1.0: 320 GIFs, 60 MSRVTT clips, 120 ActivityNet
            videos, 40 How2QA and 60 ActivityNet-QA videos; each kind keeps a small minimum so that
            every split is non-empty).

    Returns:
        The summary also written to ``out_dir/DEMO.json``: seed, scale, counts per dataset, split and
        task, what each question type depends on, chance levels, palette, shapes, sizes in bytes.

    Raises:
        ValueError: ``scale`` is not positive, or ``out_dir`` is a non-empty directory without
            ``DEMO.json``.
    """
    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed, scale = int(seed), float(scale)
    out = Path(out_dir)
    marker = out / "DEMO.json"
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory; pass a new or empty directory for the demo")
    previous = None
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = None  # an unreadable marker of ours: regenerate
    elif out.is_dir() and any(out.iterdir()):
        raise ValueError(
            f"{out} is not empty and has no DEMO.json, so it is not a demo directory; refusing to write the "
            "demo data there (it could overwrite a real dataset). Pass a new or empty directory."
        )

    plan = _plan(seed, scale)
    paths = _video_paths(out, plan)
    all_videos = [p for ps in paths.values() for p in ps]
    header = {"generator": "pipelines.demo", "format": DEMO_FORMAT,
              "activitynet_captions_format": ANET_FORMAT, "video_format": VIDEO_FORMAT,
              "how2qa_format": HOW2QA_FORMAT, "seed": seed,
              "scale": scale}
    if (isinstance(previous, dict) and previous.get("complete") is True
            and all(previous.get(k) == v for k, v in header.items())
            and all(p.is_file() for p in all_videos)):
        return previous

    write_json_atomic(marker, {**header, "complete": False})
    _remove_stale(out, set(all_videos))

    for script, path in zip(plan["movers"] + plan["stills"] + plan["groups"], paths["tgif"], strict=True):
        frames = _render_mover(script) if isinstance(script, _Mover) else _render_scene(script)
        write_video(path, frames, fps=TGIF_FPS)
    for task, splits in plan["tgif"].items():
        for split, rows in splits.items():
            csv_path = out / "tgif" / "dataset" / f"{split}_{task}_question.csv"
            _write_text(csv_path, _tsv(TGIF_COLUMNS[task], rows))

    for clip, path in zip(plan["clips"], paths["msrvtt-qa"], strict=True):
        write_video(path, _render_mover(clip), fps=MSRVTT_FPS)
    for split, rows in plan["msrvtt"].items():
        write_json_atomic(out / "msrvtt-qa" / f"{split}_qa.json", rows)

    for video, path in zip(plan["anet"], paths["activitynet-captions"], strict=True):
        write_video(path, _render_anet(video), fps=ANET_FPS)
    for split, entries in plan["anet_ann"].items():
        write_json_atomic(out / "activitynet-captions" / f"{split}.json", entries)

    _write_qa_layouts(out, plan, paths)

    sizes = {name: sum(f.stat().st_size for f in (out / name).rglob("*") if f.is_file())
             for name in ("tgif", "msrvtt-qa", "activitynet-captions", "how2qa", "activitynet-qa")}
    summary = {
        **header,
        "complete": True,
        "toolkit_version": toolkit_version(),
        "frame_size": FRAME_SIZE,
        "palette": {k: list(v) for k, v in PALETTE.items()},
        "shapes": list(SHAPES),
        "background": {"quadrant_greys_tl_tr_bl_br": list(BACKGROUND_LEVELS), "flash_rgb": list(FLASH_RGB)},
        "datasets": {
            "tgif": _tgif_summary(plan["tgif"], len(paths["tgif"])),
            "msrvtt-qa": _msrvtt_summary(plan["msrvtt"], len(paths["msrvtt-qa"])),
            "activitynet-captions": _anet_summary(plan["anet_ann"], len(paths["activitynet-captions"])),
            "how2qa": _how2qa_summary(plan["how2qa_ann"], len(paths["how2qa"])),
            "activitynet-qa": _anetqa_summary(plan["anetqa_ann"], len(paths["activitynet-qa"])),
        },
        "bytes": sizes,
    }
    write_json_atomic(marker, summary)
    return summary
