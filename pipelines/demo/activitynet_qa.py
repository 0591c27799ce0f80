"""The ActivityNet-QA layout (open-ended): one object visible over most of the video, one colour question
per video; the layout's summary."""

from __future__ import annotations

import numpy as np

from pipelines.demo.common import _ID_CHARS, FRAME_SIZE, PALETTE, SHAPES, _balanced, _prior_accuracy
from pipelines.demo.qa_scenes import (
    ANETQA_COLOR,
    ANETQA_SECONDS,
    QA_FPS,
    _centre,
    _QAScene,
    _QAVideo,
    _split_of,
)


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
