"""Moving objects: a TGIF-QA mover GIF or an MSRVTT-QA clip, one object moving (or growing), changing
colour and flashing white; its script and its frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.demo.common import (
    _BACKGROUND,
    FLASH_RGB,
    FRAME_SIZE,
    PALETTE,
    SHAPES,
    _balanced,
    _check_distinct,
    shape_mask,
)

MOVER_SIZE = 22


FLASH_LEN = 3


FLASH_GAP = 3


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
