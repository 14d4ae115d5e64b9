"""How far more views take the ensemble's pseudo-labels, and whether their confidence picks the good
ones: measured on unlabeled target frames whose truth serves only as a diagnostic.

    python benchmarks/label_views.py --checkpoint models/source/model.pt --frames 1500 --rigid 6

The ensembles are the library's (``experiments.label_target``, as a trial labels): the paper's
three views (original, invariance, equivariance), then one more equivariance view at a time (CC-SSL
uses five), and each view alone, mapped back. A frame's draws follow the list's order, so every
ensemble shares the smaller ones' views. Printed: MPJPE and PA-MPJPE of the labels beside the
checkpoint's mean pose. Views whose errors are correlated (a shared pull towards the mean pose)
average to little gain: that is what this measures.

Then the confidence (``confidence_choice``): the policy keeps the top ``--fraction`` of frames by a
score. For each score: its rank correlation with the paper ensemble's label accuracy (minus the
frame's MPJPE), the kept labels' MPJPE, and how far the kept frames' true poses lie from the mean
pose (a score that keeps only near-mean poses teaches the model the pull towards the mean it already
has). Scores: ``confidence``, the library's (``pseudo_label.combine``: the views' density at the
label, lowered by their disagreement and by diffuse heatmaps); ``sharpness``, the original view's
confidence alone (one view: its heatmaps' spread only); ``agreement``, minus the views' mean
distance from the label in mm; ``oracle``, minus the true error, the best any score could keep.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch
from scipy.stats import spearmanr

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
    parser.add_argument("--fraction", type=float, default=0.6, help="the policy's kept fraction")
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
    labeled = {}
    for name, kinds in ensembles.items():
        config_k = dataclasses.replace(config, label=dataclasses.replace(config.label, views=kinds))
        labels = label_target(model, target, config_k, seed=0, round_index=1)
        pred = to_mm(target, labels.joints.astype(np.float64))
        labeled[name] = (pred, labels.confidence)
        results[name] = {
            "mpjpe": round(float(metrics.mpjpe(pred, target.joints_3d).mean()), 1),
            "pa_mpjpe": round(float(metrics.pa_mpjpe(pred, target.joints_3d).mean()), 1),
        }
        print(f"{name}: {results[name]}", flush=True)
    single = [labeled[name] for name in ("original", "invariance", "equivariance")]
    paper = labeled["paper's 3 views + 0 equivariance"]
    results["confidence"] = confidence_choice(
        paper, single, target, np.asarray(info["mean_pose"]), args.fraction
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"checkpoint": args.checkpoint, "frames": args.frames, **results}, handle, indent=2)


def confidence_choice(
    paper: tuple, single: list[tuple], target: Frames, mean_pose: np.ndarray, fraction: float
) -> dict:
    """What keeping the top ``fraction`` of the paper ensemble's labels by each score keeps (see the
    module's text). ``paper`` is that ensemble's labels (mm) and confidences, ``single`` the same
    for its original, invariance and equivariance views alone."""
    pose, confidence = paper
    truth = target.joints_3d
    error = metrics.mpjpe(pose, truth).mean(axis=1)
    distance = np.mean([np.linalg.norm(view - pose, axis=-1).mean(axis=-1) for view, _ in single], axis=0)
    from_mean = metrics.mpjpe(np.broadcast_to(mean_pose, truth.shape), truth).mean(axis=1)
    scores = {"confidence": confidence, "sharpness": single[0][1], "agreement": -distance, "oracle": -error}
    kept = int(round(fraction * len(error)))
    results = {"fraction": fraction, "truth_from_mean_pose_mm": round(float(from_mean.mean()), 1)}
    away = results["truth_from_mean_pose_mm"]
    print(f"keeping {kept} of {len(error)} frames (their truth {away} mm from the mean pose):")
    for name, score in scores.items():
        top = np.argsort(-score, kind="stable")[:kept]
        results[name] = {
            "rank_correlation_with_accuracy": round(float(spearmanr(score, -error)[0]), 3),
            "kept_label_mpjpe": round(float(error[top].mean()), 1),
            "kept_truth_from_mean_pose_mm": round(float(from_mean[top].mean()), 1),
        }
        print(f"  by {name}: {results[name]}", flush=True)
    return results


if __name__ == "__main__":
    main()
