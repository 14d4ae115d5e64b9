from __future__ import annotations

import cv2
import numpy as np
import pytest

from dfa_ray.data.crop import (
    Box,
    CropSpec,
    crop_image,
    crop_intrinsics,
    crop_matrix,
    crop_points,
    person_box,
    person_row,
)
from tests.helpers import project, random_poses


def _decode(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _blob_centre(image: np.ndarray, near: np.ndarray, radius: int = 8) -> np.ndarray:
    """Intensity-weighted centre of the bright blob near a point (image is single-channel)."""
    x0, y0 = (int(round(v)) - radius for v in near)
    window = image[max(y0, 0) : y0 + 2 * radius + 1, max(x0, 0) : x0 + 2 * radius + 1].astype(np.float64)
    window = np.clip(window - 0.2 * window.max(), 0, None)
    ys, xs = np.mgrid[: window.shape[0], : window.shape[1]]
    return np.array([(xs * window).sum(), (ys * window).sum()]) / window.sum() + [max(x0, 0), max(y0, 0)]


def test_box_is_centred_on_valid_joints_with_margin():
    joints = np.array([[100.0, 50.0], [300.0, 450.0], [5000.0, 5000.0]])
    box = person_box(joints, np.array([1, 1, 0]), margin=1.2)
    assert (box.cx, box.cy) == (200.0, 250.0)
    assert box.side == pytest.approx(1.2 * 400)
    assert person_box(np.array([[10.0, 10.0]]), min_side=40).side == 40
    with pytest.raises(ValueError, match="valid"):
        person_box(joints, np.zeros(3))


def test_box_maps_onto_the_crop_edges_and_centre():
    box = Box(cx=200.0, cy=120.0, side=100.0)
    # Pixel-centre convention: the box spans [c - s/2, c + s/2] in edge coordinates, i.e. the crop's
    # [-0.5, N - 0.5]; its centre goes to the crop centre (N - 1) / 2.
    corners = crop_points(np.array([[150.0, 70.0], [250.0, 170.0], [200.0, 120.0]]), box, 50)
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [49.5, 49.5], [24.5, 24.5]])
    np.testing.assert_allclose(crop_matrix(box, 50), [[0.5, 0, 24.5 - 100], [0, 0.5, 24.5 - 60]])


def test_projection_with_crop_intrinsics_gives_crop_joints():
    rng = np.random.default_rng(0)
    poses = random_poses(rng, 5) + np.array([300.0, -150.0, 4500.0])
    intrinsics = np.array([1145.0, 1143.5, 512.5, 515.4])
    full = project(poses, np.tile(intrinsics, (5, 1)))
    for joints_3d, joints_2d in zip(poses, full):
        box = person_box(joints_2d, margin=1.3)
        camera = crop_intrinsics(intrinsics, box, 128)
        np.testing.assert_allclose(
            project(joints_3d[None], camera[None])[0], crop_points(joints_2d, box, 128), atol=1e-9
        )


@pytest.mark.parametrize("side", [60.0, 400.0])  # upscaling and (anti-aliased) downscaling
def test_marker_drawn_in_frame_appears_at_its_crop_coordinates(side):
    frame = np.zeros((480, 640, 3), np.uint8)
    marker = np.array([333.0, 241.0])
    cv2.circle(frame, (int(marker[0]), int(marker[1])), 3, (255, 255, 255), -1)
    box = Box(cx=320.7, cy=230.2, side=side)
    crop = crop_image(frame, box, 96)
    expected = crop_points(marker, box, 96)
    np.testing.assert_allclose(_blob_centre(crop[..., 0], expected), expected, atol=0.25)


def test_outside_of_frame_is_black_and_frame_content_is_kept():
    frame = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_image(frame, Box(cx=0.0, cy=49.5, side=100.0), 100)  # left half falls off the frame
    assert crop[:, :45].max() == 0
    assert crop[:, 55:].min() == 200


def test_person_row_fields():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    joints_2d = rng.uniform([100, 50], [200, 200], (17, 2))
    valid = np.ones(17, np.uint8)
    valid[9] = 0
    row = person_row(
        "a/1",
        frame,
        np.array([600, 600, 159.5, 119.5]),
        joints_2d,
        valid,
        None,
        "s",
        "a",
        CropSpec(64, image_format="png"),
    )
    assert _decode(row["image"]).shape == (64, 64, 3)
    assert row["joints_2d"].dtype == np.float32 and row["joints_2d"].shape == (17, 2)
    assert row["camera"].dtype == np.float32 and row["camera"].shape == (4,)
    assert row["joints_3d"] is None and row["joints_valid"].dtype == np.uint8
    assert np.all(row["joints_2d"][9] == 0) and np.all(row["joints_2d"][valid == 1] > -1)
    with pytest.raises(ValueError, match="a/1"):
        person_row("a/1", frame, np.ones(4), joints_2d[:16], valid, None, "s", "a")
