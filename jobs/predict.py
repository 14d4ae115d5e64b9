"""Run a checkpoint on image files or schema-v1 records; write the predictions and a picture per frame.

    python jobs/predict.py --checkpoint models/source/model.pt --images me.jpg you.png --out preds/
    python jobs/predict.py --checkpoint runs/demo-<time>/model.pt --data data/real-test --out preds/
    python jobs/predict.py --checkpoint s3://dfa-ray/runs/demo/pretrain --data URI --n 32 --out preds/

**Inputs.** ``--images``: PNG/JPEG (anything OpenCV reads) files, local or ``s3://``, of any size.
The network was trained on square crops centred on one person, so each image should be such a
crop: a person-centred picture in which the person fills most of the frame. A non-square image is
centre-cropped to a square (the shorter side), then resized to the model's input size. ``--data``:
a schema-v1 dataset (local directory, ``s3://bucket/prefix`` or one ``.parquet`` file); its first
``--n`` frames (default 16, 0 for all) are used, crops resized to the model's input size as in training.

**Outputs** under ``--out`` (a new local directory or ``s3://`` prefix; one that already holds a
``predictions.jsonl`` is refused):

- ``predictions.jsonl``, one JSON object per frame: ``frame_id`` (records) or ``file`` (image
  files); ``png`` (the picture's file name); ``joints_normalised`` 17 x 3 (the model's normalised
  space, see ``dfa_ray.method.heatmaps``; each crop's prediction averaged with its mirror image's,
  the flip test every evaluation uses, unless ``--no-flip-test``); ``joints_2d`` 17 x 2 pixels
  (of the stored crop for records, of the original image for files); ``joints_mm`` 17 x 3
  root-relative millimetres (camera axes: x right, y down, z forward; the pelvis at 0), for every
  frame; ``camera`` (fx, fy, cx, cy of the square crop in its own pixels); ``root_depth_mm`` and
  ``root_depth_source`` (``joints_3d``, ``bone-length prior (h36m)`` or ``(mediapipe)``, or
  ``--root-depth-mm``: where the depth that sets the millimetre scale came from); ``note`` (the
  same in words).
- ``<name>.png`` per frame, ``2P`` pixels wide and ``P`` high (``P`` = ``--panel-size``, default 256):
  on the left the input crop at ``P x P`` with the predicted 2D skeleton, on the right the predicted
  3D skeleton, orthographic, seen from a viewpoint turned 45 degrees to the camera's left about the
  pelvis and raised 20 degrees (fitted to the panel, so it shows shape, not size). Left limbs are
  yellow, right limbs cyan.
  ``<name>`` is the file's name without extension, or the frame_id, with every character other than
  letters, digits, ``.``, ``_`` and ``-`` replaced by ``_`` (a repeated name gets ``-2``, ``-3``...).
- with ``--sheet K``, ``sheet.png``: K of those pictures, evenly spaced through the frames in the
  order read (a video's frames in time), two to a row, each captioned with its frame_id or file.

**Millimetres.** Normalised z is in units of the crop's half-width at the root's depth, so metric
joints need the crop camera and the root (pelvis) depth. For records the camera is the record's.
A record with ``joints_3d`` gets its true root depth (MargiPose's evaluation protocol). A record
without (unlabeled footage, e.g. from ``prepare_data.py video``) gets the root depth of a PRIOR: the
person is ASSUMED to be a nominal adult of the dataset's skeleton (``records.skeleton``), at the
depth where the predicted bone lengths best match that skeleton's (``heatmaps.root_depth_from_bones``).
That is Human3.6M's 1.75 m adult (``skeleton.NOMINAL_BONE_MM``) unless the checkpoint or the records
say the joints are a detector's: ``prepare_data.py video`` keeps MediaPipe's 2D and says so, a model
adapted to them (or to MediaPipe's 2D the driver found for a target without any) learns MediaPipe's
joints and its checkpoint says so (``info["skeleton"]``, which comes first), and their bones are
MediaPipe's own estimate of people (``skeleton.MEDIAPIPE_BONE_MM``: shorter thighs, the nose and
head further above the shoulders).
On Pose2Sim's calibrated footage that prior took 7-21 mm off the adapted models' MPJPE
(docs/data.md). The depth only scales the root-relative pose, so shape
(PA-MPJPE) is untouched and the focal length hardly matters; a short or tall person comes out at a
nominal adult's size. Its cost, measured by ``benchmarks/depth_prior.py`` with the shipped source
model on 1,000 synthetic-real test frames: MPJPE 179.2 mm with the prior against 164.6 mm with the
true root depth (+9 %; PA-MPJPE 107.0 mm either way), the root depth 15 % off (median). On the true
poses the prior alone is 6 % off and costs 35 mm MPJPE: the test subjects are 0.88 to 1.1 times
the nominal adult's size.

For image files there is no calibration, so a nominal camera is ASSUMED, as the MPII converter does:
focal length = the original image's diagonal in pixels, principal point at its centre, and the root
ASSUMED at ``--root-depth-mm`` (default 5000 mm). Root-relative millimetres scale linearly with that
depth, so they are a plausible shape at a guessed size, not a measurement.

Exit codes: 0 success; 2 an unusable input (checkpoint, image or dataset missing or unreadable),
an existing output, or bad usage, with a one-line error naming it on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import NamedTuple

import cv2
import numpy as np
import torch

from dfa_ray import storage
from dfa_ray.cli import exit_code
from dfa_ray.data import records
from dfa_ray.data.images import decode_image
from dfa_ray.data.mpii import nominal_intrinsics
from dfa_ray.data.preview import draw_skeleton, save_png
from dfa_ray.data.records import dataset_files, read_records
from dfa_ray.data.schema import RecordError, table_to_rows
from dfa_ray.method import checkpoints, heatmaps
from dfa_ray.method.model import predict
from dfa_ray.method.skeleton import BONE_PRIORS, H36M, NUM_JOINTS, ROOT
from dfa_ray.storage import StorageError

# Errors that mean "this input or output is unusable": reported in one line, exit code 2.
_INPUT_ERRORS = (RecordError, StorageError, FileNotFoundError, FileExistsError, ValueError)

PREDICTIONS = "predictions.jsonl"
DEFAULT_ROOT_DEPTH_MM = 5000.0
# The 3D panel's fixed view: turned about the vertical axis, then tilted to look from above.
VIEW_YAW_DEGREES = 45.0
VIEW_ELEVATION_DEGREES = 20.0
_FILE_NOTE = (
    "assumed camera (focal = image diagonal, principal point at the image centre) and assumed root "
    "depth {depth:g} mm: millimetres scale with that guess"
)
_RECORD_NOTE = "record camera and true root depth from joints_3d"
_PRIOR_NOTE = (
    "record camera; no joints_3d, so the root depth is the bone-length prior's: the pose scaled to a "
    "nominal adult of the {skeleton} skeleton, millimetres scale with that assumption"
)


class Frame(NamedTuple):
    """One input: its square crop at full resolution and what turns predictions into pixels and mm."""

    key: str  # "frame_id" or "file"
    source: str  # the frame_id or the file URI
    name: str  # the base name of its picture (before de-duplication)
    crop: np.ndarray  # (S, S, 3) uint8 RGB
    camera: np.ndarray  # (4,) fx, fy, cx, cy of the crop
    root_depth: float | None  # mm; None: the bone-length prior's, from the prediction
    skeleton: str  # the prior's skeleton (skeleton.BONE_PRIORS), the dataset's (records.skeleton)
    offset: tuple[int, int]  # crop origin in the original image's pixels
    depth_source: str  # where the root depth comes from (the output's root_depth_source)
    note: str


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def safe_name(text: str) -> str:
    """``text`` usable as a file name: characters other than letters, digits, ``._-`` become ``_``."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", text).strip(".")
    return name or "frame"


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """A square image at ``size`` pixels (area filter when shrinking, as ``decode_resized`` does)."""
    if image.shape[0] == size:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def image_frame(uri: str, root_depth: float) -> Frame:
    """An image file, centre-cropped to a square, with the nominal camera of an uncalibrated photo."""
    data = storage.read_bytes(uri)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    except cv2.error:
        bgr = None
    if bgr is None:
        raise ValueError(f"{uri}: not an image OpenCV can decode")
    height, width = bgr.shape[:2]
    side = min(height, width)
    x0, y0 = (width - side) // 2, (height - side) // 2
    crop = cv2.cvtColor(bgr[y0 : y0 + side, x0 : x0 + side], cv2.COLOR_BGR2RGB)
    camera = nominal_intrinsics(width, height) - np.array([0.0, 0.0, x0, y0])
    stem = str(uri).rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return Frame(
        key="file",
        source=str(uri),
        name=safe_name(stem),
        crop=crop,
        camera=camera,
        root_depth=root_depth,
        skeleton=H36M,
        offset=(x0, y0),
        depth_source="--root-depth-mm",
        note=_FILE_NOTE.format(depth=root_depth),
    )


def record_frames(uri: str, n: int, skeleton: str | None = None) -> list[Frame]:
    """The first ``n`` frames (all for 0) of a schema-v1 dataset, reading only the files needed; the
    depth prior's ``skeleton`` is the model's where it names one, else the dataset's."""
    columns = ["frame_id", "image", "joints_3d", "camera"]
    rows: list[dict] = []
    for file_uri in dataset_files(uri):
        table = read_records(file_uri, columns=columns)
        rows += table_to_rows(table if n == 0 else table.slice(0, n - len(rows)))
        if n and len(rows) >= n:
            break
    if skeleton is not None and skeleton not in BONE_PRIORS:
        raise ValueError(
            f"the checkpoint's skeleton {skeleton!r} is unknown (known: {', '.join(BONE_PRIORS)})"
        )
    frames, skeleton = [], skeleton or records.skeleton(uri)
    for row in rows:
        frame_id = str(row["frame_id"])
        joints_3d = row.get("joints_3d")
        root_depth = None
        if joints_3d is not None and np.isfinite(joints_3d[ROOT, 2]) and joints_3d[ROOT, 2] > 0:
            root_depth = float(joints_3d[ROOT, 2])
        frames.append(
            Frame(
                key="frame_id",
                source=frame_id,
                name=safe_name(frame_id),
                crop=decode_image(row["image"], frame_id),
                camera=np.asarray(row["camera"], np.float64),
                root_depth=root_depth,
                skeleton=skeleton,
                offset=(0, 0),
                depth_source=f"bone-length prior ({skeleton})" if root_depth is None else "joints_3d",
                note=_PRIOR_NOTE.format(skeleton=skeleton) if root_depth is None else _RECORD_NOTE,
            )
        )
    return frames


def view_rotation(
    yaw_degrees: float = VIEW_YAW_DEGREES, elevation_degrees: float = VIEW_ELEVATION_DEGREES
) -> np.ndarray:
    """The 3D panel's rotation of camera-frame points (x right, y down, z forward): yaw, then tilt.

    Seen through it, the pose looks as from a viewpoint turned ``yaw_degrees`` to the camera's left
    about the root and raised ``elevation_degrees`` above it.
    """
    a, e = np.radians(yaw_degrees), np.radians(elevation_degrees)
    yaw = np.array([[np.cos(a), 0.0, -np.sin(a)], [0.0, 1.0, 0.0], [np.sin(a), 0.0, np.cos(a)]])
    # A positive tilt moves far points up the picture (smaller y): the view from above.
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(e), -np.sin(e)], [0.0, np.sin(e), np.cos(e)]])
    return tilt @ yaw


def draw_3d(joints: np.ndarray, size: int, label: str = "") -> np.ndarray:
    """A ``size``-pixel panel with root-relative 3D joints ``(17, 3)`` drawn after the fixed view rotation.

    The projection is orthographic (drop the rotated z) and fitted to 85% of the panel, centred.
    """
    panel = np.full((size, size, 3), 24, np.uint8)
    points = (np.asarray(joints, np.float64) - joints[ROOT]) @ view_rotation().T
    xy = points[:, :2]
    low, high = xy.min(axis=0), xy.max(axis=0)
    extent = float(max(high - low))
    scale = 0.85 * size / extent if extent > 1e-9 else 1.0
    pixels = (xy - (low + high) / 2) * scale + (size - 1) / 2
    # The ground line below the lowest joint (largest y) gives the eye a reference.
    floor = int(round(pixels[:, 1].max())) + 2
    if floor < size:
        cv2.line(panel, (size // 8, floor), (size - size // 8, floor), (90, 90, 90), 1, cv2.LINE_AA)
    panel = draw_skeleton(panel, pixels, thickness=max(1, round(size / 128)))
    if label and size >= 128:
        cv2.putText(panel, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 200, 200), 1, cv2.LINE_AA)
    return panel


def picture(frame: Frame, coords: np.ndarray, joints_mm: np.ndarray, size: int) -> np.ndarray:
    """The input crop with the 2D skeleton (``size`` px square) beside the 3D view: ``(size, 2 size, 3)``."""
    crop = resize(frame.crop, size)
    left = draw_skeleton(
        crop, heatmaps.normalised_to_pixels(coords[:, :2], size), thickness=max(1, size // 128)
    )
    return np.hstack([left, draw_3d(joints_mm, size, "3D (mm)")])


def contact_sheet(pictures: list[np.ndarray], captions: list[str], columns: int = 2) -> np.ndarray:
    """Equal-sized pictures in a grid ``columns`` wide, in order, each captioned at its bottom left."""
    height, width = pictures[0].shape[:2]
    rows = -(-len(pictures) // columns)
    sheet = np.zeros((rows * height, columns * width, 3), np.uint8)
    for i, (image, caption) in enumerate(zip(pictures, captions)):
        y, x = (i // columns) * height, (i % columns) * width
        tile = image.copy()
        cv2.putText(
            tile, caption, (6, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA
        )
        sheet[y : y + height, x : x + width] = tile
    return sheet


def _rounded(array: np.ndarray | None, digits: int) -> list | None:
    return None if array is None else np.round(np.asarray(array, np.float64), digits).tolist()


def predict_frames(
    model: torch.nn.Module, frames: list[Frame], batch_size: int, flip_test: bool = True
) -> np.ndarray:
    """Normalised joints ``(N, 17, 3)`` of the frames, their crops resized to the model's input."""
    return predict_crops(model, [frame.crop for frame in frames], batch_size, flip_test)


def predict_crops(
    model: torch.nn.Module, crops: list[np.ndarray], batch_size: int, flip_test: bool = True
) -> np.ndarray:
    """Normalised joints ``(N, 17, 3)`` of uint8 RGB crops of any size, resized to the model's input;
    with ``flip_test`` (as every evaluation), averaged with their mirror images'
    (``model.mirror_average``)."""
    size = model.config.input_size
    out = []
    for i in range(0, len(crops), batch_size):
        images = np.stack([resize(crop, size) for crop in crops[i : i + batch_size]])
        out.append(predict(model, images, flip_test)[0])
    return np.concatenate(out).astype(np.float64).reshape(len(crops), NUM_JOINTS, 3)


def to_mm(frame: Frame, coords: np.ndarray) -> tuple[np.ndarray, float]:
    """Root-relative millimetres ``(17, 3)`` of one frame's prediction and the root depth they rest on:
    the frame's own, or the bone-length prior's when it has none."""
    camera, size = frame.camera[None], frame.crop.shape[0]
    depth = frame.root_depth
    if depth is None:
        bones = BONE_PRIORS[frame.skeleton]
        depth = float(heatmaps.root_depth_from_bones(coords[None], camera, size, bones)[0])
    camera_frame = heatmaps.denormalise(coords[None], camera, size, np.array([depth]))[0]
    return camera_frame - camera_frame[ROOT], depth


def build_parser() -> argparse.ArgumentParser:
    """The job's flags."""
    parser = argparse.ArgumentParser(
        prog="predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="model.pt, or a directory/prefix holding one")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--images", nargs="+", metavar="FILE", help="person-centred image files (any size)")
    inputs.add_argument("--data", help="schema-v1 dataset (dir, s3://bucket/prefix or .parquet)")
    parser.add_argument(
        "--n", type=int, default=16, help="with --data: the first N frames (0: all; default 16)"
    )
    parser.add_argument("--out", required=True, help="new output directory or s3:// prefix")
    parser.add_argument("--panel-size", type=int, default=256, help="P: pictures are 2P wide, P high")
    parser.add_argument(
        "--root-depth-mm", type=float, default=DEFAULT_ROOT_DEPTH_MM,
        help="image files only: the ASSUMED root (pelvis) depth that sets joints_mm's scale (default 5000)",
    )  # fmt: skip
    parser.add_argument(
        "--sheet", type=int, default=0, metavar="K", help="also write sheet.png: K pictures evenly spaced"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="frames per forward pass (default 64)")
    parser.add_argument(
        "--no-flip-test", dest="flip_test", action="store_false",
        help="predict from each crop alone, not averaged with its mirror image's (as evaluation does)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="torch device: auto (default), cpu, cuda, cuda:1...")
    return parser


def _check(args: argparse.Namespace) -> None:
    limits = (
        ("--n", args.n, 0),
        ("--panel-size", args.panel_size, 16),
        ("--batch-size", args.batch_size, 1),
        ("--sheet", args.sheet, 0),
    )
    for flag, value, low in limits:
        if value < low:
            raise ValueError(f"{flag} must be at least {low}, got {value}")
    if not args.root_depth_mm > 0:
        raise ValueError(f"--root-depth-mm must be positive, got {args.root_depth_mm}")
    if storage.exists(storage.join(args.out, PREDICTIONS)):
        raise FileExistsError(f"{args.out} already holds {PREDICTIONS}; choose a new --out")


def run(args: argparse.Namespace) -> list[dict]:
    """Predict, write ``predictions.jsonl`` and the pictures; returns the JSON lines written."""
    _check(args)
    model, info = checkpoints.load(args.checkpoint)
    if args.device == "auto":
        model.to("cuda" if torch.cuda.is_available() else "cpu")
    else:
        model.to(args.device)
    _note(f"loaded {checkpoints.checkpoint_file(args.checkpoint)} ({checkpoints.describe_info(info)})")
    if args.images:
        frames = [image_frame(uri, args.root_depth_mm) for uri in args.images]
    else:
        frames = record_frames(args.data, args.n, info.get("skeleton"))
    coords = predict_frames(model, frames, args.batch_size, args.flip_test)
    lines, used = [], set()
    on_sheet = set(np.linspace(0, len(frames) - 1, min(args.sheet, len(frames))).round().astype(int).tolist())
    tiles: list[np.ndarray] = []
    for index, (frame, joints) in enumerate(zip(frames, coords)):
        name, copy = frame.name, 1
        while name in used:
            copy += 1
            name = f"{frame.name}-{copy}"
        used.add(name)
        joints_mm, root_depth = to_mm(frame, joints)
        pixels = heatmaps.normalised_to_pixels(joints[:, :2], frame.crop.shape[0]) + np.array(frame.offset)
        image = picture(frame, joints, joints_mm, args.panel_size)
        save_png(image, storage.join(args.out, f"{name}.png"))
        if index in on_sheet:
            tiles.append(image)
        lines.append(
            {
                frame.key: frame.source,
                "png": f"{name}.png",
                "joints_normalised": _rounded(joints, 5),
                "joints_2d": _rounded(pixels, 2),
                "joints_mm": _rounded(joints_mm, 2),
                "camera": _rounded(frame.camera, 3),
                "root_depth_mm": root_depth,
                "root_depth_source": frame.depth_source,
                "note": frame.note,
            }
        )
    text = "".join(json.dumps(line) + "\n" for line in lines)
    storage.write_bytes(storage.join(args.out, PREDICTIONS), text.encode())
    if tiles:
        captions = [str(frames[i].source) for i in sorted(on_sheet)]
        save_png(contact_sheet(tiles, captions), storage.join(args.out, "sheet.png"))
    _note(f"wrote {len(lines)} predictions and pictures to {args.out}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, predict and write the outputs; returns the exit code."""
    args = build_parser().parse_args(argv)
    return exit_code(lambda: run(args), _INPUT_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
