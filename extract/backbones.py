"""Appearance and motion backbones: architectures, a hand-written registry, and the loaded wrapper.

Backbones (``BACKBONES``):

| name | kind | architecture | pooled | map | input |
|---|---|---|---|---|---|
| ``resnet152/101/50`` | image | torchvision ResNet, ImageNet | 2048 | (2048, 7, 7) | 224 |
| ``resnet18`` | image | torchvision ResNet-18 | 512 | (512, 7, 7) | 224 |
| ``r3d152_k700`` | video | Hara et al. 3D ResNet-152, Kinetics-700 | 2048 | (2048, 1, 4, 4) | 16 x 112 |
| ``resnext101_k400`` | video | Hara et al. 3D ResNeXt-101 (HCRN's) | 2048 | (2048, 1, 4, 4) | 16 x 112 |
| ``i3d_r50`` | video | pytorchvideo I3D ResNet-50 | 2048 | (2048, 4, 7, 7) | 8 x 224 |
| ``r3d_18`` | video | torchvision R3D-18, Kinetics-400 | 512 | (512, 2, 7, 7) | 16 x 112 |
| ``c3d_sports1m`` | video | C3D (Tran et al. 2015), Sports-1M; fc7 / fc6 | 4096 | (512, 1, 4, 4) | 16 x 112 |

The video networks not in torchvision (Hara et al.'s 3D ResNet / ResNeXt, pytorchvideo's I3D, C3D)
are written in ``extract/video_backbones.py``; the image networks are torchvision's.

Each backbone carries its preprocessing (``Preprocessing``: mean, std, input size, clip length, and for
C3D the whole-frame size and BGR channel order).
``LoadedBackbone`` turns uint8 frames into features: resize (shorter side) + centre crop + normalise,
the conv map, and global average pooling. On CUDA it transfers uint8 frames from pinned memory and
runs in channels_last; on CPU or CUDA it runs in bf16 autocast when its precision resolves to bf16
(``extract.accel.resolve_precision``), and always returns float32.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from extract.accel import Accelerator
from extract.video_backbones import C3D_LAYERS, c3d, hara_resnet3d, hara_resnext3d, i3d_resnet50
from extract.weights import (
    WeightsError,
    find_cached,
    load_checkpoint_file,
    sha256_file,
    torch_cache_checkpoint,
)

RANDOM_SEED = 0  # every "random" backbone is initialised from this seed: identical weights on every run


# ---------------------------------------------------------------------------------------------------
# Feature-map functions: the network up to its last convolution
# ---------------------------------------------------------------------------------------------------


def _tv_resnet_map(m: nn.Module, x: Tensor) -> Tensor:
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))  # (N, 64, H/4, W/4)
    return m.layer4(m.layer3(m.layer2(m.layer1(x))))  # (N, D, H/32, W/32)


def _tv_video_resnet_map(m: nn.Module, x: Tensor) -> Tensor:
    return m.layer4(m.layer3(m.layer2(m.layer1(m.stem(x)))))  # (N, 512, T/8, H/16, W/16)


def _hara_map(m: nn.Module, x: Tensor) -> Tensor:
    return m.forward_features(x)


def _c3d_map(m: nn.Module, x: Tensor) -> Tensor:
    return m.forward_features(x)  # (N, 512, 1, 4, 4) pool5


def _c3d_layer(m: nn.Module, x: Tensor, layer: str) -> Tensor:
    return m.forward_fc(x, layer)  # (N, 4096)


def _pytorchvideo_map(m: nn.Module, x: Tensor) -> Tensor:
    for block in m.blocks[:-1]:  # every block but the classification head
        x = block(x)
    return x  # (N, 2048, T/2, H/32, W/32)


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone wants its input: shorter side resized to ``input_size``, centre crop, then
    ``(pixel / 255 - mean) / std`` per RGB channel; video backbones take ``clip_len`` frames.

    ``frame_size`` (C3D: (128, 171)): the whole frame is resized to this (H, W) instead, aspect not kept,
    before the centre ``input_size`` crop. ``channel_order`` "bgr": the normalised channels are handed to
    the network in B, G, R order (weights converted from Caffe, which reads frames with OpenCV).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    clip_len: int | None = None
    frame_size: tuple[int, int] | None = None
    channel_order: str = "rgb"

    def record(self) -> dict:
        """JSON-able; ``frame_size`` / ``channel_order`` only when not the defaults, so the provenance of
        the other backbones reads as before they existed (their feature directories still resume)."""
        out = asdict(self)
        if self.frame_size is None:
            del out["frame_size"]
        if self.channel_order == "rgb":
            del out["channel_order"]
        return out


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    kind: str  # "image" | "video"
    feature_dim: int
    build: Callable[[], nn.Module]
    feature_map: Callable[[nn.Module, Tensor], Tensor]
    weight_format: str  # native checkpoint layout, see extract.weights
    preprocessing: Preprocessing
    description: str
    torchvision_weights: tuple[str, ...] = ()  # torchvision weight enums to look for in the torch cache
    checkpoint_hint: str = ""  # where its pretrained checkpoint comes from
    #: fully-connected outputs the features are read from instead of the pooled conv map, the default
    #: first (C3D: fc7, fc6); the input geometry is then fixed (``clip_len`` frames of ``input_size``)
    layers: tuple[str, ...] = ()
    layer_output: Callable[[nn.Module, Tensor, str], Tensor] | None = None

    def cache_files(self) -> tuple[tuple[str, str], ...]:
        """(file name, URL) of the torchvision weight files this backbone accepts, preferred first."""
        out = []
        for ref in self.torchvision_weights:
            enum_name, member = ref.split(".")
            weights = getattr(torchvision.models, enum_name, None) or getattr(
                torchvision.models.video, enum_name
            )
            url = getattr(weights, member).url
            out.append((url.rsplit("/", 1)[-1], url))
        return tuple(out)


def _tv(builder_name: str) -> Callable[[], nn.Module]:
    return partial(getattr(torchvision.models, builder_name), weights=None)


_KINETICS_HARA = Preprocessing((0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737), 112, 16)
# Hara et al.'s 2017 code (HCRN's ResNeXt) subtracts the ActivityNet mean on the 0-255 scale without
# dividing by a std: (p - 255 m) / 1 == (p / 255 - m) / (1 / 255).
_KINETICS_HARA_2017 = Preprocessing(
    (114.7748 / 255, 107.7354 / 255, 99.4750 / 255), (1 / 255, 1 / 255, 1 / 255), 112, 16
)


# Caffe C3D v1.0 (c3d_sport1m_feature_extractor_frm.prototxt): frames read with OpenCV (BGR, 0-255),
# resized to 128x171, the Sports-1M mean volume (sport1m_train16_128_mean.binaryproto) subtracted, centre
# crop 112. We subtract that volume's per-channel average, (B, G, R) = (90.25, 97.66, 101.41), no scaling.
_C3D_SPORTS1M = Preprocessing(
    (101.41 / 255, 97.66 / 255, 90.25 / 255),
    (1 / 255, 1 / 255, 1 / 255),
    112,
    16,
    frame_size=(128, 171),
    channel_order="bgr",
)


def _tv_image(name: str, title: str, dim: int, weights: tuple[str, ...]) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        kind="image",
        feature_dim=dim,
        build=_tv(name),
        feature_map=_tv_resnet_map,
        weight_format="torchvision",
        preprocessing=Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 224),
        description=f"torchvision {title}, ImageNet-1k",
        torchvision_weights=weights,
    )


def _registry(*specs: BackboneSpec) -> dict[str, BackboneSpec]:
    out: dict[str, BackboneSpec] = {}
    for spec in specs:
        if spec.name in out:
            raise ValueError(f"duplicate backbone name {spec.name!r}")
        out[spec.name] = spec
    return out


# V1 ImageNet weights first: they are the ``pretrained=True`` weights the papers' features came from.
BACKBONES: dict[str, BackboneSpec] = _registry(
    _tv_image(
        "resnet152",
        "ResNet-152",
        2048,
        ("ResNet152_Weights.IMAGENET1K_V1", "ResNet152_Weights.IMAGENET1K_V2"),
    ),
    _tv_image(
        "resnet101",
        "ResNet-101",
        2048,
        ("ResNet101_Weights.IMAGENET1K_V1", "ResNet101_Weights.IMAGENET1K_V2"),
    ),
    _tv_image(
        "resnet50", "ResNet-50", 2048, ("ResNet50_Weights.IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V2")
    ),
    _tv_image("resnet18", "ResNet-18", 512, ("ResNet18_Weights.IMAGENET1K_V1",)),
    BackboneSpec(
        name="r3d152_k700",
        kind="video",
        feature_dim=2048,
        build=partial(hara_resnet3d, depth=152, num_classes=700),
        feature_map=_hara_map,
        weight_format="hara",
        preprocessing=_KINETICS_HARA,
        description="Hara et al. 3D ResNet-152 (shortcut B), Kinetics-700 (MSPAN's motion backbone)",
        checkpoint_hint="r3d152_K_200ep.pth from the 3D-ResNets-PyTorch release (Hara et al.)",
    ),
    BackboneSpec(
        name="resnext101_k400",
        kind="video",
        feature_dim=2048,
        build=partial(hara_resnext3d, depth=101, cardinality=32, num_classes=400),
        feature_map=_hara_map,
        weight_format="hara",
        preprocessing=_KINETICS_HARA_2017,
        description="Hara et al. 3D ResNeXt-101 (cardinality 32, shortcut B), Kinetics-400 (HCRN's)",
        checkpoint_hint="resnext-101-kinetics.pth from the 3D-ResNets-PyTorch (2017) release",
    ),
    BackboneSpec(
        name="i3d_r50",
        kind="video",
        feature_dim=2048,
        build=partial(i3d_resnet50, num_classes=400),
        feature_map=_pytorchvideo_map,
        weight_format="pytorchvideo",
        preprocessing=Preprocessing((0.45, 0.45, 0.45), (0.225, 0.225, 0.225), 224, 8),
        description="pytorchvideo I3D ResNet-50 8x8, Kinetics-400 (MASN's motion backbone)",
        checkpoint_hint="I3D_8x8_R50.pyth from the pytorchvideo model zoo (kinetics)",
    ),
    BackboneSpec(
        name="r3d_18",
        kind="video",
        feature_dim=512,
        build=partial(torchvision.models.video.r3d_18, weights=None),
        feature_map=_tv_video_resnet_map,
        weight_format="torchvision",
        preprocessing=Preprocessing((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989), 112, 16),
        description="torchvision R3D-18, Kinetics-400 (small motion backbone for tests and demos)",
        torchvision_weights=("R3D_18_Weights.KINETICS400_V1",),
    ),
    BackboneSpec(
        name="c3d_sports1m",
        kind="video",
        feature_dim=4096,
        build=partial(c3d, num_classes=487, pool5="caffe"),
        feature_map=_c3d_map,
        weight_format="c3d",
        preprocessing=_C3D_SPORTS1M,
        description="C3D (Tran et al. 2015), Sports-1M, fc7 or fc6 (the ActivityNet C3D release)",
        checkpoint_hint="c3d.pickle, the converted Sports-1M weights of DavideA/c3d-pytorch",
        layers=C3D_LAYERS,
        layer_output=_c3d_layer,
    ),
)


# ---------------------------------------------------------------------------------------------------
# Loaded backbone
# ---------------------------------------------------------------------------------------------------


class LoadedBackbone:
    """A backbone in eval mode on its device, with its weights' provenance and preprocessing.

    Attributes:
        name, kind ("image" | "video"), feature_dim, weights_sha256 ("random" for random init),
        module (eval mode), preprocessing, device, weights_file (file name or None), precision (the
        resolved autocast: "bf16" or "fp32"), layer (the fully-connected output ``features`` returns for
        a backbone with ``spec.layers``, else None).
    """

    def __init__(
        self,
        spec: BackboneSpec,
        module: nn.Module,
        *,
        weights_sha256: str,
        weights_file: str | None,
        weights_source: str,
        device: str | torch.device,
        precision: str = "auto",
        layer: str | None = None,
    ):
        self.spec = spec
        self.layer = check_layer(spec, layer)
        self.name = spec.name
        self.kind = spec.kind
        self.feature_dim = spec.feature_dim
        self.preprocessing = spec.preprocessing
        self.weights_sha256 = weights_sha256
        self.weights_file = weights_file
        self.weights_source = weights_source
        self.accel = Accelerator.on(device, precision)
        self.device = self.accel.device
        self.precision = self.accel.precision
        self.module = self.accel.place(module.eval().requires_grad_(False), self.kind)
        self._mean = torch.tensor(spec.preprocessing.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.preprocessing.std, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, frames: np.ndarray | Tensor, size: int | None = None) -> Tensor:
        """uint8 RGB frames -> normalised float input on the backbone's device.

        Args:
            frames: image backbones (N, H, W, 3); video backbones (N, T, H, W, 3); uint8.
            size: input side S (default: the backbone's ``input_size``). The shorter side is resized
                to S (bilinear, antialiased) unless it already is, then the centre S x S is cropped.
                A backbone with a ``frame_size`` (C3D) resizes the whole frame to it instead, unless the
                frames already have that size or are S x S crops.

        Returns:
            (N, 3, S, S) for images, (N, 3, T, S, S) for videos, float32; channels in the backbone's
            ``channel_order``.
        """
        size = size or self.preprocessing.input_size
        x = torch.as_tensor(frames)
        if x.dtype != torch.uint8 or x.shape[-1] != 3 or x.ndim != (4 if self.kind == "image" else 5):
            want = "(N, H, W, 3)" if self.kind == "image" else "(N, T, H, W, 3)"
            raise ValueError(f"{self.name}: expected uint8 frames {want}, got {x.dtype} {tuple(x.shape)}")
        x = self.accel.upload(x)  # uint8 travels: 4x less than float
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float()  # (M, 3, H, W)
        h, w = x.shape[-2:]
        new = self._resized(h, w, size)
        if new != (h, w):
            x = F.interpolate(x, size=new, mode="bilinear", align_corners=False, antialias=True)
            h, w = new
        top, left = (h - size) // 2, (w - size) // 2
        x = x[:, :, top : top + size, left : left + size]
        x = (x / 255.0 - self._mean) / self._std  # (M, 3, S, S)
        if self.preprocessing.channel_order == "bgr":
            x = x.flip(1)  # (M, 3, S, S) in B, G, R order
        x = x.reshape(*lead, 3, size, size)
        if self.kind == "video":
            x = x.permute(0, 2, 1, 3, 4)  # (N, 3, T, S, S)
        return self.accel.layout(x, self.kind)

    def _resized(self, h: int, w: int, size: int) -> tuple[int, int]:
        """The (H, W) frames of (h, w) are resized to before the centre ``size`` crop."""
        frame = self.preprocessing.frame_size
        if frame is not None:
            return (h, w) if (h, w) in (tuple(frame), (size, size)) else tuple(frame)
        if min(h, w) == size:
            return h, w
        scale = size / min(h, w)
        return max(size, round(h * scale)), max(size, round(w * scale))

    def layer_features(self, x: Tensor) -> Tensor:
        """The fully-connected ``layer`` of a preprocessed input: (N, D) float32."""
        with torch.inference_mode(), self.accel.autocast():
            out = self.spec.layer_output(self.module, x, self.layer)
        return out.float()

    def feature_map(self, x: Tensor) -> Tensor:
        """Last convolutional map: images (N, D, h, w); videos (N, D, t, h, w). float32."""
        with torch.inference_mode(), self.accel.autocast():
            fmap = self.spec.feature_map(self.module, x)
        return fmap.float()

    def pool(self, fmap: Tensor) -> Tensor:
        """Global average over every axis after the channels: (N, D, ...) -> (N, D)."""
        return fmap.mean(dim=tuple(range(2, fmap.ndim)))

    def features(
        self, frames: np.ndarray, *, size: int | None = None, batch_size: int = 64, return_map: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Pooled features (and optionally maps) for a stack of frames or clips, in batches.

        Args:
            frames: (N, H, W, 3) or (N, T, H, W, 3) uint8.
            size: input side (default the backbone's).
            batch_size: images (image backbone) or clips (video backbone) per forward pass.
            return_map: also return the conv maps.

        Returns:
            (N, D) float32, or ((N, D), (N, D, ...)) float32 numpy arrays. A backbone read at a
            fully-connected ``layer`` (C3D) returns that layer and has no map.
        """
        if return_map and self.layer is not None:
            raise ValueError(f"{self.name} gives its {self.layer} vectors, not a convolutional map")
        pooled, maps = [], []
        for start in range(0, len(frames), max(1, batch_size)):
            x = self.preprocess(frames[start : start + batch_size], size)
            if self.layer is not None:
                pooled.append(self.layer_features(x).cpu().numpy())
                continue
            fmap = self.feature_map(x)
            pooled.append(self.pool(fmap).cpu().numpy())
            if return_map:
                maps.append(fmap.cpu().numpy())
        if not pooled:
            pooled = [np.zeros((0, self.feature_dim), dtype=np.float32)]
        out = np.concatenate(pooled).astype(np.float32, copy=False)
        if return_map:
            return out, np.concatenate(maps).astype(np.float32, copy=False)
        return out

    def provenance(self) -> dict:
        """JSON-able description: architecture, weights (sha256 or "random") and preprocessing."""
        return _provenance_dict(
            self.spec, self.weights_source, self.weights_file, self.weights_sha256, self.layer
        )


def check_layer(spec: BackboneSpec, layer: str | None) -> str | None:
    """The output layer ``spec`` is read at: ``layer`` (one of ``spec.layers``), its first layer when None,
    None for backbones read at their pooled conv map.

    Raises:
        ValueError: a layer the backbone does not offer.
    """
    if layer is None:
        return spec.layers[0] if spec.layers else None
    if layer not in spec.layers:
        offers = f"offers {', '.join(spec.layers)}" if spec.layers else "is read at its pooled conv map only"
        raise ValueError(f"backbone {spec.name} has no layer {layer!r}; it {offers}")
    return layer


def _provenance_dict(
    spec: BackboneSpec, source: str, file: str | None, sha: str, layer: str | None = None
) -> dict:
    out = {
        "name": spec.name,
        "kind": spec.kind,
        "description": spec.description,
        "feature_dim": spec.feature_dim,
        "weights": source,
        "weights_file": file,
        "weights_sha256": sha,
        "weight_format": spec.weight_format,
        "preprocessing": spec.preprocessing.record(),
    }
    if layer is not None:  # only backbones with layers (C3D): the others' records read as before
        out["layer"] = layer
    return out


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


def backbone_provenance(
    name: str,
    *,
    weights: str = "pretrained",
    checkpoint: str | os.PathLike | None = None,
    layer: str | None = None,
) -> dict:
    """What ``build_backbone(name, ...).provenance()`` would return, without building the network.

    Raises:
        WeightsError: as ``build_backbone`` when pretrained weights are not available.
        ValueError: a layer the backbone does not offer.
    """
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    layer = check_layer(spec, layer)
    path, source = resolve_weights(name, weights=weights, checkpoint=checkpoint)
    sha = "random" if path is None else _cached_sha256(path)
    return _provenance_dict(spec, source, None if path is None else path.name, sha, layer)


def _build_module(spec: BackboneSpec, seed: int = RANDOM_SEED) -> nn.Module:
    """The architecture, initialised from a fixed seed without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.build()


def build_backbone(
    name: str,
    *,
    weights: str = "pretrained",
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    layer: str | None = None,
) -> LoadedBackbone:
    """Build a registered backbone with its weights.

    Args:
        name: a key of ``BACKBONES``.
        weights: ``"random"`` (fixed-seed initialisation; provenance says "random") or ``"pretrained"``:
            ``checkpoint`` when given, else torchvision's weight file from the torch hub cache.
        checkpoint: a local weight file in the backbone's native layout (see ``extract.weights``).
        device: "cpu", "cuda", "cuda:1", ...
        precision: ``auto`` | ``bf16`` | ``fp32`` (``extract.accel.resolve_precision``).
        layer: for a backbone with ``layers`` (C3D: ``fc7`` | ``fc6``), the one its features come from
            (None: the first); must stay None for the others.

    Returns:
        The loaded backbone in eval mode on ``device``.

    Raises:
        KeyError: unknown name.
        ValueError: a layer the backbone does not offer.
        WeightsError: pretrained weights missing (the message says which file to put where) or not fitting.
    """
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    layer = check_layer(spec, layer)
    if weights not in ("random", "pretrained"):
        raise ValueError(f"weights must be 'random' or 'pretrained', got {weights!r}")
    path, source = resolve_weights(name, weights=weights, checkpoint=checkpoint)  # fails before building
    module = _build_module(spec)
    sha = "random" if path is None else load_checkpoint_file(module, path, spec.weight_format)
    return LoadedBackbone(
        spec,
        module,
        weights_sha256=sha,
        weights_file=None if path is None else path.name,
        weights_source=source,
        device=device,
        precision=precision,
        layer=layer,
    )


def resolve_weights(
    name: str, *, weights: str = "pretrained", checkpoint: str | os.PathLike | None = None
) -> tuple[Path | None, str]:
    """Which weight file ``build_backbone`` would load, without building anything.

    Returns:
        (path or None for random init, source: "random" | "checkpoint" | "torchvision-cache").

    Raises:
        WeightsError: pretrained weights are not available; the message says which file to put where.
    """
    spec = BACKBONES[name]
    if weights == "random":
        if checkpoint is not None:
            raise ValueError(
                f"backbone {name}: a checkpoint ({checkpoint}) was given together with weights='random'"
            )
        return None, "random"
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise WeightsError(f"checkpoint for backbone {name} not found: {path}")
        return path, "checkpoint"
    cache_files = spec.cache_files()
    if not cache_files:
        raise WeightsError(
            f"backbone {name} has no torchvision weights; give its checkpoint ({spec.checkpoint_hint}) "
            f"as the checkpoint for {name!r} (vqa-extract --checkpoint {name}=PATH), "
            "or use random weights (--weights random)"
        )
    path = find_cached(tuple(f for f, _ in cache_files))
    if path is None:
        file, url = cache_files[0]
        raise WeightsError(
            f"pretrained weights for {name} are not in the torch cache and this run does not download: "
            f"put {file} (from {url}) at {torch_cache_checkpoint(file)}, or give a local file as the "
            f"checkpoint for {name!r}, or use random weights (--weights random)"
        )
    return path, "torchvision-cache"


__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "LoadedBackbone",
    "Preprocessing",
    "backbone_provenance",
    "build_backbone",
    "check_layer",
    "resolve_weights",
    "sha256_file",
]
