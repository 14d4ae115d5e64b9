"""Pseudo-labeling throughput: the Ray Data stage against a plain single-process loop, and the label
actor's host time per frame, in one run.

Both label the same synthetic-real frames (stored as records in a local directory) with the same
three-view ensemble and the same model (the config's ``model`` section, randomly initialised: no
weights are downloaded), and write the same label columns to Parquet:

- **plain**: one process, torch using every core (``torch.set_num_threads(cores)``), reading the
  records with pyarrow, then ``decode_frames`` and ``PseudoLabeler`` on each batch;
- **ray**: ``dfa_ray.stages.label.label_frames`` (decode tasks, then the actor pool) on a fresh local
  Ray with ``--cores`` CPUs, timed from the stage call to the last file written (Ray start-up
  excluded, actor start-up included), its labels counted.

- **ray floor**: the same stage (``stages.label.through_actors``: read, decode, actors, write) with
  actors that run no model (``PassOn``), in the same Ray session: what the stage costs on this
  machine before any labeling; ``ray_floor_over_plain`` below 1 means no actor could make the stage
  as fast as the plain loop.

Each way runs ``--repeats`` times, alternating; the report gives the medians and every time.
- **host_ms_per_frame**: one label actor's host time per frame at the config's input size, one
  thread (as Ray gives an actor): everything in its call but the views and the model, which run on
  its device (``time_labeling``). On a CPU-only machine that device is the CPU, and its time is
  ``device_ms_per_frame``.

The config's label section is used as it is, except that it gets no more actors than the
machine's GPUs hold (CPU actors where there is none), sharing at most half the cores (the read and
decode tasks need the rest). The JSON says what ran.

    python benchmarks/label_throughput.py --frames 8000 --json runs/label_throughput.json
    python benchmarks/label_throughput.py --frames 256 --config configs/paper.yaml --json runs/paper.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from dfa_ray.config import Config, LabelConfig, load_config
from dfa_ray.data import synthetic
from dfa_ray.data.records import read_records, write_records
from dfa_ray.method import checkpoints
from dfa_ray.method.model import PoseModel
from dfa_ray.stages.label import (
    LABEL_SCHEMA,
    PseudoLabeler,
    decode_frames,
    label_frames,
    through_actors,
    time_labeling,
)


def plain_loop(data: str, checkpoint: str, out: str, config: Config, cores: int) -> float:
    """Seconds for the single-process loop, reading to writing."""
    torch.set_num_threads(cores)
    start = time.perf_counter()
    labeler = PseudoLabeler(checkpoint, 1, config.label, config.adapt.sigma)
    table = read_records(data, columns=["frame_id", "image"], validate=False)
    parts = []
    for offset in range(0, table.num_rows, config.label.batch_size):
        batch = table.slice(offset, config.label.batch_size)
        columns = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in ("frame_id", "image")}
        labels = labeler(decode_frames(columns, config.model.input_size))
        columns = {
            name: list(values) if values.ndim > 1 else values.tolist() for name, values in labels.items()
        }
        parts.append(pa.table(columns, schema=LABEL_SCHEMA))
    pq.write_table(pa.concat_tables(parts), os.path.join(out, "labels.parquet"))
    return time.perf_counter() - start


class PassOn:
    """A stage's actor that runs no model: the frame ids of its decoded batch, nothing else."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"frame_id": np.array([str(f) for f in batch["frame_id"]], dtype=object)}


def start_local_ray(config: Config, cores: int) -> None:
    """A fresh local Ray of ``cores`` CPUs with the config's object store, as the driver starts one."""
    ray.init(address="local", num_cpus=cores, object_store_memory=config.ray.object_store_mb * 2**20,
             include_dashboard=False, logging_level="warning")  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False


def ray_stage(data: str, checkpoint: str, out: str, config: Config, cores: int) -> tuple[float, float]:
    """Seconds for the Ray Data stage on a fresh local cluster (cluster start-up not counted), then
    for the same stage with ``PassOn`` actors."""
    start_local_ray(config, cores)
    try:
        start = time.perf_counter()
        label_frames(data, checkpoint, out, 1, config.label, config.adapt.sigma, config.model.input_size)
        seconds = time.perf_counter() - start
        return seconds, floor_seconds(data, ["frame_id", "image"], out + "-floor", config)
    finally:
        ray.shutdown()


def floor_seconds(data: str, columns: list[str], out: str, config: Config) -> float:
    """Seconds for a stage over ``data``'s ``columns`` (``stages.label.through_actors``: read,
    decode, the label section's actors, write) whose actors run no model (``PassOn``); Ray is up."""
    start = time.perf_counter()
    through_actors(data, columns, PassOn, {}, out, config.label, config.model.input_size, "ids")
    return time.perf_counter() - start


def check_same_labels(plain_out: str, ray_out: str, frames: int) -> None:
    """A throughput counts only for the work done: both ways must label every frame, alike."""
    plain, ray_labels = (pq.read_table(out).sort_by("frame_id") for out in (plain_out, ray_out))
    if ray_labels.num_rows != frames or plain.num_rows != frames:
        raise SystemExit(f"{plain.num_rows} plain and {ray_labels.num_rows} Ray labels for {frames} frames")
    joints = [np.stack(t.column("joints").to_numpy(zero_copy_only=False)) for t in (plain, ray_labels)]
    # Thread counts differ between the two ways, so float sums may differ in their last bits.
    if not np.isfinite(joints[1]).all() or not np.allclose(joints[0], joints[1], atol=1e-4):
        raise SystemExit("the Ray stage's labels are not the plain loop's")


def fit_to_machine(label: LabelConfig, cores: int) -> LabelConfig:
    """The config's label stage, on this machine: no more actors than its GPUs hold (none without a
    GPU), sharing at most half the cores (the read and decode tasks need the rest)."""
    gpus = torch.cuda.device_count()
    num_gpus = label.num_gpus if gpus else 0.0
    actors = min(label.actors, cores, int(gpus // num_gpus) if num_gpus else cores)
    if actors < 1:
        raise SystemExit(f"label.num_gpus={label.num_gpus} is more than this machine's {gpus} GPU(s)")
    num_cpus = min(label.num_cpus, cores / actors / 2)
    return dataclasses.replace(label, actors=actors, num_gpus=num_gpus, num_cpus=num_cpus)


def machine_config(config_file: str | None, cores: int) -> tuple[Config, int]:
    """The config (``fit_to_machine``) and the crop size of the records to render, said on stdout."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    config = load_config(config_file)
    config = dataclasses.replace(config, label=fit_to_machine(config.label, cores))
    size = config.model.input_size
    crop = max(config.data.synthetic_crop_size, size)
    print(f"{platform.machine()}, {os.cpu_count()} CPUs (using {cores}), torch {torch.__version__}, "
          f"input {size} px from {crop} px records, {config.label}", flush=True)  # fmt: skip
    return config, crop


def main() -> None:
    """Measure, print and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8000)
    parser.add_argument(
        "--config", help="a run config (default: the built-in defaults, as configs/demo.yaml's model)"
    )
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--host-frames", type=int, default=64, help="frames per timed actor call (host time)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of each way, and actor calls; medians are reported"
    )
    parser.add_argument("--json", required=True, help="where to write the report")
    args = parser.parse_args()
    config, crop = machine_config(args.config, args.cores)
    size = config.model.input_size
    with tempfile.TemporaryDirectory(prefix="label-bench-") as folder:
        checkpoint = os.path.join(folder, "model.pt")
        torch.manual_seed(0)
        checkpoints.save(PoseModel(config.model), checkpoint)
        data = os.path.join(folder, "frames")
        rows = list(
            synthetic.generate("synthetic-real", "train", args.frames, crop_size=crop, workers=args.cores)
        )
        write_records(rows, data)
        # Alternate the two ways so that a slow spell of a shared machine hits both alike; medians.
        plain_runs, ray_runs, floor_runs = [], [], []
        for repeat in range(args.repeats):
            out = os.path.join(folder, f"out-{repeat}")
            os.makedirs(os.path.join(out, "plain"))
            plain_runs.append(plain_loop(data, checkpoint, os.path.join(out, "plain"), config, args.cores))
            seconds, floor = ray_stage(data, checkpoint, os.path.join(out, "ray"), config, args.cores)
            ray_runs.append(seconds)
            floor_runs.append(floor)
            check_same_labels(os.path.join(out, "plain"), os.path.join(out, "ray"), args.frames)
        plain, ray_seconds = float(np.median(plain_runs)), float(np.median(ray_runs))
        torch.set_num_threads(1)  # one actor's share
        host_rows = [{"frame_id": r["frame_id"], "image": r["image"]} for r in rows[: args.host_frames]]
        columns = {
            name: np.array([r[name] for r in host_rows], dtype=object) for name in ("frame_id", "image")
        }
        decoded = decode_frames(columns, size)["image"]
        total, host = time_labeling(checkpoint, decoded, config.label, config.adapt.sigma, args.repeats)
    report = {
        "frames": args.frames,
        "plain_fps": round(args.frames / plain, 1),
        "ray_fps": round(args.frames / ray_seconds, 1),
        "ray_over_plain": round(plain / ray_seconds, 3),
        "host_ms_per_frame": round(host * 1e3, 3),
        "ray_floor_over_plain": round(plain / float(np.median(floor_runs)), 3),
        "device_ms_per_frame": round((total - host) * 1e3, 3),
        "plain_s": [round(t, 2) for t in plain_runs],
        "ray_s": [round(t, 2) for t in ray_runs],
        "ray_floor_s": [round(t, 2) for t in floor_runs],
    }
    write_report(args.json, report, 6, args.config, config, crop, args.cores)


def write_report(
    path: str, results: dict, shown: int, config_file: str | None, config: Config, crop: int, cores: int
) -> None:
    """Write ``results`` as JSON to ``path`` with what ran, where and when; print the first ``shown``."""
    report = {
        **results,
        "config": config_file or "defaults",
        "input_size": config.model.input_size,
        "record_crop_size": crop,
        "label": dataclasses.asdict(config.label),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "cores": cores,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "ray": ray.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps({key: report[key] for key in list(report)[:shown]}), flush=True)


if __name__ == "__main__":
    main()
