"""Command-line glue for ``jobs/``: the driver's flags, and one rule for turning errors into exit codes.

The driver's flags (``jobs/self_train.py``, ``jobs/pretrain.py``) become dotted config overrides,
applied after ``--config`` and before ``--set``, so the same command line always makes the same
config (which ``--resume`` checks).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from dfa_ray.config import Config, ConfigError, load_config
from dfa_ray.data.schema import RecordError
from dfa_ray.data.validation import InputError
from dfa_ray.ops.lease import LeaseHeld
from dfa_ray.ops.raystart import RayStartError
from dfa_ray.storage import StorageError

# What a driver reports in one line (exit 2) rather than a traceback: a bad config or a resume with
# another one, an existing run or one another driver holds, an unusable input (a dataset, a
# checkpoint, too many unlabelable frames) and storage that cannot be used (a missing bucket, an
# unwritable directory). Each message names the key, run or URI at fault.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    FileExistsError,
    InputError,
    LeaseHeld,
    RecordError,
    StorageError,
)
# Failures with nothing to fix in the command, reported in one line too (exit 1): Ray did not start,
# which running the same command again may cure.
DRIVER_FAILURES: tuple[type[BaseException], ...] = (RayStartError,)

# flag -> config key; a flag given on the command line becomes an override.
_FLAGS = {
    "source": "data.source",
    "source_2d": "data.source_2d",
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


def print_json(data: object, path: Path | None = None) -> None:
    """Print ``data`` as indented JSON and, where ``path`` is given (a benchmark's ``--json``), write
    the same text there."""
    text = json.dumps(data, indent=2)
    print(text, flush=True)
    if path:
        path.write_text(text + "\n")


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The driver's flags."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML config (e.g. configs/demo.yaml); defaults otherwise")
    parser.add_argument("--source", nargs="+", help="labeled source datasets (default: synthetic-source)")
    parser.add_argument(
        "--source-2d", nargs="+", help="2D-only labeled datasets added to the source (the paper's w/ MPII)"
    )
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
            # JSON is YAML: a run named "off" or "1e3" stays a string, a list stays a list.
            out.append(f"{key}={json.dumps(value)}")
    if args.no_dfa:
        out.append("adapt.dfa=false")
    if args.use_gpu:
        out += ["workers.use_gpu=true", "label.num_gpus=1"]
    return out + args.set


def exit_code(
    run: Callable[[], object],
    usage_errors: tuple[type[BaseException], ...],
    failures: tuple[type[BaseException], ...] = (),
) -> int:
    """Run a job's body: the int it returns (anything else = 0), or one ``error:`` line and 2 on a
    usage error (bad input, bad config), 1 on one of ``failures``; neither needs a traceback."""
    try:
        code = run()
        return code if isinstance(code, int) else 0
    except usage_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except failures as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def with_absolute_storage(config: Config) -> Config:
    """``config`` with a local ``storage`` made absolute where the driver stands: Ray Train's workers
    run in a directory of their own, where ``runs`` (the default) names nothing. Data and checkpoint
    paths stay as given: the driver and Ray Data resolve them, and a job's working directory moves."""
    # s3:// and file:// name the same place from anywhere; an empty one is refused with its reason later.
    if not config.storage or "://" in config.storage:
        return config
    return dataclasses.replace(config, storage=str(Path(config.storage).expanduser().absolute()))


def parse_config(prog: str, description: str, argv: list[str] | None) -> tuple[Config, bool]:
    """The config the driver flags in ``argv`` make, and whether ``--resume`` was given."""
    args = build_parser(prog, description).parse_args(argv)
    return with_absolute_storage(load_config(args.config, overrides(args))), args.resume


def run_driver(
    prog: str,
    description: str,
    argv: list[str] | None,
    job: Callable[[Config, bool, Callable[[str], None]], object],
) -> int:
    """Parse the driver's flags, load the config they make and run ``job(config, resume, log)``,
    printing log lines as they come; one ``error:`` line and exit 2 on any of DRIVER_ERRORS, 1 on
    any of DRIVER_FAILURES."""

    def body() -> object:
        config, resume = parse_config(prog, description, argv)
        return job(config, resume, lambda line: print(line, flush=True))

    return exit_code(body, DRIVER_ERRORS, DRIVER_FAILURES)
