"""Task kinds, one module each: ``qa.py`` (open-ended, multiple choice, count) and ``moment.py`` (moment
retrieval), their losses, prediction decoding and metrics beside them (``qa_losses.py``,
``moment_losses.py``). :data:`TASKS` is written out by hand; the runner, the loop and ``vqa-answer`` ask
a kind (:class:`TaskKind`) for its settings, text, datasets, batches, loss, predictions, metrics,
evaluation options, baselines, prediction files and new questions' items and answers, and never test a
task's name.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor

from train.losses import PredictionRecord, unique_records
from train.tasks.base import ItemError, RunData, TaskKind
from train.tasks.moment import MOMENT
from train.tasks.qa import COUNT, MC, OPEN

__all__ = [
    "TASKS", "ItemError", "RunData", "TaskKind", "compute_losses", "compute_metrics", "get_task", "predict",
]

#: the adapters' ``task_type`` -> its kind
TASKS: dict[str, TaskKind] = {
    "open": OPEN,
    "mc": MC,
    "count": COUNT,
    "moment": MOMENT,
}


def get_task(task_type: str) -> TaskKind:
    """The kind of ``task_type``; a ``KeyError`` listing the kinds for another name."""
    try:
        return TASKS[task_type]
    except KeyError:
        raise KeyError(f"unknown task type {task_type!r}; expected one of {', '.join(TASKS)}") from None



def compute_losses(task_type: str, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], **options: Any
                   ) -> dict[str, Tensor]:
    """The loss dict of one batch of a ``task_type`` model (:meth:`TaskKind.losses`; ``options``: multiple
    choice's ``margin`` and ``hinge_reduction``, moment retrieval's ``label_min_ratio``, ``reg_weight``,
    ``align_norm``, ``gt_rule``; the others' are ignored)."""
    return get_task(task_type).losses(outputs, batch, **options)


def predict(task_type: str, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *,
            answer_vocab: Sequence[str] | None = None, **options: Any) -> list[PredictionRecord]:
    """One batch's prediction records (:meth:`TaskKind.predict`; ``options``: moment retrieval's
    ``nms_threshold`` and ``iou``)."""
    return get_task(task_type).predict(outputs, batch, answer_vocab=answer_vocab, **options)


def compute_metrics(task_type: str, records: Iterable[PredictionRecord]) -> dict[str, float]:
    """A split's metrics from its records, each question id counted once (:meth:`TaskKind.metrics`)."""
    return get_task(task_type).metrics(unique_records(records))
