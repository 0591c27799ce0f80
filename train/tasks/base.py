"""What the trainer asks of a task kind (:class:`TaskKind`) and what a task's data preparation gives back
(:class:`RunData`). The kinds are ``train/tasks/qa.py`` (open-ended, multiple choice, count) and
``train/tasks/moment.py`` (moment retrieval); ``train.tasks.TASKS`` lists them by hand."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from train.config import TrainConfig
from train.losses import PredictionRecord, model_output

if TYPE_CHECKING:
    from train.distributed import DistInfo
    from train.runner.spec import RunSpec

__all__ = ["ItemError", "RunData", "TaskKind", "recorded_feature_stats", "short_float"]


def recorded_feature_stats(meta: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The standardisation statistics a checkpoint's ``meta`` records: ``{key: (mean, std)}``, ``{}``."""
    return {k: (v["mean"].numpy(), v["std"].numpy()) for k, v in (meta.get("feature_stats") or {}).items()}


def short_float(x: float | None) -> float | None:
    """``x`` to 6 significant digits (an answer's JSON line); None stays None."""
    return None if x is None else float(f"{x:.6g}")


class ItemError(ValueError):
    """A new question (``vqa-answer``) the kind cannot make an item of; the message says what to give."""


class RunData:
    """The datasets of one run and what was dropped."""

    def __init__(self) -> None:
        self.datasets: dict[str, Any] = {}
        self.dropped: dict[str, dict[str, int]] = {}
        self.feature_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.feature_projection: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # moment PCA
        self.query_parse: dict[str, Any] | None = None  # moment: dependency parser and label ids


class TaskKind:
    """One task kind: its settings, text and datasets, batches, loss, predictions and metrics, evaluation
    options, baselines, prediction files, and the items and answers of ``vqa-answer``. The runner and
    ``vqa-answer`` ask the kind of their dataset or checkpoint (``task_type``), never test its name.

    Attributes:
        name: the adapters' ``task_type``.
        output_key: the model output its loss and predictions read (``logits``, ``scores``, ...).
        selection: the validation metric that selects the checkpoint and whether higher (``"max"``) or
            lower (``"min"``) is better.
        reads_subtitles: its questions may carry subtitle text (``prepare_qa(subtitles=True)``).
        answer_vocab: its answers are classes of an answer vocabulary (open-ended).
        text_key, text_short: what its text is called (``question``, ``query``): in ``vqa-answer``'s
            lines and tables, and shortened in figures.
        answers_title: what its answers are called in figures.
        required_meta: checkpoint ``meta`` keys ``vqa-answer`` needs besides the shared ones.
        reads_duration: ``vqa-answer`` measures each video's duration (its answers are in seconds).
    """

    name: str = ""
    output_key: str = ""
    selection: tuple[str, str] = ("accuracy", "max")
    reads_subtitles: bool = False
    answer_vocab: bool = False
    text_key: str = "question"
    text_short: str = "Q"
    answers_title: str = "answers"
    required_meta: tuple[str, ...] = ()
    reads_duration: bool = False
    #: reports (``train.tools.report``, ``report_html``, the ``vqa-train`` summary line)
    report_metrics: tuple[str, ...] = ()  # the test metrics a summary shows (empty: the selection metric)
    report_all_metrics: bool = False  # the page lists every metric with its protocol and the baselines
    per_type_score: str | None = "accuracy"  # the per-question-type table's score (None: no table)
    sample_titles: tuple[str, str] = ("Correct test predictions", "Wrong test predictions")
    prediction_label: str = ""  # what a sample's prediction shows, after "predicted"

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

    def output(self, outputs: Mapping[str, Tensor]) -> Tensor:
        """The model's prediction (``outputs[output_key]``); a ``KeyError`` naming what it returned."""
        return model_output(self.name, self.output_key, outputs)

    def losses(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], **options: Any
               ) -> dict[str, Tensor]:
        """The loss dict of one batch (the loop sums its values); ``options``: the kind's loss settings
        (others are ignored)."""
        raise NotImplementedError

    def predict(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *,
                answer_vocab: Sequence[str] | None = None, **options: Any) -> list[PredictionRecord]:
        """One :class:`~train.losses.PredictionRecord` per question of the batch, in batch order."""
        raise NotImplementedError

    def metrics(self, records: Sequence[PredictionRecord]) -> dict[str, float]:
        """The metrics of a split from its records (each question once) and ``num_questions``."""
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

    # -- vqa-answer ---------------------------------------------------------------------------------------

    def answer_view(self, meta: Mapping[str, Any], *, source: str, feature_keys: Sequence[str],
                    text_encoder: Any = None) -> Any:
        """What a checkpoint's ``meta`` says about reading a new question and its video (vocabulary,
        standardisation, ...), for :meth:`new_item`; its ``note`` (or None) is shown to the user.

        Raises:
            ItemError: the checkpoint's reading cannot be rebuilt here (the message names ``source``).
        """
        raise NotImplementedError

    def new_item(self, view: Any, features: Mapping[str, Any], video_id: str, text: str, *,
                 candidates: Sequence[str] | None = None, segment: tuple[float, float] | None = None,
                 subtitle: str | None = None, duration: float | None = None) -> dict[str, Any]:
        """One dataset item of a new question about a video (``features`` as extracted), built as the
        kind's training dataset builds its items.

        Raises:
            ItemError: what the kind takes was not given, or what it does not take was.
        """
        raise NotImplementedError

    def answer_collate(self, ragged_keys: Sequence[str]) -> Callable[[Sequence[Mapping[str, Any]]], dict]:
        """The collate of :meth:`new_item` items (``ragged_keys``: the features of variable length)."""
        raise NotImplementedError

    def decode_answer(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], view: Any, *,
                      candidates: Sequence[str] | None, top_k: int) -> dict[str, Any]:
        """The answer fields (``train.tools.answer.Answer``'s) of a one-question batch's outputs."""
        raise NotImplementedError

    def answer_prediction(self, answer: Any) -> Any:
        """What ``predictions_test.jsonl`` records for the same question (:class:`PredictionRecord`)."""
        raise NotImplementedError

    def answer_json(self, answer: Any) -> dict[str, Any]:
        """The kind's entries of an answer's JSON line."""
        raise NotImplementedError

    def answer_table(self, answer: Any) -> list[str]:
        """The human-readable table of an answer (``vqa-answer`` without ``--json``)."""
        raise NotImplementedError

    def answer_lines(self, answer: Any, ground_truth: tuple[float, float] | None = None
                     ) -> list[tuple[str, float | None]]:
        """(text, bar value in [0, 1] or None) of a figure's answer panel (``--explain``)."""
        raise NotImplementedError

    def header(self, answer: Any) -> list[str]:
        """The first lines of :meth:`answer_table`: the video and the question."""
        return [f"video: {answer.video}", f"{self.text_key}: {answer.question}"]

    # -- reports ------------------------------------------------------------------------------------------

    def summary_metrics(self, m: Mapping[str, Any]) -> list[tuple[str, str, dict[str, float]]]:
        """(metric, its label, the test baselines shown beside it) of each summary row of the run ``m``
        (``metrics.json``)."""
        metrics = self.report_metrics or (m["selection_metric"],)
        return [(k, k, dict(m.get("baselines_test", {}))) for k in metrics]

    def summary_baselines(self, m: Mapping[str, Any]) -> dict[str, float]:
        """The test baselines the one-line summary of ``vqa-train`` shows beside the selection metric."""
        return dict(m["baselines_test"])

    def prediction_hit(self, p: Mapping[str, Any]) -> bool:
        """A line of ``predictions_test.jsonl`` is right (a report's "correct" samples)."""
        return bool(p["correct"])

    def prediction_score(self, p: Mapping[str, Any]) -> float:
        """A prediction line's score, averaged per question type (:attr:`per_type_score`)."""
        return float(bool(p["correct"]))

    def describe_sample(self, p: Mapping[str, Any], record: Any) -> tuple[str, str]:
        """(prediction, truth) of a prediction line as a report shows them (``record``: the dataset's
        record of the question, or None)."""
        return str(p["prediction"]), str(p["answer"])

    def ask(self, answerer: Any, path: Path, record: Any) -> tuple[Any, tuple[float, float] | None]:
        """The answerer's answer to a dataset record's question about the video at ``path``, and the
        ground truth a figure draws (None: none)."""
        return answerer.answer(path, record.question, candidates=record.candidates,
                               segment=getattr(record, "segment", None)), None  # How2QA's ts
