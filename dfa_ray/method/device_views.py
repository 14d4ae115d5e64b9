"""The invariance and equivariance views of Algorithm 1 as batched tensor operations on the model's device.

``transforms`` builds the views one image at a time in numpy and OpenCV, on the host. A label actor
with a GPU would then spend most of its time on the host (3.7 ms a frame at 256 px, 2.7 ms of it the
invariance view, against 3.5 ms of model: benchmarks/README.md), so here the same views are built
for a whole batch where the images already are, from the same sampled parameters. Images are
``(B, 3, S, S)`` floats in ``[0, 1]`` (``model.images_to_tensor``), the model's input.

What agrees with ``transforms`` and what cannot (``tests/test_device_views.py`` measures it):

- **Colour** (brightness, contrast, saturation, hue, blur): the same arithmetic, with the host
  path's 8-bit roundings reproduced (the truncation to uint8 before the hue turn, OpenCV's 8-bit
  HSV with hue in 2-degree steps, the final rounding), so the views agree to a level or so.
- **Noise**: drawn from the frame's ``noise_seed`` by torch's generator on the device, not numpy's:
  the same distribution, other numbers. A frame still gets the same noise whatever batch it is in.
- **Rigid warp**: ``affine_grid`` and ``grid_sample`` sample the source at the exact inverse of
  ``p' = s R F p + t``, in the very normalised coordinates the labels use (``align_corners=False``
  puts pixel ``u`` at ``(2u + 1) / S - 1``), black outside the crop like ``cv2.warpAffine``;
  OpenCV interpolates at 1/32-pixel steps in fixed point, so sharp edges differ by a few levels.

The inverses on *coordinates* are unchanged: ``transforms.equivariance_inverse`` stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dfa_ray.method.transforms import EquivarianceParams, InvarianceParams

# ITU-R BT.601 luma, as the host path's grey.
_LUMA = (0.299, 0.587, 0.114)


def _column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Per-image scalars as a ``(B, 1, 1, 1)`` tensor that broadcasts over an image batch."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1, 1)


def turn_hue(levels: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Integer RGB levels ``(B, 3, S, S)`` with their hue turned by ``steps`` (B,) of 2 degrees,
    through OpenCV's 8-bit HSV: hue rounded to 2-degree steps and saturation to a level, as
    ``transforms.turn_hue`` does with ``cv2.cvtColor``."""
    r, g, b = levels.unbind(1)
    value = levels.amax(1)
    diff = value - levels.amin(1)
    # OpenCV's sector order: red wins ties, then green (hue here in 2-degree units, 0..180), and its
    # fixed point: a 12-bit reciprocal table, rounded half up (exact in float32: products < 2^24).
    numerator = torch.where(value == r, g - b, torch.where(value == g, b - r + 2 * diff, r - g + 4 * diff))
    hue = _fixed_point(numerator, torch.round(30 * 4096 / diff.clamp_min(1)))
    hue = torch.remainder(hue + 180 + steps.view(-1, 1, 1), 180)
    saturation = _fixed_point(diff, torch.round(255 * 4096 / value.clamp_min(1))) / 255
    # HSV back to RGB as OpenCV's 8-bit HSV2RGB does it: in floats, then truncated to levels.
    sector = hue / 30  # in [0, 6)
    k = torch.stack([torch.remainder(n + sector, 6) for n in (5.0, 3.0, 1.0)], 1)
    rgb = value[:, None] * (1 - saturation[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1)))
    return torch.floor(rgb)


def _fixed_point(numerator: torch.Tensor, reciprocal: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``(numerator * reciprocal + 2^11) >> 12``, on integer-valued floats."""
    return torch.floor((numerator * reciprocal + 2048) / 4096)


def _gaussian_kernels(sigmas: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """``cv2.GaussianBlur``'s 1D kernels for float images (radius 4 sigma), one per image, zero-padded
    to the widest so one grouped convolution blurs the batch; sigma 0 is the identity."""
    sizes = [int(np.floor(s * 8 + 1 + 0.5)) | 1 if s > 0 else 1 for s in sigmas]
    width = max(sizes)
    kernels = np.zeros((len(sigmas), width))
    for i, (sigma, size) in enumerate(zip(sigmas, sizes)):
        offsets = np.arange(size) - (size - 1) / 2
        kernel = np.exp(-(offsets**2) / (2 * sigma**2)) if sigma > 0 else np.ones(1)
        start = (width - size) // 2
        kernels[i, start : start + size] = kernel / kernel.sum()
    return torch.tensor(kernels, dtype=like.dtype, device=like.device)


def blur(levels: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Each image blurred with its own Gaussian (BORDER_REFLECT_101, as OpenCV's default)."""
    n, channels, height, width = levels.shape
    kernels = _gaussian_kernels(sigmas, levels)
    radius = (kernels.shape[1] - 1) // 2
    # Every image's channels are groups of one convolution; zero taps beyond an image's own radius
    # make the wider reflect padding the same as its own.
    weight = kernels.repeat_interleave(channels, 0)[:, None]  # (B*C, 1, K)
    x = levels.reshape(1, n * channels, height, width)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), weight[..., None, :], groups=n * channels)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), weight[..., :, None], groups=n * channels)
    return x.reshape(n, channels, height, width)


def noise(like: torch.Tensor, params: Sequence[InvarianceParams]) -> torch.Tensor:
    """Each image's Gaussian noise (in levels), a function of its ``noise_seed`` alone."""
    out = torch.zeros_like(like)
    generator = torch.Generator(device=like.device)
    for i, p in enumerate(params):
        if p.noise_std > 0:
            generator.manual_seed(p.noise_seed)
            draw = torch.randn(like.shape[1:], generator=generator, device=like.device, dtype=like.dtype)
            out[i] = draw * p.noise_std
    return out


def invariance(images: torch.Tensor, params: Sequence[InvarianceParams]) -> torch.Tensor:
    """The colour view of each image of a ``(B, 3, S, S)`` batch in ``[0, 1]`` (``apply_invariance``)."""
    _check(images, len(params), "invariance")
    img = images * 255 * _column([p.brightness for p in params], images)
    mean = img.mean(dim=(1, 2, 3), keepdim=True)
    img = (img - mean) * _column([p.contrast for p in params], images) + mean
    weights = torch.tensor(_LUMA, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    grey = (img * weights).sum(1, keepdim=True)
    img = (img - grey) * _column([p.saturation for p in params], images) + grey
    steps = torch.tensor([round(p.hue_degrees / 2) for p in params], dtype=img.dtype, device=img.device)
    img = turn_hue(torch.floor(img.clamp(0, 255)), steps)  # the host path truncates to uint8 first
    if any(p.blur_sigma > 0 for p in params):
        img = blur(img, [p.blur_sigma for p in params])
    if any(p.noise_std > 0 for p in params):
        img = img + noise(img, params)
    return torch.floor((img + 0.5).clamp(0, 255)) / 255


def inverse_matrices(params: Sequence[EquivarianceParams]) -> np.ndarray:
    """``(B, 2, 3)``: for each transform, where an output point samples its source (the exact inverse)."""
    out = np.empty((len(params), 2, 3))
    for i, p in enumerate(params):
        m = p.matrix()
        linear_inv = np.linalg.inv(m[:, :2])
        out[i] = np.hstack([linear_inv, -linear_inv @ m[:, 2:]])
    return out


def equivariance(images: torch.Tensor, params: Sequence[EquivarianceParams]) -> torch.Tensor:
    """The rigid view of each image of a ``(B, 3, S, S)`` batch (``transforms.apply_equivariance``)."""
    _check(images, len(params), "equivariance")
    theta = torch.tensor(inverse_matrices(params), dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.round(warped * 255) / 255  # cv2.warpAffine of uint8 images gives levels


def _check(images: torch.Tensor, num_params: int, view: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"{view} view needs square images (B, 3, S, S), got {tuple(images.shape)}")
    if len(images) != num_params:
        raise ValueError(f"{len(images)} images but {num_params} {view} transforms")
