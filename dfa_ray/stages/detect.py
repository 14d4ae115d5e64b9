"""A 2D detector's keypoints for a target that came without any 2D, before the rounds.

On real people the source model places joints in the image no better than a constant pose, while
MediaPipe Pose, trained on real photographs, places them closely; learnt as 2D labels and anchoring
the pseudo-labels, they took Pose2Sim's footage from 267 to 161 mm (docs/data.md). Footage prepared
by ``prepare_data.py video`` carries them already. A target that arrives as records without them
(another converter's unlabeled frames) gets them here; one with annotated 2D (renders, a capture)
is a labeled dataset and is not searched (``driver.detected_target_2d``). For the rest,
``detect_keypoints`` streams the crops through ``KeypointDetector`` actors (Ray Data, the label
section's pool, CPU only) and writes one row per frame to ``<run>/target-2d/detections/``:

    frame_id   string
    xy         list<float32> (34)  17 x 2, in units of the crop's side (0..1), 0 where not valid
    valid      list<uint8> (17)    the joint's landmarks all have visibility >= MIN_VISIBILITY
    found      bool                MediaPipe found a person in the crop
    error      string              null, or why the frame could not be read

**Whether to use them.** A detector made from photographs need not know a rendered domain: on the
embedded benchmark's 3,000 target crops MediaPipe finds a person in 67 % of them, and where it does
its 2D is further from the truth than the source model's own (10.9 against 8.2 px mean in 128 px
crops, the first 300 training frames, their truth a diagnostic only); on Pose2Sim's crops it finds
96-99 %. Every crop holds a person by construction, so ``data.detect_2d_min_found`` (0.8) is the
share of them it must find for its keypoints to be used; below it the run goes on from the
pseudo-labels alone.

**Where they go.** When used, ``write_target_with_2d`` writes ``<run>/target-2d/records``: the
target's rows with the detector's 2D as their ``joints_2d`` (crop pixels) and ``joints_valid``, no
``joints_3d`` (a target's labels are never used), marked machine-made like ``prepare_data.py video``'s
output; the driver then treats that copy as the target (``driver.use_target_2d``). ``summary.json``,
written last, records the decision and marks the stage finished, so a resumed run reuses it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dfa_ray import storage
from dfa_ray.config import LabelConfig
from dfa_ray.data import video
from dfa_ray.data.images import image_size
from dfa_ray.data.records import RecordWriter, dataset_files, read_records
from dfa_ray.data.validation import InputError
from dfa_ray.method.skeleton import NUM_JOINTS
from dfa_ray.stages.label import decoded, through_actors
from dfa_ray.stages.read import read_output

# MediaPipe's landmark model reads 256 px; smaller crops are enlarged to it, larger ones reduced.
DETECT_SIZE = 256
MACHINE_LABELS = f"{video.MACHINE_LABELS}, found in the stored crops (dfa_ray.stages.detect)"


# How far (in crop sides) the centre of a person's landmark box may lie from the crop's before the
# crop is searched for someone nearer its middle: crops are cut centred on their person.
OFF_CENTRE = 0.2


def _off_centre(landmarks: np.ndarray, side: int) -> float:
    joints = video.h36m_joints(landmarks)
    middle = (joints.min(axis=0) + joints.max(axis=0)) / 2
    return float(np.abs(middle / side - 0.5).max())


class KeypointDetector:
    """Ray Data callable class: MediaPipe Pose on each decoded crop, its most prominent person only
    (the crop was cut around one person)."""

    def __init__(self) -> None:
        # A node without MediaPipe (a cluster image built without the video extra) searches nothing
        # and says why in every row, and the run goes on without the detector's 2D.
        self.detector, self.missing = None, None
        try:
            self.detector = video.PoseDetector(max_people=2)
        except InputError as exc:
            self.missing = str(exc)

    def person_in_middle(self, rgb: np.ndarray) -> np.ndarray | None:
        """The landmarks (in ``rgb``'s pixels) of the person the crop was cut around: the most
        prominent one, unless its box's centre lies off the crop's (someone beside them), then
        whoever of two is nearest it. The crop is searched in the middle of a grey canvas twice its
        side: BlazePose's detector misses people who fill its view (on Pose2Sim's crops reduced to
        64 px it found 25 of 94 enlarged to 256 px, 84 of 94 on the canvas)."""
        side = len(rgb)
        canvas = np.full((2 * side, 2 * side, 3), 128, np.uint8)
        canvas[side // 2 : side // 2 + side, side // 2 : side // 2 + side] = rgb

        def in_crop(landmarks: np.ndarray) -> np.ndarray:
            return np.concatenate([landmarks[:, :2] - side // 2, landmarks[:, 2:]], axis=1)

        first = self.detector.most_prominent(canvas)
        if first is None:
            return None
        if _off_centre(in_crop(first), side) <= OFF_CENTRE:
            return in_crop(first)
        people = [in_crop(landmarks) for landmarks in self.detector(canvas)]  # up to two, searched whole
        return min(people, key=lambda landmarks: _off_centre(landmarks, side))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``decode_frames`` columns in (crops at ``DETECT_SIZE``), the module's columns out."""
        images, errors = decoded(batch, DETECT_SIZE, "detector")
        n = len(images)
        if self.missing:
            errors = [self.missing] * n
        xy = np.zeros((n, NUM_JOINTS, 2), np.float32)
        valid = np.zeros((n, NUM_JOINTS), np.uint8)
        found = np.zeros(n, bool)
        for i in np.flatnonzero([e is None for e in errors]):
            landmarks = self.person_in_middle(images[i])
            if landmarks is None:
                continue
            joints, valid[i] = video.h36m_keypoints(landmarks)
            xy[i] = np.where(valid[i][:, None] > 0, joints / DETECT_SIZE, 0.0)
            found[i] = valid[i].any()
        return {
            "frame_id": np.asarray(batch["frame_id"], dtype=object),
            "xy": xy.reshape(n, -1),
            "valid": valid,
            "found": found,
            "error": np.array(errors, dtype=object),
        }


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where a run keeps the stage: ``<run>/target-2d/``."""

    root: str

    @property
    def detections(self) -> str:
        return storage.join(self.root, "detections")

    @property
    def records(self) -> str:
        return storage.join(self.root, "records")

    @property
    def summary(self) -> str:
        return storage.join(self.root, "summary.json")


def detect_keypoints(target_uri: str, detections_uri: str, config: LabelConfig) -> None:
    """Every target crop through ``KeypointDetector`` actors, rows written to ``detections_uri``."""
    cpus_only = dataclasses.replace(config, num_gpus=0.0, decode_cpus=None)
    through_actors(
        target_uri, ["frame_id", "image"], KeypointDetector, {}, detections_uri, cpus_only, DETECT_SIZE,
        "2D keypoints",
    )  # fmt: skip


def write_target_with_2d(target_uri: str, detections: pa.Table, out_uri: str) -> int:
    """The target's rows, file by file, with the detector's 2D in crop pixels and no ``joints_3d``;
    returns the number of rows written."""
    by_id = {f: i for i, f in enumerate(detections.column("frame_id").to_pylist())}
    xy = np.asarray(detections.column("xy").to_pylist(), np.float64).reshape(-1, NUM_JOINTS, 2)
    valid = np.asarray(detections.column("valid").to_pylist(), np.uint8).reshape(-1, NUM_JOINTS)
    found = np.asarray(detections.column("found").to_pylist(), bool)
    written = 0
    with RecordWriter(out_uri, machine_labels=MACHINE_LABELS, skeleton=video.SKELETON) as writer:
        for file_uri in dataset_files(target_uri):
            table = read_records(file_uri, validate=False)
            rows = []
            for row in table.to_pylist():
                i = by_id[row["frame_id"]]  # found only where the crop was read
                side = image_size(row["image"])[0] if found[i] else 0
                row["joints_3d"] = None
                row["joints_2d"] = (xy[i] * side).astype(np.float32) if found[i] else None
                row["joints_valid"] = valid[i] if found[i] else None
                rows.append(row)
            writer.write(rows)
            written += len(rows)
    return written


def paths(run_root: str) -> Paths:
    """The stage's paths in the run at ``run_root``."""
    return Paths(storage.join(run_root, "target-2d"))


def detected(run_root: str) -> bool:
    """Whether the run at ``run_root`` has finished this stage (used its result or not)."""
    return storage.exists(paths(run_root).summary)


def target_with_2d(
    target_uri: str, run_root: str, config: LabelConfig, min_found: float, log: Any = print
) -> str | None:
    """The copy of the target with the detector's 2D (module docstring), or None when the detector
    finds a person in less than ``min_found`` of its crops; detected once per run."""
    where = paths(run_root)
    if storage.exists(where.summary):
        summary = json.loads(storage.read_bytes(where.summary))
        log(f"target 2D: {describe(summary)} (detected before)")
        return where.records if summary["used"] else None
    storage.remove_tree(where.root)  # what an interrupted attempt left
    log(f"target 2D: {target_uri} has no machine-made 2D; looking for people in its crops with MediaPipe")
    start = time.perf_counter()
    detect_keypoints(target_uri, where.detections, config)
    detections = read_output(where.detections, "2D keypoint")
    seconds = round(time.perf_counter() - start, 1)
    summary = {"target": target_uri, **decide(detections, min_found), "seconds": seconds}
    if summary["used"]:
        write_target_with_2d(target_uri, detections, where.records)
    storage.write_bytes(where.summary, json.dumps(summary, indent=2).encode())
    log(f"target 2D: {describe(summary)}")
    return where.records if summary["used"] else None


def decide(detections: pa.Table, min_found: float) -> dict:
    """Counts of the detections (frames, readable crops, crops with a person found, their share of the
    readable ones) and whether that share reaches ``min_found``, so the detector's 2D is ``used``."""
    errors = detections.column("error")
    readable = int(pc.sum(pc.is_null(errors)).as_py() or 0)
    found = int(pc.sum(detections.column("found")).as_py() or 0)
    share = found / readable if readable else 0.0
    return {
        "frames": detections.num_rows,
        "readable": readable,
        "found": found,
        "found_share": share,
        "min_found": min_found,
        "used": readable > 0 and share >= min_found,
        "first_error": next((e for e in errors.to_pylist() if e is not None), None),
    }


def describe(summary: dict) -> str:
    """One line: how many crops the detector found a person in, and what the run does with that."""
    if not summary["readable"]:
        return (
            f"none of the {summary['frames']} crops could be searched ({summary['first_error']}); "
            "the rounds learn from the pseudo-labels alone"
        )
    found = (
        f"MediaPipe found a person in {summary['found']} of {summary['readable']} crops "
        f"({summary['found_share']:.0%}, {summary['seconds']:.0f} s)"
    )
    if summary["used"]:
        return f"{found}; its 2D is the target's machine-made labels"
    return (
        f"{found}, below data.detect_2d_min_found {summary['min_found']:g}: a detector that misses "
        "this many does not know the domain, and the rounds learn from the pseudo-labels alone"
    )
