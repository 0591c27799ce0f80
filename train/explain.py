"""Explanation figures: the frames a model saw, what it attended to, and its answers (Pillow only).

``vqa-answer ... --explain out.png`` calls :func:`render_explanation` on an
:class:`train.answer.Answer`. The figure has a header (model, video, question), a strip of the sampled
frames with the model's attention drawn over them (frames dimmed by 1 - weight / max weight, the weight
as a bar and a number under each frame, the most attended frame outlined), and the top answers as bars.

Each model names its attention in its output dict; :data:`FRAME_ATTENTION` says which entry is a weight
per sampled frame, and :func:`frame_weights` turns it into one weight per frame shown:

- MSPAN: ``readout_weights`` (N,), the Eq. (11)-(12) readout softmax over the nodes of G_1, whose node
  x is frame x.

A model without such an entry (or an older build that returns none) gets the plain strip and a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipelines.atomic import atomic_path

__all__ = ["FRAME_ATTENTION", "answer_lines", "frame_strip", "frame_weights", "render_explanation"]

#: model name -> the output entry holding one attention weight per sampled frame
FRAME_ATTENTION: dict[str, str] = {"mspan": "readout_weights"}

TILE = 112  # frame side in the figure (px)
PAD = 8
WIDTH_MIN = 640
BG, FG, ACCENT, BAR = (255, 255, 255), (20, 20, 20), (220, 40, 40), (60, 110, 200)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def frame_weights(model_name: str, attention: dict[str, np.ndarray], num_frames: int) -> np.ndarray | None:
    """One attention weight per shown frame (sums to 1), or None when the model returned none.

    The model's named entry (:data:`FRAME_ATTENTION`) is used when its length is the number of frames;
    an entry with more positions than frames (e.g. nodes beyond G_1) is cut to the first ``num_frames``.
    """
    key = FRAME_ATTENTION.get(model_name)
    if key is None or key not in attention:
        return None
    w = np.asarray(attention[key], dtype=np.float64).reshape(-1)
    if w.size < num_frames:
        return None
    w = np.clip(w[:num_frames], 0.0, None)
    total = w.sum()
    return w / total if total > 0 else None


def frame_strip(
    frames: np.ndarray, weights: np.ndarray | None, *, tile: int = TILE, labels: Sequence[str] | None = None
) -> Image.Image:
    """The frames side by side (wrapped every 8), dimmed by attention, with a weight bar under each.

    Args:
        frames: (K, H, W, 3) uint8.
        weights: (K,) attention summing to 1, or None (plain strip).
        labels: a caption per frame (default ``#k``).
    """
    k = len(frames)
    per_row = min(k, 8)
    rows = -(-k // per_row)
    bar_h = 34 if weights is not None else 16
    cell_w, cell_h = tile + PAD, tile + bar_h + PAD
    img = Image.new("RGB", (per_row * cell_w + PAD, rows * cell_h + PAD), BG)
    draw = ImageDraw.Draw(img)
    font = _font(11)
    top = int(np.argmax(weights)) if weights is not None else -1
    wmax = float(weights.max()) if weights is not None else 1.0
    for i, frame in enumerate(frames):
        x, y = PAD + (i % per_row) * cell_w, PAD + (i // per_row) * cell_h
        tile_img = Image.fromarray(np.ascontiguousarray(frame)).resize((tile, tile), Image.BILINEAR)
        if weights is not None:  # dim the frames the model looked at less
            level = 0.25 + 0.75 * float(weights[i]) / wmax
            tile_img = Image.blend(Image.new("RGB", tile_img.size, (0, 0, 0)), tile_img, level)
        img.paste(tile_img, (x, y))
        if i == top:
            draw.rectangle([x - 3, y - 3, x + tile + 2, y + tile + 2], outline=ACCENT, width=3)
        label = labels[i] if labels is not None else f"#{i}"
        if weights is not None:
            h = int(round(14 * float(weights[i]) / wmax))
            draw.rectangle([x, y + tile + 18 - h, x + tile - 1, y + tile + 18], fill=BAR)
            draw.text((x, y + tile + 20), f"{label}  {weights[i]:.3f}", fill=FG, font=font)
        else:
            draw.text((x, y + tile + 2), label, fill=FG, font=font)
    return img


def answer_lines(result: Any) -> list[tuple[str, float | None]]:
    """(text, bar value in [0, 1] or None) for the figure's answer panel."""
    if result.task_type == "open":
        return [(f"{a}  {p:.3f}", p) for a, p in result.answers]
    if result.task_type == "mc":
        scores = np.array([s for _, s in result.answers], dtype=np.float64)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        return [
            (f"[{i}] {a}  score {s:.3f}", float(p))
            for (a, s), i, p in zip(result.answers, result.candidate_index, probs, strict=True)
        ]
    if result.task_type == "count":
        return [(f"count {result.count}  (regressed {result.raw:.3f})", None)]
    return [(f"{a:.1f}-{b:.1f} s  score {s:.3f}", None) for a, b, s in result.moments]


def _text_block(lines: Sequence[tuple[str, float | None]], width: int, *, font_size: int = 14) -> Image.Image:
    font = _font(font_size)
    line_h = font_size + 8
    img = Image.new("RGB", (width, PAD + line_h * max(len(lines), 1)), BG)
    draw = ImageDraw.Draw(img)
    for i, (text, value) in enumerate(lines):
        y = PAD // 2 + i * line_h
        if value is not None:
            draw.rectangle([PAD, y + 2, PAD + int(300 * value), y + line_h - 4], fill=(200, 215, 240))
        draw.text((PAD + 4, y + 2), text, fill=FG if i else ACCENT, font=font)
    return img


def _stack(parts: Sequence[Image.Image]) -> Image.Image:
    width = max(WIDTH_MIN, *(p.width for p in parts))
    out = Image.new("RGB", (width, sum(p.height for p in parts)), BG)
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    return out


def render_explanation(
    result: Any, answerer: Any, out: str | Path, *, ground_truth: tuple[float, float] | None = None
) -> Path:
    """Write the explanation figure of one answer as a PNG (atomically).

    Args:
        result: a :class:`train.answer.Answer` (with its frames and attention).
        answerer: the :class:`train.answer.Answerer` that produced it (model name, task, random weights).
        out: the PNG path.
        ground_truth: moment models: the true (start, end) in seconds.

    Returns:
        ``out`` as a Path.
    """
    meta = answerer.meta
    model = meta["model_name"]
    width = WIDTH_MIN
    header = [
        (
            f"{model} ({meta.get('dataset')}{'/' + meta['task'] if meta.get('task') else ''}, "
            f"{result.task_type})" + ("  -  RANDOM backbone weights" if answerer.random_weights else ""),
            None,
        ),
        (f"video: {Path(result.video).name}", None),
        (f"Q: {result.question}", None),
    ]
    parts = []
    note = None
    if result.frames is not None:
        weights = frame_weights(model, result.attention, len(result.frames))
        strip = frame_strip(result.frames, weights)
        width = max(width, strip.width)
        key = FRAME_ATTENTION.get(model)
        note = (
            f"frames the model saw; attention: {key} (darker = less attended, outline = most)"
            if weights is not None
            else "frames the model saw (this model returned no frame attention)"
        )
        parts.append(strip)
    else:
        note = "this feature set keeps no frames to show"
    figure = _stack(
        [
            _text_block(header, width),
            _text_block([(note, None)], width, font_size=11),
            *parts,
            _text_block([("answers", None), *answer_lines(result)], width),
        ]
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        figure.save(tmp, format="PNG")
    return out
