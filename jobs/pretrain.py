"""Pretraining alone: the driver's stage 0 as a Ray Train job, committed so the driver can continue it.

    ray job submit -- python jobs/pretrain.py --config configs/demo.yaml --storage s3://dfa-ray/runs
    python jobs/pretrain.py --config configs/smoke.yaml                  # starts a private local Ray
    python jobs/self_train.py --config configs/smoke.yaml --resume       # then the rounds, same flags

The flags are jobs/self_train.py's own (``dfa_ray.cli``, so the same config comes out of the same
command line): ``--config``, ``--source``, ``--test``, ``--storage``, ``--run-name``,
``--num-workers``, ``--use-gpu``, ``--set KEY=VALUE`` and the rest. Like the driver, the job saves
the resolved config as ``<storage>/<run>/config.yaml``, trains on the source datasets (the synthetic
benchmark by default, rendered if absent, target split included so the rounds find it), writes
``<storage>/<run>/pretrain/model.pt``, evaluates it on the test set and commits the stage
(``pretrain/COMMITTED.json``, ``metrics.jsonl``) through ``dfa_ray.driver.pretrain``, the very
code the driver runs. ``jobs/self_train.py --resume`` with the same config then starts at round 1.

An existing run is refused unless ``--resume`` is given; with it, a run whose pretraining is already
committed is left alone, and an interrupted one is pretrained again from scratch.

Exit codes: 0 success (or pretraining already committed); 2 a bad config, an existing run, a run
another driver holds, a resume with a different config, an unusable input (dataset, checkpoint) or
unusable storage; 1 Ray did not start; each with a one-line error on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from dfa_ray import cli
from dfa_ray.config import Config
from dfa_ray.driver import load_inputs, open_run, pretrain


def parse_config(argv: list[str] | None = None) -> tuple[Config, bool]:
    """The config the flags in ``argv`` make (as the driver would), and whether ``--resume`` was given."""
    return cli.parse_config("pretrain", __doc__, argv)


def run_pretrain(config: Config, resume: bool, log: Callable[[str], None] = print) -> dict | None:
    """Pretrain and commit stage 0 of ``config``'s run, holding the run; returns its evaluation (None
    if already committed)."""
    with open_run(config, resume, log) as run:
        if run.is_committed(0):
            log(f"{run.stage(0)} is already committed; nothing to do")
            return None
        result = pretrain(config, run, load_inputs(config, log), log)
    log(f"committed {run.model(0)}; continue with jobs/self_train.py --resume and the same config")
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the pretraining stage; exit 2 on a bad config, an existing run, an unusable input or storage."""
    return cli.run_driver("pretrain", __doc__, argv, run_pretrain)


if __name__ == "__main__":
    sys.exit(main())
