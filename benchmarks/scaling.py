"""Scaling on the local multi-node cluster: time per round by stage, label actors, train workers.

Everything runs in one run on one cluster, so the numbers compare: the embedded S3 and ``LocalRay``
(a head with 0 CPUs and ``--nodes`` worker nodes, each a real ``ray start`` raylet).

1. **Rounds.** The driver (``self_train``) runs the demo config (``configs/demo.yaml``: 6,000 source
   and 4,000 target frames, the 0.96 M-parameter default model, 2 label actors, 2 train workers) for
   ``--rounds`` rounds. Each committed manifest holds the seconds of its steps.
2. **Label actors.** ``label_frames`` labels the run's target frames again with the pretrained
   model, once per count in ``--actors``. The time runs from the stage call to the last label file
   written, actor start-up included.
3. **Train workers.** ``run_stage`` adapts on round 1's selected frames (DFA, source and target
   batches each step) with each count in ``--workers``. The per-worker batch is fixed, so an epoch
   holds the same images for every count. The time covers the ``TorchTrainer`` run, start-up included.

Bytes per frame come from the objects in S3: images read, labels written, everything a round writes.

    .venv/bin/python benchmarks/scaling.py --rounds 2 --actors 1 2 4 --workers 1 2
"""

from __future__ import annotations

import os

# Ray reads this once, when imported: the driver must send the cluster's token.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow.fs as pafs  # noqa: E402
import torch  # noqa: E402

from dfa_ray import config as config_module  # noqa: E402
from dfa_ray import storage  # noqa: E402
from dfa_ray.config import Config  # noqa: E402
from dfa_ray.data.records import check_frame_ids  # noqa: E402
from dfa_ray.driver import resolve_data, self_train  # noqa: E402
from dfa_ray.ops.drills import repo_root  # noqa: E402
from dfa_ray.ops.localcluster import LocalRay  # noqa: E402
from dfa_ray.ops.objectstore import EmbeddedS3  # noqa: E402
from dfa_ray.ops.rundir import RunDir  # noqa: E402
from dfa_ray.stages import train  # noqa: E402
from dfa_ray.stages.label import label_frames, read_labels  # noqa: E402


def total_bytes(uri: str) -> int:
    """Bytes of every file under ``uri``."""
    filesystem, path = storage.resolve(uri)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    return sum(info.size for info in infos if info.type == pafs.FileType.File)


def round_stages(run: RunDir, num_target: int) -> list[dict]:
    """Each committed stage's seconds per step, with the bytes it wrote per target frame."""
    rows = []
    for k in run.committed_rounds():
        seconds = run.read_manifest(k)["seconds"]
        written = total_bytes(run.stage(k))
        rows.append(
            {
                "round": k,
                **seconds,
                "total": round(sum(seconds.values()), 1),
                "bytes_written_per_target_frame": round(written / num_target, 1),
            }
        )
    return rows


def label_scaling(
    config: Config, run: RunDir, target: str, num_target: int, s3: EmbeddedS3, counts: list[int]
) -> list[dict]:
    """Frames/s of the label stage for each actor count (same frames, the pretrained model)."""
    rows = []
    for actors in counts:
        labels = s3.uri(f"scaling/labels-{actors}")
        start = time.perf_counter()
        label = dataclasses.replace(config.label, actors=actors)
        label_frames(target, run.model(0), labels, 1, label, 1.0, config.model.input_size)
        seconds = time.perf_counter() - start
        ids = read_labels(labels, ["frame_id"]).column("frame_id").to_pylist()
        assert len(ids) == len(set(ids)) == num_target, "every frame exactly once"
        rows.append(
            {
                "actors": actors,
                "seconds": round(seconds, 1),
                "frames_per_s": round(len(ids) / seconds, 1),
                "label_bytes_per_frame": round(total_bytes(labels) / len(ids), 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def train_scaling(
    config: Config,
    run: RunDir,
    source: list[str],
    target: str,
    s3: EmbeddedS3,
    counts: list[int],
    epochs: int,
) -> list[dict]:
    """Images/s of DFA adaptation on round 1's selected frames for each train-worker count."""
    kept = run.read_manifest(1)["selection"]["num_kept"]
    datasets = {
        "source": train.read_source(source, seed=0),
        "target": train.read_selected_target(target, run.selected(1), config.label.rows_per_block),
    }
    rows = []
    for workers in counts:
        stage_config = config_module.replace(
            config, [f"workers.num_workers={workers}", f"adapt.epochs={epochs}"]
        )
        batch = stage_config.adapt.batch_size
        steps = kept // (workers * batch)
        start = time.perf_counter()
        _, stats = train.run_stage(
            stage_config,
            stage_config.adapt,
            datasets,
            kept,
            s3.uri(f"scaling/adapt-{workers}"),
            run.model(0),
            f"{workers} workers",
        )
        seconds = time.perf_counter() - start
        images = epochs * steps * workers * batch * 2  # a source and a target image per sample
        rows.append(
            {
                "workers": workers,
                "seconds": round(seconds, 1),
                "images_per_s": round(images / seconds, 1),
                "last_epoch_images_per_s": round(stats["images_per_s_per_worker"] * workers, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    """Run the three measurements; print tables and write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/demo.yaml", help="relative to the repository root")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--adapt-epochs", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes")
    parser.add_argument("--node-cpus", type=int, default=2, help="logical CPUs per worker node")
    parser.add_argument("--out", default="runs/scaling.json")
    args = parser.parse_args()
    import ray

    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
        "torch": torch.__version__,
        "ray": ray.__version__,
        "nodes": args.nodes,
        "node_cpus": args.node_cpus,
        "config": args.config,
    }
    with tempfile.TemporaryDirectory() as scratch, EmbeddedS3(Path(scratch) / "s3", bucket="scaling") as s3:
        os.environ.update(s3.env())
        config = config_module.load_config(
            repo_root() / args.config,
            [f"storage={s3.uri('runs')}", "run_name=scaling", f"rounds={args.rounds}"],
        )
        with LocalRay(env=s3.env(), worker_nodes=args.nodes, worker_cpus=args.node_cpus) as cluster:
            ray.init(address=cluster.address, logging_level="warning")
            start = time.perf_counter()
            self_train(config)
            report["run_seconds"] = round(time.perf_counter() - start, 1)
            run = RunDir(config.storage, config.run_name)
            source, target, _ = resolve_data(config, print)
            num_target = check_frame_ids(target)
            report["target_frames"] = num_target
            report["image_bytes_per_frame"] = round(total_bytes(target) / num_target, 1)
            report["rounds"] = round_stages(run, num_target)
            print(json.dumps(report["rounds"], indent=1), flush=True)
            report["label_actors"] = label_scaling(config, run, target, num_target, s3, args.actors)
            report["train_workers"] = train_scaling(
                config, run, source, target, s3, args.workers, args.adapt_epochs
            )
            ray.shutdown()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
