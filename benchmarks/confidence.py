"""How well the pseudo-labels' confidence ranks them, on rendered frames whose truth is a diagnostic
only: the target's *training* frames (the first of those every run adapts on), never the test split.

    python benchmarks/confidence.py models/source/model.pt
    python benchmarks/confidence.py models/source/model.pt --config configs/demo.yaml --keep 0.8

The policy keeps the most confident frames; self-training can only gain where those are labelled
better than the rest. Per ranking, the MPJPE of the pseudo-labels (the ensemble's, ``label.views`` as
the labeler draws them for the config's seed and round 1, at each frame's true root depth) that the
``--keep`` fraction would keep and of those it would drop, and the Spearman rank correlation of the
score with the negated error. The rankings:

- ``facing`` and ``density``: the ensemble's two confidences (``label.confidence``, described in
  ``dfa_ray.method.pseudo_label``): the views' agreement on which way the body faces, and CC-SSL's
  averaged-heatmap peak (the views' agreement and sharpness);
- ``sharpness``: the original view's heatmaps alone, their mean variance (lower: more confident);
- ``mirror_agreement``: the angle between the body's left-to-right direction predicted from the frame
  and from its mirror image mapped back (``metrics.facing_angle``, smaller: more confident): a body the
  network cannot tell front from back turns between the two;
- ``oracle``: the negated true error, the best any confidence could do.

It also reports the share of pseudo-labels turned round (their body facing more than 90 degrees from
the truth's, ``metrics.facing_angle``) and their MPJPE beside the rest's, and the pseudo-labels' MPJPE
were their image position the truth's (``pseudo_label.anchor_2d`` with the true 2D, the ensemble's
depth kept): how much of their error is where the joints are in the image rather than their depth.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from dfa_ray.cli import print_json
from dfa_ray.config import Config, load_config
from dfa_ray.data.synthetic import generate
from dfa_ray.experiments import label_target
from dfa_ray.method import checkpoints, metrics
from dfa_ray.method.fitting import Frames, to_mm
from dfa_ray.method.model import predict
from dfa_ray.method.pseudo_label import anchor_2d
from dfa_ray.method.transforms import EquivarianceParams, equivariance_inverse, mean_variance


def ranking(error: np.ndarray, score: np.ndarray, keep: float) -> dict:
    """The kept and dropped frames' mean error when the top ``keep`` by ``score`` are kept."""
    order = np.argsort(-score, kind="stable")
    kept = int(round(keep * len(error)))
    return {
        "kept_mpjpe": float(error[order[:kept]].mean()),
        "dropped_mpjpe": float(error[order[kept:]].mean()) if kept < len(error) else None,
        "spearman": float(spearmanr(score, -error).statistic),
    }


def with_confidence(config: Config, kind: str) -> Config:
    """``config`` with pseudo-labels scored by ``kind``."""
    return dataclasses.replace(config, label=dataclasses.replace(config.label, confidence=kind))


def run(args: argparse.Namespace) -> dict:
    """Render the frames, label them as round 1 would, and score each ranking."""
    config = load_config(args.config)
    model, _ = checkpoints.load(args.checkpoint)
    crop_size = config.data.synthetic_crop_size  # as the experiments render their frames
    rows = list(generate("synthetic-real", "train", args.frames, seed=0, crop_size=crop_size, workers=2))
    frames = Frames.from_rows(rows, model.config.input_size)
    truth = frames.joints_3d - frames.joints_3d[:, :1]

    def error(coords: np.ndarray) -> np.ndarray:
        pred = to_mm(frames, np.asarray(coords, np.float64))
        return metrics.mpjpe(pred - pred[:, :1], truth).mean(axis=1)

    labels = {
        kind: label_target(model, frames, with_confidence(config, kind), config.seed, 1)
        for kind in ("facing", "density")
    }
    label_error = error(labels["facing"].joints)  # the same average whatever scores it
    plain, variance = predict(model, frames.images)
    mirrored, _ = predict(model, np.ascontiguousarray(frames.images[:, :, ::-1]))
    mirrored = equivariance_inverse(mirrored, EquivarianceParams(flip=True))
    scores = {
        "facing": labels["facing"].confidence.astype(np.float64),
        "density": labels["density"].confidence.astype(np.float64),
        "sharpness": -mean_variance(variance).mean(axis=-1),
        "mirror_agreement": -metrics.facing_angle(plain, mirrored),
        "oracle": -label_error,
    }
    turned = metrics.facing_angle(to_mm(frames, labels["facing"].joints.astype(np.float64)), truth) > 90
    true_2d = anchor_2d(labels["facing"], frames.coords[..., :2], np.ones(frames.coords.shape[:2], bool))
    return {
        "checkpoint": args.checkpoint,
        "config": args.config,
        "frames": len(frames),
        "keep": args.keep,
        "pseudo_label_mpjpe": float(label_error.mean()),
        "pseudo_label_mpjpe_at_true_2d": float(error(true_2d.joints).mean()),
        # pseudo-labels whose body faces more than 90 degrees from the truth's (a front/back flip)
        "turned_round": {
            "share": float(turned.mean()),
            "mpjpe": float(label_error[turned].mean()) if turned.any() else None,
            "mpjpe_rest": float(label_error[~turned].mean()) if not turned.all() else None,
        },
        "rankings": {name: ranking(label_error, score, args.keep) for name, score in scores.items()},
    }


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="model.pt to label with")
    parser.add_argument("--config", default="configs/experiments/bench.yaml", help="label.views, seed")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--keep", type=float, default=0.6, help="the policy's kept fraction (round 1: 0.6)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run, print and write ``--json`` when given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.keep <= 1:
        parser.error(f"--keep must be in (0, 1], got {args.keep}")
    torch.set_num_threads(args.threads)
    results = run(args)
    print_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
