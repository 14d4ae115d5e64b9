"""The dfa-ray driver: pretrain, then rounds of pseudo-label -> select -> adapt -> evaluate.

    ray job submit -- python jobs/self_train.py --config configs/demo.yaml --storage s3://dfa-ray/runs
    python jobs/self_train.py --config configs/smoke.yaml              # starts a private local Ray

Settings come from the YAML ``--config`` (defaults: ``dfa_ray.config``), then the flags below, then
``--set section.key=value`` overrides. The resolved config is saved as ``<storage>/<run>/config.yaml``;
``--resume`` continues that run after its last committed stage.
"""

from __future__ import annotations

import sys

from dfa_ray.cli import build_parser, exit_code, overrides
from dfa_ray.config import ConfigError, load_config
from dfa_ray.selftrain import self_train


def main(argv: list[str] | None = None) -> int:
    """Run the driver; exit 2 on a bad config or an existing run."""
    args = build_parser("self_train", __doc__).parse_args(argv)

    def run() -> None:
        config = load_config(args.config, overrides(args))
        self_train(config, resume=args.resume, log=lambda line: print(line, flush=True))

    return exit_code(run, (ConfigError, FileExistsError))


if __name__ == "__main__":
    sys.exit(main())
