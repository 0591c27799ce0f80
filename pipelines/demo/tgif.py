"""The TGIF-QA layout: mover GIFs (Action, Transition, Count), still and group GIFs (FrameQA), the
TAB-separated question files and the layout's summary."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.demo.common import (
    _BACKGROUND,
    _WOBBLE,
    DIRECTIONS,
    FRAME_SIZE,
    NUMBER_WORDS,
    PALETTE,
    PLURALS,
    SHAPES,
    _balanced,
    _check_distinct,
    _mc,
    _prior_accuracy,
    _split_flags,
    shape_mask,
)
from pipelines.demo.movers import FLASH_GAP, FLASH_LEN, _Mover

LOCATIONS: tuple[str, ...] = ("left", "right", "top", "bottom")


ACTIONS: tuple[str, ...] = ("move to the left", "move to the right", "move up", "move down", "grow bigger")


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


MAX_FLASHES = 5


TGIF_TRAIN_FRACTION = 0.8


@dataclass(frozen=True)
class _Scene:
    """A TGIF still/group GIF: identical objects wobbling in place."""

    name: str
    shape: str
    colour: str
    size: int
    centres: tuple[tuple[int, int], ...]
    num_frames: int


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


def _render_scene(s: _Scene) -> np.ndarray:
    frames = np.empty((s.num_frames, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    for t in range(s.num_frames):
        ox, oy = _WOBBLE[t % len(_WOBBLE)]
        frames[t] = _BACKGROUND
        for cx, cy in s.centres:
            frames[t][shape_mask(s.shape, cx + ox, cy + oy, s.size)] = PALETTE[s.colour]
    _check_distinct(frames, s.name)
    return frames


def _tsv(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c] for c in columns])
    return buf.getvalue()


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
