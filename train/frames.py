"""The end-to-end frame data path of SiaSamRea (``model.input=frames``, issue 27): videos instead of features.

What ``models/siasamrea.py`` (module docstring, "End-to-end form") reads from the batch, made here:

- :class:`VideoSource` stands where a feature reader stands: the dataset adapter's videos (``videos()``,
  whose paths ``resolve_under`` keeps inside the root), each checked once by opening it and decoding its
  first frame; a video that does not open is *unreadable*: its questions are dropped and counted
  (``dropped_questions.<split>.unreadable_video`` in ``metrics.json``, a warning naming the videos in
  ``train.log``), never fed as zeros. Its :meth:`VideoSource.record` is the run's ``features`` record:
  the backbone's provenance (weights sha256 or "random") and the frame settings, fingerprinted, so that a
  resume on other weights or settings is refused like a resume on other features.
- :class:`FrameQADataset` adds to each question of a ``QADataset`` the decoded frames of its clips. The
  video's frames are read on a grid of ``model.frame_fps`` (``extract.samplers.fixed_fps_indices``); the
  clips are drawn on that grid by the feature form's own functions (``models.siasamrea.clip_range`` and
  ``sample_clips``: the question's segment, the siamese shifts, the evaluation clips), and only their
  frames are decoded (``extract.video.Video.read``: decord, resized by FFmpeg to the shorter side
  ``frame_size``, then centre-cropped). A training item is addressed as ``(index, seed)`` by
  :class:`ClipSeedSampler`, whose seed is drawn from (``train.seed``, epoch, index): the clips of an item
  do not depend on the DataLoader worker that decodes it or on how many there are, and a resumed run draws
  the same clips. A video that fails while decoding in a worker gives no item: :class:`FrameCollate`
  leaves it out of the batch and names it in ``skipped_qids`` (and the worker's log); training counts them
  (``skipped_training_items`` in ``metrics.json``, kept in the checkpoints' loop state) and so does each
  evaluated split (``skipped_questions`` beside its metrics); a batch of nothing but such videos stops
  the run with a message naming them.
- :func:`load_backbone` builds the image backbone as extraction does (``extract.backbones.build_backbone``:
  local weight files, sha256, ``random`` for tests), handed to the model to be fine-tuned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from extract.backbones import BACKBONES, build_backbone
from extract.samplers import fixed_fps_indices
from extract.video import Video, VideoDecodeError
from models.siasamrea import clip_range, sample_clips
from train.data import FeatureMismatchError, QACollate, QADataset, stack

__all__ = [
    "ClipSeedSampler",
    "FrameCollate",
    "FrameQADataset",
    "VideoSource",
    "build_frame_data",
    "item_seed",
    "load_backbone",
    "uses_frames",
]

log = logging.getLogger("train")

#: the batch keys of the frame path (``models/siasamrea.py``, ``forward_frames``)
CLIP_KEYS = ("clips", "clip_valid", "clip_index")


def uses_frames(model_cfg: Any) -> bool:
    """True when a model config asks for raw frames (``model.input=frames``)."""
    return getattr(model_cfg, "input", "features") == "frames"


def load_backbone(model_cfg: Any) -> Any:
    """The image backbone of ``model.backbone`` with its weights (``extract.backbones.build_backbone``), on
    the CPU in fp32 (the trainer moves the model and runs ``train.amp``).

    Raises:
        FeatureMismatchError: not an image backbone of the registry.
        extract.weights.WeightsError: pretrained weights not found (the message says where to put them).
    """
    name = model_cfg.backbone
    if name not in BACKBONES or BACKBONES[name].kind != "image":
        images = sorted(n for n, s in BACKBONES.items() if s.kind == "image")
        raise FeatureMismatchError(f"model.backbone={name!r} is not an image backbone; choose one of "
                                   f"{images}")
    loaded = build_backbone(name, weights=model_cfg.backbone_weights,
                            checkpoint=model_cfg.backbone_checkpoint, device="cpu", precision="fp32")
    loaded.module.train()
    if model_cfg.backbone_weights == "random" and model_cfg.freeze_bn:
        log.warning("model.freeze_bn with random backbone weights: the frozen BatchNorm statistics (mean 0, "
                    "variance 1) normalise nothing and every clip looks alike; set model.freeze_bn=false")
    return loaded


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The clip-sampling seed of dataset item ``index`` in ``epoch`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(index), 27]).generate_state(1)[0])


class ClipSeedSampler(DistributedSampler):
    """``DistributedSampler`` (the same order) whose items are ``(index, item_seed(seed, epoch, index))``."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in super().__iter__():
            yield index, item_seed(self.seed, self.epoch, index)


class VideoSource:
    """The videos of a dataset, in place of a feature reader (``FeatureReader``'s ``in``, ``outputs``).

    Args:
        adapter: the dataset adapter (``videos()``: id and path under the root).
        model_cfg: the SiaSamRea config (``frame_size``, ``frame_fps``, backbone keys).
        backbone: :func:`load_backbone`'s result (its provenance is recorded).
    """

    outputs: dict[str, Any] = {}  # no feature datasets
    feature_set = "frames"

    def __init__(self, adapter: Any, model_cfg: Any, backbone: Any) -> None:
        self.root = Path(adapter.root)
        self.paths = {ref.video_id: Path(ref.path) for ref in adapter.videos()}
        self.model_cfg, self.backbone = model_cfg, backbone
        self.unreadable: dict[str, str] = {}
        self._checked: set[str] = set()

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.paths

    def __getitem__(self, video_id: str) -> dict[str, Any]:
        return {}  # the QADataset underneath reads no features

    def __len__(self) -> int:
        return len(self.paths)

    def readable(self, video_ids: Sequence[str]) -> set[str]:
        """The ids among ``video_ids`` whose video opens and decodes its first frame (each tried once)."""
        for vid in sorted(set(video_ids) - self._checked):
            self._checked.add(vid)
            try:
                Video(self.paths[vid]).close()
            except (VideoDecodeError, KeyError) as err:
                self.unreadable[vid] = str(err)
        return {v for v in video_ids if v in self.paths and v not in self.unreadable}

    def settings(self) -> dict[str, Any]:
        cfg = self.model_cfg
        return {"backbone": self.backbone.provenance(), "frame_size": cfg.frame_size,
                "frame_fps": cfg.frame_fps}

    def record(self) -> dict[str, Any]:
        """The run's ``features`` record (``train.provenance.feature_record``'s keys) for raw frames."""
        settings = self.settings()
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        return {"dir": str(self.root.resolve()), "fingerprint": f"sha256:{digest}", "feature_set": "frames",
                "provenance": settings, "random_weights": self.backbone.weights_sha256 == "random",
                "videos": len(self.paths)}


class FrameQADataset(Dataset):
    """The questions of a ``QADataset`` with the decoded frames of their clips (module docstring).

    Args:
        questions: the split's ``QADataset`` (read without features).
        paths: video id -> file.
        model_cfg: ``clip_frames``, ``frame_interval``, ``siamese_shift``, ``num_siamese``, ``eval_clips``,
            ``frame_size``, ``frame_fps``.
        train: training items ``(index, seed)``: the anchor and ``num_siamese`` clips drawn with that seed;
            otherwise items ``index``: the ``eval_clips`` deterministic clips.

    An item is the question's item plus ``clips`` (K, Bf, S, S, 3) uint8, ``clip_valid`` (K, Bf) bool and
    ``clip_index`` (K, Bf) int64 source frames; ``{"qid", "decode_error"}`` when its video fails to decode.
    """

    def __init__(self, questions: QADataset, paths: Mapping[str, Path], model_cfg: Any, *,
                 train: bool) -> None:
        self.questions, self.paths, self.cfg, self.train = questions, dict(paths), model_cfg, train

    def __len__(self) -> int:
        return len(self.questions)

    @property
    def qids(self) -> list[str]:
        return self.questions.qids

    @property
    def split(self) -> Any:
        return self.questions.split

    @property
    def indices(self) -> np.ndarray:
        return self.questions.indices

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | None:
        index, seed = key if isinstance(key, tuple) else (key, None)
        item = self.questions[int(index)]
        try:
            item.update(self.read_clips(item["video_id"], item.get("segment"), seed))
        except VideoDecodeError as err:
            log.warning("skipped question %s: %s", item["qid"], err)
            return {"qid": item["qid"], "decode_error": str(err)}  # counted by the collate's batch
        return item

    def read_clips(self, video_id: str, segment: torch.Tensor | None,
                   seed: int | None) -> dict[str, torch.Tensor]:
        """Sample the clips of one question and decode only their frames."""
        cfg = self.cfg
        with Video(self.paths[video_id], size=cfg.frame_size) as video:
            grid, _ = fixed_fps_indices(video.info.num_frames, video.info.fps, target_fps=cfg.frame_fps,
                                        keep_every=1)  # (T,) source frames at frame_fps
            times = torch.as_tensor(grid / video.info.fps, dtype=torch.float64)[None]  # (1, T)
            lo, hi = clip_range(torch.ones(1, len(grid), dtype=torch.bool), times,
                                None if segment is None else segment.double()[None])
            gen = None if seed is None else torch.Generator().manual_seed(seed)
            rows, valid = sample_clips(lo, hi, clip_frames=cfg.clip_frames, interval=cfg.frame_interval,
                                       num_siamese=cfg.num_siamese if self.train else 0,
                                       shift=cfg.siamese_shift, train=self.train,
                                       eval_clips=cfg.eval_clips, generator=gen)  # (1, K, Bf)
            source = torch.as_tensor(grid)[rows[0]]  # (K, Bf) source frame indices
            frames = video.read(source.reshape(-1).numpy())  # (K*Bf, H', W', 3), only these frames
        S = cfg.frame_size
        top, left = (frames.shape[1] - S) // 2, (frames.shape[2] - S) // 2
        frames = np.ascontiguousarray(frames[:, top : top + S, left : left + S])
        return {"clips": torch.from_numpy(frames).view(*source.shape, S, S, 3), "clip_valid": valid[0],
                "clip_index": source}


class FrameCollate(QACollate):
    """``QACollate`` plus the clips (stacked into shared memory in a worker); items of videos that failed
    to decode are left out of the batch and listed in ``skipped_qids`` (the trainer and the evaluation
    count them: ``TrainState.skipped_items``, the split's ``skipped_questions``)."""

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        kept = [it for it in items if "decode_error" not in it]
        if not kept:
            raise FeatureMismatchError(f"every video of a batch of {len(items)} failed to decode (see the "
                                       "warnings above); remove those videos or their questions")
        batch = super().__call__([{k: v for k, v in it.items() if k not in CLIP_KEYS} for it in kept])
        for key in CLIP_KEYS:
            batch[key] = stack([it[key] for it in kept])  # (B, K, ...)
        batch["skipped_qids"] = [it["qid"] for it in items if "decode_error" in it]
        return batch


def build_frame_data(spec: Any, adapter: Any, prepared: Any, source: VideoSource, *, text_encoder: Any,
                     model_cfg: Any, drop_unknown_answers: bool) -> Any:
    """The train / val / test :class:`FrameQADataset` s: ``train.tasks.qa.build_qa_data`` over the videos,
    then the questions of unreadable videos dropped and counted (``dropped["unreadable_video"]``)."""
    from train.tasks.qa import build_qa_data  # the QA task's splits, held-out val and drops

    entry = dataclasses.make_dataclass("FrameEntry", [("feature_keys", tuple, ())])()
    data = build_qa_data(spec, adapter, prepared, source, entry, drop_unknown_answers=drop_unknown_answers,
                         text_encoder=text_encoder)
    for name, ds in list(data.datasets.items()):
        vids = [ds.split.video_ids[i] for i in ds.indices]
        ok = source.readable(vids)
        keep = np.array([i for i, v in zip(ds.indices, vids, strict=True) if v in ok], dtype=np.int64)
        if len(keep) < len(ds.indices):
            bad = sorted(set(vids) - ok)
            data.dropped[name]["unreadable_video"] = len(ds.indices) - len(keep)
            log.warning("%s: dropped %d questions of %d unreadable videos, e.g. %s", name,
                        len(ds.indices) - len(keep), len(bad), source.unreadable[bad[0]])
            if not len(keep):
                raise FeatureMismatchError(f"the {name} split has no readable video left")
            ds = QADataset(ds.split, source, feature_keys=(), indices=keep, segments=ds.segments,
                           text_tokens=ds.text_tokens)
        data.datasets[name] = FrameQADataset(ds, source.paths, model_cfg, train=name == "train")
    return data
