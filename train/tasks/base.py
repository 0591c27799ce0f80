"""What the trainer asks of a task kind (:class:`TaskKind`) and what a task's data preparation gives back
(:class:`RunData`). The kinds are ``train/tasks/qa.py`` (open-ended, multiple choice, count) and
``train/tasks/moment.py`` (moment retrieval); ``train.tasks.TASKS`` lists them by hand."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from train.config import TrainConfig
from train.losses import PredictionRecord

if TYPE_CHECKING:
    from train.distributed import DistInfo
    from train.runner.spec import RunSpec

__all__ = ["RunData", "TaskKind"]


class RunData:
    """The datasets of one run and what was dropped."""

    def __init__(self) -> None:
        self.datasets: dict[str, Any] = {}
        self.dropped: dict[str, dict[str, int]] = {}
        self.feature_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.feature_projection: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # moment PCA
        self.query_parse: dict[str, Any] | None = None  # moment: dependency parser and label ids


class TaskKind:
    """One task kind: its settings, text and datasets, batches, loss, evaluation options, baselines and
    prediction files. The runner asks the kind of its dataset (``adapter.task_type``), never tests its name.

    Attributes:
        name: the adapters' ``task_type``.
        selection: the validation metric that selects the checkpoint and whether higher (``"max"``) or
            lower (``"min"``) is better.
        reads_subtitles: its questions may carry subtitle text (``prepare_qa(subtitles=True)``).
    """

    name: str = ""
    selection: tuple[str, str] = ("accuracy", "max")
    reads_subtitles: bool = False

    def settings(self, spec: RunSpec) -> Any:
        """The kind's own settings section of the run (None: it has none)."""
        return None

    def config_sections(self, settings: Any) -> dict[str, Any]:
        """Sections ``config.yaml`` holds besides ``train`` and ``model`` (from :meth:`settings`)."""
        return {}

    def upgrade_saved_config(self, saved: dict[str, Any], *, source: str) -> dict[str, Any]:
        """A run's saved ``config.yaml`` as this toolkit writes it (keys moved since older versions)."""
        return saved

    def checkpoint_meta(self, settings: Any) -> dict[str, Any]:
        """Entries of every checkpoint's ``meta`` that the kind needs to evaluate or answer later."""
        return {}

    def prepare_text(self, spec: RunSpec, adapter: Any, reader: Any, dist: DistInfo, settings: Any,
                     prep_kwargs: dict[str, Any]) -> tuple[Any, RunData | None]:
        """The encoded text of every split and, when the kind builds its datasets with it, the data."""
        raise NotImplementedError

    def vocabularies(self, prepared: Any) -> tuple[list[str], list[str] | None]:
        """The question (or query) vocabulary and the answer vocabulary (None: no answer classes)."""
        raise NotImplementedError

    def build_datasets(self, spec: RunSpec, adapter: Any, prepared: Any, reader: Any, entry: Any, *,
                       data: RunData | None, text_encoder: Any, recorded_stats: dict | None) -> RunData:
        """The train / val / test datasets (``data``: what :meth:`prepare_text` already built)."""
        raise NotImplementedError

    def collate(self, reader: Any) -> Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]]:
        """The batch collate of the kind's dataset items."""
        raise NotImplementedError

    def loss_fn(self, settings: Any) -> Callable[..., dict[str, Any]] | None:
        """The training loss of ``(outputs, batch)`` (None: the trainer's ``compute_losses`` default)."""
        return None

    def eval_options(self, cfg: TrainConfig) -> dict[str, Any] | None:
        """Options of the evaluation's prediction decoding (None: none)."""
        return None

    def result_extras(self, cfg: TrainConfig) -> dict[str, Any]:
        """Entries ``metrics.json`` holds besides the shared ones."""
        return {}

    def baselines(self, data: RunData, cfg: TrainConfig) -> dict[str, float]:
        """Chance-level references on test, by the same metrics as the model."""
        raise NotImplementedError

    def write_predictions(self, out: Path, split: str, records: Sequence[PredictionRecord]) -> None:
        """``predictions_<split>.jsonl`` and ``.csv`` (atomic)."""
        raise NotImplementedError
