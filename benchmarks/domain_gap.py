"""Measure the synthetic benchmark's domain gap: source-only vs target-trained MPJPE on synthetic-real test.

    python benchmarks/domain_gap.py --train 6000 --test 1000 --epochs 8 --seeds 0 --out runs/domain_gap.json

Also reports the mean-training-pose baseline (every test frame predicted as the mean root-relative
training pose), below which a model's pseudo-labels would be noise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dfa_ray import metrics
from dfa_ray.data.synthetic import generate
from dfa_ray.model import ModelConfig, PoseModel
from dfa_ray.training import Frames, TrainConfig, evaluate, fit


def frames(domain: str, split: str, n: int, input_size: int) -> Frames:
    """Render and decode ``n`` frames."""
    start = time.perf_counter()
    out = Frames.from_rows(list(generate(domain, split, n)), input_size)
    print(f"{domain}/{split}: {n} frames in {time.perf_counter() - start:.1f} s", flush=True)
    return out


def mean_pose_baseline(train: Frames, test: Frames) -> dict:
    """MPJPE/PA-MPJPE of predicting the mean root-relative training pose for every test frame."""
    mean = (train.joints_3d - train.joints_3d[:, :1]).mean(axis=0)
    pred = np.broadcast_to(mean, test.joints_3d.shape) + test.joints_3d[:, :1]
    s = metrics.summarize(pred, test.joints_3d)
    return {"mpjpe": s["mpjpe"], "pa_mpjpe": s["pa_mpjpe"]}


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
            model = PoseModel(config)
            start = time.perf_counter()
            fit(model, train, TrainConfig(epochs=args.epochs), seed=seed)
            summary = evaluate(model, test)
            results["models"][f"{domain}/seed{seed}"] = {
                "mpjpe": summary["mpjpe"], "pa_mpjpe": summary["pa_mpjpe"],
                "train_seconds": time.perf_counter() - start,
            }  # fmt: skip
            print(domain, seed, results["models"][f"{domain}/seed{seed}"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
