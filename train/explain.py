"""Explanation figures: the frames a model saw, what it attended to, and its answers (Pillow only).

``vqa-answer ... --explain out.png`` calls :func:`render_explanation` on an
:class:`train.answer.Answer`. The figure has a header (model, video, question), a strip of the sampled
frames with the model's attention drawn over them (frames dimmed by 1 - weight / max weight, the weight
as a bar and a number under each frame, the most attended frame outlined), and the top answers as bars.

Each model names its attention in its output dict; :data:`FRAME_ATTENTION` says which entry is a weight
per sampled frame, and :func:`frame_weights` turns it into one weight per frame shown:

- MSPAN: ``readout_weights`` (N,), the Eq. (11)-(12) readout softmax over the nodes of G_1, whose node
  x is frame x.

Each model's figure is drawn by its entry in :data:`EXPLAINERS` (model name -> function of the answer
and its frames giving the strip and a caption):

- MSPAN: the strip weighted by ``readout_weights`` (above).
- MASN: on every frame, the ``TOP_BOXES`` objects with the highest ``appearance_attention`` (T, M) (the
  Eq. (3)-(4) softmax over the frame's objects) drawn from ``object_boxes`` (normalised to the whole
  frame, which ``app_frames`` shows squashed), outlined with a width and a label by weight.
- SiaSamRea: ``frame_attention`` (Bf,) (the [CLS] token's attention over the anchor clip's frames; for
  multiple choice, the row of the best candidate) placed on the video's frames by ``frame_index``, masked
  by ``frame_valid``; frames outside the anchor clip get weight 0.

A model without an entry (or an older build that returns no attention) gets the plain strip and a note.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipelines.atomic import atomic_path

__all__ = [
    "EXPLAINERS",
    "FRAME_ATTENTION",
    "anchor_frame_weights",
    "answer_lines",
    "draw_boxes",
    "frame_strip",
    "frame_weights",
    "render_explanation",
]

#: model name -> the output entry holding one attention weight per sampled frame
FRAME_ATTENTION: dict[str, str] = {"mspan": "readout_weights"}

TILE = 112  # frame side in the figure (px)
TOP_BOXES = 3  # MASN: objects outlined per frame
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


# -- per-model views: (answer, model name) -> (strip image, caption) ------------------------------------

_NO_ATTENTION = "frames the model saw (this model returned no frame attention)"


def _frame_attention_view(result: Any, model: str) -> tuple[Image.Image, str]:
    """The strip dimmed by the model's :data:`FRAME_ATTENTION` entry (MSPAN; the fallback)."""
    weights = frame_weights(model, result.attention, len(result.frames))
    if weights is None:
        return frame_strip(result.frames, None), _NO_ATTENTION
    caption = (
        f"frames the model saw; attention: {FRAME_ATTENTION[model]} (darker = less attended, outline = most)"
    )
    return frame_strip(result.frames, weights), caption


def _best_candidate_row(result: Any, attention: np.ndarray, per_answer_ndim: int) -> np.ndarray:
    """Multiple choice: the attention row of the best-scored candidate; otherwise ``attention`` as is."""
    if attention.ndim > per_answer_ndim and result.candidate_index:
        return attention[result.candidate_index[0]]
    return attention


def draw_boxes(
    frame: np.ndarray, boxes: np.ndarray, weights: np.ndarray, *, top: int = TOP_BOXES, tile: int = TILE
) -> np.ndarray:
    """``frame`` resized to ``tile`` with its ``top`` most attended boxes outlined and labelled.

    Args:
        frame: (H, W, 3) uint8.
        boxes: (M, >=4) ``[x1/w, y1/h, x2/w, y2/h, ...]`` normalised to the frame.
        weights: (M,) attention over the objects (masked objects 0).

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
        draw.text((x1 + 2, y1 + 1), f"{weights[j]:.2f}", fill=color, font=font)
    return np.asarray(img)


def _masn_view(result: Any, model: str) -> tuple[Image.Image, str]:
    """MASN: the top-attended object boxes (appearance attention, Eq. (3)-(4)) drawn on each frame."""
    att = result.attention.get("appearance_attention")
    boxes = result.features.get("object_boxes")
    if att is None or boxes is None:
        return frame_strip(result.frames, None), _NO_ATTENTION
    att = _best_candidate_row(result, np.asarray(att, dtype=np.float64), 2)  # (T', M)
    boxes = np.asarray(boxes, dtype=np.float64)  # (T, M, 6)
    mask = result.features.get("object_mask")
    t = min(len(result.frames), len(boxes), len(att))  # the model sees at most T' <= T frames
    m = min(att.shape[1], boxes.shape[1])
    drawn = []
    for i in range(t):
        w = np.clip(att[i, :m], 0.0, None)
        if mask is not None:
            w = w * np.asarray(mask[i, :m], dtype=np.float64)
        drawn.append(draw_boxes(result.frames[i], boxes[i, :m], w))
    labels = [f"#{i}  top {float(att[i, :m].max()):.2f}" for i in range(t)]
    caption = f"appearance attention over each frame's objects: top {TOP_BOXES} boxes (red = most attended)"
    return frame_strip(np.stack(drawn), None, labels=labels), caption


def anchor_frame_weights(result: Any) -> np.ndarray | None:
    """SiaSamRea: one weight per shown frame (sums to 1) from the anchor clip's ``frame_attention``
    placed by ``frame_index`` and masked by ``frame_valid`` (frames outside the clip 0); None if absent."""
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


def _siasamrea_view(result: Any, model: str) -> tuple[Image.Image, str]:
    """SiaSamRea: the [CLS] attention over the anchor clip's frames, placed on the video's frames."""
    weights = anchor_frame_weights(result)
    if weights is None:
        return frame_strip(result.frames, None), _NO_ATTENTION
    caption = (
        f"SiaSamRea frame attention over the anchor clip's {int((weights > 0).sum())} attended frames "
        "(darker = less attended, outline = most; frames outside the clip 0)"
    )
    return frame_strip(result.frames, weights), caption


#: model name -> the function drawing its frame strip (models not listed: :func:`_frame_attention_view`)
EXPLAINERS: dict[str, Callable[[Any, str], tuple[Image.Image, str]]] = {
    "mspan": _frame_attention_view,
    "masn": _masn_view,
    "siasamrea": _siasamrea_view,
}


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
        strip, note = EXPLAINERS.get(model, _frame_attention_view)(result, model)
        width = max(width, strip.width)
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
