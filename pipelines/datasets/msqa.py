"""MSVD-QA and MSRVTT-QA (Xu et al., "Video Question Answering via Gradually Refined Attention over
Appearance and Motion", ACM MM 2017).

Annotation files under the root: ``{train,val,test}_qa.json``, each a JSON list of objects with at
least ``question``, ``answer`` and ``video_id`` (an integer; ``id`` is used as the question id when
present, else ``<split>-<index>``). Open-ended; ``qtype`` is the question word (first token among
what/who/how/when/where, else ``other``), the breakdown both papers report.

Videos:

- MSVD-QA: ``youtube_mapping.txt`` (lines ``<youtube clip name> vid<N>``) maps ``video_id`` N to a
  clip; the video is ``YouTubeClips/<clip>.avi``. The video id is the clip name.
- MSRVTT-QA: ``video/video<N>.mp4``; the older release layout ``TrainValVideo/video<N>.mp4`` and
  ``TestVideo/video<N>.mp4`` is used when ``video/`` does not exist. The video id is ``video<N>``.

Answer vocabularies (text pipeline defaults): top 1000 (MSVD-QA) / 4000 (MSRVTT-QA) training answers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.datasets.base import (
    DatasetAdapter,
    DatasetFormatError,
    QARecord,
    TaskType,
    _Parsed,
    _Ref,
    nonempty_text,
    read_json,
    read_text,
    require_keys,
)

__all__ = ["QUESTION_WORDS", "MSRVTTQAAdapter", "MSVDQAAdapter", "question_word"]

QUESTION_WORDS: tuple[str, ...] = ("what", "who", "how", "when", "where")
_SPLITS = ("train", "val", "test")
_EXPECTED = 'a JSON list of objects {"question": str, "answer": str, "video_id": int, "id": int (optional)}'


def question_word(question: str) -> str:
    """MSVD/MSRVTT-QA question type: the first word if it is what/who/how/when/where, else ``other``."""
    match = re.match(r"\s*([A-Za-z]+)", question)
    word = match.group(1).lower() if match else ""
    return word if word in QUESTION_WORDS else "other"


def _video_number(value: Any, where: str) -> int:
    """``video_id`` as an integer; ``"video12"``, ``"vid12"`` and ``"12"`` are accepted too."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"(?:video|vid)?\d+", value.strip()):
        number = int(re.sub(r"\D", "", value))
    else:
        raise DatasetFormatError(f"{where}: video_id {value!r} is not an integer; expected {_EXPECTED}")
    if number < 0:
        raise DatasetFormatError(f"{where}: negative video_id {number}; expected {_EXPECTED}")
    return number


class _MSQAAdapter(DatasetAdapter):
    """Shared parsing of the ``{split}_qa.json`` files."""

    kind = "qa"

    @property
    def task_type(self) -> TaskType | None:
        return "open"

    def splits(self) -> tuple[str, ...]:
        return _SPLITS

    def annotation_files(self) -> list[Path]:
        return [self.root / f"{s}_qa.json" for s in _SPLITS] + self._extra_annotation_files()

    def _extra_annotation_files(self) -> list[Path]:
        return []

    def _video(self, number: int, where: str, source: str) -> tuple[str, Path | Callable[[], Path]]:
        raise NotImplementedError

    def video_number(self, video_id: str) -> int:
        """The annotation files' integer ``video_id`` of one of our video ids (HCRN keys features by it)."""
        raise NotImplementedError

    def _parse(self) -> _Parsed:
        records: dict[str, list[QARecord]] = {}
        refs: list[_Ref] = []
        for split in _SPLITS:
            path = self.root / f"{split}_qa.json"
            data = read_json(path, _EXPECTED)
            if not isinstance(data, list):
                raise DatasetFormatError(f"{path}: top level is {type(data).__name__}, not a list; "
                                         f"expected {_EXPECTED}")
            out: list[QARecord] = []
            seen: set[str] = set()
            for index, item in enumerate(data):
                where = f"{path}: record {index}"
                require_keys(item, ("question", "answer", "video_id"), where, _EXPECTED)
                question = nonempty_text(item["question"], "question", where, _EXPECTED)
                answer = item["answer"]
                if isinstance(answer, int | float) and not isinstance(answer, bool):
                    answer = str(answer)
                answer = nonempty_text(answer, "answer", where, _EXPECTED)
                qid = str(item["id"]) if item.get("id") is not None else f"{split}-{index}"
                if qid in seen:
                    raise DatasetFormatError(f"{where}: duplicate question id {qid!r}; expected unique ids")
                seen.add(qid)
                number = _video_number(item["video_id"], where)
                video_id, video_path = self._video(number, where, f"{path} record {index}")
                refs.append(_Ref(video_id, video_path, path, f"record {index}"))
                out.append(QARecord(qid, video_id, question, answer, None, question_word(question), "open"))
            records[split] = out
        return _Parsed(records=records, refs=refs)


class MSVDQAAdapter(_MSQAAdapter):
    """MSVD-QA: ``{train,val,test}_qa.json``, ``youtube_mapping.txt``, ``YouTubeClips/<clip>.avi``."""

    name = "msvd-qa"
    default_answer_vocab_size = 1000

    def __init__(self, root, task=None) -> None:
        super().__init__(root, task)
        self._mapping: dict[int, str] | None = None

    def _extra_annotation_files(self) -> list[Path]:
        return [self.root / "youtube_mapping.txt"]

    def _load_mapping(self) -> dict[int, str]:
        if self._mapping is not None:
            return self._mapping
        path = self.root / "youtube_mapping.txt"
        expected = "lines '<youtube clip name> vid<N>' separated by a space"
        text = read_text(path, expected)
        mapping: dict[int, str] = {}
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not re.fullmatch(r"vid\d+", parts[1]):
                raise DatasetFormatError(f"{path}: line {line_no}: {line!r}; expected {expected}")
            number = int(parts[1][3:])
            if number in mapping:
                raise DatasetFormatError(f"{path}: line {line_no}: vid{number} mapped twice; "
                                         f"expected {expected}")
            mapping[number] = parts[0]
        self._mapping = mapping
        return mapping

    def _video(self, number: int, where: str, source: str) -> tuple[str, Path | Callable[[], Path]]:
        mapping = self._load_mapping()
        if number not in mapping:
            raise DatasetFormatError(
                f"{where}: video_id {number} (vid{number}) is not in {self.root / 'youtube_mapping.txt'}; "
                f"expected every video_id N to have a line '<clip name> vid<N>'"
            )
        clip = mapping[number]
        return clip, self._resolve(f"YouTubeClips/{clip}.avi", source)

    def video_number(self, video_id: str) -> int:
        numbers = {clip: number for number, clip in self._load_mapping().items()}
        if video_id not in numbers:
            raise KeyError(f"{video_id!r} is not a clip of {self.root / 'youtube_mapping.txt'}")
        return numbers[video_id]


class MSRVTTQAAdapter(_MSQAAdapter):
    """MSRVTT-QA: ``{train,val,test}_qa.json`` and ``video/video<N>.mp4`` (or TrainValVideo/TestVideo)."""

    name = "msrvtt-qa"
    default_answer_vocab_size = 4000

    def video_number(self, video_id: str) -> int:
        if not re.fullmatch(r"video\d+", video_id):
            raise KeyError(f"{video_id!r} is not an MSRVTT-QA video id (video<N>)")
        return int(video_id[5:])

    def _video(self, number: int, where: str, source: str) -> tuple[str, Path | Callable[[], Path]]:
        video_id = f"video{number}"
        default = self._resolve(f"video/{video_id}.mp4", source)
        return video_id, functools.partial(self._locate, video_id, default, source)  # looked up later

    def _locate(self, video_id: str, default: Path, source: str) -> Path:
        """``video/<id>.mp4``, or the official TrainValVideo/TestVideo layout when ``video/`` is absent."""
        if not (self.root / "video").is_dir():
            for legacy in ("TrainValVideo", "TestVideo"):
                candidate = self._resolve(f"{legacy}/{video_id}.mp4", source)
                if candidate.is_file():
                    return candidate
        return default
