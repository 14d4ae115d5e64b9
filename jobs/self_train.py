"""The dfa-ray driver: pretrain, then rounds of pseudo-label -> select -> adapt -> evaluate.

    ray job submit -- python jobs/self_train.py --config configs/demo.yaml --storage s3://dfa-ray/runs
    python jobs/self_train.py --config configs/smoke.yaml              # starts a private local Ray

Settings come from the YAML ``--config`` (defaults: ``dfa_ray.config``), then the flags below, then
``--set section.key=value`` overrides. The resolved config is saved as ``<storage>/<run>/config.yaml``
once Ray is up; ``--resume`` continues that run after its last committed stage. While it runs, the
driver holds the run's lease (``<storage>/<run>/LEASE.json``): a second driver on the run is refused.
"""

from __future__ import annotations

import sys

from dfa_ray.cli import run_driver
from dfa_ray.driver import self_train


def main(argv: list[str] | None = None) -> int:
    """Run the driver; exit 2 with one ``error:`` line on a bad config, an existing run or one another
    driver holds, or an unusable input or storage (``dfa_ray.cli.DRIVER_ERRORS``); 1 with one when Ray
    does not start (``DRIVER_FAILURES``); 3 when the driver loses the run's lease (``dfa_ray.ops.lease``)."""
    return run_driver("self_train", __doc__, argv, self_train)


if __name__ == "__main__":
    sys.exit(main())
