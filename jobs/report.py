"""Draw the report of an experiments run: an HTML page with its figures.

    python jobs/report.py docs/results/bench                      # writes docs/results/bench/report/
    python jobs/report.py runs/experiments/bench                  # writes runs/experiments/bench/report/
    python jobs/report.py s3://dfa-ray/runs/bench --out ./bench-report

Reads only ``results.json`` (written by ``jobs/experiments.py``, the example test frames inside), so
a committed run redraws without its data, and writes ``index.html`` with rounds, curriculum,
per-joint, per-action and skeleton figures beside it.
"""

from __future__ import annotations

import argparse
import json
import sys

from dfa_ray import storage
from dfa_ray.cli import exit_code
from dfa_ray.report import write_report


def main(argv: list[str] | None = None) -> int:
    """Write the report; exit 2 when the run has no results."""
    parser = argparse.ArgumentParser(prog="report", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="an experiments run: <storage>/<run_name>, holding results.json")
    parser.add_argument("--out", help="where to write the report (default: <run>/report)")
    args = parser.parse_args(argv)

    def body() -> None:
        results_uri = storage.join(args.run, "results.json")
        if not storage.exists(results_uri):
            raise FileNotFoundError(f"no {results_uri}: run jobs/experiments.py first")
        results = json.loads(storage.read_bytes(results_uri))
        page = write_report(results, args.out or storage.join(args.run, "report"))
        print(f"wrote {page}")

    return exit_code(body, (FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
