#!/usr/bin/env bash
# Fresh machine -> the main job: set up .venv/, start a local Ray head and the embedded S3, and
# `ray job submit` jobs/self_train.py on configs/demo.yaml. Extra arguments go to jobs/demo.py
# (and from there to the driver), e.g. `bash scripts/demo.sh --no-dfa`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python jobs/demo.py "$@"
