#!/usr/bin/env bash
# A multi-node Ray cluster on this machine, no cloud needed: a head with 0 CPUs, worker nodes (separate
# `ray start` raylets with their own CPUs) and the embedded S3, until Ctrl-C. It prints the exports and
# the `ray job submit` line to use it from another shell. Run scripts/setup.sh once first.
#   bash cluster/local.sh                        # 2 worker nodes of 2 CPUs each
#   bash cluster/local.sh --workers 3 --worker-cpus 1 --s3-dir runs/local-s3
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m dfa_ray.ops.localcluster "$@"
