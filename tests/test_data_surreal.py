"""SURREAL converter against tiny clips in the published layout (_info.mat + .mp4)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.io

from dfa_ray.data.crop import CropSpec
from dfa_ray.data.surreal import (
    INTRINSICS,
    R_WORLD_TO_CAMERA,
    convert_surreal,
    project,
    subject_and_action,
    world_to_camera_mm,
)
from dfa_ray.method.skeleton import JOINT_NAMES, SMPL_JOINT_NAMES, SMPL_TO_H36M
from tests.helpers import CLI_CROP, assert_subcommand_writes, random_poses

H36M, SMPL = JOINT_NAMES.index, SMPL_JOINT_NAMES.index
RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)
MARKER_PX = 4
CORNER_INTRINSICS = INTRINSICS + [0, 0, 0.5, 0.5]  # getIntrinsicBlender.m: (600, 600, 160, 120)
# SURREAL stores the person's right hip under SMPL's "l_hip" name, and so on for every side joint.
_OTHER_SIDE = {"l_": "r_", "r_": "l_"}
RELEASED_ORDER = [SMPL(_OTHER_SIDE.get(n[:2], n[:2]) + n[2:]) for n in SMPL_JOINT_NAMES]


def _smpl_from_h36m(pose: np.ndarray) -> np.ndarray:
    """A plausible anatomical SMPL-24 skeleton (mm) around an H36M-17 one."""

    def j(name):
        return pose[H36M(name)]

    smpl = np.zeros((24, 3))
    for name in (
        "pelvis",
        "l_hip",
        "r_hip",
        "l_knee",
        "r_knee",
        "l_ankle",
        "r_ankle",
        "l_shoulder",
        "r_shoulder",
        "l_elbow",
        "r_elbow",
        "l_wrist",
        "r_wrist",
    ):
        smpl[SMPL(name)] = j(name)
    smpl[SMPL("spine1")] = (j("pelvis") + j("spine")) / 2
    smpl[SMPL("spine2")] = j("spine")
    smpl[SMPL("spine3")] = (j("spine") + j("thorax")) / 2
    smpl[SMPL("neck")] = j("thorax")
    smpl[SMPL("head")] = j("neck_nose")
    for side in "lr":
        smpl[SMPL(f"{side}_foot")] = j(f"{side}_ankle") + [0, 60, -120]
        smpl[SMPL(f"{side}_collar")] = (j("thorax") + j(f"{side}_shoulder")) / 2
        smpl[SMPL(f"{side}_hand")] = j(f"{side}_wrist") + 0.3 * (j(f"{side}_wrist") - j(f"{side}_elbow"))
    return smpl


def _write_clip(folder, clip, cam_loc, anatomical_cam_mm, zero_frames=()):
    """<clip>_info.mat and <clip>.mp4 as SURREAL's main_part1.py writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    t = len(anatomical_cam_mm)
    released_cam = anatomical_cam_mm[:, RELEASED_ORDER]
    world = released_cam / 1000.0 @ R_WORLD_TO_CAMERA + cam_loc  # inverse of X_cam = R (X_w - camLoc)
    joints2d = np.round(project(released_cam, CORNER_INTRINSICS))
    world[list(zero_frames)] = 0.0
    writer = cv2.VideoWriter(str(folder / f"{clip}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (320, 240))
    for frame in range(t):
        img = np.full((240, 320, 3), GREY, np.uint8)
        for joint, colour in (("l_wrist", RED), ("r_wrist", BLUE)):
            u, v = project(anatomical_cam_mm[frame, SMPL(joint)])  # pixel centres
            cv2.circle(
                img, (int(round(u * 16)), int(round(v * 16))), MARKER_PX * 16, colour, -1, cv2.LINE_AA, 4
            )
        writer.write(img[..., ::-1].copy())
    writer.release()
    info = {
        "joints2D": joints2d.transpose(2, 1, 0).astype(np.float32),  # 2 x 24 x T
        "joints3D": world.transpose(2, 1, 0).astype(np.float32),  # 3 x 24 x T, metres
        "camLoc": np.asarray(cam_loc, np.float32).reshape(3, 1),
        "camDist": np.float32(np.linalg.norm(cam_loc)),
        "clipNo": float(clip[-4:]),
        "gender": np.zeros((t, 1), np.uint8),
        "zrot": np.zeros((t, 1), np.float32),
        "pose": np.zeros((72, t), np.float32),
        "shape": np.zeros((10, t), np.float32),
        "light": np.zeros((9, t), np.float32),
        "bg": np.array([["bg.jpg"] * t], dtype=object),
        "cloth": np.array([["cloth.jpg"] * t], dtype=object),
        "sequence": clip,
        "source": "cmu",
        "stride": np.uint8(50),
    }
    scipy.io.savemat(folder / f"{clip}_info.mat", info, do_compression=True)


def _people(rng, n, offset=(0.0, 0.0)):
    poses = random_poses(rng, n) + [offset[0], offset[1], 0]
    root = rng.uniform([-200, -50, 7000], [200, 50, 8500], (n, 1, 3))
    return np.stack([_smpl_from_h36m(p) for p in poses + root])


@pytest.fixture(scope="module")
def surreal(tmp_path_factory):
    root = tmp_path_factory.mktemp("SURREAL") / "data" / "cmu"
    rng = np.random.default_rng(0)
    clip1 = _people(rng, 6)
    _write_clip(root / "train/run0/01_01", "01_01_c0001", np.array([6.7456, -0.9839, -1.9293]), clip1, [3])
    clip2 = _people(rng, 4)
    clip2[3] += [3000, 0, 0]  # walked out of the picture
    _write_clip(root / "train/run1/ung_104_26", "ung_104_26_c0002", np.array([7.9, -1.0, 0.4]), clip2)
    return root, {"01_01_c0001": clip1, "ung_104_26_c0002": clip2}


def test_camera_conventions_reproduce_the_published_example():
    # datageneration/misc/3Dto2D/main.m: this joint of 01_01_c0001 projects to joints2D (89, 112).
    cam = world_to_camera_mm(np.array([-0.8645, -1.0915, -1.0260]), np.array([6.7456, -0.9839, -1.9293]))
    np.testing.assert_array_equal(np.round(project(cam, CORNER_INTRINSICS)), [89, 112])
    assert tuple(INTRINSICS) == (600.0, 600.0, 159.5, 119.5)


def test_rows_ids_subsampling_and_skips(surreal):
    root, _ = surreal
    rows = list(convert_surreal(root, "train", crop=CropSpec(64)))
    ids = [r["frame_id"] for r in rows]
    # Frame 3 of the first clip has all-zero joints3D; frame 3 of the second is out of the picture.
    assert ids == [f"train/run0/01_01_c0001/{t:06d}" for t in (0, 1, 2, 4, 5)] + [
        f"train/run1/ung_104_26_c0002/{t:06d}" for t in (0, 1, 2)
    ]
    sub = [r["frame_id"] for r in convert_surreal(root, "train", every=2, crop=CropSpec(64), runs=[0])]
    assert sub == [f"train/run0/01_01_c0001/{t:06d}" for t in (0, 2, 4)]
    assert {(r["subject"], r["action"]) for r in rows} == {("CMU-01", "01_01"), ("CMU-104", "ung_104_26")}
    assert subject_and_action("h36m_S1_Directions") == ("h36m_S1_Directions", "h36m_S1_Directions")


def test_joints_are_anatomical_h36m_in_mm_and_match_the_crop(surreal):
    root, truth = surreal
    checked = 0
    for row in convert_surreal(root, "train", crop=CropSpec(128)):
        _, _, clip, frame = row["frame_id"].split("/")
        expected = SMPL_TO_H36M @ truth[clip][int(frame)]  # mm, the person's own left and right
        np.testing.assert_allclose(row["joints_3d"], expected, atol=0.5)
        np.testing.assert_array_equal(row["joints_valid"], np.ones(17, np.uint8))
        fx, fy, cx, cy = row["camera"].astype(np.float64)
        j3 = row["joints_3d"].astype(np.float64)
        projected = np.stack([fx * j3[:, 0] / j3[:, 2] + cx, fy * j3[:, 1] / j3[:, 2] + cy], -1)
        np.testing.assert_allclose(projected, row["joints_2d"], atol=0.01)
        image = cv2.cvtColor(
            cv2.imdecode(np.frombuffer(row["image"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
        )
        wrists = row["joints_2d"][[H36M("l_wrist"), H36M("r_wrist")]]
        crop_scale = row["camera"][0] / INTRINSICS[0]
        if np.linalg.norm(wrists[0] - wrists[1]) < (2 * MARKER_PX + 2) * crop_scale:
            continue  # the two markers overlap
        for (u, v), colour in zip(np.round(wrists).astype(int), (RED, BLUE)):
            assert np.abs(image[v, u].astype(int) - colour).max() < 80, (row["frame_id"], colour)
        checked += 1
    assert checked >= 4


def test_inconsistent_camera_is_reported_with_the_file(surreal, tmp_path):
    root, truth = surreal
    _write_clip(
        tmp_path / "train/run0/02_01", "02_01_c0001", np.array([6.0, -1.0, -2.0]), truth["01_01_c0001"]
    )
    path = tmp_path / "train/run0/02_01/02_01_c0001_info.mat"
    info = scipy.io.loadmat(path)
    info["camLoc"] = info["camLoc"] + np.float32([[0.0], [0.3], [0.0]])
    scipy.io.savemat(path, {k: v for k, v in info.items() if not k.startswith("__")})
    with pytest.raises(ValueError, match=r"02_01_c0001_info.mat: frame \d+: .* misses joints2D"):
        next(convert_surreal(tmp_path, "train"))
    with pytest.raises(ValueError, match="split"):
        next(convert_surreal(root, "validation"))


def test_prepare_data_subcommand_writes_the_converted_rows(tmp_path, surreal):
    root, _ = surreal
    assert_subcommand_writes(
        ["surreal", "--root", str(root), "--split", "train", "--runs", "0"],
        str(tmp_path / "records"),
        list(convert_surreal(root, "train", runs=[0], crop=CropSpec(**CLI_CROP))),
    )
