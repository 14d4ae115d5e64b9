#!/usr/bin/env bash
# The device check (issue 17): on a machine with one or more CUDA GPUs, in one go,
#   1. the smoke loop end to end with --use-gpu (1 train worker, 1 label actor: one GPU suffices);
#   2. label frames/s of configs/paper.yaml's label stage (256 px, ResNet-50, its label.inference
#      switches) by benchmarks/label_throughput.py, with its host ms per frame;
#   3. the forward-only rate of the same model with the same switches: 3 views x 64 frames per
#      forward, so frames/s = 64 / seconds per forward (what the labeler would reach with no host work);
# and writes $OUT/gpu_check.json (OUT defaults to runs/gpu_check) with each result and
# label_over_forward, the number the README quotes (goal >= 0.8).
# Nothing in the project runs or needs this script; it exits 2 where no GPU is visible.
#
#   bash benchmarks/gpu_check.sh            # ~5 minutes on an H200, most of it Ray and model start-up
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/gpu_check}
FRAMES=${FRAMES:-2048}
mkdir -p "$OUT"
export RAY_USAGE_STATS_ENABLED=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 2)' || {
    echo "gpu_check: no CUDA GPU visible to torch; nothing measured" >&2
    exit 2
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" || true

start=$(date +%s)
smoke_rc=0  # a failed smoke loop is reported, and the label measurement still runs
"$PY" jobs/self_train.py --config configs/smoke.yaml --storage "$OUT/smoke" --use-gpu \
    --num-workers 1 --label-actors 1 > "$OUT/smoke.log" 2>&1 || smoke_rc=$?
smoke_s=$(( $(date +%s) - start ))

"$PY" benchmarks/label_throughput.py --frames "$FRAMES" --config configs/paper.yaml \
    --json "$OUT/label_paper.json" > "$OUT/label_paper.log" 2>&1

"$PY" - "$OUT" "$smoke_rc" "$smoke_s" <<'EOF'
"""Forward-only frames/s of the paper model with its label.inference switches, then the report."""
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from dfa_ray.config import load_config
from dfa_ray.method.inference import DeviceModel
from dfa_ray.method.model import PoseModel

out, smoke_rc, smoke_s = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
config = load_config("configs/paper.yaml")
torch.manual_seed(0)
model = DeviceModel(PoseModel(config.model), config.label.inference, use_gpu=True)
size, batch = config.model.input_size, config.label.batch_size
images = torch.rand(3 * batch, 3, size, size, device=model.device)
for _ in range(3):  # warm-up: cuDNN's algorithm search, and compilation where switched on
    model.predict(images)
torch.cuda.synchronize()
repeats = 20
start = time.perf_counter()
for _ in range(repeats):
    model.predict(images)  # returns numpy: the device has finished
seconds = (time.perf_counter() - start) / repeats
label = json.loads((out / "label_paper.json").read_text())
forward_fps = batch / seconds
gpus = label["label"]["actors"] * label["label"]["num_gpus"]  # the label stage's GPUs in all
label_fps_per_gpu = label["ray_fps"] / gpus
report = {
    "device": torch.cuda.get_device_name(),
    "smoke_loop": {"exit_code": smoke_rc, "seconds": smoke_s, "log": str(out / "smoke.log")},
    "label_gpus": gpus,
    "label_fps_per_gpu": round(label_fps_per_gpu, 1),
    "plain_label_fps": label["plain_fps"],
    "host_ms_per_frame": label["host_ms_per_frame"],
    "forward_only_fps": round(forward_fps, 1),
    "label_over_forward": round(label_fps_per_gpu / forward_fps, 3),
    "inference": dataclasses.asdict(config.label.inference),
    "label_throughput": label,
}
(out / "gpu_check.json").write_text(json.dumps(report, indent=2))
print(json.dumps({k: report[k] for k in ("device", "label_fps_per_gpu", "forward_only_fps", "label_over_forward")}))
EOF
