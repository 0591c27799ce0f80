"""What the task kinds' losses and evaluation share; each kind's own live beside it in ``train/tasks/``
(``qa_losses.py``: open-ended, multiple choice, count; ``moment_losses.py``: moment retrieval).

The loop calls its kind's ``losses`` (``train.tasks.TaskKind``) on a model's output dict and the batch, and
hands each batch's ``predict`` records to an :class:`Evaluation`, which computes the kind's ``metrics``
once over all records (after gathering them from every process, so no question is counted twice).

A model that answers from several sampled clips in training may return them all as ``clip_<key>``
(B, K, ...) (SiaSamRea's anchor and siamese clips, ``model.gt_clips=all``): a question-answering loss is
then the mean of each clip's loss against the answer (:func:`clip_mean`; ``<key>``, used for predictions,
is the anchor's). A model may return its own extra terms as ``outputs["aux_losses"]`` (name -> scalar,
already weighted, e.g. SiaSamRea's ``loss_siamese``), added to the loss dict (:func:`with_aux_losses`)
and so summed by the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["Evaluation", "PredictionRecord", "clip_mean", "model_output", "unique_records", "with_aux_losses"]


@dataclass(frozen=True)
class PredictionRecord:
    """One evaluated question: what the model answered and whether it is right.

    ``prediction`` is the answer word (open), the chosen candidate index (mc) or the rounded count
    (count); ``raw`` is the regressed count before rounding (count only); ``answer`` is the true answer
    as text/number, ``answer_index`` the class index (-1 when out of vocabulary), ``score`` 1/0 for
    correct/wrong (open, mc) or the squared error of the rounded count.

    Moment retrieval: ``prediction`` is the top-5 moments after NMS at ``train.moment_nms``,
    ``[[start_s, end_s, score], ...]``; ``answer`` the ground truth ``[start_s, end_s]``; ``score`` the
    top-1 IoU; ``ious`` the IoU of each listed moment; ``hits`` ``(("R@n,IoU=m", 1.0 | 0.0), ...)`` as the
    protocol (``train.moment_iou``) ranks the moments (the official one re-ranks R@5 per threshold).
    """

    qid: str
    video_id: str
    qtype: str
    prediction: str | int
    answer: str | int | float
    answer_index: int
    score: float
    raw: float | None = None
    ious: tuple[float, ...] | None = None
    hits: tuple[tuple[str, float], ...] | None = None



def model_output(task_type: str, key: str, outputs: Mapping[str, Tensor]) -> Tensor:
    """``outputs[key]``, the prediction of a ``task_type`` model; a ``KeyError`` naming what it returned."""
    if key not in outputs:
        raise KeyError(f"a {task_type!r} model must return {key!r}; it returned {sorted(outputs)}")
    return outputs[key]


def clip_mean(loss: Callable[[Tensor], Tensor], outputs: Mapping[str, Tensor], key: str) -> Tensor:
    """``loss`` of ``outputs[key]``, or the mean of ``loss`` over the clips of ``clip_<key>`` (B, K, ...)."""
    clips = outputs.get(f"clip_{key}")  # (B, K, ...): several sampled clips, each answering the question
    preds = [outputs[key]] if clips is None else list(clips.unbind(1))
    return sum(loss(p) for p in preds) / len(preds)


def with_aux_losses(losses: dict[str, Tensor], outputs: Mapping[str, Any]) -> dict[str, Tensor]:
    """``losses`` plus the model's ``aux_losses``; a ``KeyError`` when one has a task loss's name."""
    for name, value in (outputs.get("aux_losses") or {}).items():
        if name in losses:
            raise KeyError(f"the model's extra loss {name!r} clashes with the task loss of the same name")
        losses[name] = value
    return losses


def unique_records(records: Iterable[PredictionRecord]) -> list[PredictionRecord]:
    """The records with each question id once (the first), in order."""
    unique: dict[str, PredictionRecord] = {}
    for rec in records:
        unique.setdefault(rec.qid, rec)
    return list(unique.values())


class Evaluation:
    """Accumulates a task kind's prediction records over an evaluation pass.

    Args:
        kind: the ``train.tasks.TaskKind`` (its ``predict`` and ``metrics``).
        answer_vocab: open-ended answer words (predictions written as words).
        options: the kind's decoding options (moment retrieval: ``nms_threshold``, ``iou``).
    """

    def __init__(self, kind: Any, answer_vocab: Sequence[str] | None = None, **options: Any) -> None:
        self.kind = kind
        self.answer_vocab = answer_vocab
        self.options = options
        self.records: list[PredictionRecord] = []

    def update(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any]) -> None:
        self.records.extend(self.kind.predict(outputs, batch, answer_vocab=self.answer_vocab, **self.options))

    def metrics(self) -> dict[str, float]:
        """The kind's metrics over the records (duplicated question ids counted once)."""
        return self.kind.metrics(unique_records(self.records))
