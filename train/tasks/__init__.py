"""Task kinds, one module each: ``qa.py`` (open-ended, multiple choice, count) and ``moment.py`` (moment
retrieval). :data:`TASKS` is written out by hand; the runner asks a kind (:class:`TaskKind`) for its
settings, text, datasets, batches, loss, evaluation options, baselines and prediction files, and never
tests a task's name.
"""

from train.tasks.base import RunData, TaskKind
from train.tasks.moment import MOMENT
from train.tasks.qa import COUNT, MC, OPEN

__all__ = ["TASKS", "RunData", "TaskKind", "get_task"]

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
