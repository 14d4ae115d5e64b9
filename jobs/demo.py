"""The embedded demo: a local Ray head and SeaweedFS S3, then ``ray job submit`` of the driver.

    python jobs/demo.py                      # configs/demo.yaml, storage s3://dfa-ray/runs
    python jobs/demo.py --no-dfa             # any further flags go to jobs/self_train.py
    python jobs/demo.py --pretrain           # first redo the shipped source model (models/source/)

The demo starts from the source model in ``models/source/`` (``init_checkpoint`` in
configs/demo.yaml): pretraining it takes ~22 minutes on 2 cores, which with the demo is past the
demo's 15-minute budget. With ``--pretrain`` the demo first submits ``jobs/pretrain.py --config
configs/source_model.yaml`` to the same cluster and replaces ``models/source/`` with its result
(model, resolved config, metrics, the commit it came from), then runs the driver from it.

Everything stays on this machine: the S3 data lives in ``runs/s3-data/`` (kept between demos, so the
synthetic benchmark is rendered once), Ray runs on free ports with token authentication (its
services bind every interface: ``ray start`` maps 127.0.0.1 to the machine's address), and both are
stopped at the end. The job's metrics and the last round's model are copied to
``runs/<run-name>/metrics.jsonl`` and ``runs/<run-name>/model.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from dfa_ray import storage
from dfa_ray.method import metrics
from dfa_ray.ops.localcluster import LocalRay
from dfa_ray.ops.objectstore import EmbeddedS3
from dfa_ray.ops.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
SOURCE_MODEL = REPO / "models" / "source"
SOURCE_CONFIG = "configs/source_model.yaml"


def publish_source_model(run: RunDir, out: Path = SOURCE_MODEL) -> dict:
    """Copy a committed pretraining run's model, resolved config and metrics to ``out`` with a
    PROVENANCE.json (the commit, the command, the machine), so the shipped model says where it came from."""
    manifest = run.read_manifest(0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pt").write_bytes(storage.read_bytes(run.model(0)))
    (out / "config.yaml").write_bytes(storage.read_bytes(run.config))
    (out / "metrics.jsonl").write_bytes(storage.read_bytes(run.metrics))
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    provenance = {
        "command": f"bash scripts/demo.sh --pretrain  (jobs/pretrain.py --config {SOURCE_CONFIG})",
        "commit": commit or None,
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "run": run.root,
        "seconds": manifest.get("seconds"),
        "evaluation": manifest["evaluation"],
    }
    (out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return provenance


def print_metrics(lines: bytes, run_name: str) -> None:
    """Each stage's errors beside the mean-pose baseline of the same test set."""
    print(f"\n(mm, {run_name}; the mean pose is the labeled source frames' average pose, scored alike)")
    for line in lines.decode().splitlines():
        record = json.loads(line)
        name = "pretrain" if record["stage"] == "pretrain" else f"round {record['round']}"
        print(f"{name:>9}  {metrics.describe(record)}")


def main(argv: list[str] | None = None) -> int:
    """Start the services, submit the driver, print the per-stage metrics; exit 1 if the job failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--run-name", default=f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--data-dir", type=Path, default=REPO / "runs" / "s3-data", help="S3 server's data")
    parser.add_argument(
        "--pretrain", action="store_true", help=f"redo models/source/ ({SOURCE_CONFIG}) before the demo"
    )
    args, driver_flags = parser.parse_known_args(argv)

    with EmbeddedS3(args.data_dir, bucket="dfa-ray") as s3:
        storage_uri = s3.uri("runs")
        print(f"S3 at {s3.endpoint_url} (bucket dfa-ray, data in {args.data_dir})", flush=True)
        with LocalRay(env=s3.env()) as head:
            if args.pretrain:
                name = f"source-model-{time.strftime('%Y%m%d-%H%M%S')}"
                print(f"Ray head at {head.dashboard_url}; submitting jobs/pretrain.py ({name})", flush=True)
                entry = ["python", "jobs/pretrain.py", "--config", SOURCE_CONFIG, "--storage", storage_uri]
                job = head.submit([*entry, "--run-name", name], REPO, capture=False)
                if not job.succeeded:
                    print(f"job {job.job_id} ended {job.status}", file=sys.stderr)
                    return 1
                os.environ.update(s3.env())
                published = publish_source_model(RunDir(storage_uri, name))
                print(f"source model: {SOURCE_MODEL}  {metrics.describe(published['evaluation'])}")
            print(f"Ray head at {head.dashboard_url}; submitting jobs/self_train.py", flush=True)
            entrypoint = ["python", "jobs/self_train.py", "--config", args.config, "--storage", storage_uri]
            entrypoint += ["--run-name", args.run_name, *driver_flags]
            job = head.submit(entrypoint, REPO, capture=False)
        if not job.succeeded:
            print(f"job {job.job_id} ended {job.status}", file=sys.stderr)
            return 1
        os.environ.update(s3.env())  # to read the results from here
        run = RunDir(storage_uri, args.run_name)
        lines = storage.read_bytes(run.metrics)
        # The embedded S3 stops with the demo: the final model goes to local disk beside the metrics,
        # so predict and evaluate can use it afterwards.
        model = storage.read_bytes(run.model(max(run.committed_rounds())))
    local = REPO / "runs" / args.run_name
    local.mkdir(parents=True, exist_ok=True)
    (local / "metrics.jsonl").write_bytes(lines)
    (local / "model.pt").write_bytes(model)
    print_metrics(lines, args.run_name)
    print(f"metrics: {local / 'metrics.jsonl'}\nmodel:   {local / 'model.pt'}  (the last round's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
