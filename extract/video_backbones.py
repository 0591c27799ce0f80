"""The video (3D) backbones written here, with the module names of their released weights: Hara et al.'s
3D ResNet / ResNeXt, pytorchvideo's I3D ResNet-50 (its builder) and C3D. The registry that names them
(``BACKBONES``), their preprocessing and the loaded wrapper are in ``extract/backbones.py``.

The two Hara et al. networks are written here (``ResNet3d``) with the module names of their
released checkpoints (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``, ...),
so ``{'state_dict': {'module.<key>': ...}}`` files load after stripping ``module.``.
Architecture facts (Hara, Kataoka, Satoh, CVPR 2018 and the 3D-ResNets-PyTorch code): bottleneck
blocks, conv1 7x7x7 with stride (1, 2, 2), 3x3x3 max pool with stride 2, shortcut type B (1x1x1
convolution + batch norm when the shape changes), layers [3, 8, 36, 3] for depth 152; the ResNeXt
uses grouped 3x3x3 convolutions with cardinality 32, block widths 128..1024 with expansion 2.

C3D (``C3D``) is written with the module names of the converted Sports-1M weights (``c3d.pickle``:
``conv1`` ... ``conv5b``, ``fc6``, ``fc7``, ``fc8``). Its features are not a pooled conv map but a
fully-connected layer (``BackboneSpec.layers``: ``fc7``, the default, or ``fc6``), so its input geometry
is fixed: 16 frames resized to 128x171 and centre-cropped to 112x112.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------------
# Hara et al. 3D ResNet / ResNeXt (blocks, model, builders)
# ---------------------------------------------------------------------------------------------------


def _conv3x3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv3d:
    return nn.Conv3d(
        in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False
    )


def _conv1x1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock3d(nn.Module):
    """Two 3x3x3 convolutions with a residual connection (3D ResNet-10/18/34)."""

    expansion = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, **_
    ):
        super().__init__()
        self.conv1 = _conv3x3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3x3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck3d(nn.Module):
    """1x1x1 -> 3x3x3 (stride) -> 1x1x1 with expansion 4 (3D ResNet-50/101/152/200)."""

    expansion = 4

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, **_
    ):
        super().__init__()
        self.conv1 = _conv1x1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3x3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = _conv1x1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNeXtBottleneck3d(Bottleneck3d):
    """ResNeXt bottleneck: grouped 3x3x3 convolution, width ``cardinality * planes // 32``, expansion 2
    (the same layers and forward as :class:`Bottleneck3d`, other widths)."""

    expansion = 2

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        cardinality: int = 32,
    ):
        nn.Module.__init__(self)  # Bottleneck3d's layers, built here at the grouped widths
        mid = cardinality * (planes // 32)
        self.conv1 = _conv1x1x1(in_planes, mid)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = _conv3x3x3(mid, mid, stride, groups=cardinality)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = _conv1x1x1(mid, planes * self.expansion)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample


class ResNet3d(nn.Module):
    """Hara et al.'s 3D ResNet / ResNeXt with shortcut type B.

    Args:
        block: ``BasicBlock3d``, ``Bottleneck3d`` or ``ResNeXtBottleneck3d``.
        layers: blocks per stage, e.g. [3, 8, 36, 3] for depth 152.
        planes: stage widths before expansion ([64, 128, 256, 512]; ResNeXt: [128, 256, 512, 1024]).
        num_classes: classifier outputs (700 for Kinetics-700, 400 for Kinetics-400).
        cardinality: groups of the ResNeXt block (ignored by the other blocks).
        stem_width: conv1 output channels (64).
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        planes: list[int],
        *,
        num_classes: int = 400,
        cardinality: int = 32,
        stem_width: int = 64,
    ):
        super().__init__()
        self.in_planes = stem_width
        self.conv1 = nn.Conv3d(3, stem_width, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, planes[0], layers[0], 1, cardinality)
        self.layer2 = self._make_layer(block, planes[1], layers[1], 2, cardinality)
        self.layer3 = self._make_layer(block, planes[2], layers[2], 2, cardinality)
        self.layer4 = self._make_layer(block, planes[3], layers[3], 2, cardinality)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.feature_dim = planes[3] * block.expansion
        self.fc = nn.Linear(self.feature_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, cardinality: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * block.expansion:  # shortcut type B
            downsample = nn.Sequential(
                _conv1x1x1(self.in_planes, planes * block.expansion, stride),
                nn.BatchNorm3d(planes * block.expansion),
            )
        layers = [block(self.in_planes, planes, stride, downsample, cardinality=cardinality)]
        self.in_planes = planes * block.expansion
        layers += [block(self.in_planes, planes, cardinality=cardinality) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, 3, T, H, W) -> last conv map (N, D, T/16, H/32, W/32) (T/16 rounded up)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, T/2, H/4, W/4)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)  # (N, D, t, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, T, H, W) -> class logits (N, num_classes)."""
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


_HARA_RESNET_LAYERS = {
    10: (BasicBlock3d, [1, 1, 1, 1]),
    18: (BasicBlock3d, [2, 2, 2, 2]),
    34: (BasicBlock3d, [3, 4, 6, 3]),
    50: (Bottleneck3d, [3, 4, 6, 3]),
    101: (Bottleneck3d, [3, 4, 23, 3]),
    152: (Bottleneck3d, [3, 8, 36, 3]),
    200: (Bottleneck3d, [3, 24, 36, 3]),
}
_HARA_RESNEXT_LAYERS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def hara_resnet3d(*, depth: int = 152, num_classes: int = 700, widen_factor: float = 1.0) -> ResNet3d:
    """Hara et al. 3D ResNet of the given depth (152 with 700 classes: ``r3d152_K_200ep.pth``).

    ``widen_factor`` scales every width as in Hara et al.'s code (stem and stages: 64 * f, 128 * f, ...).
    """
    if depth not in _HARA_RESNET_LAYERS:
        raise ValueError(f"3D ResNet depth must be one of {sorted(_HARA_RESNET_LAYERS)}, got {depth}")
    block, layers = _HARA_RESNET_LAYERS[depth]
    planes = [int(p * widen_factor) for p in (64, 128, 256, 512)]
    return ResNet3d(block, layers, planes, num_classes=num_classes, stem_width=planes[0])


def hara_resnext3d(
    *, depth: int = 101, cardinality: int = 32, num_classes: int = 400, widen_factor: float = 1.0
) -> ResNet3d:
    """Hara et al. 3D ResNeXt (101, cardinality 32, 400 classes: ``resnext-101-kinetics.pth``, HCRN's).

    ``widen_factor`` scales the stem (64) and block widths (128 .. 1024); used for small test models.
    """
    if depth not in _HARA_RESNEXT_LAYERS:
        raise ValueError(f"3D ResNeXt depth must be one of {sorted(_HARA_RESNEXT_LAYERS)}, got {depth}")
    return ResNet3d(
        ResNeXtBottleneck3d,
        _HARA_RESNEXT_LAYERS[depth],
        [int(p * widen_factor) for p in (128, 256, 512, 1024)],
        num_classes=num_classes,
        cardinality=cardinality,
        stem_width=int(64 * widen_factor),
    )


def i3d_resnet50(*, num_classes: int = 400, stem_dim_out: int = 64) -> nn.Module:
    """pytorchvideo's I3D ResNet-50 (the ``i3d_r50`` model-zoo configuration, 8x8 Kinetics-400).

    Stem 5x7x7, a temporal max pool after stage 1, inflated 3x1x1 ``conv_a`` kernels in alternating
    blocks of stages 2-3 and the second half of stage 4. Module names follow pytorchvideo
    (``blocks.0.conv.weight`` ... ``blocks.6.proj.weight``), so its ``I3D_8x8_R50.pyth`` loads.
    ``stem_dim_out`` (64) sets every width (stages are multiples of it); smaller values give test models.
    """
    from pytorchvideo.models.resnet import create_resnet

    return create_resnet(
        model_depth=50,
        model_num_class=num_classes,
        stem_dim_out=stem_dim_out,
        stem_conv_kernel_size=(5, 7, 7),
        stage1_pool=nn.MaxPool3d,
        stage_conv_a_kernel_size=(
            (3, 1, 1),
            [(3, 1, 1), (1, 1, 1)],
            [(3, 1, 1), (1, 1, 1)],
            [(1, 1, 1), (3, 1, 1)],
        ),
        head_pool_kernel_size=(4, 7, 7),
    )


# ---------------------------------------------------------------------------------------------------
# C3D (blocks, model, builder)
# ---------------------------------------------------------------------------------------------------

C3D_LAYERS = ("fc7", "fc6")  # the outputs C3D features are read from; fc7 first: the default
C3D_POOL5 = ("caffe", "padded")


def _c3d_conv(in_planes: int, out_planes: int) -> nn.Conv3d:
    """C3D's only convolution: 3x3x3, stride 1, padding 1, with a bias."""
    return nn.Conv3d(in_planes, out_planes, kernel_size=3, padding=1)


def _c3d_pool(kernel: tuple[int, int, int]) -> nn.MaxPool3d:
    return nn.MaxPool3d(kernel_size=kernel, stride=kernel)


class C3D(nn.Module):
    """C3D (Tran, Bourdev, Fergus, Torresani, Paluri: "Learning Spatiotemporal Features with 3D
    Convolutional Networks", ICCV 2015), the Sports-1M network of its Caffe release (C3D v1.0).

    Eight 3x3x3 convolutions with ReLU (64, 128, 256, 256, 512, 512, 512, 512 channels), five max pools
    (pool1 1x2x2 keeps time, pool2..pool5 2x2x2), fc6 and fc7 with 4096 units (ReLU, dropout 0.5 while
    training) and fc8 with the 487 Sports-1M classes. A 16x112x112 clip gives pool5 512x1x4x4 = the
    8192 inputs of fc6, so the input geometry is fixed.

    pool5 pools a 7x7 map. Caffe sizes pooled maps with ``ceil``, so its windows cover rows and columns
    {0,1} {2,3} {4,5} {6}: ``pool5="caffe"`` (the default, ``ceil_mode=True``). The Keras and PyTorch
    ports of the converted weights (albertomontesg's Keras gist, DavideA/c3d-pytorch) instead pad one
    row and column on each side and pool {pad,0} {1,2} {3,4} {5,6}: ``pool5="padded"``, kept to compare
    with them. Both give 512x1x4x4; the values differ.

    Module names are those of the converted Sports-1M weights (DavideA/c3d-pytorch's ``c3d.pickle``:
    ``conv1.weight`` ... ``conv5b.bias``, ``fc6.weight`` (4096, 8192), ``fc7``, ``fc8.bias`` (487,)).

    Args:
        num_classes: fc8 outputs (487).
        pool5: ``"caffe"`` or ``"padded"`` (above).
    """

    def __init__(self, *, num_classes: int = 487, pool5: str = "caffe"):
        super().__init__()
        if pool5 not in C3D_POOL5:
            raise ValueError(f"pool5 must be one of {C3D_POOL5}, got {pool5!r}")
        self.conv1 = _c3d_conv(3, 64)
        self.pool1 = _c3d_pool((1, 2, 2))
        self.conv2 = _c3d_conv(64, 128)
        self.pool2 = _c3d_pool((2, 2, 2))
        self.conv3a = _c3d_conv(128, 256)
        self.conv3b = _c3d_conv(256, 256)
        self.pool3 = _c3d_pool((2, 2, 2))
        self.conv4a = _c3d_conv(256, 512)
        self.conv4b = _c3d_conv(512, 512)
        self.pool4 = _c3d_pool((2, 2, 2))
        self.conv5a = _c3d_conv(512, 512)
        self.conv5b = _c3d_conv(512, 512)
        if pool5 == "caffe":
            self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, ceil_mode=True)
        else:
            self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, padding=(0, 1, 1))
        self.fc6 = nn.Linear(8192, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.dropout = nn.Dropout(p=0.5)
        for m in self.modules():  # random-weight features (tests, demos) keep their scale layer to layer
            if isinstance(m, nn.Conv3d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, 3, 16, 112, 112) -> pool5 (N, 512, 1, 4, 4)."""
        x = self.pool1(F.relu(self.conv1(x)))  # (N, 64, 16, 56, 56)
        x = self.pool2(F.relu(self.conv2(x)))  # (N, 128, 8, 28, 28)
        x = self.pool3(F.relu(self.conv3b(F.relu(self.conv3a(x)))))  # (N, 256, 4, 14, 14)
        x = self.pool4(F.relu(self.conv4b(F.relu(self.conv4a(x)))))  # (N, 512, 2, 7, 7)
        return self.pool5(F.relu(self.conv5b(F.relu(self.conv5a(x)))))  # (N, 512, 1, 4, 4)

    def forward_fc(self, x: Tensor, layer: str = "fc7") -> Tensor:
        """(N, 3, 16, 112, 112) -> the ``layer`` ("fc6" | "fc7") activation after its ReLU (N, 4096).

        Caffe's ReLU and dropout run in place on the fc blobs, so an extracted ``fc7`` is after ReLU.
        """
        if layer not in C3D_LAYERS:
            raise ValueError(f"C3D layer must be one of {C3D_LAYERS}, got {layer!r}")
        h = self.dropout(F.relu(self.fc6(torch.flatten(self.forward_features(x), 1))))  # (N, 4096)
        if layer == "fc6":
            return h
        return self.dropout(F.relu(self.fc7(h)))  # (N, 4096)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, 16, 112, 112) -> fc8 class logits (N, num_classes); softmax is left to the caller."""
        return self.fc8(self.forward_fc(x, "fc7"))


def c3d(*, num_classes: int = 487, pool5: str = "caffe") -> C3D:
    """C3D with Sports-1M's 487 classes (``c3d.pickle``); ``pool5`` as in :class:`C3D`."""
    return C3D(num_classes=num_classes, pool5=pool5)


__all__ = [
    "C3D",
    "C3D_LAYERS",
    "C3D_POOL5",
    "ResNet3d",
    "c3d",
    "hara_resnet3d",
    "hara_resnext3d",
    "i3d_resnet50",
]
