"""How2QA (Li et al., "HERO: Hierarchical Encoder for Video+Language Omni-representation Pre-training",
EMNLP 2020; also part of the VALUE benchmark).

Annotation files under the root, JSON lines (one question per line), for each split the first that
exists of ``how2qa_<split>.jsonl`` and ``<split>.jsonl`` (test also ``how2qa_test_public.jsonl``).
Each line: ``vid_name``, ``ts`` (the relevant segment, ``"start-end"`` seconds or ``[start, end]``),
``q``, four candidates ``a0``..``a3`` and ``answer_idx`` (0..3); ``qid`` is used as the question id
when present, else ``<split>-<line>``. Multiple choice with 4 candidates; ``qtype`` is ``how2qa``; the
segment is kept in ``QARecord.segment``.

Subtitles (optional): the first that exists of ``how2_subtitles.jsonl`` (the name of HERO's / VALUE's
release, ``ann/how2_subtitles.jsonl`` there: copy or link it into the root), ``how2qa_subtitles.jsonl``
and ``subtitles.jsonl``. JSON lines, one per video, as VALUE's ``tv_subtitles.jsonl`` and HERO's
``scripts/prepro_sub.py`` read them: ``{"vid_name": str, "sub": [{"text": str, "start": seconds,
"end": seconds}, ...]}``, the entries in time order. A question's ``QARecord.subtitle`` is the text of
the entries that overlap its ``ts`` segment (``start <= seg_end`` and ``end >= seg_start``), in file
order, joined by spaces, HTML entities unescaped (HERO unescapes them too); ``""`` for a video without
a line or without entries in the segment. Without a subtitle file ``subtitle`` is ``None``. The file
takes part in the annotations' fingerprint, so changing it rebuilds the text caches.

Videos: ``videos/<vid_name>.<ext>`` with any common video extension (``.mp4`` reported when none exists).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.datasets.base import (
    DatasetAdapter,
    DatasetFormatError,
    QARecord,
    TaskType,
    VideoDirectory,
    _Parsed,
    _Ref,
    nonempty_text,
    read_text,
    require_keys,
    to_float,
)

__all__ = ["SUBTITLE_FILES", "How2QAAdapter", "read_subtitles", "segment_subtitle"]

_SPLITS = ("train", "val", "test")
SUBTITLE_FILES = ("how2_subtitles.jsonl", "how2qa_subtitles.jsonl", "subtitles.jsonl")
_SUB_EXPECTED = ('JSON lines {"vid_name": str, "sub": [{"text": str, "start": seconds, "end": seconds}, '
                 '...]} (HERO / VALUE how2_subtitles.jsonl)')
_EXPECTED = ('JSON lines {"vid_name": str, "ts": "start-end", "q": str, "a0".."a3": str, '
             '"answer_idx": int 0..3}')


def _segment(value: Any, where: str) -> tuple[float, float]:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9.eE+]+)\s*-\s*([0-9.eE+]+)\s*", value)
        if not match:
            raise DatasetFormatError(f"{where}: ts {value!r} is not 'start-end'; expected {_EXPECTED}")
        parts: Any = match.groups()
    elif isinstance(value, list | tuple) and len(value) == 2:
        parts = value
    else:
        raise DatasetFormatError(f"{where}: ts {value!r} is not 'start-end'; expected {_EXPECTED}")
    start, end = (to_float(p, "ts", where, _EXPECTED) for p in parts)
    if start < 0 or end < start:
        raise DatasetFormatError(f"{where}: ts {value!r} is not an interval 0 <= start <= end; "
                                 f"expected {_EXPECTED}")
    return start, end


_Subs = dict[str, list[tuple[float, float, str]]]


def _subtitle_entries(entries: Any, where: str) -> list[tuple[float, float, str]]:
    """``(start, end, text)`` of one video's ``sub`` list, checked."""
    if not isinstance(entries, list):
        raise DatasetFormatError(f"{where}: 'sub' must be a list, got {type(entries).__name__}; "
                                 f"expected {_SUB_EXPECTED}")
    out = []
    for k, entry in enumerate(entries):
        at = f"{where}: sub[{k}]"
        require_keys(entry, ("text", "start", "end"), at, _SUB_EXPECTED)
        if not isinstance(entry["text"], str):
            raise DatasetFormatError(f"{at}: 'text' must be a string, got {entry['text']!r}; "
                                     f"expected {_SUB_EXPECTED}")
        start, end = (to_float(entry[f], f, at, _SUB_EXPECTED) for f in ("start", "end"))
        if end < start:
            raise DatasetFormatError(f"{at}: end {end} is before start {start}; expected {_SUB_EXPECTED}")
        out.append((start, end, html.unescape(entry["text"]).strip()))
    return out


def _json_lines(path: Path, expected: str) -> Iterator[tuple[int, str, Any]]:
    """``(line number, "FILE: line N", parsed object)`` for each non-blank line of a JSON-lines file.

    Raises:
        DatasetFormatError: naming the file and line of invalid JSON and the expected format.
    """
    for line_no, line in enumerate(read_text(path, expected).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {line_no}"
        try:
            yield line_no, where, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{where}: invalid JSON ({exc.msg}); expected {expected}") from exc


def read_subtitles(path: Path) -> _Subs:
    """Video id -> its subtitle entries ``(start_s, end_s, text)`` from a HERO / VALUE subtitle file.

    Raises:
        DatasetFormatError: naming the file, the line (and entry) and the expected format.
    """
    subs: _Subs = {}
    for _, where, item in _json_lines(path, _SUB_EXPECTED):
        require_keys(item, ("vid_name", "sub"), where, _SUB_EXPECTED)
        video_id = nonempty_text(item["vid_name"], "vid_name", where, _SUB_EXPECTED)
        if video_id in subs:
            raise DatasetFormatError(f"{where}: a second line for video {video_id!r}; expected one line "
                                     "per video")
        subs[video_id] = _subtitle_entries(item["sub"], where)
    return subs


def segment_subtitle(entries: list[tuple[float, float, str]], segment: tuple[float, float] | None) -> str:
    """The text of the entries overlapping ``segment`` (all without one), joined by spaces."""
    lo, hi = segment if segment is not None else (float("-inf"), float("inf"))
    return " ".join(text for start, end, text in entries if start <= hi and end >= lo and text)


class How2QAAdapter(DatasetAdapter):
    """How2QA: JSON lines per split, 4-way multiple choice; videos ``videos/<vid_name>.*``."""

    name = "how2qa"

    @property
    def task_type(self) -> TaskType | None:
        return "mc"

    def splits(self) -> tuple[str, ...]:
        return _SPLITS

    def _file(self, split: str) -> Path:
        names = [f"how2qa_{split}.jsonl", f"{split}.jsonl"]
        if split == "test":
            names.insert(1, "how2qa_test_public.jsonl")
        for name in names:
            if (self.root / name).is_file():
                return self.root / name
        raise DatasetFormatError(f"how2qa: no annotation file for split {split!r} under {self.root}; "
                                 f"expected one of {', '.join(names)} ({_EXPECTED})")

    def subtitle_file(self) -> Path | None:
        """The subtitle file under the root (``SUBTITLE_FILES``, first found), or None."""
        return next((self.root / n for n in SUBTITLE_FILES if (self.root / n).is_file()), None)

    def annotation_files(self) -> list[Path]:
        sub = self.subtitle_file()
        return [self._file(s) for s in _SPLITS] + ([sub] if sub is not None else [])

    def _parse(self) -> _Parsed:
        videos = VideoDirectory(self, "videos")
        sub_file = self.subtitle_file()
        subs = read_subtitles(sub_file) if sub_file is not None else None
        records: dict[str, list[QARecord]] = {}
        refs: list[_Ref] = []
        for split in _SPLITS:
            path = self._file(split)
            out: list[QARecord] = []
            seen: set[str] = set()
            for line_no, where, item in _json_lines(path, _EXPECTED):
                keys = ("vid_name", "ts", "q", "a0", "a1", "a2", "a3", "answer_idx")
                require_keys(item, keys, where, _EXPECTED)
                question = nonempty_text(item["q"], "q", where, _EXPECTED)
                candidates = tuple(nonempty_text(item[f"a{i}"], f"a{i}", where, _EXPECTED) for i in range(4))
                answer = item["answer_idx"]
                if isinstance(answer, str) and answer.isdigit():
                    answer = int(answer)
                if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
                    raise DatasetFormatError(f"{where}: answer_idx {item['answer_idx']!r} out of range 0..3; "
                                             f"expected {_EXPECTED}")
                segment = _segment(item["ts"], where)
                qid = str(item["qid"]) if item.get("qid") is not None else f"{split}-{line_no}"
                if qid in seen:
                    raise DatasetFormatError(f"{where}: duplicate qid {qid!r}; expected unique ids")
                seen.add(qid)
                video_id = nonempty_text(item["vid_name"], "vid_name", where, _EXPECTED)
                find = videos.lookup(video_id, f"{path} line {line_no}")  # the id checked now, the path later
                refs.append(_Ref(video_id, find, path, f"line {line_no}"))
                subtitle = segment_subtitle(subs.get(video_id, []), segment) if subs is not None else None
                out.append(QARecord(qid, video_id, question, answer, candidates, "how2qa", "mc", segment,
                                    subtitle))
            records[split] = out
        return _Parsed(records=records, refs=refs)
