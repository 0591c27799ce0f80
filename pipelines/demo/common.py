"""What every demo layout shares: the frame (size, grey quadrants, palette, shapes and their masks), the
format that seeds the random streams, balanced draws, the video counts per scale, train/test flags,
multiple-choice candidates, the prior of a question type and atomic text files."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.atomic import atomic_path

DEMO_FORMAT = 1  # bump when the generated data change for the same seed and scale


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


DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")


# Videos at scale 1.0 and the minimum at any scale.
BASE_COUNTS = {"tgif_mover": 200, "tgif_still": 70, "tgif_group": 50, "msrvtt": 60, "anet": 20}


MIN_COUNTS = {"tgif_mover": 5, "tgif_still": 4, "tgif_group": 4, "msrvtt": 5, "anet": 2}


BASE_COUNTS.update(how2qa=40, anetqa=60)  # the SiaSamRea demo's How2QA / ActivityNet-QA layouts


MIN_COUNTS.update(how2qa=5, anetqa=5)


_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


_YY, _XX = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float32) + 0.5  # pixel centres


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


def _balanced(rng: np.random.Generator, options: Sequence[Any], n: int) -> list[Any]:
    """``n`` draws that use every option equally often (up to one), in a random order."""
    out: list[Any] = []
    while len(out) < n:
        out.extend(options[i] for i in rng.permutation(len(options)))
    out = out[:n]
    return [out[i] for i in rng.permutation(n)]


def _scaled(kind: str, scale: float) -> int:
    return max(MIN_COUNTS[kind], int(round(BASE_COUNTS[kind] * scale)))


def _split_flags(rng: np.random.Generator, n: int, fraction: float) -> list[bool]:
    """True = train; at least one item on each side."""
    n_train = min(max(int(round(fraction * n)), 1), n - 1)
    train = set(rng.permutation(n)[:n_train].tolist())
    return [i in train for i in range(n)]


_WOBBLE = ((0, 0), (1, 0), (1, 1), (0, 1))


def _mc(index: int, correct: str, options: Sequence[str], rng: np.random.Generator) -> list[str]:
    """The options in a random order with ``correct`` at ``index``."""
    others = [o for o in options if o != correct]
    others = [others[i] for i in rng.permutation(len(others))]
    return others[:index] + [correct] + others[index:]


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


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
