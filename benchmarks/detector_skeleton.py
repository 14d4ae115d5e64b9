"""The skeleton a 2D detector draws people with: MediaPipe Pose's own metric 3D estimate (its world
landmarks) mapped to H36M-17 like its 2D, as median bone lengths over every person of a clip.

    python benchmarks/detector_skeleton.py /tmp/s2d/Sports2D/Demo/demo.mp4 --every 2

A model that learns a target's machine-made 2D (``data.target_2d``) places its joints where the
detector does: MediaPipe's hips, nose and ears are not Human3.6M's hip centres, nose joint and head
top (``skeleton.MEDIAPIPE_TO_H36M``). ``skeleton.MEDIAPIPE_BONE_MM``, the bone-length depth prior for
such records, is this script's output on Sports2D's demo clip, footage without any 3D truth. Only
MediaPipe's output is read: nothing here is scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dfa_ray.cli import exit_code
from dfa_ray.data import video
from dfa_ray.data.validation import InputError
from dfa_ray.method.skeleton import (
    BONES,
    FLIP_PERMUTATION,
    JOINT_NAMES,
    MEDIAPIPE_TO_H36M,
    bone_lengths,
    map_joints,
)

CHILDREN = [child for _, child in BONES]


def world_bones(landmarks: np.ndarray) -> np.ndarray:
    """Bone lengths in mm (16, ``BONES``' order; NaN where an end is not visible) of one person's
    MediaPipe landmarks ``(33, 6)`` (``video.PoseDetector``: pixels, visibility, world metres)."""
    joints, valid = map_joints(
        landmarks[:, 3:] * 1000.0, MEDIAPIPE_TO_H36M, landmarks[:, 2] >= video.MIN_VISIBILITY
    )
    seen = np.array([valid[parent] and valid[child] for parent, child in BONES])
    return np.where(seen, bone_lengths(joints), np.nan)


def measure(path: Path, every: int, max_people: int) -> dict:
    """Median bone lengths over every person found in ``path``'s frames, left and right pooled, and how
    many person-frames they come from."""
    report = video.VideoReport(str(path))
    lengths = [
        world_bones(person.landmarks)
        for people in video.video_people(video.FrameSource(path), report, every, max_people=max_people)
        for person in people
    ]
    lengths = np.stack(lengths)
    # Left and right pooled, as the nominal skeleton is symmetric: one side's median is partly which
    # side faced the camera more.
    mirror = [CHILDREN.index(FLIP_PERMUTATION[child]) for child in CHILDREN]
    medians = np.nanmedian(np.concatenate([lengths, lengths[:, mirror]]), axis=0)
    return {
        "footage": str(path),
        "every": every,
        "person_frames": len(lengths),
        "bone_mm_median": {JOINT_NAMES[child]: round(float(mm)) for child, mm in zip(CHILDREN, medians)},
    }


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, measure and print JSON; exit code 2 with one line on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("footage", type=Path, help="a video file or a folder of images")
    parser.add_argument("--every", type=int, default=2, help="every n-th frame (default 2)")
    parser.add_argument("--max-people", type=int, default=4, help="people sought per frame (default 4)")
    args = parser.parse_args(argv)
    return exit_code(
        lambda: print(json.dumps(measure(args.footage, args.every, args.max_people), indent=2)),
        (InputError, FileNotFoundError, ValueError),
    )


if __name__ == "__main__":
    sys.exit(main())
