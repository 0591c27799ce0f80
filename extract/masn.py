"""The ``masn`` feature set: MASN's inputs rebuilt from raw video.

Seo et al., "Attend What You Need: Motion-Appearance Synergistic Networks for Video Question
Answering", ACL 2021 (official code ahjeongseo/MASN-pytorch, which ships no extraction code; its users
download the released HDF5 files). Sec. 3.1 and 4.2 of the paper define the inputs; per video, with
T = ``max_frames`` (20 for TGIF-QA, 30 for MSVD-QA / MSRVTT-QA) and M = ``max_objects`` (10):

| output | shape | what |
|---|---|---|
| ``appearance`` | (T, Da) | global appearance: ResNet-152 pool5 of the frame |
| ``motion`` | (T, Dm) | global motion: I3D ResNet-50 last conv map averaged over (t, h, w) |
| ``objects`` | (T, M, Da) | RoIAlign of the object boxes on the frame's ResNet-152 conv5 map, mean (*) |
| ``object_boxes`` | (T, M, 6) | ``[x1/w, y1/h, x2/w, y2/h, bw/w, bh/h]`` in the original frame |
| ``motion_objects`` | (T, M, Dm) | RoIAlign of the same boxes on the I3D map (time-averaged), mean-pooled |
| ``frame_mask`` | (T,) bool | False on padded frames (their features are all zeros) |
| ``object_mask`` | (T, M) bool | False on padded object rows (zeros), and on every row of a padded frame |
| ``object_labels`` | (T, M) int64 | (*) Visual Genome class 1..1600 (-1 on padding) |
| ``object_scores`` | (T, M) float32 | (*) that class's probability |
| ``attribute_labels`` | (T, M) int64 | (*) Visual Genome attribute 1..400 (-1 on padding) |
| ``attribute_scores`` | (T, M) float32 | (*) that attribute's probability |

(*) ``--detector bottomup_r101_vg``: ``objects`` are the detector's own region features (T, M, 2048), and
the four class / attribute outputs exist only with it.

How each part is computed:

- Frames: the video resampled to 6 fps and one of every 4 samples kept (``fixed_fps_indices``). A video
  with more than T kept samples gives T of them spread uniformly over the whole video
  (``frame_sampling="uniform"``, the default: ``round(linspace(0, n - 1, T))`` of its n kept samples) or
  its first T (``"first"``: what the official loader does with the released features, and what this set
  did before the option existed; such a video loses its tail). Shorter videos are padded with zero rows
  and ``frame_mask`` False. Padding is not failure: a video that does not decode raises
  ``VideoDecodeError`` and is recorded as failed, never written as zeros.
- Motion window: the 8 consecutive samples of the 6 fps stream around each kept frame (kept sample
  ``4k`` takes samples ``4k - 4 .. 4k + 3``, clamped at the ends), so neighbouring windows tile the stream
  (with uniform selection the windows of a long video are spaced further apart).
- Objects: ``extract.objects`` (torchvision Faster R-CNN, class-agnostic top-M after per-class NMS,
  bottom-up-attention's threshold / minimum-count rule, padding with a mask). The detector sees the frame
  at its own resolution (shorter side at most ``min_size``); boxes are mapped back to the original frame.
  ``--detector bottomup_r101_vg`` is bottom-up-attention's own Visual Genome network
  (``extract/bottomup.py``): its kept regions (proposal boxes, MASN's 10) come with their 2048-d features,
  which are then the ``objects`` output (MASN's released ``tgif_btup_f_obj10`` kind), and with their class
  and attribute; ``motion_objects`` is RoIAlign of the same boxes on the I3D map as for every detector.
- Appearance input: the whole frame resized to ``image_size`` x ``image_size`` (no centre crop, so every
  box lies on the map; x and y are scaled separately for non-square frames). Motion input: the same for
  ``motion_size``. Boxes go original frame -> feature map with ``scale_boxes`` (x by w_map / W, y by
  h_map / H) and RoIAlign runs with ``spatial_scale=1``, ``aligned=True``.
- Motion objects: the I3D map is averaged over its time axis, then RoIAlign (identical to RoIAlign per time
  slice followed by the average, since RoIAlign is linear; cheaper).

Values never depend on how videos are grouped: the backbones run through ``FeatureSet.run_backbone``
(every forward pass at the full batch size) and the detector gets ``DETECTOR_BATCH`` images of one size
per call (see ``LoadedDetector.detect``), so a video's features are the same alone, in chunks or batched
with other videos (tested bit for bit).

Options: ``FeatureOptions`` fields left None take this set's defaults (``MasnFeatures.defaults``):
``resnet152`` at 224 px, ``i3d_r50`` at its own 224 px (the paper's 7x7 map), T = 20, 8-frame windows,
uniform frame selection.
The detector fields (``DETECTOR_OPTION_FIELDS``) left None take ``DetectorSettings``' defaults, except
``num_proposals``: 300 RPN proposals per image as bottom-up-attention's test and extraction configs
(``RPN.POST_NMS_TOPK_TEST: 300``; torchvision's own default is 1000). The resolved options, detector
fields included, are what provenance records.

On CUDA the backbones run in bf16 autocast and channels_last with uint8 frames sent from pinned memory
(``LoadedBackbone``); the detector runs in float32 (``LoadedDetector``); RoIAlign runs in float32 on
the maps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from extract.featurebase import FRAME_SAMPLINGS, FeatureOptions, FeatureSet, OutputSpec
from extract.objects import DETECTORS, DetectorSettings, LoadedDetector, detector_provenance, load_detector
from extract.regions import (
    RoISettings,
    region_rows,
    roi_mean_features,
    roi_mean_features_3d,
    scale_boxes,
    select_batch,
    spatial_features,
)
from extract.samplers import centered_windows, fixed_fps_indices, uniform_indices
from extract.video import Video

__all__ = [
    "DETECTOR_OPTION_FIELDS",
    "MASN_DETECTOR_DEFAULTS",
    "MasnFeatures",
    "build_masn_feature_set",
    "detector_settings_from_options",
    "masn_frame_indices",
]

TARGET_FPS = 6.0  # Sec. 4.2: frames sampled at 6 fps ...
KEEP_EVERY = 4  # ... and one of every 4 kept for appearance
DEFAULT_MAX_FRAMES = 20  # TGIF-QA (30 for MSVD-QA / MSRVTT-QA)
DEFAULT_CLIP_LEN = 8  # I3D input: 8 frames around each kept frame
DEFAULT_FRAME_SAMPLING = "uniform"  # T of a longer video's kept frames spread over all of it
DEFAULT_APPEARANCE = "resnet152"  # Sec. 4.2: ResNet-152 pool5
DEFAULT_MOTION = "i3d_r50"  # features.md: a ResNet-50 I3D (2048 channels), Kinetics-400
# bottom-up-attention (MILVLG/bottom-up-attention.pytorch, extract-bua-caffe-r101.yaml):
# RPN.POST_NMS_TOPK_TEST 300, where torchvision's DetectorSettings default is 1000.
MASN_DETECTOR_DEFAULTS = {"num_proposals": 300}
DETECTOR_BATCH = 8  # images per detector call (fixed, so boxes never depend on the batching)
CHUNK_FRAMES = 16  # kept frames per decoded chunk
# detector region field (``extract.regions.REGION_FIELDS``) -> the masn output that stores it
REGION_OUTPUTS = {
    "label_scores": ("object_scores", "float32"),
    "attributes": ("attribute_labels", "int64"),
    "attribute_scores": ("attribute_scores", "float32"),
}

# FeatureOptions field -> DetectorSettings field.
DETECTOR_OPTION_FIELDS = {
    "detector": "name",
    "max_objects": "max_objects",
    "min_objects": "min_objects",
    "score_threshold": "score_threshold",
    "nms_iou": "nms_iou",
    "detector_min_size": "min_size",
    "detector_max_size": "max_size",
    "num_proposals": "num_proposals",
}


def masn_frame_indices(
    num_frames: int,
    fps: float,
    *,
    max_frames: int = DEFAULT_MAX_FRAMES,
    clip_len: int = DEFAULT_CLIP_LEN,
    target_fps: float = TARGET_FPS,
    keep_every: int = KEEP_EVERY,
    sampling: str = DEFAULT_FRAME_SAMPLING,
) -> tuple[np.ndarray, np.ndarray]:
    """The kept frames and their motion windows (Sec. 4.2).

    Args:
        num_frames, fps: the video's frame count and rate.
        max_frames: T.
        clip_len: samples of the ``target_fps`` stream per motion window.
        target_fps, keep_every: the stream rate and the thinning.
        sampling: when the video has more than T kept samples: ``"uniform"`` (T of them spread over the
            whole video, first and last included) or ``"first"`` (the first T).

    Returns:
        frames: (n,) int64 source frame indices of the real (unpadded) kept frames, 1 <= n <= T, in order.
        windows: (n, clip_len) int64 source frame indices of each kept frame's motion window.
    """
    if sampling not in FRAME_SAMPLINGS:
        raise ValueError(f"frame sampling must be one of {FRAME_SAMPLINGS}, got {sampling!r}")
    kept, _ = fixed_fps_indices(num_frames, fps, target_fps, keep_every, None)  # (N,) every kept sample
    if len(kept) <= max_frames:
        chosen = np.arange(len(kept), dtype=np.int64)
    elif sampling == "uniform":
        chosen = uniform_indices(len(kept), max_frames)  # (T,) distinct, as N > T
    else:
        chosen = np.arange(max_frames, dtype=np.int64)
    stream, _ = fixed_fps_indices(num_frames, fps, target_fps, 1, None)  # (L,) the 6 fps stream
    positions = chosen * keep_every  # kept sample k is stream sample k * keep_every
    windows = stream[centered_windows(positions, len(stream), clip_len)]  # (n, clip_len)
    return kept[chosen], windows


def squash_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize whole frames to ``size`` x ``size`` (aspect not kept, nothing cropped).

    Args:
        frames: (N, H, W, 3) uint8.
        size: S.

    Returns:
        (N, S, S, 3) uint8 (bilinear, antialiased).
    """
    if frames.shape[1:3] == (size, size):
        return np.ascontiguousarray(frames)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class MasnFeatures(FeatureSet):
    """MASN's per-video features (see the module docstring).

    Args:
        options: the shared ``FeatureOptions``. Used: ``appearance`` / ``image_size`` (default
            resnet152 at 224), ``motion`` / ``motion_size`` (default i3d_r50 at 224), ``weights``,
            ``checkpoints`` (the detector's name is accepted as a key), ``device``, ``max_frames``
            (T, default 20), ``frame_sampling`` (default uniform), ``clip_len`` (default 8),
            ``batch_frames``, ``dtype`` (object boxes and masks keep float32 / bool) and the detector
            fields of ``DETECTOR_OPTION_FIELDS``.
        detector: detector and box selection; default: from the options' detector fields
            (``detector_settings_from_options``). When given it wins over those fields, and the
            resolved options carry its values.
        roi: RoIAlign grid (default ``RoISettings()``).
    """

    name = "masn"
    roles = {"appearance": "image", "motion": "video"}
    map_roles = ("appearance", "motion")  # RoIAlign on both maps
    defaults = {
        "appearance": DEFAULT_APPEARANCE,
        "motion": DEFAULT_MOTION,
        "max_frames": DEFAULT_MAX_FRAMES,
        "clip_len": DEFAULT_CLIP_LEN,
        "frame_sampling": DEFAULT_FRAME_SAMPLING,
    }
    uses = ("max_frames", "clip_len", "frame_sampling")
    # outputs that keep their dtype whatever ``options.dtype`` says (boxes, class ids and scores)
    _time_keys = ("object_boxes", "object_labels", *(out for out, _ in REGION_OUTPUTS.values()))

    def __init__(
        self,
        options: FeatureOptions,
        *,
        detector: DetectorSettings | None = None,
        roi: RoISettings | None = None,
    ):
        self.detector_settings = detector or detector_settings_from_options(options)
        self.roi = roi or RoISettings()
        self._detector: LoadedDetector | None = None
        super().__init__(options)

    # -- settings ---------------------------------------------------------------------------------

    def resolve_options(self, options: FeatureOptions) -> FeatureOptions:
        """The base resolution plus the detector fields set to ``detector_settings``' values."""
        resolved = super().resolve_options(options)
        settings = self.detector_settings
        return replace(
            resolved,
            **{field: getattr(settings, target) for field, target in DETECTOR_OPTION_FIELDS.items()},
        )

    def warnings(self) -> list[str]:
        region_dim = DETECTORS[self.detector_settings.name].feature_dim
        if region_dim is not None and region_dim != self.feature_dim("appearance"):
            return [
                f"--detector {self.detector_settings.name} gives {region_dim}-d objects but "
                f"--appearance {self.backbone_name('appearance')} {self.feature_dim('appearance')}-d "
                "frames; the MASN model needs both of one size (the paper: resnet152, 2048)"
            ]
        side = conv5_side(self.options.image_size)
        if side > 1:
            return []
        return [
            f"--features masn at --image-size {self.options.image_size}: the conv5 map is 1x1, so every "
            "object row equals the appearance row (RoIAlign has one cell to sample); an --image-size "
            "above 32 gives a larger map (the paper: 224)"
        ]

    def extra_networks(self, values: dict[str, object]) -> set[str]:
        return {self.detector_settings.name}  # ``--checkpoint <detector>=PATH``

    @property
    def t(self) -> int:
        return self.options.max_frames or DEFAULT_MAX_FRAMES

    @property
    def w(self) -> int:
        return self.options.clip_len or DEFAULT_CLIP_LEN

    @property
    def motion_size(self) -> int:
        """The motion input side (resolved: default the motion backbone's own, 224 for I3D)."""
        return self.options.motion_size

    def _outputs(self) -> dict[str, OutputSpec]:
        t, m, dt = self.t, self.detector_settings.max_objects, self.options.dtype
        da, dm = self.feature_dim("appearance"), self.feature_dim("motion")
        entry = DETECTORS[self.detector_settings.name]
        outputs = {
            "appearance": OutputSpec((t, da), dt),
            "motion": OutputSpec((t, dm), dt),
            "objects": OutputSpec((t, m, entry.feature_dim or da), dt),
            "object_boxes": OutputSpec((t, m, 6), "float32"),
            "motion_objects": OutputSpec((t, m, dm), dt),
            "frame_mask": OutputSpec((t,), "bool"),
            "object_mask": OutputSpec((t, m), "bool"),
        }
        if "label_scores" in entry.region_fields:
            outputs["object_labels"] = OutputSpec((t, m), "int64")
        for field, (name, dtype) in REGION_OUTPUTS.items():
            if field in entry.region_fields:
                outputs[name] = OutputSpec((t, m), dtype)
        return outputs

    def object_names(self, features: dict[str, np.ndarray]) -> np.ndarray | None:
        """(T, M) names of the stored objects ("<attribute> <class>", "" on padding) when the detector has
        a vocabulary (``bottomup_r101_vg``: Visual Genome); else None."""
        vocabulary = DETECTORS[self.detector_settings.name].vocabulary
        labels = features.get("object_labels")
        if vocabulary is None or labels is None:
            return None
        classes, attributes = vocabulary()
        attrs = features.get("attribute_labels", np.full_like(labels, -1))
        names = np.full(labels.shape, "", dtype=object)
        for idx in zip(*np.nonzero(labels > 0), strict=True):
            a = int(attrs[idx])
            names[idx] = (f"{attributes[a - 1]} " if a > 0 else "") + classes[int(labels[idx]) - 1]
        return names

    def __getstate__(self):
        state = super().__getstate__()
        state["_detector"] = None  # each process loads its own
        return state

    # -- decode (CPU, no model) -------------------------------------------------------------------

    def decode(self, video_id: str, path: Path) -> Iterator[dict[str, np.ndarray]]:
        """Decode the kept frames and their motion windows, ``CHUNK_FRAMES`` kept frames per chunk.

        Yields:
            dicts with ``det_frames`` (c, Hd, Wd, 3) uint8 (the detector's view: the frame with its
            shorter side at most ``detector.min_size``), ``app_frames`` (c, S, S, 3) uint8,
            ``motion_clips`` (c, W, Sm, Sm, 3) uint8, ``frame_hw`` (2,) int64 original (H, W),
            ``frame_index`` (c,) int64 source frame indices.

        Raises:
            VideoDecodeError: the video is missing, empty, unreadable or fails to decode.
        """
        o, det = self.options, self.detector_settings
        with Video(path, max_pixels=o.max_pixels) as native:
            info = native.info
            frames, windows = masn_frame_indices(
                info.num_frames, info.fps, max_frames=self.t, clip_len=self.w,
                sampling=self.options.frame_sampling or DEFAULT_FRAME_SAMPLING,
            )
            det_size = det.min_size if min(info.height, info.width) > det.min_size else None
            with (
                Video(path, size=det_size, max_pixels=o.max_pixels) if det_size else native as det_video,
                Video(path, size=self.motion_size, max_pixels=o.max_pixels) as motion_video,
            ):
                for start in range(0, len(frames), CHUNK_FRAMES):
                    idx = frames[start : start + CHUNK_FRAMES]  # (c,)
                    win = windows[start : start + CHUNK_FRAMES]  # (c, W)
                    det_frames = det_video.read(idx)  # (c, Hd, Wd, 3)
                    clips = squash_frames(
                        motion_video.read(win.reshape(-1)), self.motion_size
                    )  # (c*W, Sm, Sm, 3)
                    yield {
                        "det_frames": det_frames,
                        "app_frames": squash_frames(det_frames, o.image_size),  # (c, S, S, 3)
                        "motion_clips": clips.reshape(len(idx), self.w, *clips.shape[1:]),
                        "frame_hw": np.array([info.height, info.width], np.int64),
                        "frame_index": idx.astype(np.int64),
                    }

    # -- infer (models) ---------------------------------------------------------------------------

    def detector(self) -> LoadedDetector:
        """The loaded detector (loads on the first call)."""
        if self._detector is None:
            o, name = self.options, self.detector_settings.name
            self._detector = load_detector(
                self.detector_settings, weights=o.weights, checkpoint=o.checkpoint_for(name), device=o.device
            )
        return self._detector

    def _infer(self, chunks: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Per chunk (c frames): ``appearance`` (c, Da), ``motion`` (c, Dm), ``objects`` (c, M, Da),
        ``object_boxes`` (c, M, 6), ``motion_objects`` (c, M, Dm), ``object_mask`` (c, M)."""
        o, roi = self.options, self.roi
        # Detection: every frame of every chunk in one list (grouped by size inside ``detect``).
        images = [frame for c in chunks for frame in c["det_frames"]]
        detections = self.detector().detect(images, batch_size=DETECTOR_BATCH)
        selected = select_batch(detections, self.detector_settings)
        regions = region_rows(detections, selected)  # the detector's own region outputs, if any
        own = "features" in regions  # the objects are the detector's features: no appearance map needed
        app_frames = [c["app_frames"] for c in chunks]
        app = self.run_backbone("appearance", app_frames, o.image_size, return_map=not own)
        if own:
            app = [(pooled, None) for pooled in app]
        mot = self.run_backbone(
            "motion", [c["motion_clips"] for c in chunks], self.motion_size, return_map=True
        )
        outs, offset = [], 0
        for chunk, (app_pooled, app_map), (mot_pooled, mot_map) in zip(chunks, app, mot, strict=True):
            c = len(chunk["frame_index"])
            h, w = (int(v) for v in chunk["frame_hw"])
            det_hw = chunk["det_frames"].shape[1:3]
            boxes = scale_boxes(
                selected.boxes[offset : offset + c], det_hw, (h, w)
            )  # (c, M, 4) original pixels
            rows = slice(offset, offset + c)
            mask = selected.mask[rows]  # (c, M)
            offset += c
            mot_map = torch.from_numpy(mot_map)  # (c, Dm, t, h, w)
            mask_t = torch.from_numpy(mask)
            if own:
                objects = torch.from_numpy(regions["features"][rows])  # (c, M, 2048) the detector's own
            else:
                app_map = torch.from_numpy(app_map)  # (c, Da, h, w)
                objects = roi_mean_features(
                    app_map,
                    torch.from_numpy(
                        scale_boxes(boxes, (h, w), tuple(app_map.shape[-2:]))
                    ),  # x * w_map / W, y * h_map / H
                    mask_t,
                    output_size=roi.output_size,
                    sampling_ratio=roi.sampling_ratio,
                )  # (c, M, Da)
            motion_objects = roi_mean_features_3d(
                mot_map,
                torch.from_numpy(scale_boxes(boxes, (h, w), tuple(mot_map.shape[-2:]))),
                mask_t,
                output_size=roi.output_size,
                sampling_ratio=roi.sampling_ratio,
            )  # (c, M, Dm)
            outs.append(
                {
                    "appearance": app_pooled,  # (c, Da) pool5
                    "motion": mot_pooled,  # (c, Dm) map averaged over (t, h, w)
                    "objects": objects.numpy(),
                    "object_boxes": spatial_features(boxes, mask, h, w),  # (c, M, 6)
                    "motion_objects": motion_objects.numpy(),
                    "object_mask": mask,
                    **self._region_outputs(regions, selected, rows),
                }
            )
        return outs

    def _region_outputs(self, regions: dict[str, np.ndarray], selected, rows: slice) -> dict[str, np.ndarray]:
        """The stored class / attribute outputs of one chunk's rows (``REGION_OUTPUTS``; none for
        detectors without them)."""
        out = {name: regions[field][rows] for field, (name, _) in REGION_OUTPUTS.items() if field in regions}
        if "object_scores" in out:
            out["object_labels"] = selected.labels[rows]  # (c, M), -1 on padding
        return out

    # -- finalize ---------------------------------------------------------------------------------

    def finalize(self, partials: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Concatenate one video's chunks in order and pad to T frames (zero rows, masks False, class ids -1).

        Returns:
            The arrays of ``outputs``.
        """
        if not partials:
            raise ValueError("masn: no chunk outputs to finalize")
        n = sum(len(p["object_mask"]) for p in partials)
        if not 1 <= n <= self.t:
            raise ValueError(f"masn: {n} frames for one video, expected 1..{self.t}")
        out = {}
        for key, spec in self.outputs.items():
            full = np.full(spec.shape, -1 if key in ("object_labels", "attribute_labels") else 0, spec.dtype)
            if key == "frame_mask":
                full[:n] = True
            else:
                full[:n] = np.concatenate([p[key] for p in partials])
            out[key] = full
        return out

    # -- provenance -------------------------------------------------------------------------------

    def sampler_provenance(self) -> dict:
        frames = {
            "sampler": "fixed_fps_indices",
            "target_fps": TARGET_FPS,
            "keep_every": KEEP_EVERY,
            "max_len": self.t,
            "padding": "zero rows, frame_mask False",
        }
        if (self.options.frame_sampling or DEFAULT_FRAME_SAMPLING) == "uniform":  # "first": as before
            frames["longer"] = "max_len of the kept samples, uniform_indices (spread over the whole video)"
        return {
            "frames": frames,
            "motion": {
                "sampler": "centered_windows over the 6 fps stream (kept sample 4k: samples 4k-4 .. 4k+3)",
                "w": self.w,
            },
        }

    def provenance(self) -> dict:
        """Base provenance (backbones, samplers, options) plus the detector, RoIAlign and geometry."""
        if self._provenance is None:
            base = super().provenance()
            o = self.options
            base["detector"] = detector_provenance(
                self.detector_settings,
                weights=o.weights,
                checkpoint=o.checkpoint_for(self.detector_settings.name),
            )
            if DETECTORS[self.detector_settings.name].feature_dim is not None:
                base["objects"] = "the detector's own region features (not RoIAlign on the appearance map)"
            base["roi"] = {
                **asdict(self.roi),
                "op": "torchvision.ops.roi_align(aligned=True, spatial_scale=1), mean over the bins",
                "box_to_map": "x * w_map / W, y * h_map / H from original-frame pixels",
                "motion_map": "averaged over time before RoIAlign (equal to per-slice RoIAlign then mean)",
            }
            base["geometry"] = {
                "appearance_input": f"whole frame resized to {o.image_size}x{o.image_size}, no crop",
                "motion_input": f"whole frame resized to {self.motion_size}x{self.motion_size}, no crop",
                "detector_input": f"shorter side at most {self.detector_settings.min_size} at decode, then "
                "the detector's own resize",
                "object_boxes": "[x1/w, y1/h, x2/w, y2/h, bw/w, bh/h] in the original frame",
            }
        return self._provenance


def detector_settings_from_options(options: FeatureOptions) -> DetectorSettings:
    """``DetectorSettings`` from the FeatureOptions fields of ``DETECTOR_OPTION_FIELDS`` that are not
    None; the others take ``MASN_DETECTOR_DEFAULTS`` (300 proposals) or ``DetectorSettings``' defaults.

    Raises:
        ValueError: an unknown detector or inconsistent values (e.g. min_objects > max_objects).
    """
    given = {
        target: getattr(options, source)
        for source, target in DETECTOR_OPTION_FIELDS.items()
        if getattr(options, source) is not None
    }
    settings = {**MASN_DETECTOR_DEFAULTS, **given}
    if "max_objects" in given and "min_objects" not in given:
        # bottom-up-attention's rule fills up to min_objects; with fewer rows asked for, fill them all
        settings["min_objects"] = min(DetectorSettings.min_objects, given["max_objects"])
    if "min_size" in given and "max_size" not in given:
        settings["max_size"] = max(DetectorSettings.max_size, given["min_size"])
    return DetectorSettings(**settings)


def conv5_side(image_size: int) -> int:
    """Side of a ResNet's conv5 map for a square input (conv1 and maxpool, then three more stride-2
    stages: each halves the side, rounding up)."""
    side = image_size
    for _ in range(5):
        side = (side - 1) // 2 + 1
    return side


def build_masn_feature_set(options: FeatureOptions) -> MasnFeatures:
    """The ``masn`` feature set (``FEATURE_SETS["masn"]``) from the shared options.

    Raises:
        ValueError: options that do not fit (unknown detector, image backbone as motion, ...).
    """
    return MasnFeatures(options, detector=detector_settings_from_options(options))
