"""Pseudo-labeling throughput against the number of label actors, on the local multi-node cluster.

The embedded S3 holds a rendered ``synthetic-real`` target (128 px crops, as in
``label_throughput.py``) and a seeded default model (0.96 M parameters, 64 px). ``LocalRay`` runs
a head with 0 CPUs and ``--nodes`` worker nodes, each a real ``ray start`` raylet. For each actor
count, ``dfa_ray.stages.label.label_frames`` labels every frame from S3 to S3. The time runs from
the stage call to the last label file written, actor start-up included. Also reported: the label
bytes written per frame and the image bytes read per frame.

    .venv/bin/python benchmarks/label_scaling.py --frames 4000 --actors 1 2 4
"""

from __future__ import annotations

import os

# Ray reads this once, when imported: the driver must send the cluster's token.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow.fs as pafs  # noqa: E402
import torch  # noqa: E402

from dfa_ray import checkpoints, storage  # noqa: E402
from dfa_ray.config import LabelConfig  # noqa: E402
from dfa_ray.data import synthetic  # noqa: E402
from dfa_ray.data.records import write_records  # noqa: E402
from dfa_ray.localcluster import LocalRay  # noqa: E402
from dfa_ray.model import ModelConfig, PoseModel  # noqa: E402
from dfa_ray.objectstore import EmbeddedS3  # noqa: E402
from dfa_ray.stages.label import label_frames, read_labels  # noqa: E402


def total_bytes(uri: str) -> int:
    """Bytes of every file under ``uri``."""
    filesystem, path = storage.resolve(uri)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    return sum(info.size for info in infos if info.type == pafs.FileType.File)


def main() -> None:
    """Label the same frames with each actor count; print a table and write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes")
    parser.add_argument("--node-cpus", type=int, default=2, help="logical CPUs per worker node")
    parser.add_argument("--out", default="runs/label_scaling.json")
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as scratch, EmbeddedS3(Path(scratch) / "s3", bucket="scaling") as s3:
        os.environ.update(s3.env())
        target, model = s3.uri("target"), s3.uri("model.pt")
        write_records(synthetic.generate("synthetic-real", "train", args.frames, workers=2), target)
        torch.manual_seed(0)
        checkpoints.save(PoseModel(ModelConfig()), model, stage="benchmark")
        image_bytes = total_bytes(target) / args.frames
        with LocalRay(env=s3.env(), worker_nodes=args.nodes, worker_cpus=args.node_cpus) as cluster:
            ray.init(address=cluster.address, logging_level="warning")
            ray.data.DataContext.get_current().enable_progress_bars = False
            rows = []
            for actors in args.actors:
                labels = s3.uri(f"labels-{actors}")
                config = LabelConfig(actors=actors, batch_size=64, rows_per_block=256, num_cpus=0.5)
                start = time.perf_counter()
                label_frames(target, model, labels, 1, config, sigma=1.0)
                seconds = time.perf_counter() - start
                ids = read_labels(labels, ["frame_id"]).column("frame_id").to_pylist()
                assert len(ids) == len(set(ids)) == args.frames, "every frame exactly once"
                rows.append(
                    {
                        "actors": actors,
                        "seconds": round(seconds, 1),
                        "frames_per_s": round(args.frames / seconds, 1),
                        "label_bytes_per_frame": round(total_bytes(labels) / args.frames, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
            ray.shutdown()
    report = {
        "frames": args.frames,
        "image_bytes_per_frame": round(image_bytes, 1),
        "nodes": args.nodes,
        "node_cpus": args.node_cpus,
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
        "torch": torch.__version__,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
