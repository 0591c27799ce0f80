"""Record types and the adapter base class shared by every dataset adapter.

An adapter is built as ``Adapter(root, task=None)``; it parses its official annotation files lazily
(on the first call that needs them), all at once and completely: any malformed input raises
:class:`DatasetFormatError` naming the file, the line or record and the expected format, and nothing
half-parsed is ever returned.

Reading the annotations never touches the videos: a record carries its video id, which is checked
against the root as written (absolute ids and ``..`` above the root are refused, naming the file and
line) while the annotations are read. The video's path (which may need a listing of the videos
directory, e.g. to find its extension) is worked out only when videos are enumerated
(:meth:`DatasetAdapter.videos`, :meth:`DatasetAdapter.missing_videos`: extraction, answering), so
training, which reads features only, works without the videos directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pipelines.paths import resolve_under

__all__ = [
    "VIDEO_EXTENSIONS",
    "DatasetAdapter",
    "DatasetFormatError",
    "MissingVideo",
    "MomentRecord",
    "QARecord",
    "VideoRef",
    "read_text",
]

#: Suffixes (lower case) recognised as video files by ``folder`` and by the "any extension" lookups.
VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv",
    ".ts", ".gif",
)

TaskType = Literal["open", "mc", "count"]


class DatasetFormatError(ValueError):
    """An annotation file is unreadable or does not follow its dataset's official format.

    The message names the file, the line or record, and the format that was expected.
    """


@dataclass(frozen=True)
class VideoRef:
    """One video the annotations reference: its id (feature key) and its path under the root."""

    video_id: str
    path: Path


@dataclass(frozen=True)
class QARecord:
    """One question.

    Attributes:
        qid: unique question id within the dataset (and task).
        video_id: the id of the video (same id as in :meth:`DatasetAdapter.videos`).
        question: the question text as in the annotation file (whitespace-stripped).
        answer: open: the answer text; mc: the 0-based index of the right candidate; count: the count.
        candidates: the answer candidates for multiple choice, else ``None``.
        qtype: question type used for per-type accuracy (question word for MSVD/MSRVTT-QA, the FrameQA
            type name for TGIF-QA FrameQA, the official type name for ActivityNet-QA, else the task).
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        segment: (start, end) seconds of the relevant segment when the dataset gives one (How2QA).
        subtitle: the subtitle text of the question's segment (the whole video without one) when the
            dataset has subtitles (How2QA), ``""`` when none falls in it; ``None`` for datasets without.
    """

    qid: str
    video_id: str
    question: str
    answer: str | int | float
    candidates: tuple[str, ...] | None
    qtype: str
    task_type: TaskType
    segment: tuple[float, float] | None = None
    subtitle: str | None = None


@dataclass(frozen=True)
class MomentRecord:
    """One moment-retrieval query: a sentence and its ground-truth interval in seconds."""

    qid: str
    video_id: str
    query: str
    start_s: float
    end_s: float
    duration_s: float


@dataclass(frozen=True)
class MissingVideo:
    """A video referenced by the annotations but absent under the root.

    Attributes:
        annotation_file: the file of the first row that references it.
        location: that row, e.g. ``"line 7"`` or ``"record 12"`` or ``"key 'v_abc'"``.
        video_id: the video id.
        expected_path: where the video was looked for (the default name when several were tried).
        num_rows: how many annotation rows reference this video.
    """

    annotation_file: Path
    location: str
    video_id: str
    expected_path: Path
    num_rows: int = 1


@dataclass(frozen=True)
class _Ref:
    """A video reference with the annotation row it came from (internal).

    ``path`` is the path, or a function that finds it (called only when videos are enumerated).
    """

    video_id: str
    path: Path | Callable[[], Path]
    source_file: Path
    location: str

    def video_path(self) -> Path:
        """The path of the video (looked up now when it was deferred)."""
        return self.path if isinstance(self.path, Path) else self.path()


@dataclass
class _Parsed:
    """Everything an adapter parsed: records per split and the video references (internal)."""

    records: dict[str, list[Any]]
    refs: list[_Ref]


class DatasetAdapter:
    """Base class of all adapters.

    Subclasses set the class attributes and implement :meth:`_parse` (and :meth:`annotation_files`).

    Args:
        root: the dataset root directory (``--root``).
        task: the task for datasets that have several (TGIF-QA); ``None`` otherwise. For TGIF-QA,
            ``None`` is allowed for listing videos (all tasks) but not for :meth:`records`.
    """

    #: registry name
    name: ClassVar[str] = ""
    #: ``"qa"``, ``"moment"`` or ``"videos"`` (``folder``: extraction only)
    kind: ClassVar[str] = "qa"
    #: tasks, empty when the dataset has one
    tasks: ClassVar[tuple[str, ...]] = ()
    #: default answer-vocabulary size (open-ended only); ``None`` = all training answers
    default_answer_vocab_size: ClassVar[int | None] = None

    def __init__(self, root: str | os.PathLike, task: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.name}: dataset root {self.root} is not a directory; pass the folder that holds the "
                f"official annotation files with --root"
            )
        if task is not None and task not in self.tasks:
            if self.tasks:
                raise DatasetFormatError(
                    f"{self.name}: unknown task {task!r}; expected one of {', '.join(self.tasks)}"
                )
            raise DatasetFormatError(f"{self.name}: has no tasks, got task {task!r}; leave the task unset")
        self.task = task
        self._parsed: _Parsed | None = None

    # ------------------------------------------------------------------ public API
    @property
    def task_type(self) -> TaskType | None:
        """``"open"``, ``"mc"`` or ``"count"`` for QA datasets (with the task set), else ``None``."""
        return None

    def splits(self) -> tuple[str, ...]:
        """The split names, e.g. ``("train", "val", "test")``."""
        return tuple(self._load().records)

    def videos(self) -> list[VideoRef]:
        """Every video referenced by the annotations of all splits, unique, sorted by id."""
        seen: dict[str, VideoRef] = {}
        for ref in self._load().refs:
            if ref.video_id not in seen:
                seen[ref.video_id] = VideoRef(ref.video_id, ref.video_path())
        return [seen[k] for k in sorted(seen)]

    def missing_videos(self) -> list[MissingVideo]:
        """The referenced videos that do not exist under the root, sorted by id (first row reported)."""
        first: dict[str, _Ref] = {}
        counts: dict[str, int] = {}
        paths: dict[str, Path] = {}
        for ref in self._load().refs:
            if ref.video_id not in paths:
                paths[ref.video_id] = ref.video_path()
        exists: dict[Path, bool] = {}
        for ref in self._load().refs:
            path = paths[ref.video_id]
            if path not in exists:
                exists[path] = path.is_file()
            if exists[path]:
                continue
            first.setdefault(ref.video_id, ref)
            counts[ref.video_id] = counts.get(ref.video_id, 0) + 1
        return [
            MissingVideo(first[k].source_file, first[k].location, k, paths[k], counts[k])
            for k in sorted(first)
        ]

    def records(self, split: str) -> list[QARecord]:
        """The questions of ``split`` in annotation order.

        Raises:
            TypeError: for moment-retrieval datasets and ``folder``.
            KeyError: for an unknown split (the message lists the splits).
            DatasetFormatError: when the split is empty.
        """
        if self.kind != "qa":
            raise TypeError(f"{self.name} is a {self.kind} dataset; it has no QA records (use moments())")
        return list(self._split(split))

    def moments(self, split: str) -> list[MomentRecord]:
        """The moment-retrieval queries of ``split`` in annotation order (see :meth:`records`)."""
        if self.kind != "moment":
            raise TypeError(f"{self.name} is a {self.kind} dataset; it has no moment records (use records())")
        return list(self._split(split))

    def annotation_files(self) -> list[Path]:
        """The annotation files this adapter (with its task) reads; used for content hashing."""
        return []

    def fingerprint(self) -> str:
        """sha256 over the name, task and content of every annotation file (cache keys depend on it)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.name, self.task]).encode())
        for path in sorted(self.annotation_files()):
            h.update(path.name.encode() + b"\0")
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            h.update(b"\0")
        return h.hexdigest()

    # ------------------------------------------------------------------ helpers for subclasses
    def _parse(self) -> _Parsed:
        raise NotImplementedError

    def _load(self) -> _Parsed:
        if self._parsed is None:
            parsed = self._parse()
            for ref in parsed.refs:  # an id becomes a feature key others join onto paths: same rule
                resolve_under(self.root, ref.video_id, source=f"{ref.source_file} {ref.location}")
            self._parsed = parsed
        return self._parsed

    def _split(self, split: str) -> list[Any]:
        parsed = self._load()
        if split not in parsed.records:
            names = ", ".join(parsed.records) or "(none)"
            raise KeyError(f"{self.name}: unknown split {split!r}; the splits are {names}")
        rows = parsed.records[split]
        if not rows:
            raise DatasetFormatError(
                f"{self.name}: split {split!r} is empty; check its annotation file under {self.root}"
            )
        return rows

    def _resolve(self, relative: str, source: str) -> Path:
        return resolve_under(self.root, relative, source=source)


def read_text(path: Path, expected: str) -> str:
    """The UTF-8 text of an annotation file; a byte that is not UTF-8 is reported by line and column.

    Raises:
        DatasetFormatError: missing or unreadable file, or not UTF-8 (naming the line).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: file not found; expected {expected}") from None
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc.strerror}); expected {expected}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DatasetFormatError(
            f"{path} line {line} column {column}: byte 0x{data[exc.start]:02x} is not valid UTF-8; "
            "save the file as UTF-8"
        ) from None


def read_json(path: Path, expected: str) -> Any:
    """Load a JSON file, turning any read or syntax error into a :class:`DatasetFormatError`."""
    text = read_text(path, expected)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(
            f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg}); expected {expected}"
        ) from exc


def require_keys(obj: Any, keys: Iterable[str], where: str, expected: str) -> None:
    """Raise a :class:`DatasetFormatError` unless ``obj`` is a dict holding every key in ``keys``."""
    if not isinstance(obj, dict):
        raise DatasetFormatError(
            f"{where}: expected a JSON object, got {type(obj).__name__}; expected {expected}"
        )
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DatasetFormatError(f"{where}: missing field(s) {', '.join(missing)}; expected {expected}")


def nonempty_text(value: Any, field: str, where: str, expected: str) -> str:
    """A stripped non-empty string, or a :class:`DatasetFormatError`."""
    if not isinstance(value, str) or not value.strip():
        raise DatasetFormatError(f"{where}: field {field!r} must be a non-empty string, got {value!r}; "
                                 f"expected {expected}")
    return value.strip()


def to_float(value: Any, field: str, where: str, expected: str) -> float:
    """A finite float, or a :class:`DatasetFormatError`."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{where}: field {field!r} must be a number, got {value!r}; "
                                 f"expected {expected}") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise DatasetFormatError(
            f"{where}: field {field!r} must be finite, got {value!r}; expected {expected}"
        )
    return out


class VideoDirectory:
    """Look a video stem up in one directory whatever its extension (one listing, cached).

    :meth:`lookup` (while reading annotations) checks the id and defers the listing to when the path is
    asked for, so reading annotations never lists (or needs) the videos directory.

    Args:
        adapter: the adapter (for ``resolve_under``).
        relative_dir: the directory relative to the root, e.g. ``"videos"``.
        default_suffix: the suffix reported as the expected path when no file matches.
    """

    def __init__(self, adapter: DatasetAdapter, relative_dir: str, default_suffix: str = ".mp4") -> None:
        self.adapter = adapter
        self.relative_dir = relative_dir
        self.default_suffix = default_suffix
        self._by_stem: dict[str, str] | None = None

    def _listing(self) -> dict[str, str]:
        if self._by_stem is None:
            self._by_stem = {}
            directory = self.adapter.root / self.relative_dir
            if directory.is_dir():
                # Deterministic choice among several extensions: the order of VIDEO_EXTENSIONS.
                rank = {ext: i for i, ext in enumerate(VIDEO_EXTENSIONS)}
                try:
                    names = os.listdir(directory)
                except OSError as exc:
                    raise DatasetFormatError(
                        f"{directory}: cannot list the videos directory ({exc.strerror}); make it readable "
                        "(training needs only the features, extraction and answering need the videos)"
                    ) from None
                entries = sorted(
                    (e for e in names if Path(e).suffix.lower() in rank),
                    key=lambda e: (rank[Path(e).suffix.lower()], e),
                )
                for entry in entries:
                    self._by_stem.setdefault(Path(entry).stem, entry)
        return self._by_stem

    def lookup(self, stem: str, source: str) -> Callable[[], Path]:
        """Check ``stem`` against the root now (as written) and return a function finding its path later.

        Raises:
            UnsafePathError: the id is absolute or climbs above the root (naming ``source``).
        """
        self.adapter._resolve(f"{self.relative_dir}/{stem}{self.default_suffix}", source)
        return functools.partial(self.resolve, stem, source)

    def resolve(self, stem: str, source: str) -> Path:
        """The path of ``stem.<any video extension>`` under the directory (default suffix if none exists)."""
        # Refuse escaping ids before anything touches the file system.
        self.adapter._resolve(f"{self.relative_dir}/{stem}{self.default_suffix}", source)
        found = self._listing().get(stem)
        name = found if found is not None else stem + self.default_suffix
        return self.adapter._resolve(f"{self.relative_dir}/{name}", source)
