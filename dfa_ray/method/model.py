"""A MargiPose-style network: an ``encoder`` and a ``decoder`` of three marginal heatmaps.

The encoder is chosen by ``model.backbone`` (``dfa_ray.method.backbones``): the from-scratch ResNet-style
network below (basic or bottleneck blocks, configurable depth and width), EfficientNet-Lite0 with
the ImageNet weights that ship with it, or a torchvision-layout ResNet cut at stride 8 whose weights
the user supplies. ``create_model`` loads the pretrained weights (``model.pretrained``). The decoder upsamples
encoder features to the heatmap grid and emits, per joint:

- ``xy`` — image-aligned, a 1x1 convolution of the upsampled features;
- ``xz`` — rows are depth bins, columns image x: features are pooled over image rows into one
  vector per column, and a per-column linear map lifts each vector into a depth distribution;
- ``zy`` — the same with image rows and columns exchanged.

The lift is what lets a convolutional network put depth on an axis the image does not have;
it keeps the x (or y) axis of the depth maps aligned with the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dfa_ray import bounds
from dfa_ray.method import backbones
from dfa_ray.method.heatmaps import Marginals, soft_argmax
from dfa_ray.method.skeleton import FLIP_PERMUTATION, NUM_JOINTS


@dataclass(frozen=True)
class ModelConfig:
    """Network shape. The defaults are a ~1M-parameter model for 64 px crops on a CPU.

    ``block``, ``depths``, ``widths``, ``stem_*`` shape the from-scratch ``resnet`` backbone only.
    ``pretrained``: None (random init), ``imagenet`` (weights shipped with the backbone:
    efficientnet_lite0), or a path / ``s3://`` URI / URL of a torchvision-layout state_dict.
    """

    backbone: str = "resnet"
    pretrained: str | None = None
    input_size: int = 64
    heatmap_size: int = 16
    block: str = "basic"  # "basic" (ResNet-18/34) or "bottleneck" (ResNet-50 and up)
    depths: tuple[int, ...] = (1, 1, 1, 1)
    widths: tuple[int, ...] = (32, 64, 96, 160)
    stem_width: int = 32
    stem_stride: int = 2  # 2: one strided conv; 4: strided conv + max-pool, as in ResNet
    decoder_width: int = 64
    num_joints: int = NUM_JOINTS
    # efficientnet_lite0 only: 16 (its own) or 8, its stride-16 stages dilated. A finer grid is what
    # the 2D heatmaps are read from, at 64 px 8x8 cells instead of 4x4.
    output_stride: int | None = None

    def __post_init__(self) -> None:
        # Sizes of 0 would only fail later, as a division by zero or an empty layer.
        bounds.at_least(self, 1, "input_size", "heatmap_size", "stem_width", "decoder_width", "num_joints")
        for name in ("depths", "widths"):
            if not all(size >= 1 for size in getattr(self, name)):
                raise bounds.FieldError(name, f"must all be at least 1, got {getattr(self, name)}")
        if self.backbone not in backbones.NAMES:
            raise ValueError(
                f"model.backbone must be one of {', '.join(backbones.NAMES)}, got {self.backbone!r}"
            )
        if self.pretrained is not None and self.backbone == "resnet":
            raise ValueError(
                "model.pretrained needs a pretrainable model.backbone; 'resnet' trains from scratch"
            )
        if self.block not in _BLOCKS:
            raise ValueError(f"model.block must be one of {sorted(_BLOCKS)}, got {self.block!r}")
        if len(self.depths) != len(self.widths) or not self.depths:
            raise ValueError(f"model.depths {self.depths} and model.widths {self.widths} must match")
        if self.output_stride is not None and (
            self.backbone != "efficientnet_lite0" or self.output_stride not in (8, 16)
        ):
            raise ValueError(
                f"model.output_stride {self.output_stride}: only efficientnet_lite0 has a choice, 8 or 16"
            )
        if self.stem_stride not in (2, 4):
            raise ValueError(f"model.stem_stride must be 2 or 4, got {self.stem_stride}")
        if self.input_size % self.feature_stride:
            raise ValueError(
                f"model.input_size {self.input_size} is not a multiple of the encoder stride "
                f"{self.feature_stride}"
            )
        ratio = self.heatmap_size / (self.input_size // self.feature_stride)
        if ratio < 1 or not math.log2(ratio).is_integer():
            raise ValueError(
                f"model.heatmap_size {self.heatmap_size} must be the encoder's output size "
                f"{self.input_size // self.feature_stride} times a power of two"
            )

    @property
    def feature_stride(self) -> int:
        """Input pixels per encoder output cell."""
        if self.backbone == "efficientnet_lite0":
            return self.output_stride or 16
        if self.backbone != "resnet":
            return 8  # torchvision ResNets, cut at stride 8
        return self.stem_stride * 2 ** (len(self.depths) - 1)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or projected) shortcut."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, width, 3, stride), _conv_bn(width, width, 3, relu=False))
        self.shortcut = _shortcut(cin, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update."""
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), as in ResNet-50."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            _conv_bn(cin, width, 1),
            _conv_bn(width, width, 3, stride),
            _conv_bn(width, cout, 1, relu=False),
        )
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update."""
        return torch.relu(self.body(x) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if cin == cout and stride == 1:
        return nn.Identity()
    return _conv_bn(cin, cout, 1, stride, relu=False)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class Encoder(nn.Module):
    """From-scratch ResNet-style backbone: RGB in ``[0, 1]`` to features at ``1 / feature_stride``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.normalize = backbones.Normalize()
        stem: list[nn.Module] = [_conv_bn(3, config.stem_width, 3 if config.stem_stride == 2 else 7, 2)]
        if config.stem_stride == 4:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        block = _BLOCKS[config.block]
        stages, cin = [], config.stem_width
        for i, (depth, width) in enumerate(zip(config.depths, config.widths)):
            blocks = []
            for d in range(depth):
                blocks.append(block(cin, width, 2 if (i > 0 and d == 0) else 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode a batch ``(B, 3, S, S)``."""
        return self.stages(self.stem(self.normalize(images)))


class MarginalDecoder(nn.Module):
    """Encoder features to xy, zy and xz marginal logits ``(B, J, H, H)``."""

    def __init__(self, config: ModelConfig, in_channels: int) -> None:
        super().__init__()
        width, h, j = config.decoder_width, config.heatmap_size, config.num_joints
        num_up = int(math.log2(h // (config.input_size // config.feature_stride)))
        up: list[nn.Module] = [_conv_bn(in_channels, width, 1)]
        for _ in range(num_up):
            up += [
                nn.ConvTranspose2d(width, width, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(True),
            ]
        self.up = nn.Sequential(*up)
        self.xy = nn.Conv2d(width, j, 1)
        self.xz_features = _conv_bn(width, width, 3)
        self.zy_features = _conv_bn(width, width, 3)
        self.xz_lift = nn.Conv1d(width, j * h, 1)
        self.zy_lift = nn.Conv1d(width, j * h, 1)
        self.num_joints, self.size = j, h

    def forward(self, features: torch.Tensor) -> Marginals:
        """Decode features into marginal logits."""
        x = self.up(features)
        b, j, h = x.shape[0], self.num_joints, self.size
        per_column = self.xz_features(x).mean(dim=2)  # (B, C, H) along image x
        per_row = self.zy_features(x).mean(dim=3)  # (B, C, H) along image y
        xz = self.xz_lift(per_column).view(b, j, h, h)  # rows z, columns x
        zy = self.zy_lift(per_row).view(b, j, h, h).transpose(-1, -2)  # rows y, columns z
        return Marginals(xy=self.xy(x), zy=zy, xz=xz)


class PoseModel(nn.Module):
    """Encoder followed by the marginal decoder; ``forward`` returns marginal logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = (
            Encoder(config)
            if config.backbone == "resnet"
            else backbones.build(config.backbone, config.output_stride)
        )
        self.decoder = MarginalDecoder(config, self.encoder.out_channels)

    def forward(self, images: torch.Tensor) -> Marginals:
        """Marginal logits for a batch of RGB images in ``[0, 1]``."""
        return self.decoder(self.encoder(images))


def create_model(config: ModelConfig) -> PoseModel:
    """A new network for training: ``PoseModel(config)`` with the backbone's pretrained weights, if any.

    Checkpoints rebuild with ``PoseModel`` itself: their weights replace any pretrained ones.
    """
    model = PoseModel(config)
    if config.pretrained is not None:
        backbones.load_pretrained(model.encoder, config.backbone, config.pretrained)
    return model


def num_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def images_to_tensor(
    images: np.ndarray,
    device: torch.device | str = "cpu",
    pin_memory: bool = False,
    non_blocking: bool = False,
) -> torch.Tensor:
    """``(B, S, S, 3)`` uint8 RGB images to a float ``(B, 3, S, S)`` tensor in ``[0, 1]``.

    The uint8 images cross to the device, a quarter of the floats' bytes; ``pin_memory`` and
    ``non_blocking`` are for a GPU (``inference.InferenceConfig``)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 of shape (B, S, S, 3), got {images.dtype} {images.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if pin_memory:
        tensor = tensor.pin_memory()
    tensor = tensor.to(device, non_blocking=non_blocking)
    return tensor.permute(0, 3, 1, 2).float().div_(255.0)


def training_layout(model: PoseModel) -> PoseModel:
    """``model`` with its conv weights in the channels_last layout, as DDP wants them.

    ``images_to_tensor``'s permute hands the convolutions channels_last input (faster than contiguous
    input when measured on this 2-core CPU), so every conv weight's gradient comes out channels_last.
    DDP lays its gradient buckets out like the parameters: with contiguous weights each step copies
    every gradient and torch warns "Grad strides do not match bucket view strides". Weights in the
    gradients' layout remove both; the values, and what checkpoints store, are unchanged.
    """
    return model.to(memory_format=torch.channels_last)


def with_mirror(images: torch.Tensor) -> torch.Tensor:
    """The flip test's input: model inputs ``(B, 3, S, S)`` followed by their mirror images."""
    return torch.cat([images, images.flip(-1)])


def mirror_average(coords: torch.Tensor, variance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The flip test: predictions ``(2B, J, 3)`` on ``with_mirror``'s images to ``(B, J, 3)``, each
    image's averaged with its mirror image's mapped back (x negated, left and right swapped).

    Evaluation and prediction use it, as pose estimators commonly do (HRNet's ``TEST.FLIP_TEST``): a
    network's left-right bias cancels and its noise halves. Measured at ``d9af972`` on the synthetic
    target's first 1,000 training frames, the shipped source model's MPJPE went from 159.4 to 154.1 mm;
    on ``Demo_MultiPerson`` from 285.6 to 273.6 mm, and the adapted model's from 165.1 to 160.6. The
    pseudo-labels keep the paper's three views (``views``), whose rigid one may flip already.
    """
    n = coords.shape[0] // 2
    flip = list(FLIP_PERMUTATION)
    back = coords[n:, flip] * coords.new_tensor([-1.0, 1.0, 1.0])
    return (coords[:n] + back) / 2, (variance[:n] + variance[n:, flip]) / 2


@torch.no_grad()
def predict(
    model: PoseModel, images: np.ndarray | torch.Tensor, flip_test: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised joints and per-axis variances ``(B, J, 3)``, in eval mode, for uint8 images
    ``(B, S, S, 3)`` or for the model's input already on its device (``images_to_tensor``); with
    ``flip_test``, averaged with the mirror images' (``mirror_average``)."""
    was_training = model.training
    model.eval()
    try:
        if not isinstance(images, torch.Tensor):
            images = images_to_tensor(images, next(model.parameters()).device)
        coords, variance = soft_argmax(model(with_mirror(images) if flip_test else images))
        if flip_test:
            coords, variance = mirror_average(coords, variance)
    finally:
        model.train(was_training)
    return coords.cpu().numpy(), variance.cpu().numpy()
