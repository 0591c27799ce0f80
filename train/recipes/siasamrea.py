"""SiaSamRea (Yu et al., 2021; no official code): its training-side knowledge.

Training: the ``TrainConfig`` defaults (Adam, lr 1e-4); gradient clipping and precision are ClipBERT's
fine-tuning values (grad_norm 5.0, mixed precision: ``auto``), the model SiaSamRea builds on, since the
paper gives neither. Questions: with subtitles where the dataset has them (``use_subtitles``), read by
the GloVe + BiLSTM encoder or a local transformer checkpoint (``text_encoder``, ``text_encoder_path``,
which may move: its files' sha256 are checked). ``eval_clips`` acts at inference only. The explanation
places the [CLS] attention over the evaluated clips' frames on the video's frames.
"""

from __future__ import annotations

from typing import Any

from train.recipes.base import ExplainView, Recipe, TextReading

__all__ = ["RECIPE", "text_reading"]


def text_reading(model_cfg: Any) -> TextReading:
    """Subtitles as configured; the transformer encoder's directory and lengths when it is chosen."""
    if model_cfg.text_encoder != "transformer":
        return TextReading(subtitles=model_cfg.use_subtitles)
    return TextReading(subtitles=model_cfg.use_subtitles, encoder=True,
                       encoder_path=model_cfg.text_encoder_path, max_len=model_cfg.text_max_len,
                       subtitle_max_len=model_cfg.subtitle_max_len)


RECIPE = Recipe(
    name="siasamrea",
    grad_clip=5.0,
    amp="auto",
    text_reading=text_reading,
    path_keys=("text_encoder_path",),
    eval_keys=("eval_clips",),
    explain=ExplainView("clip_frames"),
)
