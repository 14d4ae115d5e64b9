"""Pseudo-labeling throughput: the Ray Data stage against a plain single-process torch loop.

Both label the same synthetic-real frames (stored as records in a local directory) with the same
three-view ensemble and the same model, and write the same label columns to Parquet:

- **plain**: one process, torch using every core (``torch.set_num_threads(cores)``), reading the
  records with pyarrow and calling ``PseudoLabeler`` on batches;
- **ray**: ``dfa_ray.stages.label.label_frames`` on a fresh local Ray with ``--actors`` actors.

Ray's time is measured from the stage call to the last file written (Ray start-up excluded, actor
start-up included), at each ``--frames`` scale, so the fixed cost shows against the scale.

    python benchmarks/label_throughput.py --frames 2000 8000 --actors 2
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dfa_ray import checkpoints
from dfa_ray.config import LabelConfig
from dfa_ray.data import synthetic
from dfa_ray.data.records import read_records, write_records
from dfa_ray.model import ModelConfig, PoseModel
from dfa_ray.stages.label import LABEL_SCHEMA, PseudoLabeler, label_frames


def plain_loop(data: str, checkpoint: str, out: str, config: LabelConfig, cores: int) -> float:
    """Seconds for the single-process loop, reading to writing."""
    torch.set_num_threads(cores)
    start = time.perf_counter()
    labeler = PseudoLabeler(checkpoint, 1, config, sigma=1.0)
    table = read_records(data, columns=["frame_id", "image"], validate=False)
    parts = []
    for offset in range(0, table.num_rows, config.batch_size):
        batch = table.slice(offset, config.batch_size)
        columns = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in ("frame_id", "image")}
        out_batch = labeler(columns)
        parts.append(
            pa.table(
                {
                    "frame_id": out_batch["frame_id"].tolist(),
                    "joints": list(out_batch["joints"]),
                    "joint_confidence": list(out_batch["joint_confidence"]),
                    "confidence": out_batch["confidence"],
                    "error": out_batch["error"].tolist(),
                },
                schema=LABEL_SCHEMA,
            )
        )
    pq.write_table(pa.concat_tables(parts), os.path.join(out, "labels.parquet"))
    return time.perf_counter() - start


def ray_stage(data: str, checkpoint: str, out: str, config: LabelConfig, cores: int) -> float:
    """Seconds for the Ray Data stage on a fresh local cluster (cluster start-up not counted)."""
    import ray

    ray.init(address="local", num_cpus=cores, object_store_memory=512 * 2**20, include_dashboard=False,
             logging_level="warning")  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        start = time.perf_counter()
        label_frames(data, checkpoint, out, 1, config, sigma=1.0)
        return time.perf_counter() - start
    finally:
        ray.shutdown()


def main() -> None:
    """Time both ways at each scale and print frames/s and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, using {args.cores}"
    )
    config = LabelConfig(
        actors=args.actors, batch_size=args.batch_size, num_cpus=args.cores / args.actors / 2
    )
    with tempfile.TemporaryDirectory(prefix="label-bench-") as folder:
        checkpoint = os.path.join(folder, "model.pt")
        torch.manual_seed(0)
        checkpoints.save(PoseModel(ModelConfig()), checkpoint)
        for n in args.frames:
            data = os.path.join(folder, f"frames-{n}")
            write_records(synthetic.generate("synthetic-real", "train", n, workers=args.cores), data)
            plain_out, ray_out = os.path.join(folder, f"plain-{n}"), os.path.join(folder, f"ray-{n}")
            os.makedirs(plain_out)
            plain = plain_loop(data, checkpoint, plain_out, config, args.cores)
            ray_seconds = ray_stage(data, checkpoint, ray_out, config, args.cores)
            print(
                f"{n} frames: plain loop {n / plain:.0f} frames/s ({plain:.1f} s), "
                f"Ray Data {args.actors} actors {n / ray_seconds:.0f} frames/s ({ray_seconds:.1f} s); "
                f"ratio Ray/plain {plain / ray_seconds:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
