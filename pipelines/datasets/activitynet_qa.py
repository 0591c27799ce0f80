"""ActivityNet-QA (Yu et al., "ActivityNet-QA: A Dataset for Understanding Complex Web Videos via
Question Answering", AAAI 2019).

Annotation files under the root: ``{train,val,test}_q.json`` (a JSON list of
``{"question_id", "question", "video_name"}``) and ``{train,val,test}_a.json`` (a JSON list of
``{"question_id", "answer", "type"}``), joined on ``question_id`` (every question needs exactly one
answer and vice versa). Open-ended.

Videos: ``videos/v_<video_name>.<ext>`` with any common video extension (``.mp4`` reported when
none exists); a ``video_name`` that already starts with ``v_`` and has 13 characters (ActivityNet
style) is used as is. The video id is ``v_<youtube id>``, the same id ActivityNet Captions uses, so
features extracted for one serve the other.

``qtype`` is the official question type name: 0 motion, 1 spatial, 2 temporal, 3 yes_no, 4 color,
5 object, 6 location, 7 number, 8 other (the per-type accuracy of the paper's Table 4).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.datasets.base import (
    DatasetAdapter,
    DatasetFormatError,
    QARecord,
    TaskType,
    VideoDirectory,
    _Parsed,
    _Ref,
    nonempty_text,
    read_json,
    require_keys,
)

__all__ = ["ACTIVITYNET_QA_TYPES", "ActivityNetQAAdapter", "activitynet_video_id"]

ACTIVITYNET_QA_TYPES: tuple[str, ...] = (
    "motion", "spatial", "temporal", "yes_no", "color", "object", "location", "number", "other",
)
_SPLITS = ("train", "val", "test")
_EXPECTED_Q = 'a JSON list of objects {"question_id": str, "question": str, "video_name": str}'
_EXPECTED_A = 'a JSON list of objects {"question_id": str, "answer": str, "type": int 0..8}'


def activitynet_video_id(name: str) -> str:
    """``v_<youtube id>`` for an ActivityNet video name given with or without the ``v_`` prefix."""
    return name if (name.startswith("v_") and len(name) == 13) else f"v_{name}"


class ActivityNetQAAdapter(DatasetAdapter):
    """ActivityNet-QA: ``{split}_q.json`` + ``{split}_a.json``; videos ``videos/v_<name>.*``."""

    name = "activitynet-qa"
    default_answer_vocab_size = None  # all training answers

    @property
    def task_type(self) -> TaskType | None:
        return "open"

    def splits(self) -> tuple[str, ...]:
        return _SPLITS

    def annotation_files(self) -> list[Path]:
        return [self.root / f"{s}_{k}.json" for s in _SPLITS for k in ("q", "a")]

    def _parse(self) -> _Parsed:
        videos = VideoDirectory(self, "videos")
        records: dict[str, list[QARecord]] = {}
        refs: list[_Ref] = []
        for split in _SPLITS:
            q_path, a_path = self.root / f"{split}_q.json", self.root / f"{split}_a.json"
            questions = read_json(q_path, _EXPECTED_Q)
            answers = read_json(a_path, _EXPECTED_A)
            for path, data, expected in ((q_path, questions, _EXPECTED_Q), (a_path, answers, _EXPECTED_A)):
                if not isinstance(data, list):
                    raise DatasetFormatError(f"{path}: top level is {type(data).__name__}, not a list; "
                                             f"expected {expected}")
            by_qid: dict[str, tuple[int, str, str]] = {}
            for index, item in enumerate(answers):
                where = f"{a_path}: record {index}"
                require_keys(item, ("question_id", "answer", "type"), where, _EXPECTED_A)
                qid = str(item["question_id"])
                if qid in by_qid:
                    raise DatasetFormatError(f"{where}: second answer for question_id {qid!r}; "
                                             f"expected one answer per question")
                answer = item["answer"]
                if isinstance(answer, int | float) and not isinstance(answer, bool):
                    answer = str(answer)
                answer = nonempty_text(answer, "answer", where, _EXPECTED_A)
                qtype = item["type"]
                if isinstance(qtype, str) and qtype.isdigit():
                    qtype = int(qtype)
                if isinstance(qtype, bool) or not isinstance(qtype, int) or not 0 <= qtype < 9:
                    raise DatasetFormatError(f"{where}: type {item['type']!r} is not an integer 0..8; "
                                             f"expected {_EXPECTED_A}")
                by_qid[qid] = (index, answer, ACTIVITYNET_QA_TYPES[qtype])
            out: list[QARecord] = []
            used: set[str] = set()
            for index, item in enumerate(questions):
                where = f"{q_path}: record {index}"
                require_keys(item, ("question_id", "question", "video_name"), where, _EXPECTED_Q)
                qid = str(item["question_id"])
                if qid in used:
                    raise DatasetFormatError(f"{where}: duplicate question_id {qid!r}; expected unique ids")
                used.add(qid)
                if qid not in by_qid:
                    raise DatasetFormatError(f"{where}: question_id {qid!r} has no answer in {a_path}; "
                                             f"expected every question to have one")
                question = nonempty_text(item["question"], "question", where, _EXPECTED_Q)
                name = nonempty_text(item["video_name"], "video_name", where, _EXPECTED_Q)
                video_id = activitynet_video_id(name)
                find = videos.lookup(video_id, f"{q_path} record {index}")  # id checked now, path later
                refs.append(_Ref(video_id, find, q_path, f"record {index}"))
                _, answer, qtype = by_qid[qid]
                out.append(QARecord(qid, video_id, question, answer, None, qtype, "open"))
            orphans = [q for q in by_qid if q not in used]
            if orphans:
                index = by_qid[orphans[0]][0]
                raise DatasetFormatError(
                    f"{a_path}: record {index}: answer for question_id {orphans[0]!r} which is not in "
                    f"{q_path} "
                    f"({len(orphans)} such answers); expected the two files to list the same questions"
                )
            records[split] = out
        return _Parsed(records=records, refs=refs)
