"""What every feature set shares: ``FeatureOptions``, ``OutputSpec`` and the ``FeatureSet`` base class.

The named sets and their registry are in ``extract/featuresets.py`` (mspan, hcrn, siasamrea, cmin) and
``extract/masn.py`` (masn); both build on this module, which imports neither, so there is no import
cycle between them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from extract.accel import PRECISIONS, resolve_precision
from extract.backbones import BACKBONES, LoadedBackbone, backbone_provenance, build_backbone, check_layer
from extract.video import DEFAULT_MAX_PIXELS, Video

MAX_CHUNK_FRAMES = 256  # frames held by one decoded chunk (long videos are split into several)
FRAME_SAMPLINGS = ("uniform", "first")  # FeatureOptions.frame_sampling
#: FeatureOptions fields added after feature directories and checkpoints were recorded without them, and
#: the value that ran before (where a set uses the field; see ``FeatureSet.legacy_options``)
LEGACY_OPTION_VALUES: dict[str, object] = {"frame_sampling": "first"}


@dataclass(frozen=True)
class FeatureOptions:
    """Choices shared by every feature set (the ``vqa-extract`` options).

    A field left None takes the feature set's own default (see each set's ``defaults`` and
    ``FeatureSet.resolve_options``); fields a set does not use are ignored by it.

    Attributes:
        appearance: image backbone (``resnet152`` | ``resnet101`` | ``resnet50`` | ``resnet18``);
            None = the set's (resnet152; hcrn: resnet101).
        motion: video backbone (``r3d152_k700`` | ``resnext101_k400`` | ``i3d_r50`` | ``r3d_18``);
            None = the set's (r3d152_k700; hcrn: resnext101_k400; masn: i3d_r50).
        image_size: appearance input side; None = the appearance backbone's own (224).
        motion_size: motion input side; None = the motion backbone's own (112; i3d_r50: 224).
        weights: ``"pretrained"`` (torchvision cache / given checkpoints) or ``"random"``.
        checkpoints: (backbone or detector name, local checkpoint path) pairs; cmin also takes
            ``("pca", path)``, a projection file (``extract.pca``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        precision: the backbones' autocast: ``auto`` (bf16 where the device computes it natively, else
            fp32), ``bf16`` or ``fp32``; resolved for ``device`` by ``FeatureSet.resolve_options``, so
            the manifest records what ran. The detector always runs in fp32.
        num_frames: the set's N (mspan: 16).
        clip_len: the motion window / clip length W (16; masn: 8).
        stride: frame stride for ``cmin`` (8) and ``siasamrea`` (default: 4 fps instead of a stride).
        max_frames: masn's T (20).
        frame_sampling: masn: which T frames of a video with more: ``uniform`` (spread over the whole
            video, the paper's) or ``first`` (the first T, as the official loader truncates); None = the
            set's (uniform). Records made before the option existed ran with ``first``
            (``LEGACY_OPTION_VALUES``).
        batch_frames: images per backbone forward (video backbones: ``batch_frames // clip_len`` clips).
        appearance_map: also store conv5 maps where the set supports it (mspan).
        motion_layer: for a motion backbone read at a fully-connected layer (``c3d_sports1m``: ``fc7`` or
            ``fc6``), which one; None = its first (fc7). Other backbones take none.
        pca_dim: cmin with a projection file (``checkpoints`` entry ``"pca"``, ``vqa-extract --pca``): the
            components kept (None = 500, the ActivityNet release's).
        dtype: stored feature dtype, ``"float32"`` or ``"float16"``.
        max_pixels: a video whose declared frame size (width x height) exceeds this is recorded as
            failed before decoding (``extract.video.DEFAULT_MAX_PIXELS``, 40 M: 8K UHD passes); None: no
            limit. It decides only which videos fail, so a resumed run may change it.
        detector, max_objects, min_objects, score_threshold, nms_iou, detector_min_size,
            detector_max_size, num_proposals: masn's object detector and box selection
            (``extract.objects.DetectorSettings``: name, max_objects, min_objects, score_threshold,
            nms_iou, min_size, max_size, num_proposals); None = its default (masn: 300 proposals).
    """

    appearance: str | None = None
    motion: str | None = None
    image_size: int | None = None
    motion_size: int | None = None
    weights: str = "pretrained"
    checkpoints: tuple[tuple[str, str], ...] = ()
    device: str = "cpu"
    precision: str = "auto"
    num_frames: int | None = None
    clip_len: int | None = None
    stride: int | None = None
    max_frames: int | None = None
    frame_sampling: str | None = None
    batch_frames: int = 64
    appearance_map: bool = False
    dtype: str = "float32"
    detector: str | None = None
    max_objects: int | None = None
    min_objects: int | None = None
    score_threshold: float | None = None
    nms_iou: float | None = None
    detector_min_size: int | None = None
    detector_max_size: int | None = None
    num_proposals: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    motion_layer: str | None = None
    pca_dim: int | None = None

    def __post_init__(self):
        if self.batch_frames < 1:
            raise ValueError(f"batch_frames must be >= 1, got {self.batch_frames}")
        for field in (
            "image_size",
            "motion_size",
            "num_frames",
            "clip_len",
            "stride",
            "max_frames",
            "max_objects",
            "detector_min_size",
            "detector_max_size",
            "num_proposals",
            "max_pixels",
            "pca_dim",
        ):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise ValueError(f"{field} must be >= 1 when given, got {value}")
        if self.min_objects is not None and self.min_objects < 0:
            raise ValueError(f"min_objects must be >= 0 when given, got {self.min_objects}")
        for field in ("score_threshold", "nms_iou"):
            value = getattr(self, field)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{field} must lie in [0, 1] when given, got {value}")
        if self.frame_sampling not in (None, *FRAME_SAMPLINGS):
            raise ValueError(f"frame_sampling must be one of {', '.join(FRAME_SAMPLINGS)}, got "
                             f"{self.frame_sampling!r}")
        if self.weights not in ("pretrained", "random"):
            raise ValueError(f"weights must be 'pretrained' or 'random', got {self.weights!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {self.dtype!r}")
        names = [name for name, _ in self.checkpoints]
        if len(names) != len(set(names)):
            raise ValueError(f"a backbone has more than one checkpoint: {names}")

    def checkpoint_for(self, backbone: str) -> str | None:
        """The local checkpoint path given for ``backbone`` (or a detector), or None."""
        return dict(self.checkpoints).get(backbone)

    def record(self) -> dict:
        """The options as manifests and provenance record them (JSON-able once tuples become lists).

        Fields added later (``motion_layer``, ``pca_dim``) appear only when set, so the records of
        feature directories extracted before them stay the same and those directories still resume.
        """
        out = asdict(self)
        for name in _LATER_FIELDS:
            if out[name] is None:
                del out[name]
        return out


_LATER_FIELDS = ("motion_layer", "pca_dim")


#: FeatureOptions fields every set uses.
COMMON_FIELDS = ("weights", "checkpoints", "device", "precision", "batch_frames", "dtype", "max_pixels")
#: role -> (backbone field, input-side field) of FeatureOptions.
ROLE_FIELDS = {"appearance": ("appearance", "image_size"), "motion": ("motion", "motion_size")}
#: role -> the FeatureOptions field choosing a fully-connected layer of its backbone (C3D's fc7 / fc6).
ROLE_LAYER = {"motion": "motion_layer"}
_ROLE_KIND = {"appearance": "image", "motion": "video"}


@dataclass(frozen=True)
class OutputSpec:
    """One output array per video: ``shape`` with a leading None when ragged (variable length)."""

    shape: tuple[int | None, ...]
    dtype: str  # "float32" | "float16" | "bool" | "int64"


def video_for(path: Path, backbone: str, size: int, max_pixels: int | None) -> Video:
    """``path`` opened to decode frames for ``backbone`` at input side ``size``: the shorter side resized
    to ``size``, or, for a backbone with a ``frame_size`` (C3D: 128x171), the whole frame resized to it
    (aspect not kept, as C3D's Caffe data layer does). ``center_crop(frames, size)`` then gives the input.
    """
    frame = BACKBONES[backbone].preprocessing.frame_size
    if frame is None:
        return Video(path, size=size, max_pixels=max_pixels)
    return Video(path, shape=frame, max_pixels=max_pixels)


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre ``size`` x ``size`` crop of (..., H, W, 3) frames whose shorter side is ``size``."""
    h, w = frames.shape[-3:-1]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(frames[..., top : top + size, left : left + size, :])


_LOADED: dict[tuple[str, str, str | None, str, str, str | None], LoadedBackbone] = {}


def _shared_backbone(
    name: str, weights: str, checkpoint: str | None, device: str, precision: str, layer: str | None = None
) -> LoadedBackbone:
    """One loaded backbone per (name, weights, checkpoint, device, precision, layer) per process: feature
    sets that share a backbone (or a set rebuilt in the same worker) do not load it twice. Inference only
    reads the modules, so sharing them is safe."""
    key = (name, weights, checkpoint, device, precision, layer)
    if key not in _LOADED:
        _LOADED[key] = build_backbone(name, weights=weights, checkpoint=checkpoint, device=device,
                                      precision=precision, layer=layer)
    return _LOADED[key]


def _check_geometry(name: str, size: int, clip_len: int | None, role: str) -> None:
    """A backbone read at a fully-connected layer (C3D) takes exactly its own clip length and input side."""
    spec = BACKBONES[name]
    if not spec.layers:
        return
    p = spec.preprocessing
    if size != p.input_size or (clip_len is not None and clip_len != p.clip_len):
        raise ValueError(
            f"{role} backbone {name} ends in fully-connected layers and takes exactly {p.clip_len} frames of "
            f"{p.input_size}x{p.input_size}; got {clip_len or p.clip_len} frames of {size}x{size} "
            f"(leave --{ROLE_FIELDS[role][1].replace('_', '-')} and --clip-len at their defaults)"
        )


def _check_backbone(name: str, kind: str, role: str) -> None:
    if name not in BACKBONES:
        raise ValueError(f"unknown {role} backbone {name!r}; available: {sorted(BACKBONES)}")
    if BACKBONES[name].kind != kind:
        raise ValueError(f"{role} backbone {name!r} is a {BACKBONES[name].kind} backbone, expected {kind}")


class FeatureSet:
    """Base class: lazy backbones, batched inference and provenance shared by the sets below.

    Subclasses set ``name``, ``roles`` (role -> "image" | "video"), ``defaults``, ``uses``,
    ``outputs`` and implement ``decode``, ``_infer`` and ``sampler_provenance``. Instances are
    picklable (the loaded models are dropped and reload lazily in the receiving process).

    Attributes:
        options: the resolved options (``resolve_options``), not necessarily the ones given.
    """

    name: str = ""
    roles: dict[str, str] = {}  # "appearance" -> "image", "motion" -> "video"
    #: this set's value for a FeatureOptions field left None: the backbone of each role, and any
    #: field of ``uses`` (absent = stays None). Input sides default to the backbone's own.
    defaults: dict[str, object] = {}
    #: FeatureOptions fields this set reads besides ``COMMON_FIELDS`` and its roles' backbone / size.
    uses: tuple[str, ...] = ()
    #: roles whose convolutional maps the set reads (masn's RoIAlign): no backbone read at a
    #: fully-connected layer (C3D) there
    map_roles: tuple[str, ...] = ()

    def __init__(self, options: FeatureOptions):
        self.options = self.resolve_options(options)
        for role, kind in self.roles.items():
            _check_backbone(self.backbone_name(role), kind, role)
        self.outputs: dict[str, OutputSpec] = self._outputs()
        self._backbones: dict[str, LoadedBackbone] | None = None
        self._provenance: dict | None = None

    # -- options --------------------------------------------------------------------------------

    def resolve_options(self, options: FeatureOptions) -> FeatureOptions:
        """``options`` with this set's defaults filled in and the fields it does not use cleared.

        Backbones left None take ``defaults``; input sides left None take the backbone's own input
        size (``BACKBONES[name].preprocessing.input_size``); a backbone with fully-connected ``layers``
        (C3D) gets its layer (``motion_layer``, default its first) and must keep its own clip length and
        input side; the fields of ``uses`` left None take ``defaults`` (or stay None); checkpoints are
        kept only for the networks this set loads; ``precision`` ``auto`` becomes ``bf16`` or ``fp32``
        for ``device``; every other field returns to its FeatureOptions default. Resolving twice changes
        nothing.

        Raises:
            ValueError: an unknown backbone, one of the wrong kind for its role, a layer it does not
                offer, or another geometry than a fully-connected backbone takes.
        """
        values: dict[str, object] = {}
        networks: set[str] = set()
        for role, kind in self.roles.items():
            backbone_field, size_field = ROLE_FIELDS[role]
            backbone = getattr(options, backbone_field) or self.defaults[backbone_field]
            _check_backbone(backbone, kind, role)
            if role in self.map_roles and BACKBONES[backbone].layers:
                raise ValueError(f"--features {self.name} reads the {role} backbone's convolutional map; "
                                 f"{backbone} gives fully-connected vectors only")
            values[backbone_field] = backbone
            values[size_field] = getattr(options, size_field) or BACKBONES[backbone].preprocessing.input_size
            if role in ROLE_LAYER:
                layer = check_layer(BACKBONES[backbone], getattr(options, ROLE_LAYER[role]))
                values[ROLE_LAYER[role]] = layer
            networks.add(backbone)
        for field in self.uses:
            value = getattr(options, field)
            values[field] = self.defaults.get(field) if value is None else value
        for role in self.roles:
            backbone_field, size_field = ROLE_FIELDS[role]
            _check_geometry(values[backbone_field], values[size_field], values.get("clip_len"), role)
        networks |= self.extra_networks(values)
        values["precision"] = resolve_precision(options.precision, options.device)
        values["checkpoints"] = tuple((n, p) for n, p in options.checkpoints if n in networks)
        keep = set(COMMON_FIELDS) | set(values)
        cleared = {f.name: f.default for f in fields(FeatureOptions) if f.name not in keep}
        return replace(options, **cleared, **values)

    def legacy_options(self) -> dict[str, object]:
        """The values of ``LEGACY_OPTION_VALUES``' fields for a record made before they existed: the legacy
        value where this set uses the field, the field's default (what ``resolve_options`` leaves) where
        it does not."""
        resolved = self.resolve_options(replace(self.options, **LEGACY_OPTION_VALUES))
        return {name: getattr(resolved, name) for name in LEGACY_OPTION_VALUES}

    def extra_networks(self, values: dict[str, object]) -> set[str]:
        """Names of networks besides the backbones that take checkpoints (masn: its detector)."""
        return set()

    # -- backbones ------------------------------------------------------------------------------

    def backbone_name(self, role: str) -> str:
        return getattr(self.options, ROLE_FIELDS[role][0])

    def feature_dim(self, role: str) -> int:
        return BACKBONES[self.backbone_name(role)].feature_dim

    def backbone_layer(self, role: str) -> str | None:
        """The fully-connected layer ``role``'s backbone is read at (C3D: fc7 / fc6), else None."""
        return getattr(self.options, ROLE_LAYER[role]) if role in ROLE_LAYER else None

    def backbone(self, role: str) -> LoadedBackbone:
        """The loaded backbone for ``role``; all of them load on the first call."""
        if self._backbones is None:
            o = self.options
            self._backbones = {
                role: _shared_backbone(
                    self.backbone_name(role), o.weights, o.checkpoint_for(self.backbone_name(role)), o.device,
                    o.precision, self.backbone_layer(role),
                )
                for role in self.roles
            }
        return self._backbones[role]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_backbones"] = None
        return state

    def run_backbone(self, role: str, inputs: list[np.ndarray], size: int, *, return_map: bool = False):
        """Pooled features (and maps) for each array of ``inputs``, batched across all of them.

        Every forward pass has exactly the batch size (the last is padded with repeats of its first
        item), so a video's features do not depend on which other videos shared the call.

        Args:
            role: "appearance" (inputs (n_i, S, S, 3)) or "motion" (inputs (n_i, W, S, S, 3)), uint8.
            size: input side.
            return_map: also return conv maps.

        Returns:
            list of (n_i, D) float32 arrays (with maps: list of ((n_i, D), (n_i, D, ...)) pairs).
        """
        backbone = self.backbone(role)
        counts = [len(x) for x in inputs]
        if sum(counts) == 0:
            empty = np.zeros((0, backbone.feature_dim), dtype=np.float32)
            return [(empty, None) if return_map else empty for _ in inputs]
        stacked = np.concatenate([x for x in inputs if len(x)], axis=0)
        per_item = 1 if backbone.kind == "image" else stacked.shape[1]
        batch = max(1, self.options.batch_frames // per_item)
        pad = (-len(stacked)) % batch
        if pad:
            stacked = np.concatenate([stacked, np.repeat(stacked[:1], pad, axis=0)], axis=0)
        result = backbone.features(stacked, size=size, batch_size=batch, return_map=return_map)
        pooled, maps = result if return_map else (result, None)
        splits = np.cumsum(counts)[:-1]
        pooled_parts = np.split(pooled[: sum(counts)], splits)
        if not return_map:
            return pooled_parts
        return list(zip(pooled_parts, np.split(maps[: sum(counts)], splits), strict=True))

    # -- the engine's interface -----------------------------------------------------------------

    def decode(self, video_id: str, path: Path) -> Iterator[dict[str, np.ndarray]]:
        """Yield bounded chunks of uint8 frames (and small metadata arrays) for one video.

        Raises:
            extract.video.VideoDecodeError: unreadable, corrupt, empty or missing video.
        """
        raise NotImplementedError

    def infer(self, chunks: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Features for each chunk (chunks of many videos, batched together), in the same order."""
        dtype = np.dtype(self.options.dtype)
        outs = []
        for out in self._infer(chunks):
            # features take the stored dtype; times stay float32 seconds
            outs.append(
                {k: v if k in self._time_keys else v.astype(dtype, copy=False) for k, v in out.items()}
            )
        return outs

    _time_keys: tuple[str, ...] = ()  # outputs that are times in seconds, not features

    def _infer(self, chunks: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def finalize(self, partials: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Join one video's chunk outputs (in order): ragged outputs are concatenated along axis 0,
        fixed-shape outputs come from a single chunk."""
        if not partials:
            raise ValueError(f"{self.name}: no chunk outputs to finalize")
        out = {}
        for key, spec in self.outputs.items():
            if spec.shape and spec.shape[0] is None:
                out[key] = np.concatenate([p[key] for p in partials], axis=0).astype(spec.dtype, copy=False)
            else:
                if len(partials) != 1:
                    raise ValueError(f"{self.name}: fixed-shape output {key!r} got {len(partials)} chunks")
                out[key] = partials[0][key].astype(spec.dtype, copy=False)
            expected = tuple(spec.shape)
            got = out[key].shape
            if len(got) != len(expected) or any(
                e is not None and e != g for e, g in zip(expected, got, strict=True)
            ):
                raise ValueError(f"{self.name}: output {key!r} has shape {got}, expected {expected}")
        return out

    def provenance(self) -> dict:
        """JSON-able: feature set, backbones with weights sha256 (or "random"), samplers, sizes, dtype.

        Computed without loading the models (weight files are hashed once and cached).
        """
        if self._provenance is None:
            o = self.options
            self._provenance = {
                "feature_set": self.name,
                "backbones": {
                    role: backbone_provenance(
                        self.backbone_name(role),
                        weights=o.weights,
                        checkpoint=o.checkpoint_for(self.backbone_name(role)),
                        layer=self.backbone_layer(role),
                    )
                    for role in self.roles
                },
                "samplers": self.sampler_provenance(),
                "image_size": o.image_size,
                "motion_size": o.motion_size,
                "batch_frames": o.batch_frames,
                "dtype": o.dtype,
                "outputs": {k: {"shape": list(v.shape), "dtype": v.dtype} for k, v in self.outputs.items()},
                "options": {
                    k: (list(map(list, v)) if k == "checkpoints" else v) for k, v in o.record().items()
                },
            }
        return self._provenance

    # -- subclasses -----------------------------------------------------------------------------

    def _outputs(self) -> dict[str, OutputSpec]:
        raise NotImplementedError

    def sampler_provenance(self) -> dict:
        raise NotImplementedError

    def warnings(self) -> list[str]:
        """Settings that run but probably defeat the set's purpose (``vqa-extract`` prints them)."""
        return []

    def object_names(self, features: dict[str, np.ndarray]) -> np.ndarray | None:
        """Names of a video's stored objects, for figures (masn with a detector that has a vocabulary);
        None for sets without named objects."""
        return None
