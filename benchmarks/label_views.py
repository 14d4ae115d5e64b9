"""How far more views take the ensemble's pseudo-labels: the labels' error against the number of
rigid (equivariance) views, on unlabeled target frames whose truth serves only as a diagnostic.

    python benchmarks/label_views.py --checkpoint models/source/model.pt --frames 1500 --rigid 6

The ensembles are the library's (``experiments.label_target``, as a trial labels): the paper's
three views (original, invariance, equivariance), then one more equivariance view at a time (CC-SSL
uses five), and each view alone, mapped back. A frame's draws follow the list's order, so every
ensemble shares the smaller ones' views. Printed: MPJPE and PA-MPJPE of the labels beside the
checkpoint's mean pose. Views whose errors are correlated (a shared pull towards the mean pose)
average to little gain: that is what this measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

from dfa_ray.config import load_config
from dfa_ray.data.synthetic import generate
from dfa_ray.experiments import label_target
from dfa_ray.method import checkpoints, metrics
from dfa_ray.method.fitting import Frames, to_mm
from dfa_ray.method.views import PAPER_VIEWS, EquivarianceView, InvarianceView, OriginalView


def main() -> None:
    """Label the frames with each ensemble and print the labels' errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="models/source/model.pt")
    parser.add_argument("--frames", type=int, default=1500, help="synthetic-real train frames")
    parser.add_argument("--rigid", type=int, default=6, help="the most equivariance views in an ensemble")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, info = checkpoints.load(args.checkpoint)
    model.eval()
    target = Frames.from_rows(list(generate("synthetic-real", "train", args.frames)), model.config.input_size)
    config = load_config(None)
    mean_pose = metrics.mean_pose_baseline(np.asarray(info["mean_pose"]), target.joints_3d)
    results = {"mean pose": {key: round(mean_pose[key], 1) for key in ("mpjpe", "pa_mpjpe")}}
    print(f"mean pose: {results['mean pose']}", flush=True)
    ensembles = {
        "original": [OriginalView()],
        "invariance": [InvarianceView()],
        "equivariance": [EquivarianceView()],
    }
    for k in range(1, args.rigid + 1):
        ensembles[f"paper's 3 views + {k - 1} equivariance"] = [*PAPER_VIEWS, *[EquivarianceView()] * (k - 1)]
    for name, kinds in ensembles.items():
        labeled = dataclasses.replace(config, label=dataclasses.replace(config.label, views=kinds))
        labels = label_target(model, target, labeled, seed=0, round_index=1)
        pred = to_mm(target, labels.joints.astype(np.float64))
        results[name] = {
            "mpjpe": round(float(metrics.mpjpe(pred, target.joints_3d).mean()), 1),
            "pa_mpjpe": round(float(metrics.pa_mpjpe(pred, target.joints_3d).mean()), 1),
        }
        print(f"{name}: {results[name]}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"checkpoint": args.checkpoint, "frames": args.frames, **results}, handle, indent=2)


if __name__ == "__main__":
    main()
