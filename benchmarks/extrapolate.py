"""The GPU-cluster model: time and cost of a self-training round of ``configs/paper.yaml`` on Human3.6M.

Measured by this script on the machine it runs on:

- **FLOPs** of the paper's model, counted by ``torch.utils.flop_counter``: a label frame (three views,
  forward) and an adaptation sample (a source and a target image, forward and backward).
- **The label actor's CPU side per frame** at the paper's 256 px input: sampling the views, the copy
  to the device, the inverse transform and the confidences. Decoding runs in CPU tasks ahead of the
  actor, and the views and the model run on the device (``time_labeling``: timed apart and
  subtracted). ``PseudoLabeler`` runs with a narrow model of the same input size. One thread, as
  in one actor.
- **JPEG decode per training image** (``decode_resized``, one thread), the CPU work of a train step.
- **Bytes per frame** of 256 px JPEG crops (the converters' format, quality 95) of synthetic-real renders.
- **The label actor's frames/s with the paper's model on this machine's device.** On a GPU machine
  this is the GPU label actor's rate, and the model uses it in place of ``--inference-tflops``.

Taken from ``--scaling`` (``benchmarks/scaling.py``'s report): the label bytes per frame.

Everything else is an assumption, a flag below. ``benchmarks/README.md`` states each one.

    .venv/bin/python benchmarks/extrapolate.py --scaling docs/results/scaling.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from dfa_ray import config as config_module
from dfa_ray.config import Config
from dfa_ray.data import synthetic
from dfa_ray.data.images import decode_image, decode_resized, encode_image
from dfa_ray.method import checkpoints
from dfa_ray.method.model import PoseModel, num_parameters
from dfa_ray.ops.drills import repo_root
from dfa_ray.stages.label import time_labeling


def flops(model: PoseModel, size: int, backward: bool) -> int:
    """FLOPs of one image through ``model`` (forward, or forward and backward)."""
    images = torch.rand(2, 3, size, size)  # batch 2: BatchNorm in train mode needs more than one
    model.train(backward)
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(backward):
        out = model(images)
        if backward:
            (out.xy.sum() + out.zy.sum() + out.xz.sum()).backward()
    return counter.get_total_flops() // 2


def jpeg_frames(n: int, size: int) -> list[bytes]:
    """``n`` synthetic-real renders at ``size`` px, re-encoded as the converters' JPEG crops."""
    frames = synthetic.generate("synthetic-real", "train", n, crop_size=size, workers=2)
    return [encode_image(decode_image(f["image"]), "jpeg") for f in frames]


def label_seconds(model: PoseModel, images: list[bytes], config: Config, repeats: int) -> tuple[float, float]:
    """Median seconds per frame of ``PseudoLabeler`` with ``model`` on decoded ``images`` (decoding
    runs in tasks ahead of the actors): in all, and on the host outside the views and the model."""
    decoded = np.stack([decode_resized(data, config.model.input_size) for data in images])
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "model.pt")
        checkpoints.save(model, path, stage="benchmark")
        label = dataclasses.replace(config.label, num_gpus=1.0 if torch.cuda.is_available() else 0.0)
        return time_labeling(path, decoded, label, config.adapt.sigma, repeats)


def decode_seconds(images: list[bytes], size: int) -> float:
    """Median seconds to decode one JPEG crop at ``size`` px."""
    times = []
    for data in images:
        start = time.perf_counter()
        decode_resized(data, size)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(config: Config, frames: int, device_frames: int, repeats: int) -> dict:
    """Every measured input of the model (see the module docstring)."""
    torch.manual_seed(0)
    size = config.model.input_size
    model = PoseModel(config.model)
    images = jpeg_frames(max(frames, device_frames), size)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    stages = len(config.model.depths)
    narrow = dataclasses.replace(
        config.model, block="basic", depths=(1,) * stages, widths=(8,) * stages, stem_width=8, decoder_width=8
    )
    _, cpu_side = label_seconds(PoseModel(narrow), images[:frames], config, repeats)
    decode = decode_seconds(images[:frames], size)
    torch.set_num_threads(os.cpu_count() or 1)
    cv2.setNumThreads(os.cpu_count() or 1)
    per_frame, _ = label_seconds(model, images[:device_frames], config, repeats)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} threads"
    return {
        "parameters": num_parameters(model),
        "label_gflops_per_frame": round(3 * flops(model, size, backward=False) / 1e9, 2),
        "train_gflops_per_sample": round(2 * flops(model, size, backward=True) / 1e9, 2),
        "label_cpu_side_ms_per_frame": round(cpu_side * 1e3, 3),
        "decode_ms_per_image": round(decode * 1e3, 3),
        "image_bytes_per_frame": round(float(np.mean([len(i) for i in images])), 1),
        "paper_model_label_frames_per_s": round(1 / per_frame, 2),
        "paper_model_label_device": device,
    }


def round_costs(config: Config, measured: dict, args: argparse.Namespace, gpus: int) -> list[dict]:
    """Per round k: label and adaptation seconds, S3 bytes, and the cost with ``gpus`` GPU nodes."""
    if args.gpu_label_fps:
        label_fps = args.gpu_label_fps
    else:
        label_fps = 1 / (
            measured["label_cpu_side_ms_per_frame"] / 1e3
            + measured["label_gflops_per_frame"] / (args.inference_tflops * 1e3)
            + 3 * config.model.input_size**2 * 3 / (args.pcie_gbs * 1e9)
        )
    grad_bytes = 4 * measured["parameters"]  # fp32 gradients, also under AMP
    batch_size = config.adapt.batch_size
    # A worker decodes its batch (CPU), then steps (GPU). Ring all-reduce sends and receives 2 (G - 1) / G
    # of the gradient per step, and DDP overlaps it with the backward pass: the GPU part of a step
    # takes the longer of the two.
    step_cpu = batch_size * 2 * measured["decode_ms_per_image"] / 1e3
    step_gpu = batch_size * measured["train_gflops_per_sample"] / (args.train_tflops * 1e3)
    allreduce = 0.0 if gpus == 1 else 2 * (gpus - 1) / gpus * grad_bytes * 8 / (args.network_gbps * 1e9)
    step = step_cpu + max(step_gpu, allreduce)
    rows = []
    for k in range(1, config.rounds + 1):
        kept = int(config.policy_schedule.fraction(k - 1) * args.frames)
        label_s = args.frames / (gpus * label_fps)
        adapt_s = config.adapt.epochs * (kept // (gpus * batch_size)) * step
        hours = (label_s + adapt_s) / 3600
        s3_read = (args.frames + args.source_frames + kept) * measured["image_bytes_per_frame"]
        rows.append(
            {
                "round": k,
                "kept": kept,
                "label_h": label_s / 3600,
                "adapt_h": adapt_s / 3600,
                "usd": hours * (gpus * args.gpu_node_usd + args.head_usd),
                "s3_read_gb": s3_read / 1e9,
                "labels_written_gb": args.frames * measured["label_bytes_per_frame"] / 1e9,
                "label_fps_per_gpu": label_fps,
                "adapt_step_s": step,
                "allreduce_s": allreduce,
                "step_gpu_s": step_gpu,
            }
        )
    return rows


def markdown(table: dict[int, list[dict]], rounds: int, image_bytes: float) -> str:
    """The model's table, one line per GPU count, as it goes into benchmarks/README.md."""
    lines = [
        f"| GPUs | label frames/s | label h | adapt h (round 1) | $ round 1 | {rounds} rounds h | "
        f"{rounds} rounds $ | S3 read GB/round | S3 MB/s per node (labeling) | all-reduce / GPU step |",
        "|" + " --- |" * 10,
    ]
    for gpus, rows in table.items():
        first = rows[0]
        hours = sum(r["label_h"] + r["adapt_h"] for r in rows)
        fps = first["label_fps_per_gpu"]
        lines.append(
            f"| {gpus} | {gpus * fps:,.0f} | {first['label_h']:.2f} | {first['adapt_h']:.2f} | "
            f"{first['usd']:.2f} | {hours:.1f} | {sum(r['usd'] for r in rows):,.0f} | "
            f"{first['s3_read_gb']:.1f} | {fps * image_bytes / 1e6:.1f} | "
            f"{first['allreduce_s'] / first['step_gpu_s']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Measure, then print the model's table for each GPU count and write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--config", default="configs/paper.yaml", help="relative to the repository root, or absolute")
    add("--scaling", default="docs/results/scaling.json", help="benchmarks/scaling.py's report")
    add("--frames", type=int, default=312_000, help="target frames (Human3.6M training set)")
    add("--source-frames", type=int, default=312_000, help="source frames read each round (assumed)")
    add("--gpus", type=int, nargs="+", default=[1, 4, 8, 16])
    add("--inference-tflops", type=float, default=12.0, help="achieved by a label actor's forward (assumed)")
    add("--train-tflops", type=float, default=15.0, help="achieved by a train step with AMP (assumed)")
    add(
        "--gpu-label-fps",
        type=float,
        help="a GPU label actor's measured frames/s (replaces --inference-tflops)",
    )
    add("--pcie-gbs", type=float, default=12.0, help="host to GPU copy, GB/s (assumed)")
    add("--network-gbps", type=float, default=10.0, help="per GPU node, Gbit/s (g5.2xlarge: up to 10)")
    add("--gpu-node-usd", type=float, default=1.212, help="per GPU node-hour (g5.2xlarge on-demand, assumed)")
    add("--head-usd", type=float, default=0.768, help="per head-hour (m5.4xlarge on-demand, assumed)")
    add("--measure-frames", type=int, default=64)
    add(
        "--device-frames", type=int, help="frames per repeat of the device measurement (8 on CPU, 256 on GPU)"
    )
    add("--repeats", type=int, default=3)
    add("--out", default="runs/extrapolate.json")
    args = parser.parse_args()

    config = config_module.load_config(repo_root() / args.config)
    device_frames = args.device_frames or (256 if torch.cuda.is_available() else 8)
    measured = measure(config, args.measure_frames, device_frames, args.repeats)
    if torch.cuda.is_available() and args.gpu_label_fps is None:
        args.gpu_label_fps = measured["paper_model_label_frames_per_s"]  # measured beats modelled
    scaling = json.loads(Path(args.scaling).read_text())
    measured["label_bytes_per_frame"] = scaling["label_actors"][0]["label_bytes_per_frame"]
    print(json.dumps(measured, indent=1), flush=True)
    table = {gpus: round_costs(config, measured, args, gpus) for gpus in args.gpus}
    print(markdown(table, config.rounds, measured["image_bytes_per_frame"]))
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
        "torch": torch.__version__,
        "config": args.config,
        "assumptions": {k: v for k, v in vars(args).items() if k not in ("config", "scaling", "out")},
        "measured": measured,
        "rounds_by_gpus": table,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
