"""MPII Human Pose (2D only) to dfa-ray rows (see ``crop`` for the schema).

**Getting the data.** From http://human-pose.mpi-inf.mpg.de/ download the images
(``mpii_human_pose_v1.tar.gz``, which unpacks to ``images/``) and the annotations
(``mpii_human_pose_v1_u12_2.zip``, which unpacks to ``mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat``)
into one directory, the ``--root``::

    python jobs/prepare_data.py mpii --root /data/mpii --split train --out URI

**Published layout** (the MATLAB struct ``RELEASE`` in the .mat file, as its README describes)::

    RELEASE.annolist(i).image.name                    image file name under images/
    RELEASE.annolist(i).annorect(r).annopoints.point  1 x K struct: x, y (1-based MATLAB pixels),
                                                      id (0-15, MPII joint order), is_visible
    RELEASE.annolist(i).annorect(r).scale, .objpos    person height / 200 px, rough centre
    RELEASE.annolist(i).vididx                        index into RELEASE.video_list (YouTube ids)
    RELEASE.img_train(i)                              1 for training images (test joints are withheld)
    RELEASE.act(i).act_name, .cat_name                activity and its category ("" when unknown)

``scipy.io.loadmat(..., struct_as_record=False, squeeze_me=True)`` turns a 1 x 1 struct into a
``mat_struct`` and a 1 x K one into an array of them; empty fields are empty arrays; ``is_visible`` is
sometimes a number, sometimes the string "1" or "0" and sometimes empty. Joints that were not
annotated are simply absent from ``point``; persons without ``annopoints`` (and every person of a test
image) have no joints at all.

**Conventions.** One row per annotated person of a training image with at least ``min_joints`` valid
H36M joints after ``skeleton.MPII_TO_H36M`` (at most 15 can be: MPII has no spine and no nose). A
joint is valid when it is annotated; occluded joints (``is_visible`` 0) carry an annotated position
and stay valid. MPII coordinates are 1-based, so 1 is subtracted. MPII has no camera calibration:
each image is taken as shot by a nominal pinhole with the principal point at the image centre and a
focal length equal to the image diagonal (a ~53 degree diagonal field of view, as CLIFF assumes for
in-the-wild photos); the crop camera follows from it like for the 3D datasets, so its principal point
is off the crop centre for off-centre people. ``joints_3d`` is None. ``frame_id`` is
``"<image name without .jpg>/<r>"`` with ``r`` the 1-based index of the person in ``annorect``;
``subject`` is the YouTube video id (people in one video are likely the same) or "unknown";
``action`` is the activity name or "unknown".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import mat_struct

from dfa_ray.data.crop import CropSpec, person_row, read_rgb
from dfa_ray.method.skeleton import MPII_JOINT_NAMES, MPII_TO_H36M, map_joints

SPLITS = ("train",)
ANNOTATION_FILES = ("mpii_human_pose_v1_u12_1.mat", "mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat")
_NUM_MPII = len(MPII_JOINT_NAMES)


def _items(value: object) -> list:
    # squeeze_me leaves a struct array of one element as the bare struct, and an empty field as [].
    if isinstance(value, mat_struct):
        return [value]
    if isinstance(value, np.ndarray):
        return list(value.flat) if value.dtype == object else []
    return []


def _number(value: object) -> float | None:
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.item()
    try:
        return float(value)  # is_visible is sometimes the string "1"
    except (TypeError, ValueError):
        return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def nominal_intrinsics(width: int, height: int) -> np.ndarray:
    """The assumed full-image camera of an uncalibrated photo: focal = diagonal, centred principal point."""
    focal = float(np.hypot(width, height))
    return np.array([focal, focal, (width - 1) / 2.0, (height - 1) / 2.0])


def person_joints(rect: mat_struct, where: str) -> tuple[np.ndarray, np.ndarray] | None:
    """MPII-16 joints (0-based pixels) and their annotation flags of one ``annorect`` entry, or None."""
    annopoints = getattr(rect, "annopoints", None)
    if not isinstance(annopoints, mat_struct):
        return None
    joints = np.zeros((_NUM_MPII, 2))
    annotated = np.zeros(_NUM_MPII, np.uint8)
    for point in _items(getattr(annopoints, "point", None)):
        joint_id, x, y = (_number(getattr(point, name, None)) for name in ("id", "x", "y"))
        if joint_id is None or x is None or y is None:
            continue
        if not (0 <= joint_id < _NUM_MPII and joint_id == int(joint_id)):
            raise ValueError(f"{where}: joint id {joint_id} is not an MPII joint (0-15)")
        joints[int(joint_id)] = (x - 1.0, y - 1.0)  # MATLAB's first pixel is 1
        annotated[int(joint_id)] = 1
    return joints, annotated


def find_annotation(root: Path) -> Path:
    """The official annotation .mat file under ``root``, where the download unpacks it."""
    for name in ANNOTATION_FILES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    raise FileNotFoundError(f"{root}: none of {ANNOTATION_FILES}; download mpii_human_pose_v1_u12_2.zip")


def convert_mpii(
    root: Path,
    split: str = "train",
    min_joints: int = 8,
    crop: CropSpec = CropSpec(),
) -> Iterator[dict]:
    """Rows of the annotated people of MPII's training images (``<root>/images/`` and the .mat file)."""
    if split not in SPLITS:
        raise ValueError(f"MPII split {split!r} has no public joint annotations; choose from {SPLITS}")
    annotation = find_annotation(root)
    release = scipy.io.loadmat(annotation, struct_as_record=False, squeeze_me=True)["RELEASE"]
    annolist = _items(release.annolist)
    img_train = np.atleast_1d(release.img_train)
    acts = _items(release.act)
    videos = [_text(v) for v in np.atleast_1d(release.video_list)]
    if not (len(annolist) == len(img_train) == len(acts)):
        raise ValueError(
            f"{annotation}: annolist, img_train and act differ in length "
            f"({len(annolist)}, {len(img_train)}, {len(acts)})"
        )
    for image_index, entry in enumerate(annolist):
        if not img_train[image_index]:
            continue
        name = _text(getattr(entry.image, "name", None))
        people = []
        for r, rect in enumerate(_items(entry.annorect), start=1):
            parsed = person_joints(rect, f"{annotation}: {name} person {r}")
            if parsed is None:
                continue
            joints, valid = map_joints(parsed[0], MPII_TO_H36M, parsed[1])
            if int(valid.sum()) >= min_joints:
                people.append((r, joints, valid))
        if not people:
            continue
        frame = read_rgb(Path(root) / "images" / name)
        vididx = _number(getattr(entry, "vididx", None))
        subject = videos[int(vididx) - 1] if vididx is not None and 1 <= vididx <= len(videos) else "unknown"
        action = _text(getattr(acts[image_index], "act_name", None)) or "unknown"
        intrinsics = nominal_intrinsics(frame.shape[1], frame.shape[0])
        for r, joints, valid in people:
            yield person_row(
                f"{Path(name).stem}/{r}", frame, intrinsics, joints, valid, None, subject, action, crop
            )
