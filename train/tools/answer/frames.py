"""``vqa-answer`` for end-to-end checkpoints (``model.input=frames``, SiaSamRea, issue 27).

Such a model carries its image backbone, fine-tuned, inside its own weights: answering builds the backbone's
architecture (weights ``random``, at once replaced by the checkpoint's) and feeds it frames, not features.
The frames of a question are those evaluation reads: ``train.frames.FrameQADataset.read_clips`` with no
seed, i.e. the ``eval_clips`` deterministic clips over the video (or the question's segment), decoded,
resized and centre-cropped exactly as in the run's validation and test, so the answers equal the run's
predictions file. :class:`FrameInput` stands where ``Answerer`` holds a feature set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from extract.video import Video, VideoDecodeError
from train.frames import FrameCollate, FrameQADataset, load_backbone, uses_frames
from train.tools.answer.results import AnswerError, VideoFeatures

__all__ = ["FrameInput", "model_inputs", "uses_frames"]


def model_inputs(cfg: Any) -> tuple[dict[str, Any], Any]:
    """The builder's ``backbone``, ``pixel_mean``, ``pixel_std`` for config ``cfg`` (random weights: the
    checkpoint's own weights replace them), and the loaded backbone (its architecture and provenance)."""
    import dataclasses

    loaded = load_backbone(dataclasses.replace(cfg, backbone_weights="random", backbone_checkpoint=None))
    return {"backbone": loaded.module, "pixel_mean": loaded.preprocessing.mean,
            "pixel_std": loaded.preprocessing.std}, loaded


class FrameInput:
    """The part of a feature set ``Answerer`` uses, for a model that reads raw frames."""

    outputs: dict[str, Any] = {}
    roles = ("backbone",)

    def __init__(self, cfg: Any) -> None:
        self.cfg, self.name = cfg, "frames"

    @staticmethod
    def collate(answer_dtype: torch.dtype) -> FrameCollate:
        return FrameCollate(answer_dtype=answer_dtype)

    def backbone_name(self, role: str) -> str:
        return str(self.cfg.backbone)

    def object_names(self, features: Any) -> None:
        return None

    def extract(self, path: Path) -> VideoFeatures:
        """Check that the video decodes (the clips are read per question, with its segment)."""
        try:
            with Video(path) as video:
                duration = float(video.info.duration)
        except VideoDecodeError as exc:
            raise AnswerError(f"{path}: cannot decode the video ({exc.reason})") from None
        return VideoFeatures(str(path), {}, None, duration)

    def clips(self, feats: VideoFeatures, segment: tuple[float, float] | None) -> dict[str, torch.Tensor]:
        """The question's evaluation clips (``clips``, ``clip_valid``, ``clip_index``), as validation's."""
        path = Path(feats.video)
        reader = FrameQADataset(None, {path.stem: path}, self.cfg, train=False)  # reads no question
        seg = None if segment is None else torch.tensor(segment, dtype=torch.float32)
        try:
            out = reader.read_clips(path.stem, seg, None)
        except VideoDecodeError as exc:
            raise AnswerError(f"{path}: cannot decode the video ({exc.reason})") from None
        feats.frames = np.ascontiguousarray(out["clips"][0].numpy())  # (Bf, S, S, 3): the first clip, shown
        return out
