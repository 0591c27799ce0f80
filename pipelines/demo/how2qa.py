"""The How2QA layout (multiple choice): three scenes per video, one colour question per scene with the
scene's seconds as ``ts``; subtitles in HERO's / VALUE's layout; the layout's summary."""

from __future__ import annotations

import numpy as np

from pipelines.demo.common import FRAME_SIZE, PALETTE, SHAPES, _balanced, _mc
from pipelines.demo.qa_scenes import (
    HOW2QA_SCENE_FRAMES,
    HOW2QA_SCENES,
    QA_FPS,
    _centre,
    _QAScene,
    _QAVideo,
    _split_of,
)


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
