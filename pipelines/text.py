"""Text pipeline: tokenizer, vocabularies, encoded splits and their cache.

- :func:`tokenize`: lower case, words and punctuation split apart (``"what's this?"`` ->
  ``["what", "'s", "this", "?"]``), no network or model needed.
- Question vocabulary: every token of the training split's questions (and, for multiple choice, its
  candidates), most frequent first (ties alphabetical); index 0 = ``<pad>``, 1 = ``<unk>`` (tokens of
  other splits that are not in it).
- Answer vocabulary (open-ended only): the ``answer_vocab_size`` most frequent training answers
  (ties alphabetical), all of them when ``None``; ``"default"`` takes the dataset's default (1000
  MSVD-QA, 4000 MSRVTT-QA, all for TGIF-QA FrameQA and ActivityNet-QA). Answers are compared
  after ``strip().lower()``. An answer outside the vocabulary is encoded ``-1``: it is counted wrong
  at evaluation and never mapped onto a real class. How many there are per split is logged.
- Multiple choice: candidates tokenized and encoded like questions, ``answers`` = correct index.
- Count: ``answers`` float32 counts.

:func:`prepare_qa` and :func:`prepare_moments` store their output as plain files,
``<cache_dir>/<dataset>[-<task>]-text-<key>.npz`` (arrays) and ``.json`` (vocabularies, ids, texts),
never pickle. The key hashes the annotation files' content (``adapter.fingerprint()``), the
vocabulary settings and the tokenizer version, so a change to any of them rebuilds the files. GloVe
vectors are cached separately by :mod:`pipelines.glove` (keyed by vocabulary and GloVe file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path, write_json_atomic
from pipelines.datasets.base import DatasetAdapter, QARecord
from pipelines.glove import GloveInfo, load_embeddings_info

__all__ = [
    "PAD",
    "UNK",
    "EncodedMoments",
    "EncodedSplit",
    "PreparedMoments",
    "PreparedQA",
    "build_answer_vocab",
    "build_vocab",
    "encode_tokens",
    "normalize_answer",
    "prepare_moments",
    "prepare_qa",
    "tokenize",
]

log = logging.getLogger(__name__)

PAD, UNK = "<pad>", "<unk>"
TOKENIZER_VERSION = 1
_FORMAT_VERSION = 1
_TOKEN = re.compile(r"\w+|'\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words and punctuation marks.

    Args:
        text: a question, candidate or query.

    Returns:
        The tokens; ``"What's on the table?"`` -> ``["what", "'s", "on", "the", "table", "?"]``.
    """
    return _TOKEN.findall(text.lower())


def normalize_answer(answer: object) -> str:
    """The form open-ended answers are compared in: ``str(answer).strip().lower()``."""
    return str(answer).strip().lower()


def build_vocab(token_lists: Iterable[Sequence[str]]) -> list[str]:
    """``["<pad>", "<unk>"]`` followed by every token, most frequent first, ties alphabetical."""
    counts = Counter(tok for tokens in token_lists for tok in tokens)
    counts.pop(PAD, None)
    counts.pop(UNK, None)
    return [PAD, UNK] + sorted(counts, key=lambda t: (-counts[t], t))


def build_answer_vocab(answers: Iterable[str], size: int | None) -> list[str]:
    """The ``size`` most frequent answers (all when ``None``), most frequent first, ties alphabetical."""
    counts = Counter(answers)
    ranked = sorted(counts, key=lambda a: (-counts[a], a))
    return ranked if size is None else ranked[:size]


def encode_tokens(
    token_lists: Sequence[Sequence[str]], index: dict[str, int], max_len: int | None = None, *,
    allow_empty: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Token lists to a 0-padded id matrix.

    Args:
        token_lists: Q token lists; an empty list is encoded as one ``<unk>`` (length 0 with
            ``allow_empty``: subtitles, where "none" is not an unknown word).
        index: token -> id (``<unk>`` = 1 for unknown tokens).
        max_len: truncate to this many tokens.

    Returns:
        ids (Q, L) int64 with L = the longest (truncated) list (>= 1), lengths (Q,) int64.
    """
    clipped = [list(t[:max_len] if max_len else t) or ([] if allow_empty else [UNK]) for t in token_lists]
    length = max((len(t) for t in clipped), default=1) or 1
    ids = np.zeros((len(clipped), length), dtype=np.int64)
    lengths = np.zeros(len(clipped), dtype=np.int64)
    unk = index[UNK]
    for row, tokens in enumerate(clipped):
        ids[row, : len(tokens)] = [index.get(tok, unk) for tok in tokens]
        lengths[row] = len(tokens)
    return ids, lengths


@dataclass
class EncodedSplit:
    """One split of a QA dataset, encoded.

    Attributes:
        qids, video_ids, qtypes: per question (Q of each).
        answer_text: per question: the normalised answer (open), the right candidate's text (mc) or
            the count as text.
        questions: (Q, L) int64 token ids, 0-padded.
        question_len: (Q,) int64.
        candidates: (Q, C, Lc) int64 (multiple choice) or ``None``.
        candidates_len: (Q, C) int64 or ``None``.
        answers: (Q,) int64 — open: answer-vocabulary index or -1 (out of vocabulary); mc: index of
            the right candidate — or float32 counts (count).
        subtitles: (Q, Ls) int64 token ids of each question's subtitle text (``QARecord.subtitle``), or
            ``None`` (not asked for, or the dataset has none).
        subtitle_len: (Q,) int64, 0 where a question has no subtitle text; or ``None``.
    """

    qids: list[str]
    video_ids: list[str]
    qtypes: list[str]
    questions: np.ndarray
    question_len: np.ndarray
    candidates: np.ndarray | None
    candidates_len: np.ndarray | None
    answers: np.ndarray
    answer_text: list[str]
    subtitles: np.ndarray | None = None
    subtitle_len: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.qids)


@dataclass
class PreparedQA:
    """The encoded text of a QA dataset (see :func:`prepare_qa`)."""

    dataset: str
    task: str | None
    task_type: str
    question_vocab: list[str]
    answer_vocab: list[str]
    embeddings: np.ndarray | None
    splits: dict[str, EncodedSplit]
    cache_key: str
    glove: GloveInfo | None = None  # coverage of the GloVe file, None without one


@dataclass
class EncodedMoments:
    """One split of a moment-retrieval dataset: queries (Q, L) int64, query_len (Q,), times (Q,) float32."""

    qids: list[str]
    video_ids: list[str]
    query_text: list[str]
    queries: np.ndarray
    query_len: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    duration_s: np.ndarray

    def __len__(self) -> int:
        return len(self.qids)


@dataclass
class PreparedMoments:
    """The encoded queries of a moment-retrieval dataset (see :func:`prepare_moments`)."""

    dataset: str
    query_vocab: list[str]
    embeddings: np.ndarray | None
    splits: dict[str, EncodedMoments]
    cache_key: str
    glove: GloveInfo | None = None  # coverage of the GloVe file, None without one


def _cache_key(adapter: DatasetAdapter, settings: dict) -> str:
    payload = json.dumps({"format": _FORMAT_VERSION, "tokenizer": TOKENIZER_VERSION,
                          "annotations": adapter.fingerprint(), "settings": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _stem(adapter: DatasetAdapter, key: str) -> str:
    task = f"-{adapter.task}" if adapter.task else ""
    return f"{adapter.name}{task}-text-{key}"


def _write(cache_dir: Path, stem: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache_dir / f"{stem}.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    write_json_atomic(cache_dir / f"{stem}.json", meta)  # written last: its presence marks a complete cache


def _read(cache_dir: Path, stem: str, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    meta_path, npz_path = cache_dir / f"{stem}.json", cache_dir / f"{stem}.npz"
    if not (meta_path.is_file() and npz_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("text cache %s unreadable (%s); rebuilding", npz_path, exc)
        return None
    if meta.get("cache_key") != key:
        return None
    return arrays, meta


def _resolve_answer_vocab_size(adapter: DatasetAdapter, size: int | None | str) -> int | None:
    if size == "default":
        return adapter.default_answer_vocab_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(
            f"answer_vocab_size must be a positive integer, None (all) or 'default', got {size!r}"
        )
    return size


def _embeddings(
    vocab: list[str], glove: Path | None, cache_dir: Path, what: str
) -> tuple[np.ndarray | None, GloveInfo | None]:
    if glove is None:
        log.warning("%s: no GloVe file given; word embeddings are initialised randomly and trained", what)
        return None, None
    return load_embeddings_info(vocab, glove, cache_dir=cache_dir)


def prepare_qa(
    adapter: DatasetAdapter,
    *,
    cache_dir: str | os.PathLike,
    answer_vocab_size: int | None | str = "default",
    glove: str | os.PathLike | None = None,
    max_question_len: int | None = None,
    subtitles: bool = False,
) -> PreparedQA:
    """Tokenize, build vocabularies and encode every split of a QA dataset (cached).

    Args:
        adapter: a QA adapter with its task set (TGIF-QA).
        cache_dir: where the encoded text (and the GloVe cache) is stored.
        answer_vocab_size: top-k training answers for open-ended tasks; ``None`` = all training
            answers; ``"default"`` = the dataset default (``adapter.default_answer_vocab_size``).
            Ignored for multiple choice and count.
        glove: a GloVe text / word2vec file; ``None`` = no pretrained embeddings (warning logged).
        max_question_len: truncate questions and candidates to this many tokens.
        subtitles: also encode each question's subtitle text when the dataset has subtitles
            (``QARecord.subtitle``; How2QA), whole, with the training split's subtitle words in the
            question vocabulary. A dataset without subtitles is encoded as without the option.

    Returns:
        A :class:`PreparedQA` with ``question_vocab`` (0 = ``<pad>``, 1 = ``<unk>``), ``answer_vocab``
        (empty for mc/count), ``embeddings`` (V, D) float32 or ``None`` and one
        :class:`EncodedSplit` per split.

    Raises:
        DatasetFormatError: from the adapter (malformed annotations, empty split).
        ValueError: the adapter has no task type (moment dataset, TGIF-QA without a task).
    """
    task_type = adapter.task_type
    if adapter.kind != "qa" or task_type is None:
        raise ValueError(f"{adapter.name}: prepare_qa needs a QA dataset with its task set "
                         f"(tasks: {', '.join(adapter.tasks) or 'none'})")
    cache_dir = Path(cache_dir)
    size = _resolve_answer_vocab_size(adapter, answer_vocab_size) if task_type == "open" else None
    settings: dict = {"answer_vocab_size": size, "max_question_len": max_question_len}
    if subtitles:
        settings["subtitles"] = True
    key = _cache_key(adapter, settings)
    stem = _stem(adapter, key)
    cached = _read(cache_dir, stem, key)
    if cached is None:
        arrays, meta = _build_qa(adapter, task_type, size, max_question_len, subtitles)
        meta["cache_key"] = key
        _write(cache_dir, stem, arrays, meta)
    else:
        arrays, meta = cached
        log.info("%s: encoded text from cache %s", adapter.name, cache_dir / f"{stem}.npz")
    splits = {}
    for split in meta["splits"]:
        info = meta["per_split"][split]
        mc = task_type == "mc"
        splits[split] = EncodedSplit(
            qids=info["qids"], video_ids=info["video_ids"], qtypes=info["qtypes"],
            questions=arrays[f"{split}/questions"], question_len=arrays[f"{split}/question_len"],
            candidates=arrays[f"{split}/candidates"] if mc else None,
            candidates_len=arrays[f"{split}/candidates_len"] if mc else None,
            answers=arrays[f"{split}/answers"], answer_text=info["answer_text"],
            subtitles=arrays.get(f"{split}/subtitles"), subtitle_len=arrays.get(f"{split}/subtitle_len"),
        )
    embeddings, info = _embeddings(meta["question_vocab"], Path(glove) if glove else None, cache_dir,
                                   adapter.name)
    return PreparedQA(adapter.name, adapter.task, task_type, meta["question_vocab"], meta["answer_vocab"],
                      embeddings, splits, key, info)


def _build_qa(
    adapter: DatasetAdapter, task_type: str, size: int | None, max_len: int | None, subtitles: bool = False
) -> tuple[dict[str, np.ndarray], dict]:
    records: dict[str, list[QARecord]] = {split: adapter.records(split) for split in adapter.splits()}
    if "train" not in records:
        raise ValueError(f"{adapter.name}: no 'train' split to build the vocabularies from")
    tokens = {s: [tokenize(r.question) for r in recs] for s, recs in records.items()}
    cand_tokens = {
        s: [[tokenize(c) for c in (r.candidates or ())] for r in recs] for s, recs in records.items()
    }
    subs = subtitles and any(r.subtitle is not None for recs in records.values() for r in recs)
    sub_tokens = {s: [tokenize(r.subtitle or "") for r in recs] for s, recs in records.items() if subs}
    train_tokens = list(tokens["train"]) + [c for cands in cand_tokens["train"] for c in cands]
    train_tokens += sub_tokens.get("train", [])
    question_vocab = build_vocab(train_tokens)
    index = {tok: i for i, tok in enumerate(question_vocab)}
    answer_vocab = (build_answer_vocab((normalize_answer(r.answer) for r in records["train"]), size)
                    if task_type == "open" else [])
    answer_index = {a: i for i, a in enumerate(answer_vocab)}
    arrays: dict[str, np.ndarray] = {}
    per_split: dict[str, dict] = {}
    for split, recs in records.items():
        questions, lengths = encode_tokens(tokens[split], index, max_len)
        arrays[f"{split}/questions"], arrays[f"{split}/question_len"] = questions, lengths
        if subs:
            arrays[f"{split}/subtitles"], arrays[f"{split}/subtitle_len"] = encode_tokens(
                sub_tokens[split], index, allow_empty=True)
        if task_type == "open":
            answers = np.array([answer_index.get(normalize_answer(r.answer), -1) for r in recs],
                               dtype=np.int64)
            oov = int((answers < 0).sum())
            if oov:
                log.info("%s %s: %d/%d answers outside the %d-answer vocabulary (encoded -1, counted wrong)",
                         adapter.name, split, oov, len(recs), len(answer_vocab))
        elif task_type == "mc":
            answers = np.array([int(r.answer) for r in recs], dtype=np.int64)
            n_cand = {len(c) for c in cand_tokens[split]}
            if len(n_cand) != 1:
                raise ValueError(f"{adapter.name} {split}: questions have different numbers of candidates "
                                 f"{sorted(n_cand)}")
            flat = [c for cands in cand_tokens[split] for c in cands]
            ids, clen = encode_tokens(flat, index, max_len)
            count = n_cand.pop()
            arrays[f"{split}/candidates"] = ids.reshape(len(recs), count, ids.shape[1])
            arrays[f"{split}/candidates_len"] = clen.reshape(len(recs), count)
        else:
            answers = np.array([float(r.answer) for r in recs], dtype=np.float32)
        arrays[f"{split}/answers"] = answers
        per_split[split] = {
            "qids": [r.qid for r in recs], "video_ids": [r.video_id for r in recs],
            "qtypes": [r.qtype for r in recs],
            "answer_text": [_answer_text(r, task_type) for r in recs],
        }
    meta = {"dataset": adapter.name, "task": adapter.task, "task_type": task_type, "splits": list(records),
            "question_vocab": question_vocab, "answer_vocab": answer_vocab, "answer_vocab_size": size,
            "max_question_len": max_len, "per_split": per_split}
    log.info("%s: question vocabulary %d tokens, answer vocabulary %d", adapter.name, len(question_vocab),
             len(answer_vocab))
    return arrays, meta


def _answer_text(record: QARecord, task_type: str) -> str:
    if task_type == "open":
        return normalize_answer(record.answer)
    if task_type == "mc":
        return record.candidates[int(record.answer)]
    return str(record.answer)


def prepare_moments(
    adapter: DatasetAdapter,
    *,
    cache_dir: str | os.PathLike,
    glove: str | os.PathLike | None = None,
    max_query_len: int | None = None,
) -> PreparedMoments:
    """Tokenize and encode the queries of a moment-retrieval dataset (vocabulary from train; cached).

    Args:
        adapter: a moment-retrieval adapter (ActivityNet Captions, TACoS).
        cache_dir: where the encoded text (and the GloVe cache) is stored.
        glove: a GloVe text / word2vec file; ``None`` = no pretrained embeddings (warning logged).
        max_query_len: truncate queries to this many tokens.

    Returns:
        A :class:`PreparedMoments` (query vocabulary 0 = ``<pad>``, 1 = ``<unk>``; (V, D) embeddings or
        ``None``; one :class:`EncodedMoments` per split).
    """
    if adapter.kind != "moment":
        raise ValueError(f"{adapter.name}: prepare_moments needs a moment-retrieval dataset")
    cache_dir = Path(cache_dir)
    key = _cache_key(adapter, {"max_query_len": max_query_len})
    stem = _stem(adapter, key)
    cached = _read(cache_dir, stem, key)
    if cached is None:
        moments = {split: adapter.moments(split) for split in adapter.splits()}
        if "train" not in moments:
            raise ValueError(f"{adapter.name}: no 'train' split to build the vocabulary from")
        tokens = {s: [tokenize(m.query) for m in ms] for s, ms in moments.items()}
        vocab = build_vocab(tokens["train"])
        index = {tok: i for i, tok in enumerate(vocab)}
        arrays: dict[str, np.ndarray] = {}
        per_split = {}
        for split, ms in moments.items():
            arrays[f"{split}/queries"], arrays[f"{split}/query_len"] = encode_tokens(tokens[split], index,
                                                                                     max_query_len)
            for field in ("start_s", "end_s", "duration_s"):
                arrays[f"{split}/{field}"] = np.array([getattr(m, field) for m in ms], dtype=np.float32)
            per_split[split] = {"qids": [m.qid for m in ms], "video_ids": [m.video_id for m in ms],
                                "query_text": [m.query for m in ms]}
        meta = {"dataset": adapter.name, "splits": list(moments), "query_vocab": vocab,
                "max_query_len": max_query_len, "per_split": per_split, "cache_key": key}
        _write(cache_dir, stem, arrays, meta)
    else:
        arrays, meta = cached
    splits = {
        split: EncodedMoments(
            qids=meta["per_split"][split]["qids"], video_ids=meta["per_split"][split]["video_ids"],
            query_text=meta["per_split"][split]["query_text"], queries=arrays[f"{split}/queries"],
            query_len=arrays[f"{split}/query_len"], start_s=arrays[f"{split}/start_s"],
            end_s=arrays[f"{split}/end_s"], duration_s=arrays[f"{split}/duration_s"],
        )
        for split in meta["splits"]
    }
    embeddings, info = _embeddings(meta["query_vocab"], Path(glove) if glove else None, cache_dir,
                                   adapter.name)
    return PreparedMoments(adapter.name, meta["query_vocab"], embeddings, splits, key, info)
