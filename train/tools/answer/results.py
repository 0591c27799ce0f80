"""What ``vqa-answer`` gives back: :class:`VideoFeatures` (one video through the checkpoint's feature set),
:class:`Answer` (one question's answers, attention and unknown words) and the errors of answering."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from train.tasks import TaskKind, get_task

__all__ = [
    "PREDICTION_KEYS", "Answer", "AnswerError", "OldCheckpointError", "VideoFeatures", "display_frames",
    "named_attention",
]

#: output-dict entries that are predictions, not attention
PREDICTION_KEYS = frozenset({"logits", "scores", "count", "loss", "aux_losses"})


class AnswerError(RuntimeError):
    """Bad input to vqa-answer (checkpoint, backbone file, video, question); the message says what to do."""


class OldCheckpointError(AnswerError):
    """A checkpoint written before checkpoints became self-contained."""


@dataclass
class VideoFeatures:
    """One video through the checkpoint's feature set.

    Attributes:
        video: the path.
        features: the feature set's outputs as ``vqa-extract`` stores them (name -> array).
        frames: (K, S, S, 3) uint8 frames the model saw (for figures), one per time step where the
            set has one; None when the set exposes no frames.
        duration: seconds (frames / fps of the decoded stream); moment models only, else None.
    """

    video: str
    features: dict[str, np.ndarray]
    frames: np.ndarray | None = None
    duration: float | None = None


@dataclass
class Answer:
    """The answer to one question about one video.

    Attributes:
        video, question: as asked (``question`` is the query for moment models).
        task_type: ``"open"``, ``"mc"``, ``"count"`` or ``"moment"``.
        answers: best first; open: ``(answer, probability)`` of the top k; mc: ``(candidate, score)`` of
            every candidate, with ``candidate_index`` giving each one's position as given.
        count: the predicted count (rounded, clamped to 1..10 as in evaluation) and ``raw`` the
            regressed value.
        moments: best first ``(start_s, end_s, score)`` (score: the window's sigmoid confidence).
        duration: moment models: the video's duration in seconds (the moments lie in [0, duration]).
        attention: the model's named attention outputs for this question (arrays without batch axis).
        frames: the frames of :class:`VideoFeatures` (for ``--explain``).
        object_names: (T, M) names of the stored objects when the feature set names them (masn with
            ``--detector bottomup_r101_vg``: "<attribute> <class>"), else None (for ``--explain``).
        unknown_words: the words the model's vocabulary lacks (each read as ``<unk>``): ``question`` (or
            the query) -> words, ``candidates`` -> one list per candidate; empty when every word is known
            (and for transformer question encoders, which have no word vocabulary).
    """

    video: str
    question: str
    task_type: str
    answers: list[tuple[str, float]] = field(default_factory=list)
    candidate_index: list[int] = field(default_factory=list)
    count: int | None = None
    raw: float | None = None
    moments: list[tuple[float, float, float]] = field(default_factory=list)
    duration: float | None = None
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    frames: np.ndarray | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    object_names: np.ndarray | None = None
    unknown_words: dict[str, Any] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """One line per text with words the model does not know (what ``vqa-answer`` prints on stderr)."""
        words = self.unknown_words
        if not words:
            return []
        label = self.kind.text_key
        out = []
        if words.get(label):
            n, total = len(words[label]), words[f"{label}_words"]
            out.append(f"{n} of the {total} words of the {label} are not in the model's vocabulary "
                       f"({', '.join(words[label][:8])}): each is read as <unk>"
                       + ("; the answer does not depend on its words" if n == total else ""))
        cands = words.get("candidates") or []
        blind = [i for i, (unk, n) in enumerate(zip(cands, words.get("candidate_words", []), strict=False))
                 if unk and len(unk) == n]
        partly = sum(1 for c in cands if c)
        if partly:
            out.append(f"{partly} of {len(cands)} candidates have words not in the model's vocabulary"
                       + (f"; candidate(s) {', '.join(map(str, blind))} are made only of such words and "
                          f"score alike" if blind else ""))
        return out

    @property
    def kind(self) -> TaskKind:
        """The task kind (``train.tasks``): it formats the answer."""
        return get_task(self.task_type)

    @property
    def prediction(self) -> Any:
        """What ``predictions_test.jsonl`` records: the answer word (open), the candidate index (mc), the
        rounded count (count), the best moment ``[start_s, end_s]`` rounded to ms as there (moment)."""
        return self.kind.answer_prediction(self)

    def to_json(self) -> dict[str, Any]:
        """``{"video", "question", "answers" | "count"}`` or ``{"video", "query", "moments"}`` (moment
        models) (the ``--json`` line)."""
        out: dict[str, Any] = {"video": self.video, self.kind.text_key: self.question}
        out.update(self.kind.answer_json(self))
        if self.unknown_words:
            out["unknown_words"] = {k: v for k, v in self.unknown_words.items() if not k.endswith("words")}
        return out


def named_attention(out: Mapping[str, Any], row: int = 0, batch_size: int = 1) -> dict[str, np.ndarray]:
    """The model's named attention outputs of batch row ``row`` (arrays without the batch axis).

    An entry whose first axis is not ``batch_size`` is shared by the batch (e.g. CMIN's ``windows``,
    (N, 2)) and kept whole.
    """
    return {
        k: (a[row] if a.shape[0] == batch_size else a)
        for k, v in out.items()
        if k not in PREDICTION_KEYS and isinstance(v, torch.Tensor) and v.dim() >= 1
        for a in (v.detach().float().cpu().numpy(),)
    }


def display_frames(chunks: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray | None:
    """One uint8 frame per time step: ``frames`` chunks as they are, ``clips`` by their middle frame,
    MASN's ``app_frames`` (whole frames squashed to S x S, so normalised boxes map onto them)."""
    parts = []
    for c in chunks:
        if "frames" in c and c["frames"].ndim == 4:
            parts.append(c["frames"])
        elif "app_frames" in c and c["app_frames"].ndim == 4:
            parts.append(c["app_frames"])
        elif "clips" in c and c["clips"].ndim == 5:
            parts.append(c["clips"][:, c["clips"].shape[1] // 2])
        else:
            return None
    return np.concatenate(parts) if parts else None

