"""Calibration reading, triangulation, cross-view association and consistency (``dfa_ray.data.multiview``).

Synthetic cameras give exact answers; the four views of Pose2Sim's Demo_MultiPerson (``fixtures/pose2sim``,
3 frames, real people, MediaPipe run for real) check that the Qualisys conventions are read right:
the two people found in each view must be told apart and triangulate back onto their detections.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dfa_ray.data import multiview, video
from dfa_ray.data.records import read_records
from dfa_ray.data.schema import table_to_rows
from dfa_ray.data.validation import InputError
from dfa_ray.method.skeleton import JOINT_NAMES, ROOT
from tests.helpers import load_job, load_script, tiny_checkpoint

FOOTAGE = Path(__file__).parent / "fixtures" / "pose2sim"
CALIBRATION = FOOTAGE / "calibration" / "Calib.qca.txt"


def _look_at(name: str, centre: tuple[float, float, float]) -> multiview.CalibratedCamera:
    """A 1000x1000 camera at ``centre`` (mm, z up) looking at the point 1 m above the origin."""
    forward = np.array([0.0, 0.0, 1000.0]) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(forward, right), forward])
    matrix = np.array([[1200.0, 0.0, 500.0], [0.0, 1200.0, 500.0], [0.0, 0.0, 1.0]])
    return multiview.CalibratedCamera(name, (1000, 1000), matrix, rotation, -rotation @ np.asarray(centre))


CAMERAS = [
    _look_at("a", (4000.0, 0.0, 1500.0)),
    _look_at("b", (0.0, 4000.0, 1800.0)),
    _look_at("c", (-3500.0, -2000.0, 1600.0)),
]


def test_qca_is_read_as_pose2sim_reads_it():
    cameras = multiview.read_qca(CALIBRATION)
    assert [c.name for c in cameras] == ["cam01", "cam02", "cam03", "cam04"]
    first = cameras[0]
    assert first.size == (1088, 1920)
    # Sensor units over 64, less the fov_video origin (0, 0) here.
    assert first.matrix[0, 0] == pytest.approx(107599.671875 / 64)
    assert first.matrix[1, 2] == pytest.approx(60680.792969 / 64)
    for camera in cameras:
        assert camera.rotation @ camera.rotation.T == pytest.approx(np.eye(3))
        assert np.linalg.det(camera.rotation) == pytest.approx(1.0)
    # x, y, z is the camera's centre; the cameras stand about 2 m up and look down at the room.
    centre = -first.rotation.T @ first.translation
    assert centre == pytest.approx([1460.2323709212087, -1909.1590482454608, 1896.5058524092062])
    for camera in cameras:
        forward = camera.rotation[2]
        assert forward[2] < 0
        assert camera.project(np.zeros(3))[0] == pytest.approx(camera.size[0] / 2, abs=camera.size[0] / 2)


def test_bad_calibrations_are_named(tmp_path):
    text = tmp_path / "Calib.qca.txt"
    text.write_text("not xml at all")
    with pytest.raises(InputError, match="not a Qualisys calibration"):
        multiview.read_qca(text)
    broken = tmp_path / "broken.qca.txt"
    broken.write_text(CALIBRATION.read_text().replace("<intrinsic ", "<other "))
    with pytest.raises(InputError, match=r"\[cam01\]: needs fov_video, intrinsic and transform"):
        multiview.read_qca(broken)
    # The fixture's camera is 1088x1920; a video of another size is one clear error.
    with pytest.raises(InputError, match="calibrated for 1088x1920 frames, but clip.mp4 is 1920x1080"):
        multiview.read_qca(CALIBRATION)[0].intrinsics().check(1920, 1080, "clip.mp4")
    # ... but the same camera's 1080-wide decoded frames are its 1088-wide coded picture less the
    # codec's macroblock padding (Demo_SinglePerson's videos), and 8 columns more are not.
    camera = multiview.read_qca(CALIBRATION)[0].intrinsics()
    assert camera.check(1080, 1920, "coded.mp4") == pytest.approx(camera.intrinsics)
    with pytest.raises(InputError, match="calibrated for 1088x1920 frames, but short.mp4 is 1072x1920"):
        camera.check(1072, 1920, "short.mp4")


def test_prepare_data_video_takes_a_qualisys_camera(tmp_path, capsys):
    prepare_data = load_job("prepare_data")
    video_file = str(FOOTAGE / "videos" / "cam02.mp4")
    argv = ["video", video_file, "--calibration", str(CALIBRATION), "--crop-size", "64"]
    assert prepare_data.main([*argv, "--out", str(tmp_path / "none")]) == 2
    assert (
        "4 cameras; choose one with --camera (cameras: cam01, cam02, cam03, cam04)" in capsys.readouterr().err
    )
    assert prepare_data.main([*argv, "--camera", "cam02", "--out", str(tmp_path / "cam02")]) == 0
    assert f"camera: {CALIBRATION} [cam02]" in capsys.readouterr().out
    fx = multiview.qca_camera(CALIBRATION, "cam02").intrinsics[0]
    rows = table_to_rows(read_records(tmp_path / "cam02"))
    assert rows
    # The crop's focal length is the calibrated one, scaled by the crop: a person of ~1/3 the frame.
    assert all(1.0 < float(row["camera"][0]) / fx * 1920 / 64 < 10.0 for row in rows)


def test_triangulation_recovers_known_points_exactly():
    rng = np.random.default_rng(0)
    points = rng.uniform([-800, -800, 0], [800, 800, 1900], size=(20, 3))
    pixels = np.stack([camera.project(points) for camera in CAMERAS])  # (V, L, 2)
    projections = np.stack([camera.projection for camera in CAMERAS])
    for point, seen in zip(points, pixels.transpose(1, 0, 2)):
        weights = rng.uniform(0.3, 1.0, len(CAMERAS))
        assert multiview.triangulate(seen, weights, projections) == pytest.approx(point, abs=1e-6)
    result = multiview.triangulate_person(pixels, np.ones(pixels.shape[:2]), CAMERAS)
    assert result.points == pytest.approx(points, abs=1e-6)
    assert result.error_px == pytest.approx(np.zeros(len(points)), abs=1e-6)
    assert result.views.all()


def test_triangulation_drops_unseen_and_wrong_views():
    points = np.array([[100.0, -200.0, 900.0], [0.0, 300.0, 1500.0], [50.0, 50.0, 50.0]])
    pixels = np.stack([camera.project(points) for camera in CAMERAS])
    visibility = np.ones(pixels.shape[:2])
    pixels[2, 0] += (80.0, -60.0)  # a wrong detection in view c: dropped by its reprojection error
    visibility[1, 1] = 0.2  # view b hardly sees point 1: dropped by visibility
    visibility[1:, 2] = 0.0  # only view a sees point 2: not triangulated
    result = multiview.triangulate_person(pixels, visibility, CAMERAS)
    assert result.views[:2].tolist() == [[True, True, False], [True, False, True]]
    assert result.points[:2] == pytest.approx(points[:2], abs=1e-6)
    assert np.isnan(result.points[2]).all() and not result.views[2].any()
    # Two views that disagree give no point rather than a wrong one. Two views cannot see an error
    # along the epipolar line, so view b's detection moves 30 px across it.
    visibility[2, 0] = 0.0
    line = multiview.fundamental(CAMERAS[0], CAMERAS[1]) @ np.append(pixels[0, 0], 1.0)
    pixels[1, 0] += 30.0 * line[:2] / np.hypot(*line[:2])
    assert np.isnan(multiview.triangulate_person(pixels, visibility, CAMERAS).points[0]).all()


def test_association_tells_two_people_apart_in_any_order():
    rng = np.random.default_rng(1)
    people = [rng.normal([-700, 0, 1000], 300, (33, 3)), rng.normal([700, 200, 1000], 300, (33, 3))]
    detections = []
    for v, camera in enumerate(CAMERAS):
        found = [np.hstack([camera.project(p), np.ones((33, 1))]) for p in people]
        detections.append(found[::-1] if v == 1 else found)  # view b lists them the other way round
    detections[2] = detections[2][:1]  # view c sees only the first person
    groups = multiview.associate(detections, CAMERAS)
    assert groups == [{0: 0, 1: 1, 2: 0}, {0: 1, 1: 0}]


def test_consistency_is_zero_for_one_pose_and_measures_disagreement():
    rng = np.random.default_rng(2)
    world = rng.normal(0, 300, (17, 3))
    world -= world[ROOT]
    rotations = np.stack([camera.rotation for camera in CAMERAS])
    in_cameras = np.einsum("vij,kj->vki", rotations, world)  # each camera's view of the same pose
    assert multiview.consistency(in_cameras, rotations) == pytest.approx(0.0, abs=1e-9)
    shifted = in_cameras.copy()
    shifted[0, 1:] += (0.0, 0.0, 30.0)  # camera a puts 16 joints 30 mm deeper: 2 of 3 pairs see it
    assert multiview.consistency(shifted, rotations) == pytest.approx(30.0 * 16 / 17 * 2 / 3)
    with pytest.raises(ValueError, match="V >= 2"):
        multiview.consistency(in_cameras[:1], rotations[:1])


def test_fixture_people_are_told_apart_and_triangulate_onto_their_detections():
    cameras = multiview.read_qca(CALIBRATION)
    per_frame: dict[int, list[list[np.ndarray]]] = {}
    for view, camera in enumerate(cameras):
        source = video.FrameSource(FOOTAGE / "videos" / f"{camera.name}.mp4")
        camera.intrinsics().check(source.width, source.height, str(source.path))
        for people in video.video_people(source, video.VideoReport(camera.name), max_people=3):
            for person in people:
                per_frame.setdefault(person.index, [[] for _ in cameras])[view].append(person.landmarks)
    assert sorted(per_frame) == [0, 1, 2]
    pelvis_heights = []
    for detections in per_frame.values():
        groups = multiview.associate(detections, cameras)
        assert len(groups) == 2 and all(len(group) >= 2 for group in groups)
        for group in groups:
            pixels = np.stack([detections[v][i][:, :2] for v, i in sorted(group.items())])
            visibility = np.stack([detections[v][i][:, 2] for v, i in sorted(group.items())])
            result = multiview.triangulate_person(pixels, visibility, cameras)
            joints, valid = result.h36m()
            assert valid[ROOT] and np.nanmean(result.error_px) < 15.0
            pelvis_heights.append(joints[ROOT, 2])
    # The world's z is up, in mm: standing people's hips are about a metre above the floor.
    assert 600.0 < min(pelvis_heights) and max(pelvis_heights) < 1200.0


def test_real_multiview_scores_every_method(tmp_path):
    script = load_script("benchmarks/real_multiview.py")
    out = tmp_path / "out"
    checkpoint = tiny_checkpoint(tmp_path)
    assert (
        script.main(
            ["--checkpoint", checkpoint, "--footage", str(FOOTAGE), "--out", str(out), "--every", "1"]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["people"] == [0, 1] and results["person_frames_scored"] == 6
    assert results["pseudo_gt"]["reprojection_px_mean"] < 15.0
    assert set(results["methods"]) == {"model", "mediapipe"}  # the tiny checkpoint carries no mean pose
    for scores in results["methods"].values():
        assert scores["num_frames"] >= 12 and scores["mpjpe"] > 0 and scores["consistency_mm"] > 0
        assert 0.0 <= scores["trunk_angle_deg_median"] <= 180.0
        assert 0.0 <= scores["facing_flipped_share"] <= 1.0
        by_person, by_view = scores["facing_flipped_by_person"], scores["facing_flipped_by_true_view"]
        assert set(by_person) <= {"0", "1"} and set(by_view) <= {"towards", "away", "side"}
        # Each split covers every turned pose once, its shares averaging to the whole.
        for split in (by_person, by_view):
            poses = sum(group["poses"] for group in split.values())
            assert poses == sum(scores["facing_angle_histogram_30deg"])
            flipped = sum(group["share"] * group["poses"] for group in split.values())
            assert flipped == pytest.approx(scores["facing_flipped_share"] * poses)
        assert sum(scores["facing_angle_histogram_30deg"]) <= scores["num_frames"]
        assert 0 < scores["mpjpe_best_scale"] and set(scores["across_body_mm"]) == {"predicted", "true"}
        assert set(scores["bone_mm_median"]) == set(results["pseudo_gt"]["bone_mm_median"])
    assert script.main(["--checkpoint", checkpoint, "--footage", str(FOOTAGE), "--out", str(out)]) == 2


def test_true_view_tells_towards_from_away_and_side_on():
    script = load_script("benchmarks/real_multiview.py")
    pose = np.zeros((17, 3))
    left, right = (
        [JOINT_NAMES.index(n) for n in ("l_hip", "l_shoulder")],
        [JOINT_NAMES.index(n) for n in ("r_hip", "r_shoulder")],
    )
    pose[left, 0], pose[right, 0] = 100.0, -100.0  # their left on the image's right: facing the camera
    turned = np.stack([pose, pose * [-1, 1, 1], pose[:, [2, 1, 0]]])  # mirrored: seen from behind; side-on
    assert script.true_view(turned).tolist() == ["towards", "away", "side"]
    shares = script.shares(np.array([True, False, True]), np.array(["a", "a", "b"]))
    assert shares == {"a": {"share": 0.5, "poses": 2}, "b": {"share": 1.0, "poses": 1}}
