"""TGIF-QA (Jang et al., "TGIF-QA: Toward Spatio-Temporal Reasoning in Visual Question Answering", CVPR 2017).

Layout under the root::

    gifs/<gif_name>.gif
    dataset/{Train,Test}_{action,transition,count,frameqa}_question.csv

The CSVs are TAB-separated with a header row (columns may come in any order, extra columns are
ignored, every row must have as many fields as the header; only trailing ``vid_id`` /
``description`` fields, which are not used, may be missing):

- action / transition: ``gif_name question a1 a2 a3 a4 a5 answer vid_id key``; ``answer`` is the
  0-based index of the right candidate (multiple choice, 5 candidates);
- count: ``gif_name question answer vid_id key``; ``answer`` is a non-negative integer (task type
  ``count``; the metric side rounds and clamps predictions);
- frameqa: ``gif_name question answer type vid_id key description``; ``type`` 0/1/2/3 =
  object/number/color/location (open-ended, ``qtype`` is the type name).

Splits: ``train``, ``val``, ``test``. TGIF-QA has no official validation split; following HCRN we
hold out 10% of the rows of ``Train_<task>_question.csv``: the validation rows are the first
``round(0.1 * n)`` entries of ``numpy.random.default_rng(0).permutation(n)`` (n = number of Train
rows of that task; at least one row when n >= 2), the training rows are the others. Both keep file
order. The split is by question, as in HCRN, so a GIF can have questions in both.

Question ids are ``<task>-<key>`` (``key`` is the official question key); if a key repeats within a
file, the repeated rows get ``<task>-<key>-L<line>``. Video ids are the ``gif_name`` values, videos
``gifs/<gif_name>.gif``.

``demo`` is this adapter on ``ROOT/tgif`` when ``ROOT/DEMO.json`` exists (the demo generator's
output directory), else on ``ROOT`` itself.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from pipelines.datasets.base import (
    DatasetAdapter,
    DatasetFormatError,
    QARecord,
    TaskType,
    _Parsed,
    _Ref,
    read_text,
)

__all__ = [
    "FRAMEQA_TYPES", "TGIF_TASKS", "TGIF_VAL_FRACTION", "TGIF_VAL_SEED", "DemoAdapter", "TGIFQAAdapter",
    "read_tsv", "tgif_val_rows",
]

TGIF_TASKS: tuple[str, ...] = ("action", "transition", "count", "frameqa")
TGIF_VAL_SEED = 0
TGIF_VAL_FRACTION = 0.1
FRAMEQA_TYPES: dict[str, str] = {"0": "object", "1": "number", "2": "color", "3": "location"}
_COLUMNS: dict[str, tuple[str, ...]] = {
    "action": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"),
    "transition": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"),
    "count": ("gif_name", "question", "answer", "vid_id", "key"),
    "frameqa": ("gif_name", "question", "answer", "type", "vid_id", "key", "description"),
}
_TASK_TYPES: dict[str, TaskType] = {"action": "mc", "transition": "mc", "count": "count", "frameqa": "open"}


def tgif_val_rows(n: int, *, seed: int = TGIF_VAL_SEED, fraction: float = TGIF_VAL_FRACTION) -> np.ndarray:
    """Indices (sorted) of the Train rows held out for validation.

    Args:
        n: number of rows in the task's Train CSV.
        seed: seed of ``numpy.random.default_rng``.
        fraction: share held out.

    Returns:
        (round(fraction * n),) int64 sorted row indices (at least 1 when n >= 2, 0 when n < 2).
    """
    n_val = int(round(fraction * n))
    if n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_val]).astype(np.int64)


def _expected(task: str) -> str:
    return "a TAB-separated file with the header row " + "\\t".join(_COLUMNS[task])


def read_tsv(
    path: Path, required: tuple[str, ...], expected: str, *, unused: tuple[str, ...] = ()
) -> list[tuple[int, dict[str, str]]]:
    """Read a TAB-separated file with a header row.

    A row must have as many fields as the header, except that trailing ``unused`` columns may be
    absent (they read as empty strings).

    Returns:
        ``(line_number, row)`` pairs (the header is line 1); blank lines are skipped.

    Raises:
        DatasetFormatError: missing file or column, a row with the wrong number of fields.
    """
    text = read_text(path, expected)
    try:
        lines = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    except csv.Error as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc}); expected {expected}") from exc
    if not lines:
        raise DatasetFormatError(f"{path}: empty file (no header row); expected {expected}")
    header = [h.strip() for h in lines[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetFormatError(
            f"{path}: line 1: header lacks column(s) {', '.join(missing)} (found {', '.join(header)}); "
            f"expected {expected}"
        )
    rows = []
    for number, fields in enumerate(lines[1:], start=2):
        if not fields or all(not f.strip() for f in fields):
            continue
        short_ok = len(fields) < len(header) and all(h in unused for h in header[len(fields):])
        if len(fields) != len(header) and not short_ok:
            raise DatasetFormatError(
                f"{path}: line {number}: {len(fields)} TAB-separated fields where the header has "
                f"{len(header)}; expected {expected}"
            )
        fields = fields + [""] * (len(header) - len(fields))
        rows.append((number, {h: f.strip() for h, f in zip(header, fields, strict=True)}))
    return rows


class TGIFQAAdapter(DatasetAdapter):
    """TGIF-QA, tasks ``action``, ``transition``, ``count``, ``frameqa`` (see the module docstring).

    With ``task=None`` the adapter lists the videos of every task whose Train and Test CSVs exist
    (for extraction); :meth:`records` needs a task.
    """

    name = "tgif"
    tasks = TGIF_TASKS
    default_answer_vocab_size = None  # FrameQA: all training answers

    @property
    def task_type(self) -> TaskType | None:
        return _TASK_TYPES[self.task] if self.task is not None else None

    def _csv(self, split_file: str, task: str) -> Path:
        return self.root / "dataset" / f"{split_file}_{task}_question.csv"

    def _tasks_present(self) -> tuple[str, ...]:
        if self.task is not None:
            return (self.task,)
        present = tuple(
            t for t in TGIF_TASKS if self._csv("Train", t).is_file() or self._csv("Test", t).is_file()
        )
        if not present:
            raise DatasetFormatError(
                f"tgif: no annotation file under {self.root / 'dataset'}; expected "
                f"dataset/{{Train,Test}}_{{{','.join(TGIF_TASKS)}}}_question.csv "
                "(TAB-separated, official headers)"
            )
        return present

    def annotation_files(self) -> list[Path]:
        return [self._csv(s, t) for t in self._tasks_present() for s in ("Train", "Test")]

    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test")

    def records(self, split: str) -> list[QARecord]:
        if self.task is None:
            raise DatasetFormatError(
                f"tgif: records need a task; choose one of {', '.join(TGIF_TASKS)} (--task)"
            )
        return super().records(split)

    def _parse(self) -> _Parsed:
        records: dict[str, list[QARecord]] = {"train": [], "val": [], "test": []}
        refs: list[_Ref] = []
        for task in self._tasks_present():
            for split_file in ("Train", "Test"):
                path = self._csv(split_file, task)
                parsed = self._parse_file(path, task, refs)
                if split_file == "Test":
                    records["test"].extend(parsed)
                    continue
                val = set(tgif_val_rows(len(parsed)).tolist())
                for i, rec in enumerate(parsed):
                    records["val" if i in val else "train"].append(rec)
        if self.task is None:
            # Records of several tasks are never mixed; only the video list is used without a task.
            records = {k: [] for k in records}
        return _Parsed(records=records, refs=refs)

    def _parse_file(self, path: Path, task: str, refs: list[_Ref]) -> list[QARecord]:
        expected = _expected(task)
        out: list[QARecord] = []
        seen_keys: set[str] = set()
        for line, row in read_tsv(path, _COLUMNS[task], expected, unused=("vid_id", "description")):
            where = f"{path}: line {line}"
            gif = row["gif_name"]
            question = row["question"]
            if not gif or not question:
                raise DatasetFormatError(f"{where}: empty gif_name or question; expected {expected}")
            key = row["key"]
            qid = f"{task}-{key}" if key not in seen_keys else f"{task}-{key}-L{line}"
            seen_keys.add(key)
            video_path = self._resolve(f"gifs/{gif}.gif", source=f"{path} line {line}")
            refs.append(_Ref(gif, video_path, path, f"line {line}"))
            answer: str | int
            candidates: tuple[str, ...] | None = None
            if task in ("action", "transition"):
                candidates = tuple(row[f"a{i}"] for i in range(1, 6))
                answer = _int(row["answer"], "answer", where, expected)
                if not 0 <= answer < 5:
                    raise DatasetFormatError(
                        f"{where}: answer index {answer} out of range 0..4 (0-based index of a1..a5); "
                        f"expected {expected}"
                    )
                qtype = task
            elif task == "count":
                answer = _int(row["answer"], "answer", where, expected)
                if answer < 0:
                    raise DatasetFormatError(f"{where}: negative count {answer}; expected {expected}")
                qtype = task
            else:
                answer = row["answer"]
                if not answer:
                    raise DatasetFormatError(f"{where}: empty answer; expected {expected}")
                if row["type"] not in FRAMEQA_TYPES:
                    raise DatasetFormatError(
                        f"{where}: FrameQA type {row['type']!r} is not 0/1/2/3 "
                        "(object/number/color/location); "
                        f"expected {expected}"
                    )
                qtype = FRAMEQA_TYPES[row["type"]]
            out.append(QARecord(qid, gif, question, answer, candidates, qtype, _TASK_TYPES[task]))
        return out


def _int(value: str, field: str, where: str, expected: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetFormatError(f"{where}: field {field!r} must be an integer, got {value!r}; "
                                 f"expected {expected}") from None


class DemoAdapter(TGIFQAAdapter):
    """The TGIF-QA part of the demo dataset: ``ROOT/tgif`` when ``ROOT/DEMO.json`` exists, else ``ROOT``."""

    name = "demo"

    def __init__(self, root: str | os.PathLike, task: str | None = None) -> None:
        root = Path(root)
        if (root / "DEMO.json").is_file():
            root = root / "tgif"
        super().__init__(root, task)
