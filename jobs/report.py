"""Draw the report of an experiments run: an HTML page with its figures.

    python jobs/report.py runs/experiments/bench                  # writes runs/experiments/bench/report/
    python jobs/report.py s3://dfa-ray/runs/bench --out ./bench-report

Reads ``results.json`` (written by ``jobs/experiments.py``) and the test frames it names, and
writes ``index.html`` with rounds, curriculum, per-joint, per-action and skeleton figures beside it.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dfa_ray import storage
from dfa_ray.cli import exit_code
from dfa_ray.data.images import decode_image
from dfa_ray.data.records import read_records
from dfa_ray.report import write_report
from dfa_ray.skeleton import NUM_JOINTS


def example_frames(test_uri: str, frame_ids: list[str]) -> tuple[dict, dict]:
    """The crops and true joints (mm) of ``frame_ids`` in the test dataset."""
    table = read_records(test_uri, columns=["frame_id", "image", "joints_3d"])
    table = table.filter(pc.is_in(table["frame_id"], value_set=pa.array(frame_ids)))
    rows = table.to_pylist()
    missing = set(frame_ids) - {row["frame_id"] for row in rows}
    if missing:
        raise ValueError(f"{test_uri} lacks the example frames {sorted(missing)}")
    images = {row["frame_id"]: decode_image(row["image"], row["frame_id"]) for row in rows}
    truth = {row["frame_id"]: np.asarray(row["joints_3d"]).reshape(NUM_JOINTS, 3) for row in rows}
    return images, truth


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
        images, truth = example_frames(results["data"]["test"], results["trials"][0]["examples"]["frame_ids"])
        page = write_report(results, images, truth, args.out or storage.join(args.run, "report"))
        print(f"wrote {page}")

    return exit_code(body, (FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
