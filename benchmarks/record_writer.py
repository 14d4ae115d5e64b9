"""Benchmark: the schema-v1 RecordWriter storing frames to the embedded S3, then a Ray Data read-back.

Rendering is excluded: ``--frames`` synthetic-benchmark crops (half of each domain, PNG) are rendered
before timing. Each repeat times ``RecordWriter`` from creation to ``close()`` (row
conversion, validation, Parquet encoding and the S3 uploads) into a fresh prefix, and reports
frames/s and MB/s of stored bytes. The last dataset is then read with ``ray.data.read_parquet`` and
the row count and distinct frame_ids are checked. The baseline, timed in the same run against the same
server, is one plain ``pyarrow.parquet.write_table`` of the same rows; the ratio is what validation and
sharding cost on top of Parquet itself.

    .venv/bin/python benchmarks/record_writer.py [--frames 10000] [--size 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq

from dfa_ray import storage
from dfa_ray.data import synthetic
from dfa_ray.data.records import RecordWriter
from dfa_ray.data.schema import rows_to_table
from dfa_ray.ops.objectstore import EmbeddedS3


def make_rows(n: int, size: int, workers: int) -> list[dict]:
    """Pre-rendered frames: half synthetic-source, half synthetic-real (the cluttered, noisy domain)."""
    half = n // 2
    source = synthetic.generate("synthetic-source", "train", half, crop_size=size, workers=workers)
    real = synthetic.generate("synthetic-real", "train", n - half, crop_size=size, workers=workers)
    return [*source, *real]


def time_baseline(rows: list[dict], uri: str) -> float:
    """Seconds for plain ``pyarrow.parquet.write_table`` of the same rows to one file: no validation,
    no sharding, pyarrow defaults. The row-dict -> Arrow conversion is timed too, as in the writer."""
    start = time.perf_counter()
    filesystem, path = storage.resolve(storage.join(uri, "baseline.parquet"))
    pq.write_table(rows_to_table(rows), path, filesystem=filesystem)
    return time.perf_counter() - start


def time_write(rows: list[dict], uri: str, batch: int) -> tuple[float, int, int]:
    """Seconds, stored bytes and file count for writing ``rows`` to ``uri`` in batches of ``batch``."""
    start = time.perf_counter()
    with RecordWriter(uri) as writer:
        for i in range(0, len(rows), batch):
            writer.write(rows[i : i + batch])
    summary = writer.close()
    return time.perf_counter() - start, summary.num_bytes, len(summary.files)


def ray_read_back(uri: str, expected: int) -> None:
    """Read the dataset with Ray Data and check the row count and distinct frame_ids."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=512 * 1024**2,
        include_dashboard=False,
        logging_level="warning",
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        filesystem, path = storage.resolve(uri)
        start = time.perf_counter()
        dataset = ray.data.read_parquet(path, filesystem=filesystem)
        count = dataset.count()
        ids = {row["frame_id"] for row in dataset.select_columns(["frame_id"]).take_all()}
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    status = "OK" if count == expected and len(ids) == expected else "MISMATCH"
    print(f"ray read_parquet: {count} rows, {len(ids)} distinct frame_ids in {seconds:.1f} s -> {status}")
    if status != "OK":
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per repeat."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=128, help="crop side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="rows per RecordWriter.write call")
    parser.add_argument("--workers", type=int, default=2, help="processes rendering the frames (untimed)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Data read-back")
    args = parser.parse_args(argv)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    start = time.perf_counter()
    rows = make_rows(args.frames, args.size, args.workers)
    payload = sum(len(row["image"]) for row in rows)
    print(
        f"rendered {args.frames} {args.size}px PNG crops in {time.perf_counter() - start:.1f} s "
        f"(mean {payload / args.frames / 1024:.1f} KiB/frame, {payload / 1e6:.0f} MB)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as data_dir, EmbeddedS3(data_dir, "bench") as server:
        os.environ.update(server.env())
        rates, baselines = [], []
        for repeat in range(args.repeats):
            base_seconds = time_baseline(rows, server.uri(f"baseline-{repeat}"))
            baselines.append(args.frames / base_seconds)
            uri = server.uri(f"records-{repeat}")
            seconds, num_bytes, files = time_write(rows, uri, args.batch)
            rates.append(args.frames / seconds)
            megabytes = num_bytes / 1e6
            print(
                f"write {repeat + 1}: {args.frames} frames, {files} file(s), {megabytes:.0f} MB in "
                f"{seconds:.2f} s -> {args.frames / seconds:.0f} frames/s, {megabytes / seconds:.1f} MB/s; "
                f"plain write_table {baselines[-1]:.0f} frames/s; ratio {rates[-1] / baselines[-1]:.2f}"
            )
        print(f"frames/s: min {min(rates):.0f}, median {float(np.median(rates)):.0f}, max {max(rates):.0f}")
        ratios = np.array(rates) / np.array(baselines)
        print(f"RecordWriter / plain write_table: median {float(np.median(ratios)):.2f}")
        if not args.no_ray:
            ray_read_back(uri, args.frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
