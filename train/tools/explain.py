"""Explanation figures: the frames a model saw, what it attended to, and its answers (Pillow only).

``vqa-answer ... --explain out.png`` calls :func:`render_explanation` on an
:class:`train.tools.answer.Answer`. The figure has a header (model, video, question), a strip of the sampled
frames with the model's attention drawn over them (frames dimmed by 1 - weight / max weight, the weight
as a bar and a number under each frame, the most attended frame outlined), and the top answers as bars.

Each model's recipe (``train/recipes/``) names its view, ``recipe.explain`` (an
:class:`train.recipes.ExplainView`), and :data:`VIEWS` draws it (view name -> function of the answer and
the view's options giving the strip and a caption); no view tests a model's name:

- ``frame_attention`` (MSPAN): the strip dimmed by the output entry ``attention_key`` holding one weight
  per sampled frame (:func:`frame_weights`); MSPAN's is ``readout_weights`` (N,), the Eq. (11)-(12)
  readout softmax over the nodes of G_1, whose node x is frame x.
- ``object_boxes`` (MASN): on every frame, the ``TOP_BOXES`` objects with the highest
  ``appearance_attention`` (T, M) (the Eq. (3)-(4) softmax over the frame's objects) drawn from
  ``object_boxes`` (normalised to the whole frame, which ``app_frames`` shows squashed), outlined with a
  width and a label by weight; with bottom-up-attention objects (``Answer.object_names``) the label names
  the object too ("white shirt 0.42").
- ``clip_frames`` (SiaSamRea): ``frame_attention`` (M*Bf,) (the [CLS] token's attention over the frames
  of the M evaluated clips, ``model.eval_clips``, each clip weighted 1 / M; for multiple choice, the row of
  the best candidate) placed on the video's frames by ``frame_index`` (a frame in two clips adds up),
  masked by ``frame_valid``; frames outside the clips get weight 0.
- ``timeline`` (CMIN, moment retrieval): a timeline over the video's duration (:func:`timeline`): a strip
  of frames placed at their times (the middle frame of the clip nearest each tile's centre,
  ``clip_times``), the sigmoid of ``step_scores`` (T,) (each step's best valid window confidence) as bars,
  the sigmoid of ``window_scores`` (N,) as a heat map with one row per window width (window ``t * K + k``
  centred on step t, ``windows`` (N, 2) in steps, invalid windows grey), the top predicted moments as
  bars (the best in red) and, when given (``--ground-truth``), the true moment in green with the IoU of
  the best. Step t of ``num_steps`` covers seconds [t, t + 1) * duration / num_steps, as in the decoding.

A model whose output lacks its view's attention (or an older build that returns none) gets the plain strip
and a note.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipelines.atomic import atomic_path
from train.recipes import ExplainView, get_recipe

Segment = tuple[float, float]

__all__ = [
    "VIEWS",
    "anchor_frame_weights",
    "answer_lines",
    "draw_boxes",
    "frame_strip",
    "frame_weights",
    "render_explanation",
    "timeline",
]

TILE = 112  # frame side in the figure (px)
TOP_BOXES = 3  # MASN: objects outlined per frame
PAD = 8
WIDTH_MIN = 640
BG, FG, ACCENT, BAR = (255, 255, 255), (20, 20, 20), (220, 40, 40), (60, 110, 200)
TRUTH, GRID, MUTED = (30, 150, 60), (200, 200, 200), (225, 225, 225)
TIMELINE_WIDTH = 960  # px; the time axis runs from LABEL_W to TIMELINE_WIDTH - PAD * 2
LABEL_W = 120  # px of row labels left of the time axis
#: a viridis-like colour ramp for the window heat map (low -> high)
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float64)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def frame_weights(key: str | None, attention: dict[str, np.ndarray], num_frames: int) -> np.ndarray | None:
    """One attention weight per shown frame (sums to 1), or None when the model returned none.

    The output entry ``key`` (a recipe's ``explain.attention_key``) is used when its length is the number
    of frames; an entry with more positions than frames (e.g. nodes beyond G_1) is cut to the first
    ``num_frames``.
    """
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


def answer_lines(result: Any, ground_truth: Segment | None = None) -> list[tuple[str, float | None]]:
    """(text, bar value in [0, 1] or None) for the figure's answer panel (moments: with the ground truth
    and each moment's IoU with it, when given): the task kind's (``train.tasks``)."""
    return result.kind.answer_lines(result, ground_truth)


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


# -- the views: (answer, ExplainView) -> (strip image, caption) ------------------------------------------

_NO_ATTENTION = "frames the model saw (this model returned no frame attention)"


def _frame_attention_view(
    result: Any, explain: ExplainView, ground_truth: Segment | None = None
) -> tuple[Image.Image, str]:
    """The strip dimmed by the output entry ``explain.attention_key`` (MSPAN's ``readout_weights``)."""
    weights = frame_weights(explain.attention_key, result.attention, len(result.frames))
    if weights is None:
        return frame_strip(result.frames, None), _NO_ATTENTION
    caption = (
        f"frames the model saw; attention: {explain.attention_key} (darker = less attended, outline = most)"
    )
    return frame_strip(result.frames, weights), caption


def _best_candidate_row(result: Any, attention: np.ndarray, per_answer_ndim: int) -> np.ndarray:
    """Multiple choice: the attention row of the best-scored candidate; otherwise ``attention`` as is."""
    if attention.ndim > per_answer_ndim and result.candidate_index:
        return attention[result.candidate_index[0]]
    return attention


def draw_boxes(
    frame: np.ndarray, boxes: np.ndarray, weights: np.ndarray, *, top: int = TOP_BOXES, tile: int = TILE,
    names: Sequence[str] | None = None,
) -> np.ndarray:  # fmt: skip
    """``frame`` resized to ``tile`` with its ``top`` most attended boxes outlined and labelled.

    Args:
        frame: (H, W, 3) uint8.
        boxes: (M, >=4) ``[x1/w, y1/h, x2/w, y2/h, ...]`` normalised to the frame.
        weights: (M,) attention over the objects (masked objects 0).
        names: (M,) object names to put before the weight (None: the weight alone).

    Returns:
        (tile, tile, 3) uint8; the most attended box red and thickest, then by decreasing weight.
    """
    img = Image.fromarray(np.ascontiguousarray(frame)).resize((tile, tile), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    font = _font(10)
    order = [int(j) for j in np.argsort(-weights, kind="stable")[:top] if weights[j] > 0]
    for rank, j in reversed(list(enumerate(order))):  # draw the best last (on top)
        x1, y1, x2, y2 = (np.clip(boxes[j, :4], 0.0, 1.0) * (tile - 1)).tolist()
        color = ACCENT if rank == 0 else (255, 200, 0)
        draw.rectangle([x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)], outline=color, width=3 if rank == 0 else 1)
        label = f"{names[j]} {weights[j]:.2f}" if names is not None and names[j] else f"{weights[j]:.2f}"
        draw.text((x1 + 2, y1 + 1), label, fill=color, font=font)
    return np.asarray(img)


def _object_box_view(result: Any, explain: ExplainView, ground_truth: Segment | None = None
                     ) -> tuple[Image.Image, str]:
    """MASN: the top-attended object boxes (appearance attention, Eq. (3)-(4)) drawn on each frame."""
    att = result.attention.get("appearance_attention")
    boxes = result.features.get("object_boxes")
    if att is None or boxes is None:
        return frame_strip(result.frames, None), _NO_ATTENTION
    att = _best_candidate_row(result, np.asarray(att, dtype=np.float64), 2)  # (T', M)
    boxes = np.asarray(boxes, dtype=np.float64)  # (T, M, 6)
    mask = result.features.get("object_mask")
    names = getattr(result, "object_names", None)  # (T, M) with bottom-up-attention objects, else None
    t = min(len(result.frames), len(boxes), len(att))  # the model sees at most T' <= T frames
    m = min(att.shape[1], boxes.shape[1])
    drawn = []
    for i in range(t):
        w = np.clip(att[i, :m], 0.0, None)
        if mask is not None:
            w = w * np.asarray(mask[i, :m], dtype=np.float64)
        row_names = None if names is None else names[i, :m]
        drawn.append(draw_boxes(result.frames[i], boxes[i, :m], w, names=row_names))
    labels = [f"#{i}  top {float(att[i, :m].max()):.2f}" for i in range(t)]
    caption = f"appearance attention over each frame's objects: top {TOP_BOXES} boxes (red = most attended)"
    if names is not None:
        caption += "; named by the bottom-up-attention detector (Visual Genome attribute and class)"
    return frame_strip(np.stack(drawn), None, labels=labels), caption


def anchor_frame_weights(result: Any) -> np.ndarray | None:
    """SiaSamRea: one weight per shown frame (sums to 1) from the evaluated clips' ``frame_attention``
    placed by ``frame_index`` and masked by ``frame_valid`` (frames outside the clips 0); None if absent."""
    att, index = result.attention.get("frame_attention"), result.attention.get("frame_index")
    if att is None or index is None or result.frames is None:
        return None
    att = _best_candidate_row(result, np.asarray(att, dtype=np.float64), 1)  # (Bf,)
    index = np.asarray(index).astype(np.int64).reshape(-1)
    valid = np.asarray(result.attention.get("frame_valid", np.ones_like(index)), dtype=bool).reshape(-1)
    weights = np.zeros(len(result.frames))
    keep = valid & (index >= 0) & (index < len(weights))
    np.add.at(weights, index[keep], np.clip(att[keep], 0.0, None))
    total = weights.sum()
    return weights / total if total > 0 else None


def _clip_frame_view(result: Any, explain: ExplainView, ground_truth: Segment | None = None
                     ) -> tuple[Image.Image, str]:
    """SiaSamRea: the [CLS] attention over the evaluated clips' frames, placed on the video's frames."""
    weights = anchor_frame_weights(result)
    if weights is None:
        return frame_strip(result.frames, None), _NO_ATTENTION
    caption = (
        f"SiaSamRea frame attention over the {int((weights > 0).sum())} frames of its evaluated clip(s) "
        "(darker = less attended, outline = most; frames outside the clip 0)"
    )
    return frame_strip(result.frames, weights), caption


# -- CMIN: the timeline -----------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _ramp(v: float) -> tuple[int, int, int]:
    """Colour of ``v`` in [0, 1] on :data:`_RAMP`."""
    pos = float(np.clip(v, 0.0, 1.0)) * (len(_RAMP) - 1)
    i = min(int(pos), len(_RAMP) - 2)
    c = _RAMP[i] + (pos - i) * (_RAMP[i + 1] - _RAMP[i])
    return int(c[0]), int(c[1]), int(c[2])


def _tick_step(duration: float, max_ticks: int = 12) -> float:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if duration / step <= max_ticks:
            return float(step)
    return duration / max_ticks


class _Axis:
    """Seconds -> x pixels of the time axis."""

    def __init__(self, duration: float, width: int = TIMELINE_WIDTH) -> None:
        self.duration, self.x0, self.x1 = max(float(duration), 1e-6), LABEL_W, width - 2 * PAD

    def x(self, t: float) -> int:
        return int(round(self.x0 + (self.x1 - self.x0) * min(max(t, 0.0), self.duration) / self.duration))


def _panel(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (width, height), BG)
    return img, ImageDraw.Draw(img)


def _timeline_frames(frames: np.ndarray | None, times: np.ndarray | None, axis: _Axis) -> Image.Image:
    """Tiles side by side along the axis; tile i shows the frame nearest the centre of its time span."""
    width = axis.x1 + 2 * PAD
    if frames is None or len(frames) == 0:
        img, draw = _panel(width, 24)
        draw.text((PAD, 6), "frames: none kept by this feature set", fill=FG, font=_font(11))
        return img
    times = np.asarray(times if times is not None and len(times) == len(frames)
                       else (np.arange(len(frames)) + 0.5) * axis.duration / len(frames), dtype=np.float64)
    n = max(1, min(len(frames), (axis.x1 - axis.x0) // 64))
    span = (axis.x1 - axis.x0) / n
    side = int(min(span - 4, 96))
    img, draw = _panel(width, side + 22)
    draw.text((PAD, side // 2 - 6), "frames", fill=FG, font=_font(12))
    for i in range(n):
        centre = (i + 0.5) * axis.duration / n
        j = int(np.argmin(np.abs(times - centre)))
        x = int(axis.x0 + i * span + (span - side) / 2)
        tile = Image.fromarray(np.ascontiguousarray(frames[j])).resize((side, side), Image.BILINEAR)
        img.paste(tile, (x, 2))
        draw.text((x, side + 5), f"{times[j]:.1f}s", fill=FG, font=_font(10))
    return img


def _mark(draw: ImageDraw.ImageDraw, axis: _Axis, seg: Segment | None, top: int, bottom: int,
          colour: tuple[int, int, int], label: str) -> None:
    """Vertical lines at a segment's ends over a panel, the segment as a band on top, and its label."""
    if seg is None:
        return
    a, b = axis.x(seg[0]), max(axis.x(seg[1]), axis.x(seg[0]) + 1)
    draw.rectangle([a, top - 5, b, top - 2], fill=colour)
    for x in (a, b):
        draw.line([x, top - 5, x, bottom], fill=colour, width=2)
    draw.text((a + 3, top - 18), label, fill=colour, font=_font(10))


def _step_panel(scores: np.ndarray, steps: int, axis: _Axis, best: Segment | None,
                truth: Segment | None) -> Image.Image:
    """Bars of each step's score (sigmoid of ``step_scores``), the axis from their min to their max."""
    h = 130
    img, draw = _panel(axis.x1 + 2 * PAD, h)
    font = _font(10)
    finite = np.isfinite(scores[:steps])  # -inf: no valid window covers the step
    sc = _sigmoid(scores[:steps])
    top, bottom = 22, h - 8
    draw.text((PAD, top), "step score", fill=FG, font=_font(12))
    if not finite.any():
        draw.text((PAD, top + 18), "(no valid window)", fill=FG, font=font)
        return img
    lo, hi = float(sc[finite].min()), float(sc[finite].max())
    span = hi - lo if hi - lo > 1e-9 else 1.0
    draw.text((PAD, top + 16), f"max {hi:.4f}", fill=FG, font=font)
    draw.text((PAD, bottom - 12), f"min {lo:.4f}", fill=FG, font=font)
    sec = axis.duration / max(steps, 1)
    for t in range(steps):
        x0, x1 = axis.x(t * sec), axis.x((t + 1) * sec)
        if not finite[t]:
            draw.rectangle([x0, bottom - 3, max(x1 - 1, x0), bottom], fill=GRID)
            continue
        y = bottom - int(round((bottom - top - 4) * (0.1 + 0.9 * (sc[t] - lo) / span)))
        draw.rectangle([x0, y, max(x1 - 1, x0), bottom], fill=BAR)
    draw.line([axis.x0, bottom, axis.x1, bottom], fill=FG)
    _mark(draw, axis, truth, top, bottom, TRUTH, "true")
    _mark(draw, axis, best, top, bottom, ACCENT, "#1")
    return img


def _window_panel(window_scores: np.ndarray, window_mask: np.ndarray, windows: np.ndarray, steps: int,
                  total_steps: int, axis: _Axis) -> Image.Image:
    """One row per window width: the colour of window (t, k) over step t's span (grey: invalid)."""
    K = max(1, len(window_scores) // max(total_steps, 1))
    row_h = 14
    img, draw = _panel(axis.x1 + 2 * PAD, K * row_h + 34)
    font = _font(10)
    sc = _sigmoid(window_scores).reshape(total_steps, K)
    valid = np.asarray(window_mask, dtype=bool).reshape(total_steps, K)
    valid[steps:] = False
    lo = float(sc[valid].min()) if valid.any() else 0.0
    hi = float(sc[valid].max()) if valid.any() else 1.0
    span = hi - lo if hi - lo > 1e-9 else 1.0
    sec = axis.duration / max(steps, 1)
    for k in range(K):
        y = 4 + k * row_h
        width_steps = float(windows[k, 1] - windows[k, 0]) if len(windows) > k else float("nan")
        draw.text((PAD, y), f"window {width_steps:g} steps ({width_steps * sec:.1f}s)", fill=FG, font=font)
        for t in range(steps):
            colour = _ramp((sc[t, k] - lo) / span) if valid[t, k] else MUTED
            x0 = axis.x(t * sec)
            draw.rectangle([x0, y, max(axis.x((t + 1) * sec) - 1, x0), y + row_h - 2], fill=colour)
    y = 8 + K * row_h
    draw.text((PAD, y), "window score", fill=FG, font=font)
    for i in range(100):
        draw.rectangle([axis.x0 + 2 * i, y + 2, axis.x0 + 2 * i + 1, y + 12], fill=_ramp(i / 99))
    draw.text((axis.x0 + 206, y + 1), f"{lo:.4f} .. {hi:.4f}  (grey: window outside the video)", fill=FG,
              font=font)
    return img


def _moment_panel(moments: Sequence[tuple[float, float, float]], truth: Segment | None, axis: _Axis
                  ) -> Image.Image:
    """The ranked moments as bars (the best red), the true moment green, and the time axis."""
    rows = len(moments) + (truth is not None)
    row_h = 16
    h = rows * row_h + 30
    img, draw = _panel(axis.x1 + 2 * PAD, h)
    font = _font(11)
    for r, (a, b, s) in enumerate(moments):
        y = 4 + r * row_h
        draw.text((PAD, y), f"#{r + 1}  {s:.3f}", fill=ACCENT if r == 0 else FG, font=font)
        draw.rectangle([axis.x(a), y + 2, max(axis.x(b), axis.x(a) + 2), y + row_h - 3],
                       fill=ACCENT if r == 0 else BAR)
    if truth is not None:
        y = 4 + len(moments) * row_h
        draw.text((PAD, y), "true moment", fill=TRUTH, font=font)
        draw.rectangle([axis.x(truth[0]), y + 2, max(axis.x(truth[1]), axis.x(truth[0]) + 2), y + row_h - 3],
                       fill=TRUTH)
    y = h - 24
    draw.line([axis.x0, y, axis.x1, y], fill=FG)
    step = _tick_step(axis.duration)
    t = 0.0
    while t <= axis.duration + 1e-9:
        draw.line([axis.x(t), y, axis.x(t), y + 4], fill=FG)
        draw.text((axis.x(t) - 6, y + 6), f"{t:g}", fill=FG, font=_font(10))
        t += step
    draw.text((PAD, y + 6), "seconds", fill=FG, font=_font(10))
    return img


def timeline(result: Any, ground_truth: Segment | None = None) -> Image.Image:
    """CMIN's timeline figure body (see the module docstring) for a moment answer."""
    att = result.attention
    duration = float(result.duration or (max(b for _, b, _ in result.moments) if result.moments else 1.0))
    axis = _Axis(duration)
    best = tuple(result.moments[0][:2]) if result.moments else None
    parts = [_timeline_frames(result.frames, result.features.get("clip_times"), axis)]
    if "step_scores" in att:
        scores = np.asarray(att["step_scores"], dtype=np.float64).reshape(-1)
        total = len(scores)
        steps = int(np.asarray(att.get("num_steps", total)).reshape(-1)[0])
        parts.append(_step_panel(scores, steps, axis, best, ground_truth))
        if {"window_scores", "window_mask", "windows"} <= set(att):
            parts.append(_window_panel(np.asarray(att["window_scores"]).reshape(-1), att["window_mask"],
                                       np.asarray(att["windows"]).reshape(-1, 2), steps, total, axis))
    parts.append(_moment_panel(result.moments, ground_truth, axis))
    return _stack(parts)


def _timeline_view(result: Any, explain: ExplainView, ground_truth: Segment | None = None
                   ) -> tuple[Image.Image, str]:
    """CMIN: the timeline of step and window scores with the top moments (and the true one)."""
    caption = ("timeline: each step's score (best valid window covering it; red = the top moment"
               + (", green = the true one" if ground_truth is not None else "")
               + "), every window's score by width, the ranked moments")
    return timeline(result, ground_truth), caption


#: view name (a recipe's ``explain.view``) -> the function drawing it; each takes ``(answer, ExplainView,
#: ground_truth=None)`` and returns the image and its caption
VIEWS: dict[str, Callable[..., tuple[Image.Image, str]]] = {
    "frame_attention": _frame_attention_view,
    "object_boxes": _object_box_view,
    "clip_frames": _clip_frame_view,
    "timeline": _timeline_view,
}


def render_explanation(
    result: Any, answerer: Any, out: str | Path, *, ground_truth: tuple[float, float] | None = None
) -> Path:
    """Write the explanation figure of one answer as a PNG (atomically).

    Args:
        result: a :class:`train.tools.answer.Answer` (with its frames and attention).
        answerer: the :class:`train.tools.answer.Answerer` that produced it (model name, task,
            random weights).
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
        (f"{result.kind.text_short}: {result.question}", None),
    ]
    parts = []
    note = None
    if result.frames is not None or result.kind.reads_duration:  # moments: a timeline without frames
        explain = get_recipe(model).explain
        strip, note = VIEWS[explain.view](result, explain, ground_truth=ground_truth)
        width = max(width, strip.width)
        parts.append(strip)
    else:
        note = "this feature set keeps no frames to show"
    figure = _stack(
        [
            _text_block(header, width),
            _text_block([(note, None)], width, font_size=11),
            *parts,
            _text_block([(result.kind.answers_title, None),
                         *answer_lines(result, ground_truth)], width),
        ]
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        figure.save(tmp, format="PNG")
    return out
