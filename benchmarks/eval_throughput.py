"""Test-set evaluation: on Ray Data actors (what the driver runs) against in one process (what it ran
before, and what the experiments' trials run), in one run, their results checked equal first.

Both evaluate the same ``synthetic-real`` test frames (stored as records in a local directory) with
the same model (the config's ``model`` section, randomly initialised: no weights are downloaded),
beside the mean pose of those frames:

- **in-process**: one process, torch using every core (``torch.set_num_threads(cores)``), as the
  driver did: ``fitting.load_frames`` (read and decode every frame), then ``fitting.evaluate``;
  the second part alone is ``inprocess_evaluate_s``, what each evaluation cost the driver once the
  decoded test set sat in its memory;
- **ray**: ``stages.evaluate.evaluate_frames`` (decode tasks, the label section's actors, per-frame
  errors written as Parquet) and ``summarize_errors`` on a fresh local Ray with ``--cores`` CPUs,
  timed from the stage call to the summary (Ray start-up excluded, actor start-up included);
- **ray floor**: the same stage (``stages.label.through_actors``: read, decode, actors, write) with
  actors that only pass the frame ids on, in the same Ray session as ray: what the stage costs on this
  machine before any model runs, as a speed ratio like the others: below 1, the stage cannot be as
  fast as the in-process evaluation whatever its actors do.

Each way runs ``--repeats`` times, alternating; the report gives the medians and every time. Before
any time is reported, every repeat's two summaries must agree: exactly in their counts and keys, and
to 1e-5 relative in their means (the actors' float32 forward pass runs on other batches with
another thread count); ``identical`` says whether they were equal to the last bit. The label
section is fitted to the machine as in ``label_throughput.py`` (no more actors than GPUs, CPU actors
sharing at most half the cores).

    python benchmarks/eval_throughput.py --frames 4000 --json runs/eval_throughput.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import label_throughput
import numpy as np
import ray
import torch
from label_throughput import floor_seconds, machine_config, start_local_ray, write_report
from ray import cloudpickle

from dfa_ray.config import Config
from dfa_ray.data import synthetic
from dfa_ray.data.records import write_records
from dfa_ray.method import checkpoints
from dfa_ray.method.fitting import dataset_mean_pose, evaluate, load_frames
from dfa_ray.method.model import PoseModel
from dfa_ray.stages.evaluate import COLUMNS, evaluate_frames, summarize_errors

RELATIVE = 1e-5
# Ray's workers cannot import benchmarks/ modules: label_throughput.PassOn travels by value.
cloudpickle.register_pickle_by_value(label_throughput)


def in_process(data: str, checkpoint: str, config: Config, mean_pose: np.ndarray, cores: int) -> tuple:
    """The summary, the seconds in all and the seconds of ``evaluate`` alone."""
    torch.set_num_threads(cores)
    start = time.perf_counter()
    model, _ = checkpoints.load(checkpoint)
    frames = load_frames(data, config.model.input_size)
    loaded = time.perf_counter()
    summary = evaluate(model, frames, mean_pose=mean_pose)
    end = time.perf_counter()
    return summary, end - start, end - loaded


def on_actors(
    data: str, checkpoint: str, out: str, config: Config, mean_pose: np.ndarray, cores: int
) -> tuple:
    """The summary and the seconds of the Ray stage on a fresh local cluster (start-up not counted),
    then the seconds of the same stage with ``PassOn`` actors."""
    start_local_ray(config, cores)
    try:
        start = time.perf_counter()
        evaluate_frames(data, checkpoint, out, config.label, config.model.input_size, mean_pose)
        summary = summarize_errors(out)
        seconds = time.perf_counter() - start
        return summary, seconds, floor_seconds(data, COLUMNS, out + "-floor", config)
    finally:
        ray.shutdown()


def largest_difference(a: dict, b: dict, key: str = "") -> float:
    """The largest relative difference between two summaries' means; SystemExit where their
    structure, counts or names differ (then no speed may be reported)."""
    if a.keys() != b.keys():
        raise SystemExit(f"summaries differ in their keys at {key or 'the top'}: {sorted(a)} / {sorted(b)}")
    largest = 0.0
    for name, value in a.items():
        other, where = b[name], f"{key}.{name}".lstrip(".")
        if isinstance(value, dict):
            largest = max(largest, largest_difference(value, other, where))
        elif isinstance(value, float) and isinstance(other, float):
            largest = max(largest, abs(value - other) / max(abs(value), 1e-12))
        elif value != other:
            raise SystemExit(f"summaries differ at {where}: {value!r} / {other!r}")
    return largest


def main() -> None:
    """Measure, check, print and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--config", help="a run config (default: the built-in defaults)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each way; medians are reported")
    parser.add_argument("--json", required=True, help="where to write the report")
    args = parser.parse_args()
    config, crop = machine_config(args.config, args.cores)
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as folder:
        checkpoint = os.path.join(folder, "model.pt")
        torch.manual_seed(0)
        checkpoints.save(PoseModel(config.model), checkpoint)
        data = os.path.join(folder, "frames")
        write_records(
            synthetic.generate("synthetic-real", "test", args.frames, crop_size=crop, workers=args.cores),
            data,
        )
        mean_pose = dataset_mean_pose([data])
        # Alternate the two ways so that a slow spell of a shared machine hits both alike; medians.
        plain_runs, evaluate_runs, ray_runs, floor_runs, differences, identical = [], [], [], [], [], True
        for repeat in range(args.repeats):
            expected, seconds, evaluating = in_process(data, checkpoint, config, mean_pose, args.cores)
            out = os.path.join(folder, f"eval-{repeat}")
            summary, ray_seconds, floor = on_actors(data, checkpoint, out, config, mean_pose, args.cores)
            difference = largest_difference(expected, summary)
            if not difference <= RELATIVE:  # NaN fails this too
                raise SystemExit(f"the actors' summary is not the in-process one: {difference:.3g} relative")
            differences.append(difference)
            identical = identical and summary == expected
            plain_runs.append(seconds)
            evaluate_runs.append(evaluating)
            ray_runs.append(ray_seconds)
            floor_runs.append(floor)
    plain, ray_seconds = float(np.median(plain_runs)), float(np.median(ray_runs))
    report = {
        "frames": args.frames,
        "inprocess_fps": round(args.frames / plain, 1),
        "ray_fps": round(args.frames / ray_seconds, 1),
        "ray_over_inprocess": round(plain / ray_seconds, 3),
        "ray_over_inprocess_evaluate": round(float(np.median(evaluate_runs)) / ray_seconds, 3),
        "ray_floor_over_inprocess": round(plain / float(np.median(floor_runs)), 3),
        "identical": identical,
        "largest_relative_difference": max(differences),
        "mpjpe": summary["mpjpe"],
        "mean_pose_mpjpe": summary["mean_pose_mpjpe"],
        "inprocess_s": [round(t, 2) for t in plain_runs],
        "inprocess_evaluate_s": [round(t, 2) for t in evaluate_runs],
        "ray_s": [round(t, 2) for t in ray_runs],
        "ray_floor_s": [round(t, 2) for t in floor_runs],
    }
    write_report(args.json, report, 7, args.config, config, crop, args.cores)


if __name__ == "__main__":
    main()
