"""Where a model's domain gap lies: the benchmark's test frames re-rendered with parts of the other
domain's looks, or of its geometry, and the model scored on each beside the mean pose.

    python benchmarks/looks_and_geometry.py --checkpoint models/source \
        runs/experiments/bench/trials/dfa-seed0.pt runs/experiments/bench/trials/only-target-seed0.pt \
        --json docs/results/looks_and_geometry.json --picture docs/results/looks_and_geometry.png

A ``synthetic`` style (``data.synthetic.DomainStyle``) is split into the **geometry** (who is
filmed, their actions, the camera's distance and elevation) and three groups of **looks**: camera
effects, backgrounds, and bodies (how people are drawn and lit, bystanders). Each row renders one
domain's frames in that domain's style with the named group taken from the other domain's: the same
people in the same poses before the same cameras (a frame's geometry is drawn from its random stream
before its looks), its looks drawn anew from the row's style. A row that gains much over "as
rendered" names the part of the gap that group makes: a gap of looks is the kind self-training is
meant to close, a gap of geometry (poses or viewpoints the source never shows) is not. The errors come
with where they lie: mean x, y and z error (mm, root-relative), the share of facing flips
(``metrics.facing_angle`` over 90 degrees) and of poses turned within 30 degrees of the truth, and the
MPJPE of the flipped frames and of the others. ``--picture`` draws the target's first test frames in
each of its rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from dfa_ray.cli import print_json
from dfa_ray.data.preview import grid, save_png
from dfa_ray.data.synthetic import GEOMETRY, LOOKS, STYLES, DomainStyle, generate, swapped
from dfa_ray.method import checkpoints, metrics
from dfa_ray.method.fitting import Frames, predict_mm


def variants(domain: str, other: str) -> dict[str, DomainStyle]:
    """Named styles to render ``domain``'s frames in: as rendered, each group of ``other``'s looks,
    all of them, and ``other``'s geometry; and where the first or the bodies' row draws flat bodies,
    the same with the cues of a person's front and back (``facing_cues``): how much of a flat body's
    error is that it hides which way it faces."""
    every_look = tuple(f for fields in LOOKS.values() for f in fields)
    rows = {
        "as rendered": STYLES[domain],
        **{f"{other}'s {group}": swapped(domain, other, fields) for group, fields in LOOKS.items()},
        f"all {other}'s looks": swapped(domain, other, every_look),
        f"{other}'s geometry": swapped(domain, other, GEOMETRY),
    }
    for name in ("as rendered", f"{other}'s bodies"):
        if not rows[name].lit_bodies:
            rows[f"{name}, with facing cues"] = dataclasses.replace(rows[name], facing_cues=True)
    return rows


def score(pred: np.ndarray, gt: np.ndarray, mean_pose: np.ndarray) -> dict:
    """MPJPE / PA-MPJPE beside the mean pose, per-axis errors, the share of facing flips and of poses
    turned within 30 degrees of the truth, and the MPJPE of the flipped and of the other frames: how
    much of a row's error the flips make, and how much the frames facing the right way."""
    summary = metrics.summarize(pred, gt, mean_pose=mean_pose)
    keep = ("mpjpe", "pa_mpjpe", "mean_pose_mpjpe", "mpjpe_over_mean_pose", "pa_mpjpe_over_mean_pose")
    rel_pred, rel_gt = pred - pred[:, :1], gt - gt[:, :1]
    x, y, z = np.abs(rel_pred - rel_gt).mean(axis=(0, 1))
    angle = metrics.facing_angle(pred, gt)
    flipped, error = angle > 90, metrics.mpjpe(pred, gt).mean(axis=1)
    return {
        **{k: summary[k] for k in keep},
        **{"x_mm": x, "y_mm": y, "z_mm": z, "facing_flipped": float(flipped.mean())},
        "facing_within_30": float((angle < 30).mean()),
        "flipped_mpjpe": float(error[flipped].mean()) if flipped.any() else None,
        "not_flipped_mpjpe": float(error[~flipped].mean()) if (~flipped).any() else None,
    }


def picture(path: Path, columns: int = 5, tile: int = 80) -> None:
    """The target's first ``columns`` test frames in each variant, one band per variant, as a PNG."""
    variant_styles = variants("synthetic-real", "synthetic-source").items()
    bands = [
        (
            name,
            [{**row, "joints_2d": None} for row in generate("synthetic-real", "test", columns, style=style)],
        )
        for name, style in variant_styles
    ]
    save_png(grid(bands, columns, tile), path)


def measure(checkpoint: str, test: int, split: str = "test") -> dict:
    """Every variant of both domains' ``split`` frames, scored for the checkpoint."""
    model, info = checkpoints.load(checkpoint)
    if info.get("mean_pose") is None:
        raise ValueError(f"{checkpoint}: the checkpoint carries no mean pose to score beside")
    mean_pose = np.asarray(info["mean_pose"], dtype=np.float64)
    results: dict = {"checkpoint": str(checkpoint), "frames": test, "split": split, "rows": {}}
    print(f"{checkpoint} ({checkpoints.describe_info(info)}):", flush=True)
    for domain, other in (("synthetic-real", "synthetic-source"), ("synthetic-source", "synthetic-real")):
        for name, style in variants(domain, other).items():
            start = time.perf_counter()
            rows = list(generate(domain, split, test, style=style))
            frames = Frames.from_rows(rows, model.config.input_size)
            row = score(predict_mm(model, frames), frames.joints_3d, mean_pose)
            results["rows"][f"{domain}, {name}"] = row
            seconds = time.perf_counter() - start
            others = "n/a" if row["not_flipped_mpjpe"] is None else f"{row['not_flipped_mpjpe']:.1f}"
            print(
                f"{domain}, {name}: MPJPE {row['mpjpe']:.1f} mm ({row['mpjpe_over_mean_pose']:.2f}x the "
                f"mean pose), PA-MPJPE {row['pa_mpjpe']:.1f}, x/y/z {row['x_mm']:.0f}/{row['y_mm']:.0f}/"
                f"{row['z_mm']:.0f}, flipped {row['facing_flipped']:.0%}, the others' MPJPE {others} "
                f"({seconds:.0f} s)",
                flush=True,
            )
    return results


def main() -> None:
    """Parse the arguments, measure, print and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        nargs="+",
        default=["models/source"],
        help="model.pt files, or directories holding one",
    )
    parser.add_argument("--test", type=int, default=1000, help="frames of each domain's split")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--picture", type=Path, help="a PNG of each variant's first test frames")
    args = parser.parse_args()
    if args.picture:
        picture(args.picture)
    print_json({"checkpoints": [measure(c, args.test, args.split) for c in args.checkpoint]}, args.json)


if __name__ == "__main__":
    main()
