"""What a recipe is: :class:`Recipe` (a model's training-side knowledge), :class:`TextReading` (how its config
reads questions) and :class:`ExplainView` (what ``vqa-answer --explain`` draws for it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ExplainView", "Recipe", "TextReading", "no_defaults", "word_reading"]


@dataclass(frozen=True)
class TextReading:
    """How a model config reads its questions, in the words the trainer and ``vqa-answer`` use.

    Attributes:
        subtitles: the questions carry their video's subtitle text where the dataset has it (How2QA).
        encoder: a transformer text encoder reads the text (``train/text_encoder.py``); False: the word
            vocabulary, GloVe and the model's own question encoder.
        encoder_path: the encoder's local checkpoint directory.
        max_len: the encoder's tokens per question row (question, or question + candidate).
        subtitle_max_len: the encoder's subtitle tokens per row.
    """

    subtitles: bool = False
    encoder: bool = False
    encoder_path: str | None = None
    max_len: int = 64
    subtitle_max_len: int = 64


@dataclass(frozen=True)
class ExplainView:
    """What ``vqa-answer --explain`` draws for a model: a view of ``train.tools.explain.VIEWS`` by name.

    Attributes:
        view: ``frame_attention`` (the frames dimmed by one weight per sampled frame), ``object_boxes``
            (each frame's most attended object boxes), ``clip_frames`` (attention over sampled clips'
            frames placed on the video's frames) or ``timeline`` (moment retrieval's scores over time).
        attention_key: ``frame_attention``: the model's output entry holding one weight per sampled frame;
            None (or absent from an answer): the plain frames and a note.
    """

    view: str = "frame_attention"
    attention_key: str | None = None


def no_defaults(dataset: str, task: str | None, task_type: str) -> dict[str, Any]:
    """No per-dataset settings: the config class's defaults apply."""
    return {}


def word_reading(model_cfg: Any) -> TextReading:
    """Questions as word ids (GloVe), no subtitles: every model without a text encoder of its own."""
    return TextReading()


@dataclass(frozen=True)
class Recipe:
    """A model's training-side knowledge (one module of ``train/recipes/`` each).

    Attributes:
        name: the ``models.MODELS`` key.
        grad_clip: ``train.grad_clip`` default (max gradient norm; None: unclipped), its paper's or
            official code's.
        amp: ``train.amp`` default (autocast: auto, bf16, fp32, fp16).
        train_defaults: ``(dataset, task, task_type) -> {TrainConfig field: value}``, the paper's or
            official run scripts' per-dataset training settings (applied below ``--config`` and ``--set``).
        model_defaults: the same for the model config's fields (not applied to ``--eval-only``).
        text_reading: ``model_cfg -> TextReading``: how the config reads questions.
        path_keys: model-config fields naming a directory that may move (its files' sha256 are checked
            instead): ``--eval-only`` may set them and ``--resume`` does not compare them.
        eval_keys: model-config fields that act at inference only: ``--eval-only --set model.KEY=V``
            evaluates a checkpoint otherwise than it was validated (recorded in ``eval_config.yaml``).
        explain: what ``vqa-answer --explain`` draws.
        converter: ``"module:attribute"`` of its ``vqa-convert`` subcommand (a click command) when the
            authors release checkpoints; only ``train.tools.convert`` imports it.
        text_rules: the official text rules (``pipelines.official_text.TEXT_RULES`` names) its converted
            checkpoints may name; ``--eval-only`` refuses any other.
    """

    name: str
    grad_clip: float | None
    amp: str
    train_defaults: Callable[[str, str | None, str], dict[str, Any]] = no_defaults
    model_defaults: Callable[[str, str | None, str], dict[str, Any]] = no_defaults
    text_reading: Callable[[Any], TextReading] = word_reading
    path_keys: tuple[str, ...] = ()
    eval_keys: tuple[str, ...] = ()
    explain: ExplainView = ExplainView()
    converter: str | None = None
    text_rules: tuple[str, ...] = ()
