"""Batch requests of ``vqa-answer --questions`` (and :meth:`Answerer.answer_many`): the JSONL lines, a
malformed line as a :class:`BadRequest` in its place, and a segment given as text or a list."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train.tools.answer.results import AnswerError

__all__ = ["BadRequest", "parse_segment", "read_requests"]


@dataclass(frozen=True)
class BadRequest:
    """A line of a ``--questions`` file that is not a question: its number and what is wrong (named)."""

    line: int
    error: str


def read_requests(path: str | Path) -> list[dict[str, Any] | BadRequest]:
    """The lines of a ``--questions`` JSONL file (blank lines skipped), a malformed line as a
    :class:`BadRequest` in its place (the other lines are still answered).

    Raises:
        AnswerError: the file cannot be read at all.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AnswerError(f"{path}: cannot read the questions file ({exc.strerror})") from None
    out: list[dict[str, Any] | BadRequest] = []
    for n, data in enumerate(raw.split(b"\n"), 1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.append(BadRequest(n, f"{path}:{n}: not UTF-8 text (byte {exc.start + 1})"))
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append(BadRequest(n, f"{path}:{n}: not JSON ({exc.msg}); expected one object per line like "
                                     '{"video": "clip.mp4", "question": "what is the man riding ?"}'))
            continue
        if not isinstance(obj, dict) or "video" not in obj or not ("question" in obj or "query" in obj):
            out.append(BadRequest(n, f'{path}:{n}: expected an object with "video" and "question" '
                                     '(or "query")'))
            continue
        out.append(obj)
    return out



def parse_segment(text: Any, option: str = "--ground-truth") -> tuple[float, float] | None:
    """``"START,END"`` (or a [start, end] list, batch lines) in seconds -> (start, end); None -> None."""
    if text is None:
        return None
    try:
        parts = text.replace(",", " ").split() if isinstance(text, str) else list(text)
        start, end = (float(x) for x in parts)
    except (ValueError, TypeError):
        raise AnswerError(f"{option} {text!r}: expected START,END in seconds, e.g. 3.5,9") from None
    if not end >= start >= 0:
        raise AnswerError(f"{option} {text!r}: expected 0 <= START <= END (seconds)")
    return start, end

