"""The MSRVTT-QA layout: four questions per mover clip (colour, shape, direction, flashes), split by video
as MSRVTT (70/10/20%), and the layout's summary."""

from __future__ import annotations

import numpy as np

from pipelines.demo.common import FRAME_SIZE, NUMBER_WORDS, _prior_accuracy
from pipelines.demo.movers import _Mover

MSRVTT_FPS = 10.0


MSRVTT_FRAMES = 32


MSRVTT_MAX_FLASHES = 3


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
