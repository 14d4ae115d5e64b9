#!/usr/bin/env bash
# The paper's budget for the round loop, on a GPU (issue 14): does self-training close more of the
# gap given the paper's 20 rounds of 2 epochs instead of the tables' 3? Table 1's trials (seed 0,
# the shipped source model, the bench's config and its own pseudo-labels) through
# benchmarks/anchored_rounds.py, every round evaluated, so rounds 1-3 are Table 1's trial and the
# rest what more budget buys. Two sets, each a list of runs side by side, a JSON and a log each
# under $OUT (a line per round, so a run stopped early still says how far it got):
#
#   budget  20 rounds of DFA, w/o DFA and Only target (the bound, on the same machine) on
#           bench               the benchmark's target, scored on its test split (Table 1's frames);
#           low_contrast        target_variants.py's low-contrast target (the source's bodies at a
#                               fifth to a third of the contrast: a gap of looks as large), scored on
#                               validation subjects S14-S15.
#   drift   12 rounds of DFA on validation subjects only (target_variants.py's as-rendered and
#           low-contrast targets), for why the rounds drift and what holds them: the paper's policy,
#           a fixed 60 % (policy 60%,0%,60%), each round adapting the source model
#           (adapt.from_source), and both.
#   resolution  the source model's recipe (configs/source_model.yaml: 6 epochs over 40,000 frames,
#           from ImageNet) at larger crops, nearer the paper's 256 px: pretrained in one process each
#           (pretrain.batch_size 64: the shipped model's 2 DDP workers of 32) at 64 px (the control),
#           128 px, and 128 px with the encoder's stride-16 stages dilated (model.output_stride 8,
#           MargiPose's cut); then Table 1's trials from each (DFA, w/o DFA, Only target; seed 0,
#           3 rounds), each trial's final model kept under $OUT/models/<variant>/ for Fig. 2.
#
# Nothing in the project runs or needs this script; it exits 2 where no GPU is visible. It needs
# the project's Python dependencies but not Ray.
#
#   bash benchmarks/paper_budget.sh budget   # ~5 minutes on an H200 (6 trials at once)
#   bash benchmarks/paper_budget.sh drift    # ~4 minutes (8 trials at once)
#   bash benchmarks/paper_budget.sh resolution   # 3 pretrainings at once, then 9 trials
set -euo pipefail
cd "$(dirname "$0")/.."
SET=${1:?usage: paper_budget.sh budget|drift|resolution}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/paper_budget}
DATA=${DATA:-runs/paper_budget_data}
mkdir -p "$OUT" "$DATA"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 2)' || {
    echo "paper_budget: no CUDA GPU visible to torch; nothing measured" >&2
    exit 2
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" || true

# Render every dataset once, before the trials' processes would each try to.
# The resolution set pretrains on source_model.yaml's frames, with the bench's target and test.
PRETRAIN=(configs/source_model.yaml "storage=$DATA" data.synthetic_target_frames=3000
    experiments.trial_gpus=1 pretrain.batch_size=64)
"$PY" - "$DATA" "$SET" "${PRETRAIN[@]}" <<'EOF'
import sys
from pathlib import Path

from benchmarks.target_variants import TARGETS, write_target
from dfa_ray.config import load_config
from dfa_ray.driver import resolve_data

data, name, pretrain, *overrides = Path(sys.argv[1]), *sys.argv[2:]
resolve_data(load_config("configs/experiments/bench.yaml", [f"storage={data}"]), print)
if name == "resolution":
    resolve_data(load_config(pretrain, overrides), print)
else:
    for target in ("as-rendered", "low-contrast"):
        write_target(data / target, TARGETS[target])
print("rendered", flush=True)
EOF

trials() {  # NAME TARGET(bench or a target_variants name) ARGS...: one anchored_rounds.py run, in the background
    local name=$1 target=$2
    shift 2
    local on=()
    [[ $target == bench ]] || on=(--set "data.target=$DATA/$target/target" --set "data.test=$DATA/$target/scored")
    "$PY" benchmarks/anchored_rounds.py --labels ensemble --seeds 0 --set "storage=$DATA" \
        --set experiments.trial_gpus=1 "${on[@]}" "$@" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1 &
}
pretrain() {  # NAME OVERRIDES...: the source model's recipe in one process, to $DATA/NAME/model.pt
    local name=$1
    shift
    "$PY" - "$DATA" "$OUT" "$name" "${PRETRAIN[@]}" "$@" > "$OUT/$name-pretrain.log" 2>&1 <<'EOF' &
import json
import sys
from pathlib import Path

import torch

from dfa_ray.config import load_config
from dfa_ray.driver import resolve_data
from dfa_ray.experiments import TrialData, pretrain_trial

torch.set_num_threads(2)  # three of these share the machine's cores, the trials after them one each
data, out, name, config_path, *overrides = sys.argv[1:]
config = load_config(config_path, overrides)
log = lambda line: print(f"[{name}] {line}", flush=True)  # noqa: E731
frames = TrialData.load(*resolve_data(config, log), config.model.input_size)
result, model = pretrain_trial(frames, config, 0, log)
Path(data, name).mkdir(exist_ok=True)
Path(data, name, "model.pt").write_bytes(model)
Path(out, f"{name}-pretrain.json").write_text(json.dumps({"overrides": overrides, **result}, indent=1))
EOF
}
rc=0
wait_all() {  # every background job; rc is the last failure's exit status
    for job in $(jobs -p); do wait "$job" || rc=$?; done
}
start=$(date +%s)
budget=(--methods dfa wo-dfa only-target --parallel 3 --set rounds=20)
drift=(--methods dfa --parallel 1 --set rounds=12)
case $SET in
budget)
    trials bench bench "${budget[@]}"
    trials low_contrast low-contrast "${budget[@]}"
    ;;
drift)
    for target in as-rendered low-contrast; do
        trials "$target" "$target" "${drift[@]}"
        trials "$target-fixed60" "$target" "${drift[@]}" --set policy=60%,0%,60%
        trials "$target-from-source" "$target" "${drift[@]}" --set adapt.from_source=true
        trials "$target-both" "$target" "${drift[@]}" --set policy=60%,0%,60% --set adapt.from_source=true
    done
    ;;
resolution)
    variants=(r64 "model.input_size=64" r128 "model.input_size=128" r128s8 "model.input_size=128 model.output_stride=8")
    for ((i = 0; i < ${#variants[@]}; i += 2)); do
        pretrain "${variants[i]}" ${variants[i + 1]}
    done
    wait_all
    for ((i = 0; i < ${#variants[@]}; i += 2)); do
        name=${variants[i]} model=()
        for key in ${variants[i + 1]}; do model+=(--set "$key"); done
        for method in dfa wo-dfa only-target; do
            trials "$name-$method" bench --methods "$method" --parallel 1 "${model[@]}" \
                --set "init_checkpoint=$DATA/$name/model.pt" --models "$OUT/models/$name"
        done
    done
    ;;
*) echo "paper_budget: unknown set $SET (budget, drift or resolution)" >&2; exit 2 ;;
esac
wait_all
echo "paper_budget: $SET took $(( $(date +%s) - start )) s, exit $rc"
exit $rc
