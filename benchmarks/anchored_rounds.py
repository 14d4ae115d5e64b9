"""What the round loop makes of better pseudo-labels: self-training on the synthetic benchmark with
each pseudo-label's image position taken from the target frame's *true* 2D (an ideal 2D detector,
``pseudo_label.anchor_2d``, as the driver does with a real detector's keypoints), its depth the
ensemble's. Everything else is a Table 1 trial's (``experiments.adapt_trial``'s data, rounds, policy
and adaptation). The labels then are ~90 mm off instead of ~155 (docs/results.md); this asks whether
the loop, DFA and the policy close the Only source -> Only target gap when the labels carry the poses,
so that what the tables miss can be put on the labels or on the loop.

    python benchmarks/anchored_rounds.py --config configs/experiments/bench.yaml --seeds 0 \
        --json docs/results/anchored_rounds.json

The true 2D is a diagnostic: no published row uses it. Trials run one process each, ``--parallel``
at a time (two), each logging its rounds to stderr. ``--labels ensemble`` runs the same trials with
Table 1's own labels, for the loop alone under ``--set`` overrides (a larger budget: ``--set
rounds=6``, ``--set adapt.epochs=4``; on a GPU, ``--set experiments.trial_gpus=1``). ``--labels
oracle-selection`` keeps Table 1's labels and lets the policy rank them by their true error instead
of their confidence (``OracleRounds``): what the best confidence an ensemble could have would give.
``--labels true-3d`` trains on the target frames' true 3D where Table 1 trains on pseudo-labels, the
policy keeping the frames the ensemble is most confident of (``TrueLabelRounds``): the loop's own
ceiling, whatever the labels. ``only-target`` runs Table 1's bound on the same data and machine, for
the share of the gap each trial closes. ``--first-round K`` goes on with a trial from its model after
round K - 1 (``init_checkpoint``, written by ``--models``), as the longer run would have: a round's
draws depend on the seed and the round alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch

from dfa_ray import storage
from dfa_ray.cli import print_json
from dfa_ray.config import load_config
from dfa_ray.driver import resolve_data
from dfa_ray.experiments import InMemoryRounds, TrialData, adapt_trial, label_errors, pretrain_trial
from dfa_ray.method import checkpoints
from dfa_ray.method.pseudo_label import PseudoLabels, anchor_2d


class AnchoredRounds(InMemoryRounds):
    """A Table 1 trial's rounds whose pseudo-labels sit at the target frames' true 2D."""

    def label(self, k: int) -> PseudoLabels:
        target = self.data.target
        return anchor_2d(super().label(k), target.coords[..., :2], np.ones(target.coords.shape[:2], bool))


class OracleRounds(InMemoryRounds):
    """A Table 1 trial's rounds whose pseudo-labels are ranked by their true error: each frame's
    confidence is ``1 / (1 + MPJPE / 100 mm)``, so the policy keeps the truly best labels. The labels
    and their per-joint weights stay the ensemble's."""

    def label(self, k: int) -> PseudoLabels:
        labels = super().label(k)
        error = label_errors(labels, self.data.target)
        return dataclasses.replace(labels, confidence=(1.0 / (1.0 + error / 100.0)).astype(np.float32))


class TrueLabelRounds(InMemoryRounds):
    """A Table 1 trial's rounds trained on the target frames' true 3D, every joint at full weight; the
    policy still keeps the frames the ensemble is most confident of, so the loop sees Table 1's frames
    with perfect labels."""

    def label(self, k: int) -> PseudoLabels:
        labels = super().label(k)
        truth = self.data.target.coords.astype(np.float32)
        return PseudoLabels(truth, np.ones_like(labels.joint_confidence), labels.confidence)


BACKENDS = {
    "true-2d": AnchoredRounds,
    "true-3d": TrueLabelRounds,
    "ensemble": InMemoryRounds,
    "oracle-selection": OracleRounds,
}


def trial(
    config_path: str,
    overrides: tuple[str, ...],
    method: str,
    seed: int,
    threads: int,
    labels: str,
    models: Path | None = None,
    first_round: int = 1,
) -> dict:
    """One seed of ``method`` ("dfa", "wo-dfa" or "only-target"): ``experiments.adapt_trial`` on the
    ``labels`` backend (``BACKENDS``: ``AnchoredRounds``, ``TrueLabelRounds``, Table 1's
    ``InMemoryRounds`` or ``OracleRounds``), from the seed's "Only source" model (the config's init
    checkpoint where it names one; with ``first_round`` k, the trial's model after round k - 1, and
    the rounds go on from k). With ``models``, the final model is written there as
    ``<method>-seed<seed>.pt``."""
    torch.set_num_threads(threads)
    config = load_config(config_path, overrides)
    log = lambda line: print(f"[{method} seed {seed}] {line}", file=sys.stderr, flush=True)  # noqa: E731
    data = TrialData.load(*resolve_data(config, log), config.model.input_size)
    if config.init_checkpoint:
        # Its bytes as stored: pretrain_trial would score it on the test frames, as round 0 does below.
        pretrained = storage.read_bytes(checkpoints.checkpoint_file(config.init_checkpoint))
    else:
        _, pretrained = pretrain_trial(data, config, seed, log)
    backend_class = BACKENDS[labels]
    result, model = adapt_trial(
        method, data, config, seed, pretrained, log, backend_class=backend_class, first_round=first_round
    )
    if models is not None:
        models.mkdir(parents=True, exist_ok=True)
        (models / f"{method}-seed{seed}.pt").write_bytes(model)
    keys = ("round", "mpjpe", "pa_mpjpe", "mean_pose_mpjpe", "label_mpjpe_all", "label_mpjpe_kept")
    rounds = []
    for record in result["rounds"]:
        selection = record.get("selection", {})
        flat = {**record, **{k: selection.get(k) for k in ("label_mpjpe_all", "label_mpjpe_kept")}}
        rounds.append({k: flat.get(k) for k in keys})
    return {
        "method": method,
        "seed": seed,
        "seconds": round(result["seconds"]),
        "rounds": rounds,
        "examples": result["examples"],  # the final model on the report's example frames (Fig. 2)
    }


def main(argv: list[str] | None = None) -> int:
    """Run every (method, seed), ``--parallel`` at a time, and print (and write ``--json``) the rounds."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/experiments/bench.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--methods", nargs="+", default=["dfa", "wo-dfa"], choices=["dfa", "wo-dfa", "only-target"]
    )
    parser.add_argument("--parallel", type=int, default=2, help="trials at a time")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument(
        "--labels", choices=sorted(BACKENDS), default="true-2d",
        help="pseudo-labels at the true 2D (the default), the ensemble's as in Table 1, those "
        "ranked by their true error (oracle-selection), or the true 3D on the frames the policy keeps",
    )  # fmt: skip
    parser.add_argument("--json", type=Path)
    parser.add_argument("--models", type=Path, help="write each trial's final model here")
    parser.add_argument(
        "--first-round", type=int, default=1,
        help="go on from this round, init_checkpoint being the trial's model after the round before",
    )  # fmt: skip
    args = parser.parse_args(argv)
    run = partial(
        trial, args.config, tuple(args.set), threads=1, labels=args.labels,
        models=args.models, first_round=args.first_round,
    )  # fmt: skip
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    # Rendered here once: trials side by side would each start the same synthetic dataset.
    resolve_data(load_config(args.config, args.set), print)
    with ProcessPoolExecutor(args.parallel) as pool:
        results = list(pool.map(run, *zip(*jobs)))
    out = {"config": args.config, "overrides": args.set, "labels": args.labels, "trials": results}
    print_json(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
