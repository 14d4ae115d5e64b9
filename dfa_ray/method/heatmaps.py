"""Marginal heatmaps, soft-argmax, and the normalised pose space they live in.

**Normalised space** (MargiPose's perspective-normalised space). For a square crop of ``W`` pixels
with intrinsics ``(fx, fy, cx, cy)``:

- ``x, y`` are the joint's image position in the crop, scaled so the crop spans ``[-1, 1]``
  (pixel centres at integer coordinates, as in OpenCV: ``x = (2u + 1) / W - 1``);
- ``z`` is the joint's depth relative to the root, in units of the half-width the crop covers at
  the root's depth: ``z = (Z - Z_root) / (W * Z_root / (2 fx))``.

Why this space rather than a fixed millimetre cube: the xy marginal is image-aligned, so a
convolutional decoder predicts it translation-equivariantly; 2D-only sources (MPII) give an xy
target without any depth; and every equivariance transform (rotation, scale, translation, flip of
the crop) acts on these coordinates exactly (see ``transforms``). The cost is that millimetres need
the root depth and the intrinsics, which the evaluation split has (MargiPose's protocol); MPJPE
is root-relative, so the root depth only sets the scale of the perspective back-projection.

**Marginals.** Each joint has three heatmaps on an ``H x H`` grid whose cell centres sit at
``(2k + 1) / H - 1``: ``xy`` (rows y, columns x), ``zy`` (rows y, columns z) and ``xz``
(rows z, columns x). A soft-argmax (DSNT: the expectation under a softmax over each map) gives
x and y from ``xy`` and z as the mean of the ``zy`` and ``xz`` estimates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch

from dfa_ray.method.skeleton import JOINT_NAMES, NOMINAL_BONE_MM, bone_lengths


class Marginals(NamedTuple):
    """The three marginal maps of a batch, each ``(B, J, H, H)``: logits, or probabilities."""

    xy: torch.Tensor
    zy: torch.Tensor
    xz: torch.Tensor


def _check_camera(camera: np.ndarray, num: int) -> np.ndarray:
    camera = np.asarray(camera, dtype=np.float64)
    if camera.shape != (num, 4):
        raise ValueError(f"camera must have shape ({num}, 4) (fx, fy, cx, cy), got {camera.shape}")
    if not np.all(np.isfinite(camera)) or np.any(camera[:, :2] <= 0):
        raise ValueError("camera focal lengths must be finite and positive")
    return camera


def pixels_to_normalised(pixels: np.ndarray, crop_size: int) -> np.ndarray:
    """Map crop pixel coordinates (pixel centres at integers) to the crop's ``[-1, 1]`` range."""
    return (2.0 * np.asarray(pixels, dtype=np.float64) + 1.0) / crop_size - 1.0


def normalised_to_pixels(coords: np.ndarray, crop_size: int) -> np.ndarray:
    """Inverse of ``pixels_to_normalised``."""
    return ((np.asarray(coords, dtype=np.float64) + 1.0) * crop_size - 1.0) / 2.0


def depth_unit(camera: np.ndarray, crop_size: int, root_depth: np.ndarray) -> np.ndarray:
    """Millimetres per normalised z unit: half the metric width the crop covers at the root depth."""
    return crop_size * np.asarray(root_depth, dtype=np.float64) / (2.0 * camera[:, 0])


def normalise(joints_3d: np.ndarray, camera: np.ndarray, crop_size: int, root: int = 0) -> np.ndarray:
    """Camera-frame millimetres ``(N, J, 3)`` to normalised coordinates ``(N, J, 3)``."""
    joints_3d = np.asarray(joints_3d, dtype=np.float64)
    if joints_3d.ndim != 3 or joints_3d.shape[-1] != 3:
        raise ValueError(f"joints_3d must have shape (N, J, 3), got {joints_3d.shape}")
    camera = _check_camera(camera, joints_3d.shape[0])
    depth = joints_3d[..., 2]
    if np.any(depth <= 0):
        raise ValueError("joints_3d must lie in front of the camera (z > 0 mm)")
    fx, fy, cx, cy = (camera[:, i, None] for i in range(4))
    u = fx * joints_3d[..., 0] / depth + cx
    v = fy * joints_3d[..., 1] / depth + cy
    root_depth = depth[:, root]
    z = (depth - root_depth[:, None]) / depth_unit(camera, crop_size, root_depth)[:, None]
    return np.stack([pixels_to_normalised(u, crop_size), pixels_to_normalised(v, crop_size), z], -1)


def denormalise(
    coords: np.ndarray, camera: np.ndarray, crop_size: int | np.ndarray, root_depth: np.ndarray
) -> np.ndarray:
    """Normalised coordinates ``(N, J, 3)`` back to camera-frame millimetres, given the root depth;
    ``crop_size`` is one for all frames or each frame's ``(N,)``."""
    coords = np.asarray(coords, dtype=np.float64)
    camera = _check_camera(camera, coords.shape[0])
    root_depth = np.asarray(root_depth, dtype=np.float64).reshape(-1)
    size = np.asarray(crop_size)
    if size.ndim and size.shape != root_depth.shape:
        raise ValueError(f"crop_size must be one size or one per frame {root_depth.shape}, got {size.shape}")
    depth = root_depth[:, None] + coords[..., 2] * depth_unit(camera, size, root_depth)[:, None]
    fx, fy, cx, cy = (camera[:, i, None] for i in range(4))
    per_joint = size[:, None] if size.ndim else size
    u = normalised_to_pixels(coords[..., 0], per_joint)
    v = normalised_to_pixels(coords[..., 1], per_joint)
    return np.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], -1)


def root_depth_from_bones(
    coords: np.ndarray, camera: np.ndarray, crop_size: int, bone_mm: Mapping[str, float] = NOMINAL_BONE_MM
) -> np.ndarray:
    """The root depths ``(N,)`` in mm at which normalised poses ``(N, 17, 3)`` best have ``bone_mm``'s bones.

    A prior for frames without a known root depth: the person is assumed to be a nominal adult.
    ``denormalise`` is linear in the root depth (a pose at depth ``D`` is ``D`` times the pose at
    depth 1, z units included), so every bone length is ``D`` times its length ``l`` at depth 1, and
    the depth whose bone lengths are closest to the nominal ``L`` in least squares is
    ``sum(l L) / sum(l l)``. Least squares weighs the long bones (legs, spine) most, which a model
    predicts closest to their true length; the short ones (hips, shoulders, head) come out shrunk
    towards the joint they hang from (``benchmarks/depth_prior.py``). Root-relative millimetres at
    this depth are the predicted shape at a nominal adult's size; they hardly depend on the focal
    length, which scales the depth and the back-projection alike.
    """
    coords = np.asarray(coords, dtype=np.float64)
    unit = denormalise(coords, camera, crop_size, np.ones(len(coords)))
    lengths = bone_lengths(unit)[:, [JOINT_NAMES.index(name) - 1 for name in bone_mm]]
    fitted = (lengths**2).sum(axis=-1)
    if not np.all(np.isfinite(fitted) & (fitted > 0)):
        raise ValueError("a pose whose joints all coincide has no bone lengths to fit a depth to")
    return lengths @ np.array(list(bone_mm.values()), dtype=np.float64) / fitted


def grid(size: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised coordinates of the ``size`` cell centres along one heatmap axis."""
    return (2.0 * torch.arange(size, device=device, dtype=torch.float32) + 1.0) / size - 1.0


def gaussian_marginals(coords: torch.Tensor, size: int, sigma: float) -> Marginals:
    """Target marginals: a normalised Gaussian per joint and map at ``coords`` ``(B, J, 3)``.

    ``sigma`` is in heatmap cells. Each map sums to 1 over the grid; a joint near the edge gets the
    truncated Gaussian renormalised, so its expectation is pulled slightly inwards.
    """
    if coords.ndim != 3 or coords.shape[-1] != 3:
        raise ValueError(f"coords must have shape (B, J, 3), got {tuple(coords.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    sigma_n = 2.0 * sigma / size
    g = grid(size, coords.device)
    # One 1D Gaussian per axis; each 2D map is an outer product of two of them.
    axis = torch.exp(-((g - coords.float()[..., None]) ** 2) / (2 * sigma_n**2))  # (B, J, 3, H)
    x, y, z = axis[:, :, 0], axis[:, :, 1], axis[:, :, 2]

    def outer(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        maps = rows[..., :, None] * cols[..., None, :]
        return maps / maps.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)

    return Marginals(xy=outer(y, x), zy=outer(y, z), xz=outer(z, x))


def _expectation(logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mean and variance along columns and rows under a softmax over each ``(H, H)`` map."""
    b, j, h, w = logits.shape
    probs = torch.softmax(logits.float().reshape(b, j, h * w), dim=-1).reshape(b, j, h, w)
    g_rows, g_cols = grid(h, logits.device), grid(w, logits.device)
    p_cols, p_rows = probs.sum(dim=-2), probs.sum(dim=-1)
    col = (p_cols * g_cols).sum(-1)
    row = (p_rows * g_rows).sum(-1)
    col_var = (p_cols * g_cols**2).sum(-1) - col**2
    row_var = (p_rows * g_rows**2).sum(-1) - row**2
    return col, row, col_var.clamp_min(0), row_var.clamp_min(0)


def soft_argmax(logits: Marginals) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised joints ``(B, J, 3)`` and their per-axis variance ``(B, J, 3)`` from marginal logits."""
    x, y, var_x, var_y = _expectation(logits.xy)
    z_zy, _, var_z_zy, _ = _expectation(logits.zy)
    _, z_xz, _, var_z_xz = _expectation(logits.xz)
    coords = torch.stack([x, y, (z_zy + z_xz) / 2], dim=-1)
    variance = torch.stack([var_x, var_y, (var_z_zy + var_z_xz) / 2], dim=-1)
    return coords, variance
