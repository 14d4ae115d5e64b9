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
  0 predicts the mean pose), and the poses' mean distance from their own mean, predicted and true;
- with ``--mode-radii``, **hedging**: all of the above again with each heatmap read about its strongest
  cell (``soft_argmax`` over the ``(2r+1)²`` cells around it) instead of over the whole map. Where the
  model cannot tell the left leg from the right, each ankle's map has a mode on either leg and the
  whole map's expectation lies between them, where no leg is. Reading the strongest mode commits to
  one leg: the MPJPE says whether that is right more often than the hedge, and the slope whether the
  hedge is what pulls the poses to the mean (Fig. 2's legs-together skeletons; docs/results.md).

Every reading has the flip test, as every evaluation does; ``--no-flip-test`` reads the image alone,
to tell whether averaging a body with its mirror image's (whose left and right the model may take the
other way) is what draws the legs together.
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
from dfa_ray.method.heatmaps import Marginals
from dfa_ray.method.model import images_to_tensor, mirror_average, with_mirror
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


def around_the_mode(logits: Marginals, radius: int) -> Marginals:
    """Each map's logits outside the ``(2 radius + 1)²`` cells about its strongest cell set to minus
    infinity, so that ``soft_argmax`` averages over that mode alone."""

    def window(maps: torch.Tensor) -> torch.Tensor:
        b, j, h, w = maps.shape
        peak = maps.reshape(b, j, h * w).argmax(-1)
        rows = torch.arange(h, device=maps.device)[:, None] - (peak // w)[..., None, None]
        cols = torch.arange(w, device=maps.device)[None, :] - (peak % w)[..., None, None]
        inside = (rows.abs() <= radius) & (cols.abs() <= radius)
        return maps.float().masked_fill(~inside, float("-inf"))

    return Marginals(*(window(maps) for maps in logits))


@torch.no_grad()
def mode_predictions(
    model: torch.nn.Module, crops: list[np.ndarray], radii: list[int], flip_test: bool = True
) -> dict[int, np.ndarray]:
    """Normalised joints ``(N, 17, 3)`` per radius, read about each map's mode; with ``flip_test``, as
    every evaluation has it (``mirror_average`` of the image's and its mirror image's readings)."""
    model.eval()
    size, found = model.config.input_size, {radius: [] for radius in radii}
    for i in range(0, len(crops), 128):
        images = np.stack([predict.resize(crop, size) for crop in crops[i : i + 128]])
        tensor = images_to_tensor(images, next(model.parameters()).device)
        logits = model(with_mirror(tensor) if flip_test else tensor)
        for radius in radii:
            coords, variance = heatmaps.soft_argmax(around_the_mode(logits, radius))
            if flip_test:
                coords, variance = mirror_average(coords, variance)
            found[radius].append(coords.cpu().numpy())
    return {radius: np.concatenate(parts).astype(np.float64) for radius, parts in found.items()}


def run(args: argparse.Namespace) -> dict:
    """Render the frames once, then predict and diagnose with each checkpoint."""
    rows = list(
        generate(args.domain, args.split, args.frames, seed=args.seed, crop_size=CROP_SIZE, workers=2)
    )
    camera = np.array([row["camera"] for row in rows], np.float64)
    joints = np.array([np.asarray(row["joints_3d"], np.float64).reshape(-1, 3) for row in rows])
    truth = joints - joints[:, ROOT : ROOT + 1]
    crops = [decode_image(row["image"]) for row in rows]
    flip_test = not args.no_flip_test
    results = {
        "domain": args.domain,
        "split": args.split,
        "seed": args.seed,
        "flip_test": flip_test,
        "checkpoints": {},
    }

    def diagnosed(coords: np.ndarray, mean_pose: np.ndarray) -> dict:
        pred = heatmaps.denormalise(coords, camera, CROP_SIZE, joints[:, ROOT, 2])
        return diagnose(pred - pred[:, ROOT : ROOT + 1], truth, mean_pose)

    for path in args.checkpoints:
        model, info = checkpoints.load(path)
        mean_pose = np.asarray(info["mean_pose"], np.float64)
        found = diagnosed(predict.predict_crops(model, crops, batch_size=128, flip_test=flip_test), mean_pose)
        if args.mode_radii:
            by_radius = mode_predictions(model, crops, args.mode_radii, flip_test)
            found["around_the_mode"] = {
                f"radius_{radius}": diagnosed(coords, mean_pose) for radius, coords in by_radius.items()
            }
        results["checkpoints"][path] = found
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
    parser.add_argument(
        "--mode-radii",
        type=int,
        nargs="*",
        default=[],
        help="also read each heatmap about its strongest cell, within these radii in heatmap cells",
    )
    parser.add_argument(
        "--no-flip-test", action="store_true", help="read each crop alone, not averaged with its mirror image"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if any(radius < 0 for radius in args.mode_radii):
        parser.error(f"--mode-radii must be 0 or more cells, got {args.mode_radii}")
    torch.set_num_threads(args.threads)
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
