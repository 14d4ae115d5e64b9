"""Whether the 2D detector places a rendered domain's joints better than the model: MediaPipe's
H36M-17 keypoints (as ``stages.detect`` finds them) and a checkpoint's own 2D, each against the
crops' annotated 2D.

    python benchmarks/detector_2d.py --domain synthetic-source --frames 300
    python benchmarks/detector_2d.py --records path/to/renders/records --frames 500 --json out.json

The driver learns a detector's 2D for a target without any 2D where MediaPipe finds a person in at
least ``data.detect_2d_min_found`` of its crops (docs/driver.md). That share says whether it finds
people, not where it puts their joints. Rendered people come with their 2D annotated, a label the
driver never trains on, and it does not search such a target; here that 2D is the truth both are
scored against: why the driver leaves renders to their pseudo-labels, and what the detector would
give the same crops without their 2D. Errors are in crop sides (× 128 for pixels of a 128 px crop),
over the joints the detector sees, on the crops where it found a person; the model's 2D with the
flip test, as every evaluation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from dfa_ray.cli import print_json
from dfa_ray.data import synthetic
from dfa_ray.data.records import read_records
from dfa_ray.method import checkpoints
from dfa_ray.method.model import PoseModel, predict
from dfa_ray.stages.detect import DETECT_SIZE, KeypointDetector
from dfa_ray.stages.label import decode_frames, detected_2d

COLUMNS = ("frame_id", "image", "joints_2d", "joints_valid")


def rendered(domain: str, frames: int) -> dict[str, np.ndarray]:
    """``frames`` test crops of an embedded benchmark domain, as a records batch."""
    rows = list(synthetic.generate(domain, "test", frames))
    return {k: np.array([row.get(k) for row in rows], dtype=object) for k in COLUMNS}


def stored(uri: str, frames: int) -> dict[str, np.ndarray]:
    """The first ``frames`` rows of a records dataset that has annotated 2D, as a records batch."""
    table = read_records(uri, columns=list(COLUMNS)).slice(0, frames)
    if table.column("joints_2d").null_count == len(table):
        raise ValueError(f"{uri}: none of its first {len(table)} frames has joints_2d to score against")
    return {name: np.array(table.column(name).to_pylist(), dtype=object) for name in COLUMNS}


def model_2d(model: PoseModel, batch: dict[str, np.ndarray], chunk: int = 128) -> np.ndarray:
    """The model's 2D ``(N, 17, 2)`` in crop sides, with the flip test."""
    images = decode_frames(batch, model.config.input_size)["image"]
    parts = [predict(model, images[i : i + chunk], flip_test=True)[0] for i in range(0, len(images), chunk)]
    return (np.concatenate(parts)[..., :2] + 1.0) / 2.0


def score(batch: dict[str, np.ndarray], model: PoseModel, detector: KeypointDetector) -> dict:
    """Both 2D estimates against the annotated 2D: crops found, mean and median error in crop sides."""
    truth_batch = decode_frames(batch, DETECT_SIZE)
    normalised, annotated = detected_2d(truth_batch, np.arange(len(truth_batch["frame_id"])))
    truth = (normalised + 1.0) / 2.0  # crop sides, as the model's and the detector's
    found = detector(truth_batch)
    seen = found["valid"] > 0
    both = annotated & seen & found["found"][:, None]
    frames = both.any(axis=1)
    detector_error = np.linalg.norm(found["xy"].reshape(-1, 17, 2) - truth, axis=-1)
    model_error = np.linalg.norm(model_2d(model, batch) - truth, axis=-1)

    def per_frame(error: np.ndarray) -> np.ndarray:
        return np.array([e[m].mean() for e, m in zip(error[frames], both[frames])])

    summary = {"frames": len(truth), "found": int(found["found"].sum()), "scored": int(frames.sum())}
    for name, error in (("detector", detector_error), ("model", model_error)):
        values = per_frame(error)
        summary[name] = (
            {"mean": float(values.mean()), "median": float(np.median(values))} if len(values) else None
        )
    summary["model_all_frames"] = float(
        np.array([e[m].mean() for e, m in zip(model_error, annotated) if m.any()]).mean()
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    """Score both on the chosen crops and print (and write ``--json``) the summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--domain", choices=synthetic.DOMAINS, help="an embedded benchmark domain's test split"
    )
    where.add_argument("--records", help="a records dataset with annotated joints_2d")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--checkpoint", default="models/source/model.pt")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    batch = rendered(args.domain, args.frames) if args.domain else stored(args.records, args.frames)
    model, _ = checkpoints.load(args.checkpoint)
    out = {"crops": args.domain or args.records, "checkpoint": args.checkpoint}
    out |= score(batch, model, KeypointDetector())
    print_json(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
