"""Measure the synthetic benchmark's domain gap: source-only vs target-trained MPJPE on synthetic-real test.

    python benchmarks/domain_gap.py --train 6000 --test 1000 --epochs 8 --seeds 0 --out runs/domain_gap.json

Also reports the mean-training-pose baseline (every test frame predicted as the mean root-relative
training pose), below which a model's pseudo-labels would be noise, the two ratios the benchmark
is designed around (source-only over mean pose, source-only over target-trained), and where each
model's error lies: image-plane (x, y) against depth (z) error, and the share of frames that a
facing flip (depth mirrored, left and right exchanged) would fit better, the failure a model makes
when it cannot tell a person's front from their back.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dfa_ray.data.synthetic import generate
from dfa_ray.method import metrics
from dfa_ray.method.fitting import Frames, TrainConfig, fit, predict_mm
from dfa_ray.method.model import ModelConfig, create_model
from dfa_ray.method.skeleton import JOINT_NAMES

# Joint order with left and right exchanged.
_MIRROR = [JOINT_NAMES.index({"l": "r_", "r": "l_"}.get(n[0], "") + n[2:]) if n[1] == "_" else i
           for i, n in enumerate(JOINT_NAMES)]  # fmt: skip


def frames(domain: str, split: str, n: int, input_size: int) -> Frames:
    """Render and decode ``n`` frames."""
    start = time.perf_counter()
    out = Frames.from_rows(list(generate(domain, split, n)), input_size)
    print(f"{domain}/{split}: {n} frames in {time.perf_counter() - start:.1f} s", flush=True)
    return out


def mean_pose_baseline(train: Frames, test: Frames) -> dict:
    """MPJPE/PA-MPJPE of predicting the mean root-relative training pose for every test frame
    (``metrics.mean_pose_baseline``, the baseline every evaluation of the project is shown beside)."""
    s = metrics.mean_pose_baseline(metrics.mean_pose(train.joints_3d), test.joints_3d)
    return {"mpjpe": s["mpjpe"], "pa_mpjpe": s["pa_mpjpe"]}


def error_breakdown(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Root-relative mean absolute x/y/z errors (mm) and the share of frames a facing flip fits better."""
    pred, gt = pred - pred[:, :1], gt - gt[:, :1]
    flipped = pred[:, _MIRROR] * np.array([1.0, 1.0, -1.0])
    error = np.linalg.norm(pred - gt, axis=2).mean(1)
    flipped_error = np.linalg.norm(flipped - gt, axis=2).mean(1)
    x, y, z = (float(v) for v in np.abs(pred - gt).mean(axis=(0, 1)))
    return {"x_mm": x, "y_mm": y, "z_mm": z, "facing_flip_share": float((flipped_error < error).mean())}


def main() -> None:
    """Train one model per domain and evaluate both on the synthetic-real test split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("runs/domain_gap.json"))
    args = parser.parse_args()
    config = ModelConfig()
    test = frames("synthetic-real", "test", args.test, config.input_size)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "models": {}}
    for domain in ("synthetic-source", "synthetic-real"):
        train = frames(domain, "train", args.train, config.input_size)
        results[f"mean_pose_{domain}"] = mean_pose_baseline(train, test)
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = create_model(config)
            start = time.perf_counter()
            # No rigid augmentation: this measures the gap the rendered data itself makes, and the
            # numbers in benchmarks/README.md were taken this way.
            fit(model, train, TrainConfig(epochs=args.epochs, augment=False), seed=seed)
            pred = predict_mm(model, test)
            summary = metrics.summarize(pred, test.joints_3d)
            results["models"][f"{domain}/seed{seed}"] = {
                "mpjpe": summary["mpjpe"], "pa_mpjpe": summary["pa_mpjpe"],
                "train_seconds": time.perf_counter() - start, **error_breakdown(pred, test.joints_3d),
            }  # fmt: skip
            print(domain, seed, results["models"][f"{domain}/seed{seed}"], flush=True)
    mean_pose = min(results[f"mean_pose_{d}"]["mpjpe"] for d in ("synthetic-source", "synthetic-real"))
    results["ratios"] = {
        f"seed{seed}": {
            "source_over_mean_pose": results["models"][f"synthetic-source/seed{seed}"]["mpjpe"] / mean_pose,
            "source_over_target": results["models"][f"synthetic-source/seed{seed}"]["mpjpe"]
            / results["models"][f"synthetic-real/seed{seed}"]["mpjpe"],
        }
        for seed in args.seeds
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
