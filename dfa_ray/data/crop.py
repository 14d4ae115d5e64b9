"""Person-centred square crops with exact crop intrinsics, and the row every dataset converter yields.

The Human3.6M, SURREAL and MPII converters (``h36m``, ``surreal``, ``mpii``) differ only in how they
read their published layouts; each hands a full frame, its intrinsics and the person's joints to
``person_row``, which cuts the crop and builds the row (schema below).

**Pixel convention** (as ``dfa_ray.method.heatmaps`` and OpenCV): pixel centres sit at integer
coordinates, so a frame of width ``W`` spans ``[-0.5, W - 0.5]``. A square box of side ``s`` centred
at ``(bx, by)`` is mapped onto an ``N``-pixel crop by the similarity ``u' = k u + tx``,
``v' = k v + ty`` with ``k = N / s`` and ``t = (N - 1) / 2 - k b``: the box centre lands on the crop
centre ``(N - 1) / 2`` and the box edges on the crop edges. The same map applied to the pinhole
model ``u = fx X / Z + cx`` gives the crop intrinsics ``(k fx, k fy, k cx + tx, k cy + ty)``, so
projecting camera-frame joints with them gives the crop pixels exactly.

A crop of an off-centre person is not a rotated camera: the crop keeps the original camera's
orientation, and its principal point may lie far from the crop centre (even outside the crop).
Downstream code (``heatmaps.normalise``) expects exactly this.

**Row schema** (what ``dfa_ray.data.records.write_records`` stores)::

    frame_id      str                  unique, dataset-specific (see each converter)
    image         bytes                JPEG or PNG of the square RGB crop
    joints_2d     (17, 2) float32      crop pixels, H36M-17 order; invalid joints are 0
    joints_3d     (17, 3) float32|None camera frame, mm (x right, y down, z forward)
    camera        (4,) float32         fx, fy, cx, cy of the crop, pixels
    subject, action  str
    joints_valid  (17,) uint8          1 where the joint is annotated
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dfa_ray.data.images import encode_image
from dfa_ray.method.skeleton import NUM_JOINTS


@dataclass(frozen=True)
class CropSpec:
    """How every converter cuts its crops: side in pixels, box margin around the joints, image codec."""

    size: int = 256
    margin: float = 1.25
    image_format: str = "jpeg"

    def __post_init__(self) -> None:
        if self.size < 8 or self.margin < 1.0 or self.image_format not in ("jpeg", "png"):
            raise ValueError(f"bad crop settings {self}: need size >= 8, margin >= 1, format jpeg|png")


@dataclass(frozen=True)
class Box:
    """A square region of a full frame: centre (pixel-centre convention) and side, in pixels."""

    cx: float
    cy: float
    side: float


def person_box(
    joints_2d: np.ndarray, valid: np.ndarray | None = None, margin: float = 1.25, min_side: float = 32.0
) -> Box:
    """The square box centred on the valid joints' bounding box, ``margin`` times its larger side."""
    points = np.asarray(joints_2d, dtype=np.float64).reshape(-1, 2)
    mask = np.ones(len(points), bool) if valid is None else np.asarray(valid).reshape(-1).astype(bool)
    points = points[mask]
    if len(points) == 0 or not np.all(np.isfinite(points)):
        raise ValueError("a person box needs at least one valid, finite 2D joint")
    low, high = points.min(axis=0), points.max(axis=0)
    centre = (low + high) / 2.0
    # A lone joint or a foreshortened limb would give a degenerate box; min_side keeps it croppable.
    side = max(margin * float(np.max(high - low)), min_side)
    return Box(float(centre[0]), float(centre[1]), side)


def crop_matrix(box: Box, out_size: int) -> np.ndarray:
    """The 2x3 affine map from full-frame pixels to crop pixels (a scale and a shift)."""
    k = out_size / box.side
    centre = (out_size - 1) / 2.0
    return np.array([[k, 0.0, centre - k * box.cx], [0.0, k, centre - k * box.cy]])


def crop_points(points: np.ndarray, box: Box, out_size: int) -> np.ndarray:
    """Full-frame pixel coordinates ``(..., 2)`` in crop pixels."""
    m = crop_matrix(box, out_size)
    return np.asarray(points, dtype=np.float64) * m[0, 0] + m[:, 2]


def crop_intrinsics(intrinsics: np.ndarray, box: Box, out_size: int) -> np.ndarray:
    """The crop's ``(fx, fy, cx, cy)`` from the full frame's: focal lengths scale, the centre moves."""
    fx, fy, cx, cy = np.asarray(intrinsics, dtype=np.float64)
    k = out_size / box.side
    (ccx, ccy) = crop_points(np.array([cx, cy]), box, out_size)
    return np.array([k * fx, k * fy, ccx, ccy])


def crop_image(frame: np.ndarray, box: Box, out_size: int) -> np.ndarray:
    """Cut the box out of an RGB frame and resize it to ``out_size`` pixels; outside the frame is black."""
    m = crop_matrix(box, out_size)
    k = m[0, 0]
    if k < 1.0:
        # Bilinear warping alone aliases when shrinking; blur first with the usual anti-aliasing sigma
        # (as skimage.transform.rescale). Only the part of the frame the box covers is blurred.
        sigma = (1.0 / k - 1.0) / 2.0
        pad = int(np.ceil(3 * sigma)) + 2
        half = box.side / 2.0
        height, width = frame.shape[:2]
        x0 = int(np.clip(np.floor(box.cx - half) - pad, 0, width))
        y0 = int(np.clip(np.floor(box.cy - half) - pad, 0, height))
        x1 = int(np.clip(np.ceil(box.cx + half) + pad + 1, x0, width))
        y1 = int(np.clip(np.ceil(box.cy + half) + pad + 1, y0, height))
        region = frame[y0:y1, x0:x1]
        if region.size:
            frame = cv2.GaussianBlur(region, (0, 0), sigma)
            m = m.copy()
            m[:, 2] += k * np.array([x0, y0])
        else:
            frame = np.zeros((1, 1, frame.shape[2]), frame.dtype)
    return cv2.warpAffine(
        frame, m, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB uint8 array, naming the file if it is missing or unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{path}: image missing or unreadable")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def person_row(
    frame_id: str,
    frame: np.ndarray,
    intrinsics: np.ndarray,
    joints_2d: np.ndarray,
    joints_valid: np.ndarray,
    joints_3d: np.ndarray | None,
    subject: str,
    action: str,
    crop: CropSpec = CropSpec(),
) -> dict:
    """A row (see module docstring) for one person: full-frame pixels in, crop and crop camera out."""
    joints_2d = np.asarray(joints_2d, dtype=np.float64)
    joints_valid = np.asarray(joints_valid, dtype=np.uint8)
    if joints_2d.shape != (NUM_JOINTS, 2) or joints_valid.shape != (NUM_JOINTS,):
        raise ValueError(
            f"{frame_id}: expected (17, 2) joints and (17,) validity, got "
            f"{joints_2d.shape} and {joints_valid.shape}"
        )
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"{frame_id}: expected an RGB uint8 frame, got {frame.dtype} {frame.shape}")
    box = person_box(joints_2d, joints_valid, crop.margin)
    crop_2d = crop_points(joints_2d, box, crop.size)
    crop_2d[joints_valid == 0] = 0.0
    return {
        "frame_id": frame_id,
        "image": encode_image(crop_image(frame, box, crop.size), crop.image_format),
        "joints_2d": crop_2d.astype(np.float32),
        "joints_3d": None if joints_3d is None else np.asarray(joints_3d, dtype=np.float32),
        "camera": crop_intrinsics(intrinsics, box, crop.size).astype(np.float32),
        "subject": subject,
        "action": action,
        "joints_valid": joints_valid,
    }
