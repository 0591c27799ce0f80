"""What the How2QA and ActivityNet-QA layouts share: scenes of one wobbling object, their random stream,
frames and split by video (60/20/20%)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.demo.common import _BACKGROUND, _WOBBLE, DEMO_FORMAT, FRAME_SIZE, PALETTE, shape_mask

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
