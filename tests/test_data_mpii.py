"""MPII converter against a tiny mpii_human_pose_v1_u12_1.mat written in the official struct layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.io

from dfa_ray.data.crop import CropSpec
from dfa_ray.data.mpii import convert_mpii, nominal_intrinsics
from dfa_ray.method.skeleton import JOINT_NAMES, MPII_JOINT_NAMES
from tests.helpers import CLI_CROP, assert_subcommand_writes

EMPTY = np.zeros((0, 0))  # what MATLAB stores for an unset struct field
RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)
MPII_L_WRIST, MPII_R_WRIST = MPII_JOINT_NAMES.index("l_wrist"), MPII_JOINT_NAMES.index("r_wrist")


def _struct(records: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    """A MATLAB 1 x K struct array (savemat writes a structured object array as one)."""
    array = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
    for i, record in enumerate(records):
        for field in fields:
            array[0, i][field] = record.get(field, EMPTY)
    return array


def _rect(joints_0based: dict[int, tuple[float, float]], visibility: list) -> dict:
    """A training-image annorect entry with 1-based MATLAB coordinates."""
    points = [
        {"id": float(j), "x": x + 1.0, "y": y + 1.0, "is_visible": visibility[k % len(visibility)]}
        for k, (j, (x, y)) in enumerate(sorted(joints_0based.items()))
    ]
    xs = [x for x, _ in joints_0based.values()]
    ys = [y for _, y in joints_0based.values()]
    return {
        "x1": min(xs), "y1": min(ys) - 40.0, "x2": min(xs) + 30.0, "y2": min(ys) - 10.0,
        "annopoints": _struct([{"point": _struct(points, ("id", "x", "y", "is_visible"))}], ("point",)),
        "scale": (max(ys) - min(ys)) / 200.0,
        "objpos": _struct([{"x": float(np.mean(xs)), "y": float(np.mean(ys))}], ("x", "y")),
    }  # fmt: skip


def _person(rng, centre, height) -> dict[int, tuple[float, float]]:
    """Plausible MPII-16 joints (0-based pixels), wrists far apart so their markers do not overlap."""
    layout = {  # (x, y) in units of the person's height, y down, person facing the camera
        "r_ankle": (-0.1, 0.5), "r_knee": (-0.09, 0.27), "r_hip": (-0.08, 0.02), "l_hip": (0.08, 0.02),
        "l_knee": (0.09, 0.27), "l_ankle": (0.1, 0.5), "pelvis": (0.0, 0.02), "thorax": (0.0, -0.3),
        "upper_neck": (0.0, -0.34), "head_top": (0.0, -0.48), "r_wrist": (-0.35, -0.05),
        "r_elbow": (-0.25, -0.15), "r_shoulder": (-0.12, -0.3), "l_shoulder": (0.12, -0.3),
        "l_elbow": (0.25, -0.15), "l_wrist": (0.35, -0.05),
    }  # fmt: skip
    return {
        MPII_JOINT_NAMES.index(n): tuple(np.asarray(centre) + height * np.asarray(p) + rng.normal(0, 2, 2))
        for n, p in layout.items()
    }


def _image(path, size, people):
    img = np.full((size[1], size[0], 3), GREY, np.uint8)
    for joints in people:
        for j, colour in ((MPII_L_WRIST, RED), (MPII_R_WRIST, BLUE)):
            if j in joints:
                x, y = joints[j]
                cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 6 * 16, colour, -1, cv2.LINE_AA, 4)
    cv2.imwrite(str(path), img[..., ::-1])


@pytest.fixture(scope="module")
def mpii(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpii")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    a = _person(rng, (220, 230), 300)
    del a[MPII_JOINT_NAMES.index("l_ankle")], a[MPII_JOINT_NAMES.index("upper_neck")]
    few = {j: xy for j, xy in _person(rng, (500, 200), 200).items() if j in (10, 11, 12, 13)}
    b = _person(rng, (300, 350), 420)
    _image(root / "images" / "000001163.jpg", (640, 480), [a, few])
    _image(root / "images" / "000003072.jpg", (480, 640), [b])
    _image(root / "images" / "000005555.jpg", (640, 480), [])
    test_rect = {"scale": 2.0, "objpos": _struct([{"x": 300.0, "y": 200.0}], ("x", "y"))}
    rect_fields = ("x1", "y1", "x2", "y2", "annopoints", "scale", "objpos")
    annolist = _struct(
        [
            {  # two annotated people (one with too few joints) and one with only objpos/scale
                "image": _struct([{"name": "000001163.jpg"}], ("name",)),
                "annorect": _struct(
                    [
                        _rect(a, ["1", 0.0, EMPTY, 1.0]),
                        _rect(few, [1.0]),
                        {"scale": 1.2, "objpos": test_rect["objpos"]},
                    ],
                    rect_fields,
                ),
                "frame_sec": 11.0,
                "vididx": 1.0,
            },
            {  # a single person: squeeze_me turns the 1 x 1 struct array into a bare struct
                "image": _struct([{"name": "000003072.jpg"}], ("name",)),
                "annorect": _struct([_rect(b, [1.0, "0"])], rect_fields),
                "frame_sec": 3.0,
                "vididx": 2.0,
            },
            {  # a test image: its joints are withheld, the file has only scale and objpos
                "image": _struct([{"name": "000004812.jpg"}], ("name",)),
                "annorect": _struct([test_rect], ("scale", "objpos")),
            },
            {"image": _struct([{"name": "000005555.jpg"}], ("name",)), "annorect": EMPTY},  # nobody annotated
        ],
        ("image", "annorect", "frame_sec", "vididx"),
    )
    single_person = np.empty((4, 1), dtype=object)
    single_person[:, 0] = [np.array([[1.0]]), np.array([[1.0]]), np.array([[1.0]]), EMPTY]
    act = _struct(
        [
            {"cat_name": "sports", "act_name": "curling", "act_id": 1.0},
            {"cat_name": EMPTY, "act_name": EMPTY, "act_id": -1.0},
            {"cat_name": "music playing", "act_name": "playing guitar", "act_id": 5.0},
            {"cat_name": EMPTY, "act_name": EMPTY, "act_id": -1.0},
        ],
        ("cat_name", "act_name", "act_id"),
    ).T  # RELEASE.act is N x 1
    videos = np.empty((1, 2), dtype=object)
    videos[0] = ["aAOusnrSsHI", "Qd5_BPsgTwE"]
    release = {
        "annolist": annolist,
        "img_train": np.array([[1.0, 1.0, 0.0, 1.0]]),
        "version": "12",
        "single_person": single_person,
        "act": act,
        "video_list": videos,
    }
    (root / "mpii_human_pose_v1_u12_2").mkdir()
    path = root / "mpii_human_pose_v1_u12_2" / "mpii_human_pose_v1_u12_1.mat"
    scipy.io.savemat(path, {"RELEASE": release})
    return root, path, {"000001163/1": a, "000003072/1": b}


def test_fixture_reads_like_the_official_file(mpii):
    # The indexing of princeton-vl/pose-hg-train src/misc/mpii.py, written for the real file.
    _, path, _ = mpii
    annot = scipy.io.loadmat(path)["RELEASE"]
    annolist = annot["annolist"][0][0][0]
    assert str(annolist["image"][1][0]["name"][0][0]) == "000003072.jpg"
    assert annot["img_train"][0][0][0].tolist() == [1, 1, 0, 1]
    example = annolist["annorect"][0]
    assert len(example[0]) == 3 and "annopoints" in example.dtype.fields
    assert annolist["annorect"][3].size == 0 and "annopoints" not in annolist["annorect"][2].dtype.fields
    points = example["annopoints"][0][0][0][0][0][0]
    assert points[0]["is_visible"][0] == "1" and points[2]["is_visible"].size == 0
    assert example["objpos"][0][0][0][0]["x"][0][0] == pytest.approx(220, abs=10)


def test_rows_validity_and_ids(mpii):
    root, _, truth = mpii
    rows = list(convert_mpii(root, crop=CropSpec(128)))
    assert [r["frame_id"] for r in rows] == ["000001163/1", "000003072/1"]
    assert [(r["subject"], r["action"]) for r in rows] == [
        ("aAOusnrSsHI", "curling"),
        ("Qd5_BPsgTwE", "unknown"),
    ]
    never = [JOINT_NAMES.index("spine"), JOINT_NAMES.index("neck_nose")]
    for row in rows:
        assert row["joints_3d"] is None
        assert np.all(row["joints_valid"][never] == 0) and np.all(row["joints_2d"][never] == 0)
    assert rows[0]["joints_valid"][JOINT_NAMES.index("l_ankle")] == 0  # not annotated
    assert rows[0]["joints_valid"].sum() == 14 and rows[1]["joints_valid"].sum() == 15
    assert [r["frame_id"] for r in convert_mpii(root, min_joints=15)] == ["000003072/1"]


def test_joints_land_on_their_markers_and_camera_is_nominal(mpii):
    root, _, truth = mpii
    for row in convert_mpii(root, crop=CropSpec(128, image_format="png")):
        joints = truth[row["frame_id"]]
        image = cv2.cvtColor(
            cv2.imdecode(np.frombuffer(row["image"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
        )
        for name, colour in (("l_wrist", RED), ("r_wrist", BLUE)):
            u, v = np.round(row["joints_2d"][JOINT_NAMES.index(name)]).astype(int)
            assert np.abs(image[v, u].astype(int) - colour).max() < 40, (row["frame_id"], name)
        # Nominal camera: focal = image diagonal, principal point at the image centre, moved into the crop.
        width, height = (640, 480) if row["frame_id"].startswith("000001163") else (480, 640)
        full = nominal_intrinsics(width, height)
        xy = np.array([xy for j, xy in joints.items() if MPII_JOINT_NAMES[j] != "upper_neck"])  # no H36M twin
        box_centre = (xy.min(0) + xy.max(0)) / 2
        k = row["camera"][0] / full[0]
        assert row["camera"][0] == row["camera"][1] and full[0] == pytest.approx(np.hypot(width, height))
        np.testing.assert_allclose(row["camera"][2:], 63.5 + k * (full[2:] - box_centre), atol=1e-3)


def test_bad_split_and_missing_files(mpii, tmp_path):
    root, _, _ = mpii
    with pytest.raises(ValueError, match="no public joint annotations"):
        next(convert_mpii(root, split="test"))
    with pytest.raises(FileNotFoundError, match="mpii_human_pose_v1_u12"):
        next(convert_mpii(tmp_path))
    (root / "images" / "000003072.jpg").rename(root / "images" / "moved.jpg")
    try:
        with pytest.raises(FileNotFoundError, match="000003072.jpg"):
            list(convert_mpii(root))
    finally:
        (root / "images" / "moved.jpg").rename(root / "images" / "000003072.jpg")


def test_prepare_data_subcommand_writes_the_converted_rows(tmp_path, mpii):
    root, _, _ = mpii
    assert_subcommand_writes(
        ["mpii", "--root", str(root)],
        str(tmp_path / "records"),
        list(convert_mpii(root, crop=CropSpec(**CLI_CROP))),
    )
