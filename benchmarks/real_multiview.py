"""Score a checkpoint on real people filmed by calibrated cameras, without labels (``data.multiview``).

    python benchmarks/real_multiview.py --checkpoint models/source/model.pt \\
        --footage Pose2Sim/Demo_MultiPerson --out runs/real_multiview/source

``--footage`` is laid out as Pose2Sim's ``Demo_MultiPerson`` (4 synchronised 1088x1920 cameras, 2
people, 100 frames; BSD-3, ``pip download --no-deps pose2sim==0.10.49`` and unzip
``Pose2Sim/Demo_MultiPerson/*``; ``Demo_SinglePerson`` is laid out alike):
``calibration/Calib.qca.txt`` (Qualisys) and ``videos/<camera serial>.mp4``. Every ``--every``-th
frame of each camera goes through the video path (``dfa_ray.data.video``: MediaPipe Pose finds each
person, the crop intrinsics follow from the calibration, which must be of the videos' size, up to a
codec's padding). The detections of one frame are grouped into people across the cameras
(``multiview.associate``) and triangulated into a pseudo-ground-truth; people keep
their number from frame to frame by their triangulated pelvis (``track``).

Written under ``--out`` (a new directory): ``records/``, the crops of every person found as
schema-v1 records with MediaPipe's 2D as machine-made ``joints_2d`` (``video.MACHINE_LABELS``; a
self-training target, whose labels are unused: ``jobs/self_train.py --target OUT/records``, and a
2D-only source for the paper's "w/ MPII" setting: ``--source-2d OUT/records``);
``results.json``, printed too: how many people and views were triangulated, the pseudo-ground-truth's
reprojection error, and for the model (``jobs/predict.py``'s path: the record's crop camera, the
bone-length depth prior), MediaPipe's own 3D (its world landmarks, mapped to H36M-17) and the
checkpoint's source mean pose: MPJPE / PA-MPJPE against the pseudo-ground-truth turned into each
camera's frame, multi-view consistency (mm, lower is better), and the median angle between the
predicted and the true trunk (pelvis to thorax) in the camera's frame, which an upright prediction of
a person seen from above gets wrong, and the share of poses turned more than 90 degrees from the
truth (``metrics.facing_angle``: a front/back flip), per person and per true view of the camera
(towards, away, side-on: ``true_view``), with a histogram of that angle and the size of
the direction across the body along the camera's x and z, predicted and true (a model unsure of
left and right shrinks x); the MPJPE after each pose's best scale; and each method's median bone
lengths beside the pseudo-ground-truth's. Only people seen in two views or more are
scored. MediaPipe's 3D shares the pseudo-ground-truth's landmarks, which favours it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dfa_ray.cli import exit_code
from dfa_ray.data import multiview, video
from dfa_ray.data.records import write_records
from dfa_ray.data.validation import InputError
from dfa_ray.method import checkpoints, metrics
from dfa_ray.method.skeleton import (
    BONES,
    JOINT_NAMES,
    MEDIAPIPE_JOINT_NAMES,
    MEDIAPIPE_TO_H36M,
    ROOT,
    bone_lengths,
    map_joints,
)

# jobs/ holds scripts, not a package: predict.py's functions are the path every user's frames take.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import predict  # noqa: E402

# A person's pelvis moves less than this between two frames read (at 60 fps, --every 10 is 1/6 s).
MAX_STEP_MM = 800.0


@dataclass
class Seen:
    """One camera's detection of a person in a frame: its record and MediaPipe's landmarks."""

    frame_id: str
    landmarks: np.ndarray  # (33, 6), see video.PoseDetector


@dataclass
class PersonFrame:
    """One person at one frame, seen by two cameras or more, triangulated."""

    frame: int
    person: int
    views: dict[int, Seen]  # camera index -> detection
    joints: np.ndarray  # (17, 3) world mm
    valid: np.ndarray  # (17,) uint8
    triangulation: multiview.Triangulation


def detect(
    footage: Path, cameras: list[multiview.CalibratedCamera], every: int, max_people: int
) -> tuple[list[dict], dict[int, list[list[Seen]]]]:
    """Every camera's people: the rows of their crops, and per frame number each camera's ``Seen``."""
    rows: list[dict] = []
    seen: dict[int, list[list[Seen]]] = defaultdict(lambda: [[] for _ in cameras])
    for view, camera in enumerate(cameras):
        source = video.FrameSource(footage / "videos" / f"{camera.name}.mp4", camera.name)
        intrinsics = camera.intrinsics().check(source.width, source.height, str(source.path))
        report = video.VideoReport(str(source.path))
        for people in video.video_people(source, report, every, max_people=max_people):
            for person in people:
                rows.append(person.row(source.name, intrinsics, labels_2d=True))
                seen[person.index][view].append(Seen(rows[-1]["frame_id"], person.landmarks))
        print(report.summary(), file=sys.stderr, flush=True)
    return rows, dict(seen)


def triangulate(
    seen: dict[int, list[list[Seen]]], cameras: list[multiview.CalibratedCamera]
) -> list[PersonFrame]:
    """Each frame's people across the cameras, triangulated, numbered by ``track``."""
    found = []
    for frame in sorted(seen):
        detections = [[s.landmarks for s in view] for view in seen[frame]]
        for group in multiview.associate(detections, cameras):
            pixels = np.full((len(cameras), len(MEDIAPIPE_JOINT_NAMES), 2), np.nan)
            visibility = np.zeros(pixels.shape[:2])
            for view, index in group.items():
                pixels[view], visibility[view] = detections[view][index][:, :2], detections[view][index][:, 2]
            result = multiview.triangulate_person(pixels, visibility, cameras)
            joints, valid = result.h36m()
            views = {view: seen[frame][view][index] for view, index in group.items()}
            found.append(PersonFrame(frame, -1, views, joints, valid, result))
    track(found)
    return found


def track(found: list[PersonFrame]) -> None:
    """Number the people: each frame's people take the numbers of the last frame's nearest by pelvis
    (within ``MAX_STEP_MM``, nearest pairs first); anyone else gets a new number."""
    last: dict[int, np.ndarray] = {}
    count = 0
    for _, group in itertools.groupby(found, key=lambda p: p.frame):
        group = [p for p in group if p.valid[ROOT]]
        pairs = sorted(
            (float(np.linalg.norm(p.joints[ROOT] - pelvis)), i, number)
            for i, p in enumerate(group)
            for number, pelvis in last.items()
        )
        taken: set[int] = set()
        for distance, i, number in pairs:
            if distance <= MAX_STEP_MM and group[i].person < 0 and number not in taken:
                group[i].person = number
                taken.add(number)
        for p in group:
            if p.person < 0:
                p.person, count = count, count + 1
            last[p.person] = p.joints[ROOT]


def score(
    found: list[PersonFrame],
    cameras: list[multiview.CalibratedCamera],
    poses: dict[str, dict[str, np.ndarray]],
    mean_pose: np.ndarray | None,
) -> dict:
    """MPJPE / PA-MPJPE against the pseudo-ground-truth and consistency of each method's
    root-relative camera-frame poses ``poses[method][frame_id]`` (17, 3) mm."""
    scored = [p for p in found if p.valid[ROOT]]
    results = {}
    for method, pose_of in poses.items():
        pred, truth, valid, people, spread = [], [], [], [], []
        for p in scored:
            rotations = [cameras[view].rotation for view in p.views]
            mine = [pose_of[seen.frame_id] for seen in p.views.values()]
            for rotation, pose in zip(rotations, mine):
                pred.append(pose)
                truth.append((p.joints - p.joints[ROOT]) @ rotation.T)
                valid.append(p.valid)
                people.append(p.person)
            spread.append(multiview.consistency(np.stack(mine), np.stack(rotations)))
        pred, truth, valid = np.stack(pred), np.stack(truth), np.stack(valid)
        summary = metrics.summarize(pred, truth, valid=valid, mean_pose=mean_pose)
        lean = metrics.trunk_angle(pred, truth, valid)
        facing = metrics.facing_angle(pred, truth, valid)
        turned = np.isfinite(facing)  # the poses with hips and shoulders triangulated
        flipped = facing[turned] > 90
        people, seen_as = np.asarray(people)[turned], true_view(truth[turned])
        histogram = np.histogram(facing[turned], bins=np.arange(0, 181, 30))[0]
        results[method] = {
            **{key: value for key, value in summary.items() if key not in ("per_joint", "per_action")},
            "consistency_mm": float(np.mean(spread)),
            "trunk_angle_deg_median": float(np.nanmedian(lean)),
            # Front/back flips: turned more than 90 degrees from the truth.
            "facing_flipped_share": float(np.mean(flipped)),
            # Where the flips lie: by person, and by how the person truly faces the camera.
            "facing_flipped_by_person": shares(flipped, people),
            "facing_flipped_by_true_view": shares(flipped, seen_as),
            "facing_angle_histogram_30deg": histogram.tolist(),
            "across_body_mm": {"predicted": across_body(pred, valid), "true": across_body(truth, valid)},
            "mpjpe_best_scale": best_scale_mpjpe(pred, truth, valid),
            "bone_mm_median": bone_medians(pred, valid),
        }
    return results


def truth_shape(found: list[PersonFrame]) -> dict:
    """The pseudo-ground-truth's bone lengths, beside each method's (``bone_mm_median``)."""
    scored = [p for p in found if p.valid[ROOT]]
    truth = np.stack([p.joints - p.joints[ROOT] for p in scored])
    valid = np.stack([p.valid for p in scored])
    return {"bone_mm_median": bone_medians(truth, valid)}


def true_view(truth: np.ndarray) -> np.ndarray:
    """How each true camera-frame pose ``(N, 17, 3)`` faces the camera: "towards" or "away" where the
    direction across the body (towards its left) lies closer to the image's x than to the depth axis
    (a person facing the camera has their left on the image's right), else "side"."""
    across = metrics.across_body(truth)
    x, z = across[:, 0], np.abs(across[:, 2])
    return np.where(x > z, "towards", np.where(-x > z, "away", "side"))


def shares(flags: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, float]]:
    """The share of ``flags`` set and the count, per value of ``groups`` (keys as strings, for JSON)."""
    return {
        str(group): {"share": float(flags[groups == group].mean()), "poses": int((groups == group).sum())}
        for group in np.unique(groups)
    }


def across_body(poses: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Mean size of the direction across the body (``metrics.facing_angle``'s) along the camera's x
    (across the image) and z (depth): a model unsure of left and right shrinks x."""
    across = metrics.across_body(poses[valid[:, list(metrics.ACROSS_JOINTS)].all(axis=1)])
    return {"x": float(np.abs(across[:, 0]).mean()), "z": float(np.abs(across[:, 2]).mean())}


def best_scale_mpjpe(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    """MPJPE after scaling each root-relative pose by its least-squares factor onto the truth."""
    mask = valid.astype(bool)[..., None]
    scale = (np.where(mask, pred * truth, 0).sum(axis=(1, 2))) / np.where(mask, pred**2, 0).sum(axis=(1, 2))
    error = np.linalg.norm(pred * scale[:, None, None] - truth, axis=-1)
    return float(error[valid.astype(bool)].mean())


def bone_medians(poses: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Median length in mm of each bone (a joint and its parent) over the poses where both are valid."""
    lengths = bone_lengths(poses)
    out = {}
    for bone, (parent, child) in enumerate(BONES):
        ok = valid[:, child].astype(bool) & valid[:, parent].astype(bool)
        out[JOINT_NAMES[child]] = float(np.median(lengths[ok, bone]))
    return out


def run(args: argparse.Namespace) -> dict:
    """Detect, triangulate, predict and score; write records and results under ``--out``."""
    if args.out.exists():
        raise FileExistsError(f"{args.out} already exists; choose a new --out")
    cameras = multiview.read_qca(args.footage / "calibration" / "Calib.qca.txt")
    model, info = checkpoints.load(args.checkpoint)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    rows, seen = detect(args.footage, cameras, args.every, args.max_people)
    found = triangulate(seen, cameras)
    if not any(p.valid[ROOT] for p in found):
        raise InputError(f"{args.footage}: no person was triangulated with a pelvis in any frame")
    records = args.out / "records"
    write_records(rows, records, machine_labels=video.MACHINE_LABELS, skeleton=video.SKELETON)
    frames = predict.record_frames(str(records), 0)
    coords = predict.predict_frames(model, frames, args.batch_size)
    mean_pose = None if info.get("mean_pose") is None else np.asarray(info["mean_pose"], np.float64)
    poses = {
        "model": {frame.source: predict.to_mm(frame, c)[0] for frame, c in zip(frames, coords)},
        # MediaPipe's world landmarks are metres about the hips' centre, along the camera's axes.
        "mediapipe": {
            s.frame_id: map_joints(s.landmarks[:, 3:] * 1000.0, MEDIAPIPE_TO_H36M)[0]
            for p in found
            for s in p.views.values()
        },
    }
    if mean_pose is not None:
        poses["mean_pose"] = {s.frame_id: mean_pose for p in found for s in p.views.values()}
    errors = np.concatenate([p.triangulation.error_px for p in found])
    views = np.concatenate([p.triangulation.views.sum(axis=1) for p in found])
    results = {
        "checkpoint": str(args.checkpoint),
        "footage": str(args.footage),
        "every": args.every,
        "cameras": [camera.name for camera in cameras],
        "crops": len(rows),
        "people": sorted({p.person for p in found if p.person >= 0}),
        "person_frames": len(found),
        "person_frames_scored": sum(1 for p in found if p.valid[ROOT]),
        "views_per_person_frame": float(np.mean([len(p.views) for p in found])),
        "pseudo_gt": {
            "landmarks_triangulated": float(np.isfinite(errors).mean()),
            "views_per_landmark": float(views[views > 0].mean()),
            "reprojection_px_mean": float(np.nanmean(errors)),
            "reprojection_px_median": float(np.nanmedian(errors)),
            "valid_joints_per_person_frame": float(np.mean([p.valid.sum() for p in found])),
            **truth_shape(found),
        },
        "methods": score(found, cameras, poses, mean_pose),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run; exit code 2 with one line on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="models/source/model.pt")
    parser.add_argument("--footage", type=Path, required=True, help="a folder laid out as Demo_MultiPerson")
    parser.add_argument("--out", type=Path, required=True, help="a new directory")
    parser.add_argument("--every", type=int, default=2, help="every n-th frame of each camera (default 2)")
    parser.add_argument("--max-people", type=int, default=3, help="people sought per frame (default 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    return exit_code(lambda: run(args), (InputError, FileNotFoundError, FileExistsError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
