"""SURREAL (synthetic SMPL bodies rendered by Blender) to dfa-ray rows (see ``crop`` for the schema).

**Getting the data.** Accept the licence at https://www.di.ens.fr/willow/research/surreal/data/ and
download ``SURREAL_v1.tar.gz`` (or only the ``*_info.mat`` and ``*.mp4`` files with the repository's
``download/download_surreal.sh``). ``--root`` is the ``SURREAL/data/cmu`` directory::

    python jobs/prepare_data.py surreal --root /data/SURREAL/data/cmu --split train --every 10 --out URI

**Published layout** (https://github.com/gulvarol/surreal, README "Download" and ``main_part1.py``)::

    <root>/<split>/run<k>/<sequence>/<sequence>_c<NNNN>.mp4       320 x 240 RGB video, 30 fps
    <root>/<split>/run<k>/<sequence>/<sequence>_c<NNNN>_info.mat

with splits ``train``, ``val``, ``test``, runs 0-2 (clips overlapping 50 / 30 / 70 %), sequences named
after the CMU motion capture trial (``01_01``, ``ung_104_26``) and clips ``c0001``... ``_info.mat``
holds, among others, ``joints2D`` (2 x 24 x T single, pixels, rounded), ``joints3D`` (3 x 24 x T
single, world metres) and ``camLoc`` (3 x 1, the Blender camera location, fixed for the clip).

**Camera** (``datageneration/misc/3Dto2D``: ``getIntrinsicBlender.m``, ``getExtrinsicBlender.m``,
``main.m``): a 60 mm lens on a 32 mm sensor at 320 x 240 px, so f = 600 px; the camera looks along
world -x with fixed rotation ``R_WORLD_TO_CAMERA`` (x right, y down, z forward) and translation
``-R @ camLoc``. Blender's principal point (160, 120) is measured from the image corner; in dfa-ray's
pixel-centre convention it is (159.5, 119.5). ``joints2D`` is ``round(K [R|t] joints3D)`` in the corner
convention, so the converter checks every clip against it (to within rounding) and uses the exact
projection for ``joints_2d``.

**Left and right.** The released joints carry the SMPL names of the Blender bones, but those are
mirrored: the joint stored as SMPL "left hip" is the rendered person's right hip. The SURREAL authors
say so (``misc/smpl_relations/smpl_relations.py``: "note that left/right are swapped") and BodyNet
(github.com/gulvarol/bodynet ``opts.lua``, ``jointsIx``) maps SURREAL's L_Ankle to MPII's right ankle.
The converter swaps them back before mapping SMPL-24 to H36M-17 with ``skeleton.SMPL_TO_H36M``.

**Conventions.** ``subject`` is the CMU mocap subject (``CMU-104`` for ``104_26`` and ``ung_104_26``),
``action`` the motion sequence name (SURREAL has no action labels), and ``frame_id``
``"<split>/run<k>/<clip>/<frame:06d>"`` with the 0-based frame of the clip's video, e.g.
``"train/run0/01_01_c0001/000012"``. Frames whose ``joints3D`` are all zero (unfilled by the renderer)
and frames with fewer than ``min_in_frame`` of the 17 joints inside the image are skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from dfa_ray.data.crop import CropSpec, person_row
from dfa_ray.method.skeleton import SMPL_JOINT_NAMES, SMPL_TO_H36M, map_joints

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FRAME_WIDTH, FRAME_HEIGHT = 320, 240
FOCAL_PX = 60.0 * FRAME_WIDTH / 32.0  # lens mm * width px / sensor width mm
INTRINSICS = np.array([FOCAL_PX, FOCAL_PX, FRAME_WIDTH / 2 - 0.5, FRAME_HEIGHT / 2 - 0.5])
# getExtrinsicBlender.m: R_bcam2cv @ R_world2bcam, the same for every SURREAL clip.
R_WORLD_TO_CAMERA = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
# Blender reports pixels from the image corner: the pixel-centre convention is half a pixel less.
_CORNER_TO_CENTRE = 0.5
# joints2D is rounded to whole pixels, so an exact projection lies within 0.5 px of it.
_JOINTS2D_TOLERANCE_PX = 1.0

_CLIP_FILE = re.compile(r"^(?P<clip>(?P<sequence>.+)_c\d{4})_info\.mat$")
_CMU_SUBJECT = re.compile(r"^(?:ung_)?(?P<subject>\d+)_\d+$")


def _mirror_permutation(names: Sequence[str]) -> np.ndarray:
    swapped = {"l_": "r_", "r_": "l_"}
    return np.array(
        [names.index(swapped[n[:2]] + n[2:]) if n[:2] in swapped else i for i, n in enumerate(names)]
    )


# SURREAL joint i is the person's joint MIRROR[i] in SMPL order (see "Left and right" above).
MIRROR = _mirror_permutation(SMPL_JOINT_NAMES)


def subject_and_action(sequence: str) -> tuple[str, str]:
    """``subject`` (the CMU mocap subject) and ``action`` (the sequence name) of a SURREAL sequence."""
    match = _CMU_SUBJECT.match(sequence)
    return (f"CMU-{match['subject']}" if match else sequence), sequence


def world_to_camera_mm(joints_world_m: np.ndarray, cam_loc: np.ndarray) -> np.ndarray:
    """World joints ``(..., 3)`` in metres to camera-frame millimetres (x right, y down, z forward)."""
    cam_loc = np.asarray(cam_loc, dtype=np.float64).reshape(3)
    return 1000.0 * (np.asarray(joints_world_m, dtype=np.float64) - cam_loc) @ R_WORLD_TO_CAMERA.T


def project(joints_mm: np.ndarray, intrinsics: np.ndarray = INTRINSICS) -> np.ndarray:
    """Pinhole projection of camera-frame joints ``(..., 3)`` to pixels ``(..., 2)``."""
    fx, fy, cx, cy = intrinsics
    z = joints_mm[..., 2]
    return np.stack([fx * joints_mm[..., 0] / z + cx, fy * joints_mm[..., 1] / z + cy], axis=-1)


def read_info(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``joints2D`` (T, 24, 2), ``joints3D`` (T, 24, 3) and ``camLoc`` (3,) of an ``_info.mat`` file."""
    info = scipy.io.loadmat(path)
    missing = [key for key in ("joints2D", "joints3D", "camLoc") if key not in info]
    if missing:
        raise KeyError(f"{path}: missing {missing}; expected a SURREAL _info.mat file")
    # MATLAB drops a trailing singleton dimension, so a one-frame clip loads as 2 x 24.
    joints_2d = np.asarray(info["joints2D"], dtype=np.float64).reshape(2, 24, -1).transpose(2, 1, 0)
    joints_3d = np.asarray(info["joints3D"], dtype=np.float64).reshape(3, 24, -1).transpose(2, 1, 0)
    cam_loc = np.asarray(info["camLoc"], dtype=np.float64).reshape(3)
    if len(joints_2d) != len(joints_3d):
        raise ValueError(f"{path}: joints2D has {len(joints_2d)} frames but joints3D has {len(joints_3d)}")
    return joints_2d, joints_3d, cam_loc


def clip_rows(
    info_path: Path,
    split: str,
    every: int = 1,
    min_in_frame: int = 12,
    crop: CropSpec = CropSpec(),
) -> Iterator[dict]:
    """Rows of one SURREAL clip (its ``_info.mat`` and the ``.mp4`` beside it), every ``every``-th frame."""
    match = _CLIP_FILE.match(info_path.name)
    if match is None:
        raise ValueError(f"{info_path}: not a SURREAL <sequence>_c<NNNN>_info.mat file")
    clip, run = match["clip"], info_path.parent.parent.name
    subject, action = subject_and_action(match["sequence"])
    joints_2d_released, joints_world, cam_loc = read_info(info_path)
    joints_cam = world_to_camera_mm(joints_world, cam_loc)
    filled = np.any(joints_world != 0, axis=(1, 2))
    miss = np.abs(project(joints_cam[filled]) + _CORNER_TO_CENTRE - joints_2d_released[filled])
    if miss.size and miss.max() > _JOINTS2D_TOLERANCE_PX:
        bad = np.flatnonzero(filled)[int(np.argmax(miss.max(axis=(1, 2))))]
        raise ValueError(
            f"{info_path}: frame {bad}: projecting joints3D from camLoc misses joints2D by "
            f"{miss.max():.1f} px; the file does not follow SURREAL's camera conventions"
        )
    video_path = info_path.with_name(f"{clip}.mp4")
    capture = cv2.VideoCapture(str(video_path))
    if not capture.isOpened():
        raise FileNotFoundError(f"{video_path}: video missing or unreadable")
    try:
        for t in range(len(joints_world)):
            # grab() every frame (the codec decodes sequentially) but convert only the wanted ones.
            if not capture.grab():
                log.warning(
                    "%s: video ends at frame %d but the annotations have %d", video_path, t, len(joints_world)
                )
                return
            if t % every or not filled[t]:
                continue
            ok, bgr = capture.retrieve()
            if not ok:
                raise ValueError(f"{video_path}: frame {t} could not be decoded")
            if bgr.shape[:2] != (FRAME_HEIGHT, FRAME_WIDTH):
                raise ValueError(
                    f"{video_path}: frame {t} is {bgr.shape[1]}x{bgr.shape[0]}, "
                    f"expected SURREAL's {FRAME_WIDTH}x{FRAME_HEIGHT}"
                )
            joints_3d, valid = map_joints(joints_cam[t][MIRROR], SMPL_TO_H36M)
            joints_2d = project(joints_3d)
            inside = (joints_2d >= -0.5) & (joints_2d <= np.array([FRAME_WIDTH, FRAME_HEIGHT]) - 0.5)
            if int(np.all(inside, axis=1).sum()) < min_in_frame:
                continue
            yield person_row(
                f"{split}/{run}/{clip}/{t:06d}",
                cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                INTRINSICS,
                joints_2d,
                valid,
                joints_3d,
                subject,
                action,
                crop,
            )
    finally:
        capture.release()


def convert_surreal(
    root: Path,
    split: str,
    every: int = 1,
    runs: Sequence[int] | None = None,
    min_in_frame: int = 12,
    crop: CropSpec = CropSpec(),
) -> Iterator[dict]:
    """Rows of a SURREAL split (``<root>/<split>/run*/``), every ``every``-th frame of each clip."""
    if split not in SPLITS:
        raise ValueError(f"unknown SURREAL split {split!r}; choose from {SPLITS}")
    if every < 1:
        raise ValueError(f"every must be a positive integer, got {every}")
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: missing; --root must be SURREAL's data/cmu directory")
    run_dirs = sorted(split_dir.glob("run*"))
    if runs is not None:
        run_dirs = [d for d in run_dirs if d.name in {f"run{r}" for r in runs}]
    for run_dir in run_dirs:
        for info_path in sorted(run_dir.glob("*/*_info.mat")):
            yield from clip_rows(info_path, split, every, min_in_frame, crop)
