"""Calibrated synchronised cameras: a triangulated pseudo-ground-truth and a consistency metric.

Real footage has no 3D labels, but several calibrated cameras filming the same people give two
measures that need none (``benchmarks/real_multiview.py`` reports both):

- **Pseudo-ground-truth.** MediaPipe's 2D landmarks of one person in each view, triangulated by a
  DLT in which each view's equations are weighted by the landmark's visibility; views whose
  visibility is below ``min_visibility`` are left out, then the view that reprojects worst is
  dropped while it misses by more than ``max_error_px`` and more than two views remain. The 33
  landmarks map to H36M-17 as the video path maps them (``skeleton.MEDIAPIPE_TO_H36M``: the pelvis,
  spine, thorax and head are averages of hips, shoulders and ears); a joint is valid when every
  landmark it is made of was triangulated. It is only as good as MediaPipe's 2D, and it favours
  MediaPipe's own 3D, which shares its joint definitions.
- **Consistency.** Each camera's root-relative prediction of the same person in the same frame,
  rotated into the world frame (``R`` transposed), should be the same pose: the mean joint distance
  over pairs of cameras measures how far apart they are, without any truth.

**Cameras** come from a Qualisys ``.qca.txt`` (what Pose2Sim's ``Demo_MultiPerson`` ships), read as
Pose2Sim's ``calibration.calib_qca_fun`` reads it: sizes from ``fov_video`` (right - left + 1 by
bottom - top + 1), focal lengths and principal point in sensor units divided by 64 (the sensor's
subpixel factor) less the ``fov_video`` origin, and the ``transform`` as the camera's pose in the
world: ``r11 ... r33`` are its camera-to-world rotation stored column by column, so read row by row
they are the world-to-camera rotation (Qualisys' camera looks down its -z with y up, so OpenCV's
camera axes are its x, -y, -z), and ``x, y, z`` is the camera's centre in mm. Pose2Sim also
divides the distortion coefficients by 64; they are kept but not applied (crops and detections are
of the frames as recorded), which ``real_multiview`` checks by the reprojection error.
"""

from __future__ import annotations

import itertools
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

import numpy as np

from dfa_ray.data.validation import InputError
from dfa_ray.data.video import Camera, choose_camera
from dfa_ray.method.skeleton import MEDIAPIPE_JOINT_NAMES, MEDIAPIPE_TO_H36M, map_joints

# Qualisys stores focal lengths and principal points in subpixels of its sensor, 64 to a pixel.
_QUALISYS_SUBPIXELS = 64.0
# Qualisys' camera axes (x right, y up, z backwards) in OpenCV's (x right, y down, z forwards).
_QUALISYS_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
# The landmarks that say where a body is: used to tell which detections in two views are one person.
_BODY = tuple(
    MEDIAPIPE_JOINT_NAMES.index(name)
    for name in ("l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_hip", "r_hip", "l_knee", "r_knee")
)


@dataclass(frozen=True)
class CalibratedCamera:
    """A camera's intrinsics and pose: a world point ``X`` (mm) is at ``R @ X + t`` in its frame."""

    name: str
    size: tuple[int, int]  # width, height in pixels
    matrix: np.ndarray  # (3, 3) intrinsics
    rotation: np.ndarray  # (3, 3) world -> camera
    translation: np.ndarray  # (3,) mm
    distortion: tuple[float, ...] = ()
    source: str = ""  # where it was read from, in messages

    @property
    def projection(self) -> np.ndarray:
        """The ``(3, 4)`` matrix taking homogeneous world mm to homogeneous pixels."""
        return self.matrix @ np.hstack([self.rotation, self.translation[:, None]])

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixels ``(..., 2)`` of world points ``(..., 3)`` in mm (no lens distortion)."""
        camera = np.asarray(points, np.float64) @ self.rotation.T + self.translation
        pixels = camera @ self.matrix.T
        return pixels[..., :2] / pixels[..., 2:]

    def intrinsics(self) -> Camera:
        """The video path's ``Camera`` (fx, fy, cx, cy and the calibrated frame size)."""
        m = self.matrix
        values = (float(m[0, 0]), float(m[1, 1]), float(m[0, 2]), float(m[1, 2]))
        return Camera(values, f"{self.source} [{self.name}]", self.size, self.distortion)


def read_qca(path: str | os.PathLike) -> list[CalibratedCamera]:
    """Every camera of a Qualisys ``.qca.txt`` calibration, in file order (module docstring)."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise InputError(f"{path}: not a Qualisys calibration (.qca.txt is XML: {exc})") from None
    cameras = []
    for element in root.findall("cameras/camera"):
        name = element.get("serial", f"camera {len(cameras) + 1}")
        try:
            fov = {k: float(element.find("fov_video").get(k)) for k in ("left", "top", "right", "bottom")}
            intrinsic = {k: float(v) for k, v in element.find("intrinsic").attrib.items()}
            transform = {k: float(v) for k, v in element.find("transform").attrib.items()}
            fx, fy = (intrinsic[f"focalLength{a}"] / _QUALISYS_SUBPIXELS for a in "UV")
            cx = intrinsic["centerPointU"] / _QUALISYS_SUBPIXELS - fov["left"]
            cy = intrinsic["centerPointV"] / _QUALISYS_SUBPIXELS - fov["top"]
            to_camera = np.array([[transform[f"r{i}{j}"] for j in (1, 2, 3)] for i in (1, 2, 3)])
            centre = np.array([transform[a] for a in "xyz"])
            distortion = tuple(
                intrinsic[k] / _QUALISYS_SUBPIXELS
                for k in (
                    "radialDistortion1",
                    "radialDistortion2",
                    "tangentalDistortion1",
                    "tangentalDistortion2",
                )
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{path} [{name}]: needs fov_video, intrinsic and transform as Qualisys writes them ({exc!r})"
            ) from None
        size = (int(round(fov["right"] - fov["left"] + 1)), int(round(fov["bottom"] - fov["top"] + 1)))
        rotation = _QUALISYS_TO_OPENCV @ to_camera
        matrix = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        cameras.append(
            CalibratedCamera(name, size, matrix, rotation, -rotation @ centre, distortion, str(path))
        )
    if not cameras:
        raise InputError(f"{path}: no cameras/camera elements: not a Qualisys calibration")
    return cameras


def qca_camera(path: str | os.PathLike, camera: str | None = None) -> Camera:
    """One camera of a Qualisys ``.qca.txt`` for the video path, picked by its serial (``camera``;
    needed when the file has several)."""
    cameras = read_qca(path)
    return cameras[choose_camera(path, [(c.name,) for c in cameras], camera)].intrinsics()


# ------------------------------------------------------------------------------------ triangulation


def triangulate(pixels: np.ndarray, weights: np.ndarray, projections: np.ndarray) -> np.ndarray:
    """The world point ``(3,)`` whose projections best fit ``pixels`` ``(V, 2)``: a DLT whose two
    equations per view are scaled by ``weights`` ``(V,)``, with ``projections`` ``(V, 3, 4)``."""
    rows = []
    for (x, y), weight, p in zip(np.asarray(pixels, np.float64), weights, projections):
        rows += [weight * (x * p[2] - p[0]), weight * (y * p[2] - p[1])]
    # Pixels are ~1e3 and mm ~1e3: scaling the unknown's last entry keeps the system balanced.
    scale = np.diag([1.0, 1.0, 1.0, 1e-3])
    _, _, vt = np.linalg.svd(np.array(rows) @ scale)
    solution = scale @ vt[-1]
    return solution[:3] / solution[3]


@dataclass(frozen=True)
class Triangulation:
    """One person's triangulated landmarks and how well they fit."""

    points: np.ndarray  # (L, 3) world mm; NaN where not triangulated
    error_px: np.ndarray  # (L,) mean reprojection error over the views kept; NaN where not triangulated
    views: np.ndarray  # (L, V) bool: the views each landmark was triangulated from

    def h36m(self) -> tuple[np.ndarray, np.ndarray]:
        """H36M-17 world joints ``(17, 3)`` and validity ``(17,)`` (``MEDIAPIPE_TO_H36M``)."""
        found = np.isfinite(self.points).all(axis=1)
        return map_joints(np.where(found[:, None], self.points, 0.0), MEDIAPIPE_TO_H36M, found)


def triangulate_person(
    pixels: np.ndarray,
    visibility: np.ndarray,
    cameras: list[CalibratedCamera],
    min_visibility: float = 0.5,
    max_error_px: float = 15.0,
) -> Triangulation:
    """Each landmark of one person seen in several views: ``pixels`` ``(V, L, 2)`` and ``visibility``
    ``(V, L)``, NaN or 0 for a view that did not see the person. See the module docstring."""
    pixels, visibility = np.asarray(pixels, np.float64), np.nan_to_num(np.asarray(visibility, np.float64))
    projections = np.stack([camera.projection for camera in cameras])
    count = pixels.shape[1]
    points, errors = np.full((count, 3), np.nan), np.full(count, np.nan)
    views = np.zeros((count, len(cameras)), bool)
    for landmark in range(count):
        use = (visibility[:, landmark] >= min_visibility) & np.isfinite(pixels[:, landmark]).all(axis=1)
        while use.sum() >= 2:
            point = triangulate(pixels[use, landmark], visibility[use, landmark], projections[use])
            miss = np.full(len(cameras), -np.inf)
            miss[use] = [
                np.linalg.norm(cameras[v].project(point) - pixels[v, landmark]) for v in np.flatnonzero(use)
            ]
            if miss.max() <= max_error_px:
                points[landmark], errors[landmark], views[landmark] = point, miss[use].mean(), use
                break
            if use.sum() == 2:
                break  # two views that disagree: no point
            use[np.argmax(miss)] = False
    return Triangulation(points, errors, views)


# ------------------------------------------------------------------------------------- association


def fundamental(first: CalibratedCamera, second: CalibratedCamera) -> np.ndarray:
    """``F`` with ``x2^T F x1 = 0`` for the pixels ``x1``, ``x2`` of one world point in the two cameras."""
    rotation = second.rotation @ first.rotation.T
    t = second.translation - rotation @ first.translation
    cross = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    return np.linalg.inv(second.matrix).T @ cross @ rotation @ np.linalg.inv(first.matrix)


def epipolar_distance(first: np.ndarray, second: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Symmetric distance (pixels) of matched pixels ``(N, 2)`` in two views from each other's
    epipolar lines, the mean of both directions, per point."""
    x1 = np.hstack([first, np.ones((len(first), 1))])
    x2 = np.hstack([second, np.ones((len(second), 1))])
    line2, line1 = x1 @ f.T, x2 @ f  # lines in the second view, and in the first
    residual = np.abs(np.sum(x2 * line2, axis=1))
    return residual * (1 / np.hypot(*line2[:, :2].T) + 1 / np.hypot(*line1[:, :2].T)) / 2


def associate(
    detections: list[list[np.ndarray]],
    cameras: list[CalibratedCamera],
    max_distance_px: float = 40.0,
    min_visibility: float = 0.5,
) -> list[dict[int, int]]:
    """Group one frame's detections in each view into people: ``detections[v]`` holds view ``v``'s
    landmarks ``(33, >= 3)`` (x, y, visibility). Returns one ``{view: detection index}`` per person
    seen in at least two views.

    Two detections in different views are one person when the median epipolar distance of their
    body landmarks visible in both is at most ``max_distance_px``; pairs are joined closest first,
    never putting two detections of one view into one person.
    """
    pairs = []
    for a, b in itertools.combinations(range(len(cameras)), 2):
        f = fundamental(cameras[a], cameras[b])
        for i, first in enumerate(detections[a]):
            for j, second in enumerate(detections[b]):
                body = [k for k in _BODY if min(first[k, 2], second[k, 2]) >= min_visibility]
                if len(body) < 3:
                    continue
                distance = float(np.median(epipolar_distance(first[body, :2], second[body, :2], f)))
                if distance <= max_distance_px:
                    pairs.append((distance, (a, i), (b, j)))
    group_of = {(v, i): {v: i} for v, found in enumerate(detections) for i in range(len(found))}
    for _, first, second in sorted(pairs):
        one, other = group_of[first], group_of[second]
        if one is other or one.keys() & other.keys():
            continue
        one.update(other)
        for view, index in other.items():
            group_of[(view, index)] = one
    people = {id(group): group for group in group_of.values() if len(group) >= 2}
    return sorted(people.values(), key=lambda group: sorted(group.items()))


# ------------------------------------------------------------------------------------- consistency


def consistency(poses: np.ndarray, rotations: np.ndarray) -> float:
    """How far apart several cameras' root-relative predictions ``(V, 17, 3)`` (each in its camera's
    frame, mm) of one person at one instant are: each turned into the world frame by its camera's
    world -> camera ``rotations`` ``(V, 3, 3)``, the mean joint distance over all pairs of cameras."""
    poses, rotations = np.asarray(poses, np.float64), np.asarray(rotations, np.float64)
    if poses.ndim != 3 or poses.shape[0] < 2 or rotations.shape != (poses.shape[0], 3, 3):
        raise ValueError(
            f"need (V >= 2, J, 3) poses and (V, 3, 3) rotations, got {poses.shape}, {rotations.shape}"
        )
    world = np.einsum("vji,vkj->vki", rotations, poses)  # R^T p for each joint
    pairs = itertools.combinations(range(len(world)), 2)
    return float(np.mean([np.linalg.norm(world[a] - world[b], axis=1).mean() for a, b in pairs]))
