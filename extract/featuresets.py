"""Named feature sets: which frames are decoded, which backbones see them, what arrays come out.

A feature set splits its work in three so the engine can overlap them (``extract/engine/``):

1. ``decode(video_id, path)``: CPU only, no model. Samples frame indices (``extract.samplers``),
   decodes only those frames (``extract.video``), already resized and centre-cropped to the
   backbones' input side, and yields bounded chunks (at most ``MAX_CHUNK_FRAMES`` frames each).
2. ``infer(chunks)``: runs the backbones on the chunks of many videos at once, in batches of
   ``batch_frames`` images (or ``batch_frames // clip_len`` clips). Models load on the first call.
3. ``finalize(partials)``: joins one video's chunk outputs into its final arrays (``outputs``).

Sets (shapes per video; Da / Dm = appearance / motion feature size, 2048 with the paper backbones):

| set | outputs | frames |
|---|---|---|
| ``mspan`` | ``appearance`` (16, Da), ``motion`` (16, Dm) | 16 uniform frames; 16-frame window on each |
| ``hcrn`` | ``appearance_clips`` (8, 16, Da), ``motion_clips`` (8, Dm) | HCRN's 8 clips of 16 frames |
| ``siasamrea`` | ``frames`` (T, Da), ``frame_times`` (T,) | frames at 4 fps (or every ``stride`` frames) |
| ``cmin`` | ``clips`` (T, Dm) or (T, pca_dim), ``clip_times`` (T,) | a 16-frame clip every 8 frames |
| ``masn`` | see ``extract/masn.py`` (global, object and motion-object features, masks) | 6 fps, 1 in 4 kept |

Each set has its paper's backbones as defaults (``FeatureOptions`` fields left None): mspan ResNet-152
+ 3D ResNet-152 (Kinetics-700), hcrn ResNet-101 + 3D ResNeXt-101 (HCRN's), masn ResNet-152 + I3D
ResNet-50, siasamrea ResNet-152, cmin C3D fc7 (Sports-1M). Input sides default to the chosen
backbone's own (224 for the image backbones and I3D, 112 for the other 3D CNNs). A set's ``options`` are
the *resolved* options (``FeatureSet.resolve_options``): every default filled in, every field the set
does not use cleared; provenance records them, so two runs that differ only in spelling a default out
resume into each other.

Features do not depend on how videos were grouped into ``infer`` calls: every forward pass runs at
the full batch size (the last batch is padded), so a resumed run writes the same values bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from extract.featurebase import (  # noqa: F401 - re-exported: the names users import from here
    COMMON_FIELDS,
    MAX_CHUNK_FRAMES,
    ROLE_FIELDS,
    FeatureOptions,
    FeatureSet,
    OutputSpec,
    center_crop,
    video_for,
)
from extract.masn import build_masn_feature_set
from extract.pca import DEFAULT_PCA_DIM, PCA_NAME, Projection, inspect_pca, load_pca, pca_provenance
from extract.samplers import (
    centered_windows,
    clip_centre_times,
    dense_clips,
    fixed_fps_indices,
    frame_times,
    hcrn_clips,
    strided_indices,
    uniform_indices,
)
from extract.video import Video


class MspanFeatures(FeatureSet):
    """MSPAN (Guo et al., ACL 2021): N = 16 uniform frames (linspace, edge padding when shorter).

    ``appearance`` (N, Da): image backbone pool5 on each sampled frame (``image_size``, 224).
    ``motion`` (N, Dm): video backbone on the W = 16-frame window centred on each sampled frame
    (``motion_size``, 112; MSPAN uses the Kinetics-700 3D ResNet-152). With ``appearance_map`` the
    conv5 maps are stored too as ``appearance_map`` (N, Da, h, w).
    """

    name = "mspan"
    roles = {"appearance": "image", "motion": "video"}
    defaults = {"appearance": "resnet152", "motion": "r3d152_k700", "num_frames": 16, "clip_len": 16}
    uses = ("num_frames", "clip_len", "appearance_map")

    @property
    def n(self) -> int:
        return self.options.num_frames or 16

    @property
    def w(self) -> int:
        return self.options.clip_len or 16

    def _outputs(self):
        dt = self.options.dtype
        out = {
            "appearance": OutputSpec((self.n, self.feature_dim("appearance")), dt),
            "motion": OutputSpec((self.n, self.feature_dim("motion")), dt),
        }
        if self.options.appearance_map:
            side = math.ceil(self.options.image_size / 32)  # ResNet conv5 stride
            out["appearance_map"] = OutputSpec((self.n, self.feature_dim("appearance"), side, side), dt)
        return out

    def sampler_provenance(self):
        return {
            "appearance": {"sampler": "uniform_indices", "n": self.n},
            "motion": {"sampler": "centered_windows", "centers": "uniform_indices", "n": self.n, "w": self.w},
        }

    def decode(self, video_id, path):
        o = self.options
        with Video(path, size=o.image_size, max_pixels=o.max_pixels) as video:
            t = video.info.num_frames
            idx = uniform_indices(t, self.n)  # (N,)
            frames = center_crop(video.read(idx), o.image_size)  # (N, S, S, 3)
        windows = centered_windows(idx, t, self.w)  # (N, W)
        with video_for(path, o.motion, o.motion_size, o.max_pixels) as video:
            clips = center_crop(video.read(windows.reshape(-1)), o.motion_size)  # (N*W, s, s, 3)
        yield {"frames": frames, "clips": clips.reshape(self.n, self.w, *clips.shape[1:])}

    def _infer(self, chunks):
        o = self.options
        app = self.run_backbone(
            "appearance", [c["frames"] for c in chunks], o.image_size, return_map=o.appearance_map
        )
        mot = self.run_backbone("motion", [c["clips"] for c in chunks], o.motion_size)
        outs = []
        for a, m in zip(app, mot, strict=True):
            out = {"motion": m}
            if o.appearance_map:
                out["appearance"], out["appearance_map"] = a
            else:
                out["appearance"] = a
            outs.append(out)
        return outs


class HcrnFeatures(FeatureSet):
    """HCRN (Le et al., CVPR 2020): 8 clips of 16 consecutive frames centred at linspace(0, T, 10)[1:9].

    ``appearance_clips`` (8, 16, Da): image backbone pool5 on every frame of every clip (HCRN:
    ResNet-101, 224). ``motion_clips`` (8, Dm): video backbone on each clip (HCRN: 3D ResNeXt-101,
    112); the motion input is the same centre crop as the appearance, resized to ``motion_size``.
    HCRN resizes whole frames to squares (aspect not kept); we resize the shorter side and crop the
    centre, like every other set. HCRN's backbones (resnet101, resnext101_k400) are the defaults.
    """

    name = "hcrn"
    roles = {"appearance": "image", "motion": "video"}
    defaults = {"appearance": "resnet101", "motion": "resnext101_k400", "clip_len": 16}
    uses = ("clip_len",)
    num_clips = 8

    @property
    def w(self) -> int:
        return self.options.clip_len or 16

    def _outputs(self):
        dt = self.options.dtype
        return {
            "appearance_clips": OutputSpec((self.num_clips, self.w, self.feature_dim("appearance")), dt),
            "motion_clips": OutputSpec((self.num_clips, self.feature_dim("motion")), dt),
        }

    def sampler_provenance(self):
        return {"clips": {"sampler": "hcrn_clips", "num_clips": self.num_clips, "clip_len": self.w}}

    def decode(self, video_id, path):
        o = self.options
        with Video(path, size=o.image_size, max_pixels=o.max_pixels) as video:
            clips = hcrn_clips(video.info.num_frames, self.num_clips, self.w)  # (8, W)
            frames = center_crop(video.read(clips.reshape(-1)), o.image_size)  # (8*W, S, S, 3)
        yield {"clips": frames.reshape(self.num_clips, self.w, *frames.shape[1:])}

    def _infer(self, chunks):
        o = self.options
        frames = [c["clips"].reshape(-1, *c["clips"].shape[2:]) for c in chunks]  # (8*W, S, S, 3) each
        app = self.run_backbone("appearance", frames, o.image_size)
        mot = self.run_backbone("motion", [c["clips"] for c in chunks], o.motion_size)
        return [
            {"appearance_clips": a.reshape(self.num_clips, self.w, -1), "motion_clips": m}
            for a, m in zip(app, mot, strict=True)
        ]


class SiasamreaFeatures(FeatureSet):
    """Dense per-frame appearance features for SiaSamRea's siamese clip sampling (Yu et al., NeurIPS 2021).

    The paper trains end to end on raw frames (ClipBERT-style) and ships no code; the toolkit's
    feature-based variant samples its anchor and siamese clips from these per-frame features at
    training time. Frames are taken at a fixed 4 fps (``fixed_fps_indices`` with keep_every=1; our
    choice), or every ``stride`` frames when a stride is given.
    ``frames`` (T, Da) and ``frame_times`` (T,) seconds (frame start times), T varying per video.
    """

    name = "siasamrea"
    roles = {"appearance": "image"}
    defaults = {"appearance": "resnet152"}
    uses = ("stride",)  # None: 4 fps
    target_fps = 4.0
    _time_keys = ("frame_times",)

    def _outputs(self):
        return {
            "frames": OutputSpec((None, self.feature_dim("appearance")), self.options.dtype),
            "frame_times": OutputSpec((None,), "float32"),
        }

    def sampler_provenance(self):
        if self.options.stride:
            return {"frames": {"sampler": "strided_indices", "stride": self.options.stride}}
        return {"frames": {"sampler": "fixed_fps_indices", "target_fps": self.target_fps, "keep_every": 1}}

    def decode(self, video_id, path):
        o = self.options
        with Video(path, size=o.image_size, max_pixels=o.max_pixels) as video:
            t, fps = video.info.num_frames, video.info.fps
            if o.stride:
                idx = strided_indices(t, o.stride)
            else:  # a source slower than 4 fps would repeat frames: keep each frame once
                idx = np.unique(fixed_fps_indices(t, fps, target_fps=self.target_fps, keep_every=1)[0])
            for start in range(0, len(idx), MAX_CHUNK_FRAMES):
                part = idx[start : start + MAX_CHUNK_FRAMES]
                yield {
                    "frames": center_crop(video.read(part), o.image_size),  # (n, S, S, 3)
                    "frame_times": frame_times(part, fps).astype(np.float32),  # (n,)
                }

    def _infer(self, chunks):
        feats = self.run_backbone("appearance", [c["frames"] for c in chunks], self.options.image_size)
        return [{"frames": f, "frame_times": c["frame_times"]} for f, c in zip(feats, chunks, strict=True)]


class CminFeatures(FeatureSet):
    """Clip features at a fixed stride for moment retrieval (CMIN, Zhang et al., SIGIR 2019).

    CMIN used the ActivityNet challenge's C3D release: fc7 of a 16-frame clip every 8 frames, reduced
    by PCA to 500-d. We run the video backbone on ``dense_clips(T, clip_len=16, stride=8)``
    (``clip_len`` / ``stride`` options) at ``motion_size``: ``clips`` (T, Dm) and ``clip_times`` (T,),
    clip centre seconds at the video's own frame rate (clip i covers frames 8i .. 8i+15), which training
    maps to steps by the video's duration as CMIN's ``fps = T / duration`` does.

    Default backbone: ``c3d_sports1m``, C3D's fc7 (``motion_layer`` fc6 for fc6), 16 frames of
    128x171 frames centre-cropped to 112: the network of the ActivityNet C3D release. With a
    projection file (``checkpoints`` entry ``"pca"``, ``vqa-extract --pca FILE``: the release's
    ``PCA_activitynet_v1-3.hdf5``, ``extract.pca``) ``clips`` are projected to ``pca_dim`` (500)
    components, as the ActivityNet release's (T, 500). Without it they stay (T, 4096) and ``vqa-train
    cmin`` fits its PCA-500 on the training split (``model.pca_dim``); train on projected features with
    ``model.pca_dim=null``, as the official code trains on the release.
    """

    name = "cmin"
    roles = {"motion": "video"}
    defaults = {"motion": "c3d_sports1m", "clip_len": 16, "stride": 8}
    uses = ("clip_len", "stride", "pca_dim")
    _time_keys = ("clip_times",)

    def __init__(self, options: FeatureOptions):
        super().__init__(options)
        self._projection: Projection | None = None
        if self.pca_file is not None:  # shapes only: a wrong file fails here, before any video
            inspect_pca(self.pca_file, in_dim=self.feature_dim("motion"), dim=self.options.pca_dim)

    def resolve_options(self, options: FeatureOptions) -> FeatureOptions:
        """As ``FeatureSet.resolve_options``; ``pca_dim`` defaults to 500 with a projection file and is
        refused without one."""
        o = super().resolve_options(options)
        if o.checkpoint_for(PCA_NAME) is None:
            if o.pca_dim is not None:
                raise ValueError("--pca-dim needs a projection file (--pca FILE)")
            return o
        return o if o.pca_dim is not None else replace(o, pca_dim=DEFAULT_PCA_DIM)

    def extra_networks(self, values):
        return {PCA_NAME}

    @property
    def pca_file(self) -> str | None:
        return self.options.checkpoint_for(PCA_NAME)

    @property
    def w(self) -> int:
        return self.options.clip_len or 16

    @property
    def stride(self) -> int:
        return self.options.stride or 8

    def _outputs(self):
        dim = self.options.pca_dim if self.pca_file is not None else self.feature_dim("motion")
        return {
            "clips": OutputSpec((None, dim), self.options.dtype),
            "clip_times": OutputSpec((None,), "float32"),
        }

    def sampler_provenance(self):
        return {"clips": {"sampler": "dense_clips", "clip_len": self.w, "stride": self.stride}}

    def provenance(self) -> dict:
        prov = super().provenance()
        if self.pca_file is not None and "projection" not in prov:
            prov["projection"] = pca_provenance(self.pca_file, self.options.pca_dim)
        return prov

    def __getstate__(self):
        state = super().__getstate__()
        state["_projection"] = None  # reloaded from the file in the receiving process
        return state

    def decode(self, video_id, path):
        o = self.options
        per_chunk = max(1, MAX_CHUNK_FRAMES // self.w)
        with video_for(path, o.motion, o.motion_size, o.max_pixels) as video:
            clips = dense_clips(video.info.num_frames, self.w, self.stride)  # (K, W)
            times = clip_centre_times(clips, video.info.fps).astype(np.float32)
            for start in range(0, len(clips), per_chunk):
                part = clips[start : start + per_chunk]
                frames = center_crop(video.read(part.reshape(-1)), o.motion_size)  # (k*W, s, s, 3)
                yield {
                    "clips": frames.reshape(len(part), self.w, *frames.shape[1:]),  # (k, W, s, s, 3)
                    "clip_times": times[start : start + per_chunk],  # (k,)
                }

    def _infer(self, chunks):
        feats = self.run_backbone("motion", [c["clips"] for c in chunks], self.options.motion_size)  # (k, Dm)
        if self.pca_file is not None:
            if self._projection is None:
                self._projection = load_pca(self.pca_file, self.options.pca_dim)
            feats = [self._projection(f) for f in feats]  # (k, pca_dim)
        return [{"clips": f, "clip_times": c["clip_times"]} for f, c in zip(feats, chunks, strict=True)]


# Written out by hand.
FEATURE_SETS: dict[str, Callable[[FeatureOptions], FeatureSet]] = {
    "mspan": MspanFeatures,
    "hcrn": HcrnFeatures,
    "siasamrea": SiasamreaFeatures,
    "cmin": CminFeatures,
    "masn": build_masn_feature_set,
}


def build_feature_set(name: str, options: FeatureOptions) -> FeatureSet:
    """Build the named feature set (``FEATURE_SETS``) with ``options``.

    Raises:
        KeyError: unknown name (the message lists the names).
        ValueError: options that do not fit the set (e.g. an image backbone given as motion backbone).
    """
    if name not in FEATURE_SETS:
        raise KeyError(f"unknown feature set {name!r}; available: {sorted(FEATURE_SETS)}")
    return FEATURE_SETS[name](options)


def resolve_options(name: str, options: FeatureOptions) -> FeatureOptions:
    """The options feature set ``name`` runs with: its defaults filled in, unused fields cleared
    (``FeatureSet.resolve_options``). Loads no model.

    Raises:
        KeyError, ValueError: as ``build_feature_set``.
    """
    return build_feature_set(name, options).options
