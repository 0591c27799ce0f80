"""Datasets over feature shards and encoded questions, and the shared collate (the batch contract).

:class:`QADataset` joins one split of encoded questions (``pipelines.text.EncodedSplit``) with the
features of its videos (``extract.reader.FeatureReader``) by ``video_id``. :class:`QACollate` pads
items into the batch documented in ``docs/architecture.md`` ("The batch contract"):

========================  ====================  ===============================================
key                       shape / dtype         meaning
========================  ====================  ===============================================
``qid``                   list[str]             question ids
``video_id``              list[str]             video ids
``qtype``                 list[str]             question type (per-type accuracy)
``answer_text``           list[str]             the true answer as text
``question``              (B, L) int64          token ids, 0 = padding
``question_len``          (B,) int64            real lengths
``candidates``            (B, C, Lc) int64      multiple choice only
``candidates_len``        (B, C) int64          multiple choice only
``answer``                (B,) int64 / float32  class (-1 = out of vocabulary), candidate, count
features                  (B, ...) float32      e.g. ``appearance`` (B, 16, Da)
``<name>_mask``           (B, T) bool           ragged features only (padded to the longest)
``segment``               (B, 2) float32        (start, end) s of the question's segment, NaN when
                                                none; only for datasets that give segments (How2QA)
``subtitle``              (B, Ls) int64         token ids of the question's subtitle text (0 =
                                                padding); only when asked for and the dataset has
                                                subtitles (How2QA; ``pipelines.text.prepare_qa``)
``subtitle_len``          (B,) int64            its lengths, 0 = no subtitle text
``text_ids``              (B, C', Lt) int64     transformer question encoder only
                                                (``train/text_encoder.py``): its tokenizer's ids of
                                                the question (C' = 1) or question + candidate pairs
``text_mask``             (B, C', Lt) bool      True = token (padding is False)
``text_type_ids``         (B, C', Lt) int64     segment ids of the pairs
========================  ====================  ===============================================

Both classes are plain top-level objects, so they pickle into DataLoader workers (the reader reopens
its HDF5 files in each worker).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

log = logging.getLogger("train")

__all__ = [
    "FeatureMismatchError",
    "QACollate",
    "QADataset",
    "batch_tensor",
    "check_feature_set",
    "drop_missing_videos",
    "feature_statistics",
    "find_missing_videos",
    "model_features",
    "padding_mask",
    "qa_item",
    "seed_worker",
    "segments_after_video",
    "stack",
    "standardize",
    "to_float32",
    "video_end",
]


#: the batch keys of the transformer question encoder (``train/text_encoder.py``), each (B, C', Lt)
TEXT_KEYS = ("text_ids", "text_mask", "text_type_ids")


class FeatureMismatchError(ValueError):
    """The feature directory does not fit the model or the questions (wrong set, missing videos)."""


class NonFiniteFeatureError(FeatureMismatchError):
    """A video's features hold NaN or infinite values (the message names the video and the feature)."""


def check_feature_set(reader: Any, expected: str, *, model: str) -> None:
    """Refuse a feature directory whose manifest feature set is not the model's.

    Raises:
        FeatureMismatchError: naming the directory, both feature sets and the extraction command to run.
    """
    if reader.feature_set != expected:
        raise FeatureMismatchError(
            f"{reader.out_dir}: holds feature set {reader.feature_set!r} but model {model!r} needs "
            f"{expected!r}; extract it with `vqa-extract --features {expected} ...`"
        )


def find_missing_videos(video_ids: Sequence[str], reader: Any) -> list[str]:
    """The distinct ids in ``video_ids`` that have no features in ``reader`` (sorted)."""
    return sorted({v for v in video_ids if v not in reader})


def video_end(frame_times: np.ndarray) -> float:
    """The latest time a video with these sampled frame start times can end: the last time plus one
    sampling step (frames are sampled every ``stride`` frames or at a fixed rate); inf for one frame."""
    times = np.asarray(frame_times, dtype=np.float64)
    if len(times) < 2:
        return math.inf
    return float(times[-1] + np.median(np.diff(times)))


def segments_after_video(questions: Sequence[tuple[str, str, tuple[float, float]]], reader: Any
                         ) -> list[tuple[str, str, tuple[float, float], float]]:
    """The questions whose segment starts after their video ends (judged by the features' ``frame_times``,
    :func:`video_end`): ``(qid, video_id, segment, end)`` each. Such a segment holds no frame; the model
    would look at the nearest one instead, silently."""
    ends: dict[str, float] = {}
    out = []
    for qid, video_id, segment in questions:
        if video_id not in ends:
            ends[video_id] = video_end(reader.feature(video_id, "frame_times"))
        if segment[0] >= ends[video_id]:
            out.append((qid, video_id, segment, ends[video_id]))
    return out


def padding_mask(feats: Mapping[str, Any], key: str) -> np.ndarray | None:
    """The valid rows of float feature ``key`` of one video, or None when it has no padding mask.

    A feature's mask is the boolean feature of the same video whose shape is the feature's shape without
    its channel axis (the ``masn`` set: ``frame_mask`` (T,) for ``appearance`` / ``motion`` (T, D),
    ``object_mask`` (T, M) for ``objects`` / ``object_boxes`` / ``motion_objects`` (T, M, D)). Several
    such masks are combined with AND.

    Returns:
        A bool array of the feature's leading shape (True = a real row), or None.
    """
    lead = tuple(np.shape(feats[key])[:-1])
    masks = [np.asarray(v) for k, v in feats.items()
             if k != key and np.asarray(v).dtype == bool and tuple(np.shape(v)) == lead]
    if not masks or not lead:
        return None
    return np.logical_and.reduce(masks)


def standardize(feats: Mapping[str, Any], key: str, stats: Mapping[str, tuple[np.ndarray, np.ndarray]]
                ) -> np.ndarray:
    """Feature ``key`` of one video as float32, per channel ``(x - mean) / std`` when ``stats`` has it;
    padded rows (:func:`padding_mask`) stay zero, so padding looks the same standardised or not."""
    arr = to_float32(np.asarray(feats[key]))
    if key not in stats:
        return arr
    mean, std = stats[key]
    out = (arr - mean) / std  # per channel (last axis)
    valid = padding_mask(feats, key)
    if valid is not None:
        out = out * valid[..., None]
    return out.astype(np.float32, copy=False)


def feature_statistics(
    reader: Any, video_ids: Sequence[str], keys: Sequence[str], *, eps: float = 1e-6
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and std of float features over the distinct ``video_ids``.

    Statistics run over every real leading position (frames, clips, objects) of every video, channel =
    last axis: rows that a padding mask marks as padding (:func:`padding_mask`) are left out, so a video
    padded to T frames weighs as much as the same video unpadded (with 3 real frames of 20, counting the
    zero rows moved the mean of the real rows by 1.7 standard deviations and stalled MASN). Accumulated
    in float64 in sorted video order, so they are reproducible.

    Returns:
        ``{key: (mean (D,) float32, std (D,) float32)}`` with std floored at ``eps``.
    """
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ids = sorted(set(video_ids))
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for vid in ids:
        feats = reader[vid]
        for key in keys:
            arr = np.asarray(feats[key])
            if arr.dtype.kind != "f":
                continue
            _check_finite(arr, vid, key, reader)
            valid = padding_mask(feats, key)
            if valid is not None:
                arr = arr[valid]  # (n_valid, D)
            flat = arr.reshape(-1, arr.shape[-1]).astype(np.float64)
            sums[key] = sums.get(key, 0.0) + flat.sum(0)
            squares[key] = squares.get(key, 0.0) + (flat**2).sum(0)
            counts[key] = counts.get(key, 0) + flat.shape[0]
    for key, total in sums.items():
        mean = total / counts[key]
        var = np.maximum(squares[key] / counts[key] - mean**2, 0.0)
        stats[key] = (mean.astype(np.float32), np.maximum(np.sqrt(var), eps).astype(np.float32))
    return stats


def _check_finite(arr: np.ndarray, video_id: str, key: str, reader: Any) -> None:
    if not np.isfinite(arr).all():
        where = getattr(reader, "out_dir", "the features")
        raise NonFiniteFeatureError(
            f"video {video_id!r}: feature {key!r} holds NaN or infinite values (in {where}); "
            "re-extract that video, or remove it from the split"
        )


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed NumPy and ``random`` from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class QADataset(Dataset):
    """Questions of one split with the features of their videos.

    Args:
        split: an ``EncodedSplit`` (``qids``, ``video_ids``, ``qtypes``, ``questions`` (Q, L),
            ``question_len`` (Q,), ``candidates`` (Q, C, Lc) or None, ``candidates_len`` (Q, C) or None,
            ``answers`` (Q,), ``answer_text``).
        reader: a ``FeatureReader`` (or any mapping video id -> {name: array}).
        feature_keys: the feature names the model reads; None = every feature in the reader.
        indices: the rows of ``split`` to use (e.g. without missing videos); None = all.
        feature_stats: ``{key: (mean (D,), std (D,))}`` from :func:`feature_statistics`; those features
            are standardised per channel (``train.feature_norm=standardize``). None = as extracted.
        segments: question id -> (start, end) seconds of its segment (How2QA's ``ts``); when given,
            every item has ``segment`` (2,) float32, NaN for a question without one.
        text_tokens: question id -> ``{"text_ids", "text_mask", "text_type_ids"}`` (C', Lt) arrays of the
            transformer question encoder (``train.text_encoder.encode_questions``); None = GloVe only.

    An item is a dict with the per-question values of the batch contract (``question`` trimmed to its
    length, features as float32 tensors). Items of the same video share its feature tensors (read once
    while the cache holds less than ``cache_bytes``); the collate function copies them into the batch.
    """

    cache_bytes = 1 << 30  # per dataset (and per DataLoader worker)

    def __init__(
        self,
        split: Any,
        reader: Any,
        *,
        feature_keys: Sequence[str] | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        feature_stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
        segments: Mapping[str, tuple[float, float]] | None = None,
        text_tokens: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    ) -> None:
        self.split = split
        self.text_tokens = text_tokens
        self.segments = dict(segments) if segments else None
        self.feature_stats = dict(feature_stats or {})
        self.reader = reader
        self.feature_keys = tuple(feature_keys) if feature_keys is not None else None
        self._cache: dict[str, dict[str, torch.Tensor]] = {}
        self._cached_bytes = 0
        n = len(split.qids)
        rows = np.arange(n) if indices is None else indices
        self.indices = np.asarray(rows, dtype=np.int64)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(f"row indices out of range for a split of {n} questions")

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def qids(self) -> list[str]:
        """Question ids in dataset order."""
        return [self.split.qids[i] for i in self.indices]

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.split
        i = int(self.indices[index])
        qid, video_id = s.qids[i], s.video_ids[i]
        subtitles = getattr(s, "subtitles", None)
        return qa_item(
            qid=qid, video_id=video_id, qtype=s.qtypes[i], answer_text=str(s.answer_text[i]),
            question=s.questions[i], question_len=int(s.question_len[i]),
            answer=s.answers[i].item() if hasattr(s.answers[i], "item") else s.answers[i],
            candidates=None if s.candidates is None else s.candidates[i],
            candidates_len=None if s.candidates is None else s.candidates_len[i],
            segment=None if self.segments is None else self.segments.get(qid, (float("nan"), float("nan"))),
            subtitle=None if subtitles is None else subtitles[i],
            subtitle_len=0 if subtitles is None else int(s.subtitle_len[i]),
            text_tokens=None if self.text_tokens is None else self.text_tokens[qid],
            features=self._video_features(video_id),
        )

    def _video_features(self, video_id: str) -> dict[str, torch.Tensor]:
        """The model's features of one video (:func:`model_features`); kept in memory while the
        dataset's cache holds less than ``cache_bytes`` (the same video serves many questions and every
        epoch, and an HDF5 read per feature per question costs more than a small model's step)."""
        cached = self._cache.get(video_id)
        if cached is not None:
            return cached
        feats = self.reader[video_id]
        keys = self.feature_keys if self.feature_keys is not None else tuple(feats)
        out = model_features(feats, keys, self.feature_stats, video_id=video_id, reader=self.reader)
        size = sum(t.numel() * t.element_size() for t in out.values())
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[video_id] = out
            self._cached_bytes += size
        return out


def model_features(feats: Mapping[str, Any], keys: Sequence[str],
                   stats: Mapping[str, tuple[np.ndarray, np.ndarray]], *, video_id: str, reader: Any = None
                   ) -> dict[str, torch.Tensor]:
    """The features a model reads of one video: each of ``keys``, checked (present, finite) and, when
    float, as float32 standardised with ``stats`` (:func:`standardize`). Training's items and
    ``vqa-answer``'s new ones (``train.tasks.qa``) both read their features through it.

    Raises:
        FeatureMismatchError: a key is missing; NonFiniteFeatureError: NaN or infinite values.
    """
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        if key not in feats:
            raise FeatureMismatchError(
                f"video {video_id!r}: feature {key!r} is missing (has {sorted(feats)})"
            )
        arr = np.asarray(feats[key])
        if arr.dtype.kind == "f":
            arr = to_float32(arr)
            _check_finite(arr, video_id, key, reader)
            arr = standardize({**feats, key: arr}, key, stats)
        out[key] = torch.from_numpy(np.ascontiguousarray(arr))
    return out


def qa_item(*, qid: str, video_id: str, question: np.ndarray, question_len: int, answer: Any,
            features: Mapping[str, Tensor], qtype: str = "", answer_text: str = "",
            candidates: np.ndarray | None = None, candidates_len: np.ndarray | None = None,
            segment: tuple[float, float] | None = None, subtitle: np.ndarray | None = None,
            subtitle_len: int = 0, text_tokens: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """One question's item of the batch contract (the module docstring): :class:`QADataset`'s items and
    ``vqa-answer``'s new questions (``train.tasks.qa``) are both built by it.

    Args:
        question: (L,) token ids (trimmed to ``question_len``, at least one); subtitle likewise.
        answer: the class, candidate index or count (a new question: 0).
        features: the video's features (:func:`model_features`).
        candidates: (C, Lc) token ids and ``candidates_len`` (C,): multiple choice only.
        segment: (start, end) seconds (How2QA's ``ts``; NaN: none), omitted when None.
        text_tokens: the transformer question encoder's (C', Lt) arrays.
    """
    item: dict[str, Any] = {
        "qid": qid,
        "video_id": video_id,
        "qtype": qtype,
        "answer_text": answer_text,
        "question": torch.as_tensor(np.asarray(question[: max(question_len, 1)], dtype=np.int64)),
        "question_len": question_len,
        "answer": answer,
    }
    if candidates is not None:
        item["candidates"] = torch.as_tensor(np.asarray(candidates, dtype=np.int64))  # (C, Lc)
        item["candidates_len"] = torch.as_tensor(np.asarray(candidates_len, dtype=np.int64))  # (C,)
    if segment is not None:
        item["segment"] = torch.tensor(tuple(float(x) for x in segment), dtype=torch.float32)  # (2,)
    if subtitle is not None:
        item["subtitle"] = torch.as_tensor(np.asarray(subtitle[: max(subtitle_len, 1)], dtype=np.int64))
        item["subtitle_len"] = subtitle_len
    if text_tokens is not None:
        item.update({k: torch.from_numpy(v) for k, v in text_tokens.items()})  # (C', Lt)
    item.update(features)
    return item


def drop_missing_videos(name: str, video_ids: Sequence[str], rows: np.ndarray, reader: Any, *, allow: bool,
                        features: Any, unit: str = "questions") -> tuple[np.ndarray, int]:
    """The ``rows`` whose video has features in ``reader`` and how many were dropped (``--allow-missing-
    features``); without ``allow``, a :class:`FeatureMismatchError` naming the directory, the split and
    some videos. ``video_ids`` is the split's (indexed by row), ``unit`` what its rows are."""
    vids = [video_ids[i] for i in rows]
    missing = set(find_missing_videos(vids, reader))
    if not missing:
        return rows, 0
    n_q = sum(v in missing for v in vids)
    if not allow:
        raise FeatureMismatchError(
            f"{features}: {len(missing)} video(s) of the {name} split ({n_q} {unit}) have no features, e.g. "
            f"{', '.join(sorted(missing)[:5])}; extract them, or pass --allow-missing-features to drop those "
            f"{unit}"
        )
    log.warning("%s: dropped %d %s of %d videos without features", name, n_q, unit, len(missing))
    return np.array([i for i in rows if video_ids[i] not in missing], dtype=np.int64), n_q


def to_float32(arr: np.ndarray) -> np.ndarray:
    """``arr.astype(np.float32)`` (the array itself when it is float32 already), with the same values:
    float16 -> float32 is exact, float64 rounds to nearest in both. Converted by torch's vectorised kernel,
    about 20x faster than NumPy's float16 cast (docs/benchmarks.md, "Training data path"), in pieces of at
    most ``_SERIAL`` elements: torch runs those on the calling thread, so that the conversion never wakes
    torch's thread pool, whose spinning threads would slow the NumPy BLAS calls that follow (CMIN's PCA)."""
    if arr.dtype == np.float32:
        return arr
    src = torch.from_numpy(np.ascontiguousarray(arr).reshape(-1))
    out = np.empty(arr.shape, dtype=np.float32)
    dst = torch.from_numpy(out.reshape(-1))
    for start in range(0, len(src), _SERIAL):
        dst[start : start + _SERIAL].copy_(src[start : start + _SERIAL])
    return out


#: torch's grain size: element-wise kernels on at most this many elements run on the calling thread
_SERIAL = 32768


def batch_tensor(shape: Sequence[int], dtype: torch.dtype) -> Tensor:
    """An uninitialised batch tensor; in a DataLoader worker in shared memory, so that the batch reaches
    the training process without the copy into shared memory its queue would otherwise make (what
    torch's ``default_collate`` does)."""
    if get_worker_info() is None:
        return torch.empty(tuple(shape), dtype=dtype)
    numel = int(np.prod(shape, dtype=np.int64))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel, device="cpu")
    return torch.empty(0, dtype=dtype).new(storage).view(tuple(shape))


def stack(tensors: Sequence[Tensor]) -> Tensor:
    """``torch.stack`` into a :func:`batch_tensor`."""
    first = tensors[0]
    return torch.stack(list(tensors), out=batch_tensor((len(tensors), *first.shape), first.dtype))


class QACollate:
    """Collate items of :class:`QADataset` into the batch contract.

    Args:
        ragged_keys: feature names whose leading dimension varies per video; they are zero-padded to
            the longest in the batch and get a ``<name>_mask`` (B, T) bool.
        answer_dtype: ``torch.int64`` (open, mc) or ``torch.float32`` (count).
    """

    def __init__(self, ragged_keys: Sequence[str] = (), *, answer_dtype: torch.dtype = torch.int64) -> None:
        self.ragged_keys = tuple(ragged_keys)
        self.answer_dtype = answer_dtype

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        B = len(items)
        names = ("qid", "video_id", "qtype", "answer_text")
        batch: dict[str, Any] = {k: [it[k] for it in items] for k in names}
        # questions: (B, L) zero-padded to the longest in the batch
        qlen = torch.tensor([it["question_len"] for it in items], dtype=torch.int64)  # (B,)
        L = max(int(it["question"].shape[0]) for it in items)
        question = torch.zeros(B, L, dtype=torch.int64)
        for b, it in enumerate(items):
            question[b, : it["question"].shape[0]] = it["question"]
        batch["question"], batch["question_len"] = question, qlen
        if "candidates" in items[0]:
            C = items[0]["candidates"].shape[0]
            Lc = max(int(it["candidates_len"].max().clamp(min=1)) for it in items)
            cands = torch.zeros(B, C, Lc, dtype=torch.int64)  # (B, C, Lc)
            for b, it in enumerate(items):
                c = it["candidates"][:, :Lc]
                cands[b, :, : c.shape[1]] = c
            batch["candidates"] = cands
            batch["candidates_len"] = torch.stack([it["candidates_len"] for it in items])  # (B, C)
        batch["answer"] = torch.tensor([it["answer"] for it in items], dtype=self.answer_dtype)  # (B,)
        if "subtitle" in items[0]:  # (B, Ls) zero-padded, lengths (B,) (0 = no subtitle text)
            Ls = max(int(it["subtitle"].shape[0]) for it in items)
            batch["subtitle"] = torch.zeros(B, Ls, dtype=torch.int64)
            for b, it in enumerate(items):
                batch["subtitle"][b, : it["subtitle"].shape[0]] = it["subtitle"]
            batch["subtitle_len"] = torch.tensor([it["subtitle_len"] for it in items], dtype=torch.int64)
        for key in TEXT_KEYS:  # transformer tokens (C', Lt): padded to the longest row in the batch
            if key in items[0]:
                Lt = max(int(it[key].shape[-1]) for it in items)
                padded = torch.zeros((B, items[0][key].shape[0], Lt), dtype=items[0][key].dtype)
                for b, it in enumerate(items):
                    padded[b, :, : it[key].shape[-1]] = it[key]
                batch[key] = padded  # (B, C', Lt)
        skip = {"qid", "video_id", "qtype", "answer_text", "question", "question_len", "candidates",
                "candidates_len", "answer", "subtitle", "subtitle_len", *TEXT_KEYS}
        for key in items[0]:
            if key in skip:
                continue
            tensors = [it[key] for it in items]
            if key in self.ragged_keys:
                batch[key], batch[f"{key}_mask"] = _pad_ragged(tensors)
            else:
                shapes = {tuple(t.shape) for t in tensors}
                if len(shapes) != 1:
                    raise FeatureMismatchError(
                        f"feature {key!r} has different shapes within a batch ({sorted(shapes)}) for videos "
                        f"{batch['video_id']}; the feature directory is inconsistent"
                    )
                batch[key] = stack(tensors)  # (B, ...)
        return batch


def _pad_ragged(tensors: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Zero-pad (T_b, ...) tensors to (B, T, ...) and return the (B, T) bool validity mask."""
    T = max(int(t.shape[0]) for t in tensors)
    T = max(T, 1)
    out = batch_tensor((len(tensors), T, *tensors[0].shape[1:]), tensors[0].dtype).zero_()
    mask = torch.zeros(len(tensors), T, dtype=torch.bool)
    for b, t in enumerate(tensors):
        out[b, : t.shape[0]] = t
        mask[b, : t.shape[0]] = True
    return out, mask
