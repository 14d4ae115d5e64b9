"""Human3.6M, in the layout the h36m-fetch tool produces, to dfa-ray rows (see ``crop`` for the schema).

**Getting the data.** Register at http://vision.imar.ro/human3.6m/, then run h36m-fetch
(https://github.com/anibali/h36m-fetch): ``download_all.py``, ``extract_all.py``, ``process_all.py``.
Its ``processed/`` directory is the ``--root`` here::

    python jobs/prepare_data.py h36m --root /data/h36m/processed --split train --every 5 --out URI
    python jobs/prepare_data.py h36m --root /data/h36m/processed --split test --out URI

**Published layout** (h36m-fetch ``process_all.py``)::

    <root>/<subject>/<Action>-<subaction>/annot.h5                         e.g. S9/Directions-1/annot.h5
    <root>/<subject>/<Action>-<subaction>/imageSequence/<camera>/img_%06d.jpg

One ``annot.h5`` per subject and sub-action, its four cameras concatenated along the first axis:

- ``pose/2d`` (N, 32, 2): pixels of the full frame (1000 x 1002 or 1000 x 1000), from the official
  ``Poses_D2_Positions`` (the full camera model, lens distortion included);
- ``pose/3d`` (N, 32, 3): camera frame, millimetres, from ``Poses_D3_Positions_mono``;
  ``pose/3d-univ`` is the same in a normalised skeleton scale and is not used;
- ``intrinsics/<camera>`` (4,): ``alpha_x, x_0, alpha_y, y_0`` -- i.e. **fx, cx, fy, cy** in that
  order -- a least-squares pinhole fit of ``pose/2d`` against ``pose/3d`` (so the pinhole projection
  differs from ``pose/2d`` by the small residual lens distortion);
- ``frame`` (N,): 1-based video frame number, the number in ``img_%06d.jpg``;
- ``camera``, ``subject``, ``action``, ``subaction`` (N,): integer ids.

Only the frames h36m-fetch selected are there (by default every 64th frame of S9 and S11 and, for the
training subjects, frames where a joint moved at least 40 mm); ``every`` subsamples those further.

**Conventions.** Protocol 1 splits: train S1, S5, S6, S7, S8; test S9, S11. The 32 raw joints become
the 17 of VideoPose3D (``H36M32_TO_17``). ``action`` is the directory's action name without the
sub-action number ("Directions-1" -> "Directions"); ``frame_id`` keeps it:
``"<subject>/<Action>-<subaction>/<camera>/<frame:06d>"``, e.g. ``"S9/Directions-1/54138969/000123"``.
The crop box comes from ``pose/2d``, ``joints_2d`` is ``pose/2d`` in crop pixels, ``joints_3d`` is
``pose/3d`` in mm, and the camera is the fitted pinhole moved into the crop.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from dfa_ray.data.crop import CropSpec, person_row, read_rgb
from dfa_ray.method.skeleton import NUM_JOINTS

SPLITS: dict[str, tuple[str, ...]] = {"train": ("S1", "S5", "S6", "S7", "S8"), "test": ("S9", "S11")}
CAMERAS = ("54138969", "55011271", "58860488", "60457274")

# VideoPose3D keeps these of the 32 raw joints (it removes 4, 5, 9, 10, 11, 16, 20-24, 28-31):
# pelvis, right leg, left leg, spine, thorax, neck/nose, head, left arm, right arm.
H36M32_TO_17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

_SEQUENCE_NAME = re.compile(r"^(?P<action>.+?)[- ](?P<subaction>\d+)$")
_DATASETS = ("pose/2d", "pose/3d", "frame", "camera")


def parse_sequence_name(name: str) -> tuple[str, str]:
    """Split a sequence name ("Directions-1", or the raw "Directions 1") into action and sub-action."""
    match = _SEQUENCE_NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not an h36m-fetch sequence directory name like 'Directions-1'")
    return match["action"], match["subaction"]


def read_annotations(path: Path) -> dict:
    """The datasets of one ``annot.h5`` this converter uses, checked for shape."""
    with h5py.File(path, "r") as f:
        missing = [name for name in (*_DATASETS, "intrinsics") if name not in f]
        if missing:
            raise KeyError(f"{path}: missing {missing}; expected an annot.h5 written by h36m-fetch")
        data = {name: f[name][()] for name in _DATASETS}
        data["intrinsics"] = {camera: f["intrinsics"][camera][()] for camera in f["intrinsics"]}
    n = len(data["frame"])
    expected = {"pose/2d": (n, 32, 2), "pose/3d": (n, 32, 3), "camera": (n,)}
    for name, shape in expected.items():
        if data[name].shape != shape:
            raise ValueError(f"{path}: {name} has shape {data[name].shape}, expected {shape}")
    return data


def _pinhole(alpha_x_x0_alpha_y_y0: np.ndarray) -> np.ndarray:
    # h36m-fetch stores (alpha_x, x_0, alpha_y, y_0); dfa-ray cameras are (fx, fy, cx, cy).
    fx, cx, fy, cy = np.asarray(alpha_x_x0_alpha_y_y0, dtype=np.float64)
    return np.array([fx, fy, cx, cy])


def sequence_rows(
    sequence_dir: Path,
    every: int = 1,
    cameras: Sequence[str] = CAMERAS,
    crop: CropSpec = CropSpec(),
) -> Iterator[dict]:
    """Rows of one h36m-fetch sequence directory (``<root>/<subject>/<Action>-<subaction>``)."""
    subject = sequence_dir.parent.name
    action, _ = parse_sequence_name(sequence_dir.name)
    annot_path = sequence_dir / "annot.h5"
    data = read_annotations(annot_path)
    row_cameras = np.array([str(int(c)) for c in data["camera"]])
    valid = np.ones(NUM_JOINTS, np.uint8)
    for camera in cameras:
        indices = np.flatnonzero(row_cameras == camera)
        if len(indices) == 0:
            continue  # h36m-fetch skips views it could not process (e.g. S11 Directions-2 54138969).
        if camera not in data["intrinsics"]:
            raise KeyError(f"{annot_path}: no intrinsics/{camera} for its {len(indices)} frames")
        intrinsics = _pinhole(data["intrinsics"][camera])
        indices = indices[np.argsort(data["frame"][indices], kind="stable")][::every]
        for i in indices:
            frame_number = int(data["frame"][i])
            image_path = sequence_dir / "imageSequence" / camera / f"img_{frame_number:06d}.jpg"
            yield person_row(
                f"{subject}/{sequence_dir.name}/{camera}/{frame_number:06d}",
                read_rgb(image_path),
                intrinsics,
                data["pose/2d"][i][list(H36M32_TO_17)],
                valid,
                data["pose/3d"][i][list(H36M32_TO_17)],
                subject,
                action,
                crop,
            )


def convert_h36m(
    root: Path,
    split: str,
    every: int = 1,
    cameras: Sequence[str] | None = None,
    crop: CropSpec = CropSpec(),
) -> Iterator[dict]:
    """Rows of a Protocol 1 split of h36m-fetch's ``processed/`` directory, every ``every``-th frame."""
    if split not in SPLITS:
        raise ValueError(f"unknown Human3.6M split {split!r}; choose from {tuple(SPLITS)}")
    if every < 1:
        raise ValueError(f"every must be a positive integer, got {every}")
    cameras = CAMERAS if cameras is None else tuple(str(c) for c in cameras)
    unknown = sorted(set(cameras) - set(CAMERAS))
    if unknown:
        raise ValueError(f"unknown Human3.6M cameras {unknown}; choose from {CAMERAS}")
    root = Path(root)
    for subject in SPLITS[split]:
        subject_dir = root / subject
        sequences = sorted(p.parent for p in subject_dir.glob("*/annot.h5"))
        if not sequences:
            raise FileNotFoundError(
                f"{subject_dir}: no <Action>-<subaction>/annot.h5 found; "
                "--root must be h36m-fetch's processed/ directory"
            )
        for sequence_dir in sequences:
            yield from sequence_rows(sequence_dir, every, cameras, crop)
