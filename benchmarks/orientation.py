"""Where a model's MPJPE goes beyond its shape: which way the body is turned, how far it leans, and how
far the joints are pulled towards the mean pose. Measured on rendered frames of one domain's split,
their truth a diagnostic only: by default the target's *training* frames, never the test split.

    python benchmarks/orientation.py models/source/model.pt runs/<demo run>/model.pt
    python benchmarks/orientation.py models/source/model.pt --domain synthetic-source --split test

Per checkpoint, with each frame's true root depth (the evaluation's protocol):

- MPJPE and PA-MPJPE beside the checkpoint's mean pose;
- **facing** (``metrics.facing_angle``): the share of frames whose body is turned more than 90 degrees
  from the truth (a front/back flip), and the MPJPE of the frames by that angle (below 30, 30-90,
  above 90 degrees);
- **lean**: the median angle between the predicted and the true trunk (``metrics.trunk_angle``), and the
  trunk's mean lean towards the camera (the thorax nearer than the pelvis, in the camera's y-z plane),
  predicted and true;
- **pull towards the mean pose**: per axis (x right, y down, z forward), the least-squares slope of the
  predicted joints' offsets from the checkpoint's mean pose on the true offsets (1 follows the truth,
  0 predicts the mean pose), and the poses' mean distance from their own mean, predicted and true.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from dfa_ray.data.images import decode_image
from dfa_ray.data.synthetic import STYLES, generate
from dfa_ray.method import checkpoints, heatmaps, metrics
from dfa_ray.method.skeleton import JOINT_NAMES, ROOT

# jobs/ holds scripts, not a package: predict.py's functions are the path every user's frames take.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import predict  # noqa: E402

CROP_SIZE = 128  # the size the experiments render records at


def lean_towards_camera(poses: np.ndarray) -> np.ndarray:
    """Degrees the trunk (pelvis to thorax) leans towards the camera in the camera's y-z plane."""
    trunk = poses[:, JOINT_NAMES.index("thorax")] - poses[:, ROOT]
    return np.degrees(np.arctan2(-trunk[:, 2], -trunk[:, 1]))


def diagnose(pred: np.ndarray, truth: np.ndarray, mean_pose: np.ndarray) -> dict:
    """The numbers of the module's docstring for root-relative poses ``(N, 17, 3)`` in mm."""
    summary = metrics.summarize(pred, truth, mean_pose=mean_pose)
    errors = metrics.mpjpe(pred, truth).mean(axis=1)
    facing = metrics.facing_angle(pred, truth)
    bins = {"below_30": facing < 30, "30_to_90": (facing >= 30) & (facing <= 90), "above_90": facing > 90}
    offsets_pred, offsets_true = pred - mean_pose, truth - mean_pose
    slope = (offsets_pred * offsets_true).sum(axis=(0, 1)) / (offsets_true**2).sum(axis=(0, 1))
    lean_pred, lean_true = lean_towards_camera(pred), lean_towards_camera(truth)
    return {
        "frames": len(pred),
        **{key: summary[key] for key in ("mpjpe", "pa_mpjpe", "mean_pose_mpjpe", "mpjpe_over_mean_pose")},
        "facing_flipped_share": float(bins["above_90"].mean()),
        "mpjpe_by_facing_error": {
            name: {"frames": int(mask.sum()), "mpjpe": float(errors[mask].mean()) if mask.any() else None}
            for name, mask in bins.items()
        },
        "trunk_angle_deg_median": float(np.median(metrics.trunk_angle(pred, truth))),
        "lean_towards_camera_deg": {"predicted": float(lean_pred.mean()), "true": float(lean_true.mean())},
        "slope_xyz": [float(s) for s in slope],
        "spread_mm": {
            "predicted": float(np.linalg.norm(pred - pred.mean(0), axis=-1).mean()),
            "true": float(np.linalg.norm(truth - truth.mean(0), axis=-1).mean()),
        },
    }


def run(args: argparse.Namespace) -> dict:
    """Render the frames once, then predict and diagnose with each checkpoint."""
    rows = list(
        generate(args.domain, args.split, args.frames, seed=args.seed, crop_size=CROP_SIZE, workers=2)
    )
    camera = np.array([row["camera"] for row in rows], np.float64)
    joints = np.array([np.asarray(row["joints_3d"], np.float64).reshape(-1, 3) for row in rows])
    truth = joints - joints[:, ROOT : ROOT + 1]
    crops = [decode_image(row["image"]) for row in rows]
    results = {"domain": args.domain, "split": args.split, "seed": args.seed, "checkpoints": {}}
    for path in args.checkpoints:
        model, info = checkpoints.load(path)
        coords = predict.predict_crops(model, crops, batch_size=128)
        pred = heatmaps.denormalise(coords, camera, CROP_SIZE, joints[:, ROOT, 2])
        pred -= pred[:, ROOT : ROOT + 1]
        results["checkpoints"][path] = found = diagnose(
            pred, truth, np.asarray(info["mean_pose"], np.float64)
        )
        print(f"{path}:\n{json.dumps(found, indent=2)}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run, and write ``--json`` when given."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", help="model.pt files, each with its mean pose")
    parser.add_argument("--domain", default="synthetic-real", choices=sorted(STYLES))
    parser.add_argument("--split", default="train", choices=["train", "test"])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="the render seed (the experiments' data use 0)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
