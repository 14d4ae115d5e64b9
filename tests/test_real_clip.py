"""The real-footage walkthrough (``jobs/real_clip.py``) end to end on 8 frames of Sports2D's clip.

Every step is a real command: MediaPipe finds the people, the driver adapts the shipped source model
on a private local Ray (sized down to a few frames), predict draws the sheets.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfa_ray.config import load_config
from dfa_ray.data.records import machine_labels, read_records
from dfa_ray.method import checkpoints
from tests.helpers import load_job

pytestmark = pytest.mark.slow  # a private local Ray and MediaPipe

CLIP = Path(__file__).parent / "fixtures" / "sports2d" / "demo-8-frames.mp4"
SMALL = [
    "data.synthetic_source_frames=64", "data.synthetic_test_frames=16", "workers.num_workers=1",
    "pretrain.batch_size=4", "adapt.batch_size=4", "adapt.min_steps_per_epoch=20", "label.actors=1",
]  # fmt: skip


def test_a_clip_becomes_adapted_3d_poses_and_sheets(tmp_path, capsys):
    real_clip = load_job("real_clip")
    argv = ["--video", str(CLIP), "--every", "1", "--runs", str(tmp_path), "--rounds", "1"]
    assert real_clip.main([*argv, "--sheet", "4", *(f for s in SMALL for f in ("--set", s))]) == 0
    root = tmp_path / "real-clip"
    out = capsys.readouterr().out
    # The steps are printed as the commands a user would type.
    assert "\n$ python jobs/prepare_data.py video " in out and "--labels-2d" in out
    assert "\n$ python jobs/self_train.py --config configs/demo.yaml" in out
    # The driver found the clip's 2D machine-made and learnt from it (data.target_2d).
    resolved = load_config(root / "self-train" / "config.yaml")
    assert resolved.data.source_2d == (str(root / "records"),) and resolved.adapt.lr == resolved.pretrain.lr
    records = read_records(root / "records")
    assert machine_labels(root / "records").startswith("joints_2d are machine-made")
    # The adapted model learnt MediaPipe's 2D: its checkpoint says whose joints it draws.
    assert (
        checkpoints.load(root / "self-train" / "round-1" / "checkpoint" / "model.pt")[1]["skeleton"]
        == "mediapipe"
    )
    for name in ("source", "adapted"):
        lines = [json.loads(line) for line in (root / name / "predictions.jsonl").read_text().splitlines()]
        assert [line["frame_id"] for line in lines] == records.column("frame_id").to_pylist()
        assert all(np.isfinite(line["joints_mm"]).all() for line in lines)
        assert {line["root_depth_source"] for line in lines} == {"bone-length prior (mediapipe)"}
        assert cv2.imread(str(root / name / "sheet.png")).shape == (2 * 256, 2 * 512, 3)
    # Run again: the records are reused and the finished run resumed, not refused.
    assert real_clip.main([*argv, "--sheet", "2", *(f for s in SMALL for f in ("--set", s))]) == 0
    assert f"using the records in {root / 'records'}" in capsys.readouterr().out
