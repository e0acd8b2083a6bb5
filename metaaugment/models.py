"""Task networks for the benchmarks, registered by name (`create_model`), and model utilities.

Every classifier takes [0, 1] images, standardizes them with the benchmark's mean and std,
and follows timm's convention, so a timm model can stand in for any of them:
`forward_features(x)` gives the unpooled feature maps (B, C, h, w), `forward_head(maps,
pre_logits=True)` the pooled (B, D) features and `forward_head(maps)` the logits;
`get_classifier()` is the final linear layer and `num_features` its input width D.
Feature-based policies (MetaAugment's policy network and last-layer lookahead, RL-Mixup's
saliency does not need them) read the pooled features through `metaaugment.steptools.features`. A
user's own model needs only `forward`; policies that need features then use their own
extractor.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from metaaugment.infra.dependencies import require
from metaaugment.infra.errors import UserError, check_option
from metaaugment.registry import MODELS
from metaaugment.spec import TaskSpec


class Standardize(nn.Module):
    """(x - mean) / std per channel, with the statistics as buffers so they follow .to()."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def global_average_pool() -> nn.Module:
    """(B, C, h, w) maps -> (B, C): the mean over each map."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


class FeatureClassifier(nn.Module):
    """standardize -> body -> pool -> linear head, in timm's three calls.

    body: (B, C, H, W) standardized images -> feature maps; pool: maps -> (B, num_features)
    (global average pooling by default); num_features: the head's input width.
    """

    def __init__(self, spec: TaskSpec, body: nn.Module, num_features: int, pool: nn.Module | None = None):
        super().__init__()
        if spec.num_classes is None:
            raise UserError("this model is a classifier and needs a benchmark with classes")
        self.standardize = Standardize(spec.mean, spec.std)
        self.body = body
        self.pool = pool if pool is not None else global_average_pool()
        self.head = nn.Linear(num_features, spec.num_classes)
        self.num_features = num_features

    def get_classifier(self) -> nn.Module:
        """The final linear layer, (B, num_features) -> (B, num_classes)."""
        return self.head

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images in [0, 1] -> the unpooled feature maps."""
        return self.body(self.standardize(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature maps -> (B, num_features) pooled features when `pre_logits`, else
        (B, num_classes) logits."""
        pooled = self.pool(x)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class TimmClassifier(nn.Module):
    """A timm model behind the benchmark's standardization, in timm's three calls
    (forward_features, forward_head, get_classifier), so learned policies read its features."""

    def __init__(self, spec: TaskSpec, network: nn.Module):
        super().__init__()
        self.standardize = Standardize(spec.mean, spec.std)
        self.network = network
        self.num_features = network.num_features

    def get_classifier(self) -> nn.Module:
        """timm's classifier: (B, num_features) -> (B, num_classes)."""
        return self.network.get_classifier()

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images in [0, 1] -> the model's unpooled features."""
        return self.network.forward_features(self.standardize(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Features -> (B, num_features) pooled when `pre_logits`, else (B, num_classes) logits."""
        return self.network.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def timm_factory(architecture: str) -> Callable[..., nn.Module]:
    """The factory of `--model timm/ARCHITECTURE`: timm's model of that name (pip install
    timm), built for the benchmark's channels and classes; unknown names are a UserError."""
    timm = require("timm", f"--model timm/{architecture}")
    if not timm.is_model(architecture):
        close = timm.list_models(f"*{architecture.split('_')[0]}*")[:8]
        raise UserError(f"timm has no model '{architecture}'" + (f"; similar: {', '.join(close)}" if close else ""))

    def build(spec: TaskSpec, *, pretrained: bool = False, drop_rate: float = 0.0) -> TimmClassifier:
        """A timm model (Wightman, pytorch-image-models) by name.

        Options:
            pretrained: start from timm's pretrained weights (downloaded from the Hugging Face Hub)
            drop_rate: dropout before the classifier
        """
        if spec.num_classes is None or len(spec.input_shape) != 3:
            raise UserError(f"timm/{architecture} is an image classifier; this benchmark has no image classes")
        network = timm.create_model(architecture, pretrained=pretrained, num_classes=spec.num_classes,
                                    in_chans=spec.input_shape[0], drop_rate=drop_rate)
        return TimmClassifier(spec, network)

    build.__name__ = f"timm_{architecture}"
    return build


MODELS.register_prefix("timm/", timm_factory, origin="timm")


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@MODELS.register("small-cnn")
def small_cnn(spec: TaskSpec, *, width: int = 32) -> FeatureClassifier:
    """Three conv-BN-ReLU stages with pooling and global average pooling; fast on CPU.

    Options:
        width: channels of the first stage (doubled per stage)
    """
    check_option(width >= 1, "width", width, "at least 1")
    body = nn.Sequential(
        *_conv_block(spec.channels, width),
        *_conv_block(width, 2 * width),
        nn.MaxPool2d(2),
        *_conv_block(2 * width, 4 * width),
    )
    return FeatureClassifier(spec, body, 4 * width)


@MODELS.register("small-convnet")
def small_convnet(spec: TaskSpec, *, width: int = 32) -> FeatureClassifier:
    """Four conv-BN-ReLU stages, a 2x2 max-pool after each of the first three, global average
    pooling: its features see a whole 32x32 image at a third of small-cnn's cost; fast on CPU.

    Options:
        width: channels of the first stage (doubled per stage)
    """
    check_option(width >= 1, "width", width, "at least 1")
    body = nn.Sequential(
        *_conv_block(spec.channels, width), nn.MaxPool2d(2),
        *_conv_block(width, 2 * width), nn.MaxPool2d(2),
        *_conv_block(2 * width, 4 * width), nn.MaxPool2d(2),
        *_conv_block(4 * width, 4 * width),
    )
    return FeatureClassifier(spec, body, 4 * width)


@MODELS.register("resnet18")
def resnet18(spec: TaskSpec) -> FeatureClassifier:
    """torchvision's ResNet-18 with the usual small-image stem (3x3 conv, no max-pool)."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(num_classes=1)
    net.conv1 = nn.Conv2d(spec.channels, 64, 3, stride=1, padding=1, bias=False)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.layer1, net.layer2, net.layer3, net.layer4)
    return FeatureClassifier(spec, body, net.fc.in_features)


class PreActBlock(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv3x3 twice, dropout between), of WRN and PreActResNet."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        return out + shortcut


def preact_resnet_extractor(channels: int, stem: int, widths: tuple[int, ...], blocks: int,
                            strides: tuple[int, ...], dropout: float = 0.0) -> tuple[nn.Module, int]:
    """A pre-activation ResNet up to its feature maps: a 3x3 stem conv of width `stem`, then
    `blocks` pre-activation blocks per stage (the first with the stage's stride), then
    BN-ReLU; returns (module, output channels). Global average pooling follows in the head."""
    layers: list[nn.Module] = [nn.Conv2d(channels, stem, 3, 1, 1, bias=False)]
    cin = stem
    for cout, stride in zip(widths, strides):
        for i in range(blocks):
            layers.append(PreActBlock(cin, cout, stride if i == 0 else 1, dropout))
            cin = cout
    layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers), cin


def wide_resnet_extractor(channels: int, depth: int, widen: int, dropout: float = 0.0) -> tuple[nn.Module, int]:
    """WRN-depth-widen (Zagoruyko & Komodakis 2016) up to its feature maps; returns (module, channels)."""
    if (depth - 4) % 6:
        raise UserError(f"wide-resnet depth must be 6n + 4 (got {depth})")
    return preact_resnet_extractor(channels, 16, (16 * widen, 32 * widen, 64 * widen), (depth - 4) // 6, (1, 2, 2),
                                   dropout)


@MODELS.register("preact-resnet18")
def preact_resnet18(spec: TaskSpec) -> FeatureClassifier:
    """PreActResNet-18 for small images (He et al. 2016; 11.2M parameters), RL-Mixup's and
    PuzzleMix's CIFAR-100 model: 3x3 stem, four stages of two blocks (64-512), no max-pool."""
    body, width = preact_resnet_extractor(spec.channels, 64, (64, 128, 256, 512), 2, (1, 2, 2, 2))
    return FeatureClassifier(spec, body, width)


@MODELS.register("resnet50")
def resnet50(spec: TaskSpec) -> FeatureClassifier:
    """torchvision's ResNet-50 (25.6M parameters with 1000 classes; ImageNet stem: 7x7 conv,
    stride 2, max-pool), MetaAugment's ImageNet model."""
    from torchvision.models import resnet50 as tv_resnet50

    net = tv_resnet50(num_classes=1)
    if spec.channels != 3:
        net.conv1 = nn.Conv2d(spec.channels, 64, 7, stride=2, padding=3, bias=False)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return FeatureClassifier(spec, body, net.fc.in_features)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (He et al. 2016b): BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride),
    BN-ReLU-conv1x1 to 4x the width; a projection shortcut from the pre-activated input
    where the shape changes."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, width, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(width), nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(width), nn.Conv2d(width, cout, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + shortcut


@MODELS.register("resnet200")
def resnet200(spec: TaskSpec) -> FeatureClassifier:
    """Pre-activation ResNet-200 (He et al. 2016b; bottleneck blocks [3, 24, 36, 3], 64.7M
    parameters with 1000 classes), MetaAugment's largest ImageNet model; ImageNet stem."""
    layers: list[nn.Module] = [nn.Conv2d(spec.channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 24, 2), (256, 36, 2), (512, 3, 2)):
        for index in range(blocks):
            layers.append(PreActBottleneck(cin, width, stride if index == 0 else 1))
            cin = width * PreActBottleneck.expansion
    layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]  # the last block's output is pre-activation
    return FeatureClassifier(spec, nn.Sequential(*layers), cin)


@MODELS.register("wrn-28-10")
def wrn_28_10(spec: TaskSpec, *, dropout: float = 0.0) -> FeatureClassifier:
    """Wide ResNet 28-10 (36.5M parameters; the paper's CIFAR model, GPU-scale).

    Options:
        dropout: dropout between the two convolutions of each block
    """
    check_option(0 <= dropout < 1, "dropout", dropout, "in [0, 1)")
    body, width = wide_resnet_extractor(spec.channels, 28, 10, dropout)
    return FeatureClassifier(spec, body, width)


@MODELS.register("wrn-40-2")
def wrn_40_2(spec: TaskSpec, *, dropout: float = 0.0) -> FeatureClassifier:
    """Wide ResNet 40-2 (2.2M parameters; the paper's smaller CIFAR model).

    Options:
        dropout: dropout between the two convolutions of each block
    """
    check_option(0 <= dropout < 1, "dropout", dropout, "in [0, 1)")
    body, width = wide_resnet_extractor(spec.channels, 40, 2, dropout)
    return FeatureClassifier(spec, body, width)


class ConvBlock(nn.Module):
    """One block of the few-shot 4-conv net: (B, C_in, H, W) -> (B, C_out, H // 2, W // 2)
    by conv 3x3 (padding 1) - BatchNorm - ReLU - 2x2 max-pool, initialized as in MAML's code
    (Xavier-uniform conv weights, zero conv biases, BatchNorm scales ~ U(0, 1)). The layers
    are built in learn2learn's CNN4 order, so a seed gives its weights, under its names."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.max_pool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=False)
        self.normalize = nn.BatchNorm2d(out_channels, affine=True)
        nn.init.uniform_(self.normalize.weight)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=True)
        nn.init.xavier_uniform_(self.conv.weight, gain=1.0)
        nn.init.constant_(self.conv.bias, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.max_pool(self.relu(self.normalize(self.conv(x))))


class FourConvBackbone(nn.Sequential):
    """Four ConvBlocks of `hidden_size` channels: (B, C, H, W) -> (B, hidden_size * (H // 16)
    * (W // 16)), the maps flattened (learn2learn's CNN4Backbone, without learn2learn)."""

    def __init__(self, channels: int, hidden_size: int = 64):
        super().__init__(*(ConvBlock(channels if i == 0 else hidden_size, hidden_size) for i in range(4)))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).flatten(1)


@MODELS.register("conv4")
def conv4(spec: TaskSpec, *, hidden_size: int = 64) -> FeatureClassifier:
    """Few-shot 4-block conv net (MAML's and ProtoNets', learn2learn's CNN4 backbone) with an N-way linear head.

    Each block is conv 3x3 - BatchNorm - ReLU - 2x2 max-pool, as in MAML and ProtoNets; the
    backbone's maps come flattened, (B, hidden_size * (H // 16) * (W // 16)), and the head
    classifies them as they are (no pooling).

    Options:
        hidden_size: channels of every conv block
    """
    check_option(hidden_size >= 1, "hidden_size", hidden_size, "at least 1")
    if len(spec.input_shape) != 3:
        raise UserError(f"conv4 takes images (C, H, W); this benchmark's inputs have shape {spec.input_shape}")
    backbone = FourConvBackbone(spec.channels, hidden_size)
    # four 2x2 max-pools floor each side to side // 16
    height, width = spec.input_shape[1] // 16, spec.input_shape[2] // 16
    if min(height, width) < 1:
        raise UserError(f"conv4 needs images of at least 16x16 (got {spec.input_shape[1]}x{spec.input_shape[2]})")
    feature_dim = hidden_size * height * width
    return FeatureClassifier(spec, backbone, feature_dim, pool=nn.Flatten())


class MLPRegressor(nn.Module):
    """Fully connected ReLU network for few-shot regression: (B, D) -> (B, 1)."""

    def __init__(self, input_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@MODELS.register("mlp")
def mlp(spec: TaskSpec, *, hidden: tuple[int, ...] = (40, 40)) -> MLPRegressor:
    """MAML's sinusoid regressor: inputs -> 40 -> 40 -> 1 with ReLU (hidden sizes configurable).

    Options:
        hidden: widths of the hidden layers (comma-separated)
    """
    if len(spec.input_shape) != 1:
        raise UserError("mlp takes flat inputs (a regression benchmark such as sinusoid)")
    check_option(len(hidden) > 0 and all(h >= 1 for h in hidden), "hidden", hidden, "one or more positive widths")
    return MLPRegressor(spec.input_shape[0], tuple(hidden))
