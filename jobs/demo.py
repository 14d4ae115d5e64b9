"""The embedded demo: a local Ray head and SeaweedFS S3, then ``ray job submit`` of the driver.

    python jobs/demo.py                      # configs/demo.yaml, storage s3://dfa-ray/runs
    python jobs/demo.py --no-dfa             # any further flags go to jobs/self_train.py

Everything stays on this machine: the S3 data lives in ``runs/s3-data/`` (kept between demos, so the
synthetic benchmark is rendered once), Ray runs on free loopback ports with token authentication, and
both are stopped at the end. The job's metrics are copied to ``runs/<run-name>/metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from dfa_ray import storage
from dfa_ray.localcluster import LocalRay
from dfa_ray.objectstore import EmbeddedS3
from dfa_ray.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Start the services, submit the driver, print the per-stage metrics; exit 1 if the job failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--run-name", default=f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--data-dir", type=Path, default=REPO / "runs" / "s3-data", help="S3 server's data")
    args, driver_flags = parser.parse_known_args(argv)

    with EmbeddedS3(args.data_dir, bucket="dfa-ray") as s3:
        storage_uri = s3.uri("runs")
        print(f"S3 at {s3.endpoint_url} (bucket dfa-ray, data in {args.data_dir})", flush=True)
        with LocalRay(env=s3.env()) as head:
            print(f"Ray head at {head.dashboard_url}; submitting jobs/self_train.py", flush=True)
            entrypoint = ["python", "jobs/self_train.py", "--config", args.config, "--storage", storage_uri]
            entrypoint += ["--run-name", args.run_name, *driver_flags]
            job = head.submit(entrypoint, REPO, capture=False)
        if not job.succeeded:
            print(f"job {job.job_id} ended {job.status}", file=sys.stderr)
            return 1
        os.environ.update(s3.env())  # to read the results from here
        run = RunDir(storage_uri, args.run_name)
        metrics = storage.read_bytes(run.metrics)
    local = REPO / "runs" / args.run_name / "metrics.jsonl"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(metrics)
    print(f"\n{'stage':>9}  {'MPJPE':>8}  {'PA-MPJPE':>8}   (mm, {args.run_name})")
    for line in metrics.decode().splitlines():
        record = json.loads(line)
        name = "pretrain" if record["stage"] == "pretrain" else f"round {record['round']}"
        print(f"{name:>9}  {record['mpjpe']:8.1f}  {record['pa_mpjpe']:8.1f}")
    print(f"metrics: {local}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
