"""The transforms of Algorithm 1's views (``views``): invariance (colour) and equivariance (rigid).

**Invariance**: brightness, contrast, saturation, hue, blur and noise change pixels, not geometry,
so a correct prediction is unchanged and the inverse on predictions is the identity.

**Equivariance**: an in-plane rotation, a uniform scale and a translation of the crop, optionally
after a horizontal flip. In normalised coordinates (``heatmaps``) a point moves as
``p' = s R F p + t``, with ``F = diag(-1, 1)`` for a flip. What each coordinate does:

- x, y (the xy marginal's axes): the 2D similarity itself, exact for every parameter. A 2D image
  rotation about the crop centre is a rotation of the camera about its optical axis (plus a
  principal-point shift), so the rotated 3D pose projects exactly onto the rotated xy.
- z: unchanged by rotation, translation and flip; multiplied by ``s`` under scale, because
  zooming by ``s`` multiplies the focal length, and z is measured in units inversely proportional
  to it. Exact.
- Joint identities: a flip mirrors the person, so left and right joints swap (``FLIP_PERMUTATION``).

On *coordinates* every inverse is therefore exact, which is why pseudo-labels are formed from
soft-argmax coordinates (``pseudo_label``). On *heatmaps* the picture differs: the xy marginal can
be warped back exactly (up to resampling); zy and xz can be warped back exactly for scale,
translation and flip, but not for a rotation, which mixes x and y — a rotated xz map would need
the joint distribution over x, y and z, which the two 2D marginals do not determine.
Per-axis variances follow ``s^2`` under scale; under rotation only their x + y sum is preserved,
so the ensemble uses the rotation-invariant mean variance (``mean_variance``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dfa_ray import bounds
from dfa_ray.method.skeleton import FLIP_PERMUTATION


@dataclass(frozen=True)
class InvarianceRange:
    """Ranges the colour transform samples from."""

    brightness: float = 0.3  # multiplicative factor in [1 - b, 1 + b]
    contrast: float = 0.3
    saturation: float = 0.3
    hue_degrees: float = 10.0
    blur_probability: float = 0.3
    max_blur_sigma: float = 1.0
    max_noise_std: float = 8.0  # in 0-255 intensity units

    def __post_init__(self) -> None:
        # A factor range reaching below 0 would invert the image rather than change its colour.
        bounds.fraction(self, "brightness", "contrast", "saturation", "blur_probability")
        bounds.non_negative(self, "hue_degrees", "max_blur_sigma", "max_noise_std")


@dataclass(frozen=True)
class EquivarianceRange:
    """Ranges the rigid transform samples from (translation in normalised units, i.e. half-crops)."""

    max_rotation_degrees: float = 30.0
    min_scale: float = 0.8
    max_scale: float = 1.2
    max_translation: float = 0.1
    flip_probability: float = 0.5

    def __post_init__(self) -> None:
        bounds.non_negative(self, "max_rotation_degrees", "max_translation")
        bounds.positive(self, "min_scale")  # the inverse divides by the scale
        bounds.fraction(self, "flip_probability")
        if not self.min_scale <= self.max_scale:
            problem = f"must be at least min_scale {self.min_scale}, got {self.max_scale}"
            raise bounds.FieldError("max_scale", problem)


@dataclass(frozen=True)
class InvarianceParams:
    """One sampled colour transform."""

    brightness: float
    contrast: float
    saturation: float
    hue_degrees: float
    blur_sigma: float
    noise_std: float
    noise_seed: int


@dataclass(frozen=True)
class EquivarianceParams:
    """One sampled rigid transform: ``p' = scale * R(angle) * F(flip) * p + (tx, ty)``."""

    angle_degrees: float = 0.0
    scale: float = 1.0
    tx: float = 0.0
    ty: float = 0.0
    flip: bool = False

    def matrix(self) -> np.ndarray:
        """The 2x3 affine map of normalised image coordinates."""
        a = np.deg2rad(self.angle_degrees)
        rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        flip = np.diag([-1.0 if self.flip else 1.0, 1.0])
        return np.hstack([self.scale * rotation @ flip, [[self.tx], [self.ty]]])


def sample_invariance(rng: np.random.Generator, r: InvarianceRange = InvarianceRange()) -> InvarianceParams:
    """Draw colour-transform parameters."""
    return InvarianceParams(
        brightness=float(rng.uniform(1 - r.brightness, 1 + r.brightness)),
        contrast=float(rng.uniform(1 - r.contrast, 1 + r.contrast)),
        saturation=float(rng.uniform(1 - r.saturation, 1 + r.saturation)),
        hue_degrees=float(rng.uniform(-r.hue_degrees, r.hue_degrees)),
        blur_sigma=float(rng.uniform(0.3, r.max_blur_sigma)) if rng.random() < r.blur_probability else 0.0,
        noise_std=float(rng.uniform(0, r.max_noise_std)),
        noise_seed=int(rng.integers(2**31)),
    )


def sample_equivariance(
    rng: np.random.Generator, r: EquivarianceRange = EquivarianceRange()
) -> EquivarianceParams:
    """Draw rigid-transform parameters."""
    return EquivarianceParams(
        angle_degrees=float(rng.uniform(-r.max_rotation_degrees, r.max_rotation_degrees)),
        scale=float(rng.uniform(r.min_scale, r.max_scale)),
        tx=float(rng.uniform(-r.max_translation, r.max_translation)),
        ty=float(rng.uniform(-r.max_translation, r.max_translation)),
        flip=bool(rng.random() < r.flip_probability),
    )


def turn_hue(image: np.ndarray, degrees: float) -> np.ndarray:
    """A uint8 RGB image with its hue turned by ``degrees``, to OpenCV's 8-bit hue steps of 2 degrees."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + round(degrees / 2)) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def apply_invariance(image: np.ndarray, p: InvarianceParams) -> np.ndarray:
    """Colour-transform one ``(S, S, 3)`` uint8 RGB image."""
    img = image.astype(np.float32)
    img = img * p.brightness
    img = (img - img.mean()) * p.contrast + img.mean()
    grey = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    img = (img - grey[..., None]) * p.saturation + grey[..., None]
    img = turn_hue(np.clip(img, 0, 255).astype(np.uint8), p.hue_degrees).astype(np.float32)
    if p.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), p.blur_sigma)
    if p.noise_std > 0:
        img = img + np.random.default_rng(p.noise_seed).normal(0, p.noise_std, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def pixel_matrix(p: EquivarianceParams, crop_size: int) -> np.ndarray:
    """The equivariance transform as a 2x3 affine map of pixel coordinates (for ``cv2.warpAffine``)."""
    # pixel -> normalised: n = (2u + 1) / S - 1 = a u + b
    a, b = 2.0 / crop_size, 1.0 / crop_size - 1.0
    to_norm = np.array([[a, 0, b], [0, a, b], [0, 0, 1.0]])
    m = np.vstack([p.matrix(), [0, 0, 1.0]])
    return (np.linalg.inv(to_norm) @ m @ to_norm)[:2]


def apply_equivariance(image: np.ndarray, p: EquivarianceParams) -> np.ndarray:
    """Warp one square ``(S, S, 3)`` image; pixels brought in from outside the crop are black."""
    size = image.shape[0]
    if image.shape[1] != size:
        raise ValueError(f"equivariance transform needs a square crop, got {image.shape}")
    return cv2.warpAffine(
        image, pixel_matrix(p, size), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def equivariance_forward(coords: np.ndarray, p: EquivarianceParams) -> np.ndarray:
    """Where the joints ``(..., J, 3)`` of an image land in its transformed copy (normalised units)."""
    coords = np.asarray(coords, dtype=np.float64)
    m = p.matrix()
    out = np.empty_like(coords)
    out[..., :2] = coords[..., :2] @ m[:, :2].T + m[:, 2]
    out[..., 2] = coords[..., 2] * p.scale
    return out[..., list(FLIP_PERMUTATION), :] if p.flip else out


def equivariance_inverse(coords: np.ndarray, p: EquivarianceParams) -> np.ndarray:
    """Map joints predicted on the transformed copy back to the original image (exact inverse)."""
    coords = np.asarray(coords, dtype=np.float64)
    if p.flip:
        coords = coords[..., list(FLIP_PERMUTATION), :]  # the permutation is its own inverse
    m = p.matrix()
    linear_inv = np.linalg.inv(m[:, :2])
    out = np.empty_like(coords)
    out[..., :2] = (coords[..., :2] - m[:, 2]) @ linear_inv.T
    out[..., 2] = coords[..., 2] / p.scale
    return out


def recolour(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Training augmentation of appearance: each ``(S, S, 3)`` uint8 image of a batch has, each with
    its own chance, its hue turned by a random angle (0.8), its colour channels reordered (0.5) and
    its colour dropped (0.2).

    Far wider than the invariance view's ranges on purpose: a source of rendered people teaches the
    network the colours of its renderer's clothes and skin, and a target person drawn in other
    colours then looks like nothing it has seen. On the benchmark's target *training* subjects
    (validation, not the test split) one epoch pair of fine-tuning with it took the shipped model
    from 0.82x to 0.76x the mean pose's MPJPE, where the same fine-tuning without it gave 0.83x.
    Geometry is untouched, so labels need no change.
    """
    out = np.empty_like(images)
    for i, image in enumerate(images):
        if rng.random() < 0.8:
            image = turn_hue(image, 2.0 * int(rng.integers(180)))
        if rng.random() < 0.5:
            image = image[..., rng.permutation(3)]
        if rng.random() < 0.2:
            image = np.repeat(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[..., None], 3, -1)
        out[i] = image
    return out


def rigid_augment(
    images: np.ndarray,
    coords: np.ndarray,
    joint_weight: np.ndarray,
    rng: np.random.Generator,
    r: EquivarianceRange = EquivarianceRange(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training augmentation: each image warped by its own random rigid transform, labels moved with it.

    Images ``(B, S, S, 3)``, normalised joints ``(B, J, 3)`` and per-joint weights ``(B, J)`` (a flip
    swaps left and right, so the weights follow their joints). Training over the equivariance
    view's ranges is what lets that view of Algorithm 1 agree with the original one.
    """
    params = [sample_equivariance(rng, r) for _ in range(len(images))]
    images = np.stack([apply_equivariance(image, p) for image, p in zip(images, params)])
    coords = np.stack([equivariance_forward(c, p) for c, p in zip(coords, params)])
    flip = list(FLIP_PERMUTATION)
    joint_weight = np.stack([w[flip] if p.flip else w for w, p in zip(np.asarray(joint_weight), params)])
    return images, coords, joint_weight


def mean_variance(variance: np.ndarray) -> np.ndarray:
    """Rotation-invariant spread ``(..., J)``: the mean of the per-axis variances ``(..., J, 3)``."""
    return np.asarray(variance).mean(axis=-1)


def equivariance_inverse_variance(variance: np.ndarray, p: EquivarianceParams) -> np.ndarray:
    """Map mean variances ``(..., J)`` of the transformed copy back (scale by ``1/s^2``, un-swap)."""
    variance = np.asarray(variance, dtype=np.float64)
    if p.flip:
        variance = variance[..., list(FLIP_PERMUTATION)]
    return variance / p.scale**2
