"""Human3.6M converter against a tiny fixture in h36m-fetch's layout (process_all.py)."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest

from dfa_ray.data.crop import CropSpec
from dfa_ray.data.h36m import convert_h36m, parse_sequence_name
from dfa_ray.method.skeleton import JOINT_NAMES
from tests.helpers import CLI_CROP, assert_subcommand_writes, project, random_poses

# The 32 joints of the raw Human3.6M skeleton (metadata.xml order, as MargiPose names them) and the
# one each H36M-17 joint is; written out here so the test does not reuse the converter's index list.
RAW_32 = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "right_toes", "right_site1", "left_hip", "left_knee",
    "left_ankle", "left_toes", "left_site1", "spine1", "spine", "neck", "head", "head_top", "left_clavicle",
    "left_shoulder", "left_elbow", "left_wrist", "left_thumb", "left_site2", "left_wrist2", "left_site3",
    "right_clavicle", "right_shoulder", "right_elbow", "right_wrist", "right_thumb", "right_site2",
    "right_wrist2", "right_site3",
)  # fmt: skip
RAW_NAME = {"thorax": "neck", "neck_nose": "head", "head": "head_top", "spine": "spine", "pelvis": "pelvis"}
RAW_INDEX = [
    RAW_32.index(RAW_NAME.get(n) or n.replace("l_", "left_").replace("r_", "right_")) for n in JOINT_NAMES
]
CAMERAS = {  # camera id -> (alpha_x, x_0, alpha_y, y_0) as h36m-fetch stores them, frame (w, h)
    "54138969": (np.array([1145.05, 512.54, 1143.78, 515.45]), (1000, 1002)),
    "55011271": (np.array([1149.68, 508.85, 1147.59, 508.06]), (1000, 1000)),
}
FRAMES = 6
L_WRIST, R_WRIST = JOINT_NAMES.index("l_wrist"), JOINT_NAMES.index("r_wrist")
RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)
MARKER_PX = 10


def _decode(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _write_sequence(root, subject, sequence, seed):
    """annot.h5 + JPEG frames for one sub-action; returns {(camera, frame): (pose_3d_32, pose_2d_32)}."""
    rng = np.random.default_rng(seed)
    out = root / subject / sequence
    truth, columns = {}, {k: [] for k in ("pose/2d", "pose/3d", "pose/3d-univ", "frame", "camera")}
    for camera, (intr, (width, height)) in CAMERAS.items():
        fx, cx, fy, cy = intr
        pose17 = random_poses(rng, FRAMES) + rng.uniform([-300, -100, 4000], [300, 100, 5500], (FRAMES, 1, 3))
        pose32 = np.repeat(pose17[:, :1], 32, axis=1) + rng.normal(0, 50, (FRAMES, 32, 3))  # unused joints
        pose32[:, list(RAW_INDEX)] = pose17
        pose2d = project(pose32, np.tile([fx, fy, cx, cy], (FRAMES, 1)))
        frames = np.arange(0, 64 * FRAMES, 64) + 1  # h36m-fetch's 1-based numbers, test-subject spacing
        (out / "imageSequence" / camera).mkdir(parents=True, exist_ok=True)
        for f, p2, p3 in zip(frames, pose2d, pose32):
            img = np.full((height, width, 3), GREY, np.uint8)
            for j, colour in ((L_WRIST, RED), (R_WRIST, BLUE)):
                u, v = p2[RAW_INDEX[j]]
                cv2.circle(
                    img, (int(round(u * 16)), int(round(v * 16))), MARKER_PX * 16, colour, -1, cv2.LINE_AA, 4
                )
            cv2.imwrite(str(out / "imageSequence" / camera / f"img_{f:06d}.jpg"), img[..., ::-1])
            truth[(camera, int(f))] = (p3, p2)
        columns["pose/2d"].append(pose2d)
        columns["pose/3d"].append(pose32)
        columns["pose/3d-univ"].append(pose32 * 0.9)
        columns["frame"].append(frames)
        columns["camera"].append(np.full(FRAMES, int(camera)))
    with h5py.File(out / "annot.h5", "w") as f:
        for name, parts in columns.items():
            f.create_dataset(name, data=np.concatenate(parts))
        for camera, (intr, _) in CAMERAS.items():
            f.create_dataset(f"intrinsics/{camera}", data=intr)
            f.create_dataset(f"intrinsics-univ/{camera}", data=intr)
        n = FRAMES * len(CAMERAS)
        f.create_dataset("subject", data=np.full(n, int(subject[1:])))
        f.create_dataset("action", data=np.full(n, 2))
        f.create_dataset("subaction", data=np.full(n, int(sequence.split("-")[1])))
    return truth


@pytest.fixture(scope="module")
def h36m_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("h36m") / "processed"
    truth = {}
    sequences = [
        ("S1", "Directions-1"),
        ("S5", "Eating-2"),
        ("S6", "Posing-1"),
        ("S7", "Sitting-1"),
        ("S8", "Waiting-2"),
        ("S9", "WalkingDog-2"),
        ("S11", "Greeting-1"),
    ]
    for seed, (subject, sequence) in enumerate(sequences):
        for key, value in _write_sequence(root, subject, sequence, seed).items():
            truth[(subject, sequence, *key)] = value
    return root, truth


def test_fixture_is_in_h36m_fetch_layout(h36m_root):
    root, _ = h36m_root
    with h5py.File(root / "S9" / "WalkingDog-2" / "annot.h5", "r") as f:
        assert f["pose/3d"].shape == (12, 32, 3) and f["pose/2d"].shape == (12, 32, 2)
        assert sorted(f["intrinsics"]) == sorted(CAMERAS) and f["intrinsics/54138969"].shape == (4,)
    assert (root / "S9" / "WalkingDog-2" / "imageSequence" / "54138969" / "img_000065.jpg").is_file()


def test_splits_subsampling_and_ids(h36m_root):
    root, _ = h36m_root
    train = list(convert_h36m(root, "train", crop=CropSpec(64)))
    test = list(convert_h36m(root, "test", every=2, crop=CropSpec(64), cameras=["55011271"]))
    assert {r["subject"] for r in train} == {"S1", "S5", "S6", "S7", "S8"} and len(train) == 5 * 2 * FRAMES
    assert {r["subject"] for r in test} == {"S9", "S11"} and {r["action"] for r in test} == {
        "WalkingDog",
        "Greeting",
    }
    assert [r["frame_id"] for r in test if r["subject"] == "S9"] == [
        f"S9/WalkingDog-2/55011271/{f:06d}" for f in (1, 129, 257)
    ]
    assert len({r["frame_id"] for r in train}) == len(train)


def test_joints_units_camera_and_crop(h36m_root):
    root, truth = h36m_root
    rows = list(convert_h36m(root, "test", crop=CropSpec(128)))
    assert len(rows) == 2 * 2 * FRAMES
    checked = 0
    for row in rows:
        subject, sequence, camera, frame = row["frame_id"].split("/")
        pose3d, pose2d = truth[(subject, sequence, camera, int(frame))]
        np.testing.assert_allclose(row["joints_3d"], pose3d[list(RAW_INDEX)], rtol=1e-6)  # mm, 17 joints
        assert row["joints_3d"][:, 2].min() > 3000  # millimetres, not metres
        np.testing.assert_array_equal(row["joints_valid"], np.ones(17, np.uint8))
        fx, fy, cx, cy = row["camera"].astype(np.float64)
        j3 = row["joints_3d"].astype(np.float64)
        projected = np.stack([fx * j3[:, 0] / j3[:, 2] + cx, fy * j3[:, 1] / j3[:, 2] + cy], -1)
        np.testing.assert_allclose(projected, row["joints_2d"], atol=0.05)
        # The crop keeps the full frame's aspect: fx / fy as in the h36m-fetch (alpha_x, x_0, alpha_y, y_0).
        intr = CAMERAS[camera][0]
        assert fx / fy == pytest.approx(intr[0] / intr[2], rel=1e-5)
        image = _decode(row["image"]).astype(int)
        assert image.shape == (128, 128, 3)
        if np.linalg.norm(np.subtract(*pose2d[[RAW_INDEX[L_WRIST], RAW_INDEX[R_WRIST]]])) < 2 * MARKER_PX + 2:
            continue  # the two markers overlap in the full frame
        for joint, colour in ((L_WRIST, RED), (R_WRIST, BLUE)):
            u, v = np.round(row["joints_2d"][joint]).astype(int)
            assert np.abs(image[v, u] - colour).max() < 60, (row["frame_id"], JOINT_NAMES[joint])
        checked += 1
    assert checked >= len(rows) // 2


def test_bad_arguments_and_missing_files(h36m_root, tmp_path):
    root, _ = h36m_root
    with pytest.raises(ValueError, match="split"):
        next(convert_h36m(root, "val"))
    with pytest.raises(ValueError, match="cameras"):
        next(convert_h36m(root, "test", cameras=["123"]))
    with pytest.raises(FileNotFoundError, match="S1"):
        next(convert_h36m(tmp_path, "train"))
    assert parse_sequence_name("Directions 1") == ("Directions", "1")
    assert parse_sequence_name("WalkingDog-2") == ("WalkingDog", "2")


def test_prepare_data_subcommand_writes_the_converted_rows(tmp_path, h36m_root):
    root, _ = h36m_root
    assert_subcommand_writes(
        ["h36m", "--root", str(root), "--split", "test", "--every", "2"],
        str(tmp_path / "records"),
        list(convert_h36m(root, "test", every=2, crop=CropSpec(**CLI_CROP))),
    )
