"""Evaluate a checkpoint on a labeled dataset: MPJPE and PA-MPJPE (mm), overall, per joint and per action.

    python jobs/evaluate.py --checkpoint runs/demo-<time>/model.pt --data data/real-test  # after the demo
    python jobs/evaluate.py --checkpoint s3://dfa-ray/runs/demo/pretrain --data s3://dfa-ray/data/test
    python jobs/evaluate.py --checkpoint model.pt --data URI --mean-pose-from s3://dfa-ray/data/source

``--checkpoint`` is a ``model.pt`` file or a directory/prefix holding one; ``--data`` is a schema-v1
dataset (local directory, ``s3://bucket/prefix`` or one ``.parquet`` file) with ``joints_3d``. Frames
without ``joints_3d`` are skipped (a note on stderr says how many). Predictions are turned into
millimetres with each frame's camera and true root depth (MargiPose's protocol, as in training).

The errors are shown beside the mean-pose baseline: the mean root-relative pose of a labeled source,
predicted for every frame. With ``--mean-pose-from URI`` (a schema-v1 dataset; its frames with
``joints_3d`` count) that dataset's mean pose is used; otherwise the one the checkpoint carries
(``info["mean_pose"]``: the mean pose of the source it was pretrained on, saved by the driver,
``jobs/pretrain.py`` and the experiments); a checkpoint without one is evaluated without baseline.
``mean_pose_from`` in the output says which was used (the URI, ``"checkpoint"``, or null).

Stdout is exactly one JSON object: ``dfa_ray.method.metrics.summarize``'s keys (``mpjpe``, ``pa_mpjpe``,
``num_frames``, ``per_joint``, ``per_action``, and with a baseline ``mean_pose_mpjpe``,
``mean_pose_pa_mpjpe``, ``mpjpe_over_mean_pose``, ``pa_mpjpe_over_mean_pose``) plus ``checkpoint``,
``checkpoint_info`` (what the checkpoint was saved with: stage, round, mean pose...), ``data``,
``mean_pose_from`` and ``num_frames_without_3d``. Progress, and the errors beside the baseline in one
line, go to stderr. S3 settings come from the standard AWS_* variables.

Exit codes: 0 success; 2 an unusable input (checkpoint or dataset missing or unreadable, no
``joints_3d`` in the dataset) or bad usage, with a one-line error naming it on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from dfa_ray.cli import exit_code
from dfa_ray.data.schema import RecordError
from dfa_ray.method import checkpoints
from dfa_ray.method.fitting import dataset_mean_pose, evaluate, load_frames
from dfa_ray.method.metrics import describe
from dfa_ray.storage import StorageError

# Errors that mean "this input is unusable": reported in one line, exit code 2.
_INPUT_ERRORS = (RecordError, StorageError, FileNotFoundError, ValueError)


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pick_device(name: str) -> torch.device:
    """``auto``: the first CUDA GPU when there is one, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_parser() -> argparse.ArgumentParser:
    """The job's flags."""
    parser = argparse.ArgumentParser(
        prog="evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="model.pt, or a directory/prefix holding one")
    parser.add_argument(
        "--data", required=True, help="schema-v1 dataset with joints_3d (dir, s3://, .parquet)"
    )
    parser.add_argument(
        "--mean-pose-from",
        metavar="URI",
        help="labeled schema-v1 dataset whose mean pose is the baseline (default: the checkpoint's)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="frames per forward pass (default 256)")
    parser.add_argument("--device", default="auto", help="torch device: auto (default), cpu, cuda, cuda:1...")
    return parser


def run(args: argparse.Namespace) -> dict:
    """Load, evaluate and return the JSON-ready result; raises one of ``_INPUT_ERRORS`` on bad input."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    model, info = checkpoints.load(args.checkpoint)
    model.to(pick_device(args.device))
    _note(f"loaded {checkpoints.checkpoint_file(args.checkpoint)} ({checkpoints.describe_info(info)})")
    start = time.perf_counter()
    frames = load_frames(args.data, model.config.input_size)
    labeled = int(frames.has_3d.sum())
    if labeled == 0:
        raise ValueError(f"{args.data}: none of its {len(frames)} frames has joints_3d; cannot compute MPJPE")
    if labeled < len(frames):
        _note(f"{args.data}: {len(frames) - labeled} of {len(frames)} frames have no joints_3d; skipped")
    _note(f"read {len(frames)} frames from {args.data} in {time.perf_counter() - start:.1f} s")
    mean_pose, mean_pose_from = baseline_pose(args.mean_pose_from, info)
    start = time.perf_counter()
    summary = evaluate(model, frames, args.batch_size, mean_pose)
    _note(f"evaluated {labeled} frames in {time.perf_counter() - start:.1f} s: {describe(summary)}")
    return {
        "checkpoint": str(args.checkpoint),
        "checkpoint_info": info,
        "data": str(args.data),
        "mean_pose_from": mean_pose_from,
        "num_frames_without_3d": len(frames) - labeled,
        **summary,
    }


def baseline_pose(uri: str | None, info: dict) -> tuple[np.ndarray | None, str | None]:
    """The mean pose to show the errors beside, and where it came from: ``uri``'s labeled frames,
    else the checkpoint's ``info["mean_pose"]``, else none."""
    if uri:
        pose = dataset_mean_pose([uri])
        if pose is None:
            raise ValueError(f"--mean-pose-from {uri}: none of its frames has joints_3d")
        return pose, uri
    if info.get("mean_pose") is not None:
        return np.asarray(info["mean_pose"], dtype=np.float64), "checkpoint"
    _note("the checkpoint carries no mean pose and --mean-pose-from is not given: no baseline")
    return None, None


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, evaluate and print the result as one JSON object; returns the exit code."""
    args = build_parser().parse_args(argv)
    return exit_code(lambda: print(json.dumps(run(args)), flush=True), _INPUT_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
