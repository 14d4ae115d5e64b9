"""The report's Fig. 2 for trials run outside ``jobs/experiments.py``: the example test frames as Only
source, w/o DFA, Ours and Only target draw them, beside the truth, from ``anchored_rounds.py``'s
JSONs (each trial carries its final model's predictions of the frames) and the source checkpoint
the trials started from (predicted here, with the flip test, as every evaluation).

    R=runs/paper_budget   # paper_budget.sh resolution's outputs, its source models under $DATA
    python benchmarks/trial_skeletons.py --source runs/paper_budget_data/r128/model.pt \\
        --test runs/data/synthetic-real-test-n1000-seed0-px128-v6 \\
        --trials $R/r128-dfa.json $R/r128-wo-dfa.json $R/r128-only-target.json --out skeletons.jpg

The frames are ``experiments.example_index``'s, fixed before any result, the test split's as the
trials saw it (``--test``, rendered the same wherever the trials ran: the renderer is seeded).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from dfa_ray import storage
from dfa_ray.experiments import example_frames, example_rows
from dfa_ray.method import checkpoints
from dfa_ray.method.fitting import LOAD_COLUMNS, Frames, predict_mm
from dfa_ray.report import example_frames as decode_examples
from dfa_ray.report import skeleton_figure


def main(argv: list[str] | None = None) -> int:
    """Write the figure (PNG, or JPEG by ``--out``'s suffix) and print its path."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", required=True, help="the checkpoint the trials started from")
    parser.add_argument("--test", required=True, help="the test split's records")
    parser.add_argument("--trials", nargs="+", type=Path, required=True, help="anchored_rounds.py JSONs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    groups: dict[str, list[dict]] = {}
    for path in args.trials:
        for trial in json.loads(path.read_text())["trials"]:
            if "examples" not in trial:
                raise ValueError(f"{path}: trial {trial['method']} carries no examples (an older run)")
            groups.setdefault(trial["method"], []).append(trial)
    frame_ids = next(iter(groups.values()))[0]["examples"]["frame_ids"]
    model, _ = checkpoints.load(args.source)
    rows = example_rows(args.test, frame_ids, LOAD_COLUMNS)
    source = predict_mm(model, Frames.from_rows(rows, model.config.input_size)).round(1).tolist()
    groups["only-source"] = [{"examples": {"frame_ids": frame_ids, "joints_mm": source}}]
    images, truth = decode_examples({"examples": example_frames(rows)})
    figure = skeleton_figure(groups, images, truth)
    if args.out.suffix.lower() in (".jpg", ".jpeg"):
        # The committed figures are JPEG, where a PNG would be megabytes.
        png = cv2.imdecode(np.frombuffer(figure, np.uint8), cv2.IMREAD_COLOR)
        figure = cv2.imencode(".jpg", png, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    storage.write_bytes(str(args.out), figure)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
