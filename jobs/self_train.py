"""The dfa-ray driver: pretrain, then rounds of pseudo-label -> select -> adapt -> evaluate.

    ray job submit -- python jobs/self_train.py --config configs/demo.yaml --storage s3://dfa-ray/runs
    python jobs/self_train.py --config configs/smoke.yaml              # starts a private local Ray

Settings come from the YAML ``--config`` (defaults: ``dfa_ray.config``), then the flags below, then
``--set section.key=value`` overrides. The resolved config is saved as ``<storage>/<run>/config.yaml``;
``--resume`` continues that run after its last committed stage.
"""

from __future__ import annotations

import argparse
import sys

from dfa_ray.config import ConfigError, load_config
from dfa_ray.selftrain import self_train

# flag -> config key; a flag given on the command line becomes an override.
_FLAGS = {
    "source": "data.source",
    "target": "data.target",
    "test": "data.test",
    "storage": "storage",
    "run_name": "run_name",
    "rounds": "rounds",
    "policy": "policy",
    "num_workers": "workers.num_workers",
    "label_actors": "label.actors",
    "init_checkpoint": "init_checkpoint",
}


def build_parser() -> argparse.ArgumentParser:
    """The driver's flags."""
    parser = argparse.ArgumentParser(
        prog="self_train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML config (e.g. configs/demo.yaml); defaults otherwise")
    parser.add_argument("--source", nargs="+", help="labeled source datasets (default: synthetic-source)")
    parser.add_argument("--target", help="unlabeled target dataset (default: synthetic-real train)")
    parser.add_argument("--test", help="target test dataset with joints_3d (default: synthetic-real test)")
    parser.add_argument("--storage", help="local directory or s3://bucket/prefix for runs and data")
    parser.add_argument("--run-name")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--policy", help="initial,step,maximum, e.g. 60%%,10%%,90%%")
    parser.add_argument("--no-dfa", action="store_true", help="the target term trains the decoder too")
    parser.add_argument("--num-workers", type=int, help="Ray Train workers")
    parser.add_argument("--use-gpu", action="store_true", help="train on GPUs and give each label actor one")
    parser.add_argument("--label-actors", type=int, help="pseudo-labeling actors")
    parser.add_argument("--init-checkpoint", help="skip pretraining; start from this model.pt")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run after its last committed stage"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config value")
    return parser


def overrides(args: argparse.Namespace) -> list[str]:
    """The flags given, as dotted overrides (applied before ``--set``)."""
    out = []
    for flag, key in _FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            out.append(f"{key}={list(value) if isinstance(value, list) else value}")
    if args.no_dfa:
        out.append("adapt.dfa=false")
    if args.use_gpu:
        out += ["workers.use_gpu=true", "label.num_gpus=1"]
    return out + args.set


def main(argv: list[str] | None = None) -> int:
    """Run the driver; exit 2 on a bad config or an existing run."""
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, overrides(args))
        self_train(config, resume=args.resume, log=lambda line: print(line, flush=True))
    except (ConfigError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
