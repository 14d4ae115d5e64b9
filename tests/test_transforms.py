import numpy as np
import pytest

from dfa_ray.method import heatmaps as hm
from dfa_ray.method import transforms as tf
from dfa_ray.method.skeleton import FLIP_PERMUTATION, JOINT_NAMES
from tests.helpers import place_in_camera, random_poses

SIZE = 64


def _normalised(n=50, seed=0):
    rng = np.random.default_rng(seed)
    joints, camera = place_in_camera(rng, random_poses(rng, n), SIZE)
    return hm.normalise(joints, camera, SIZE), joints, camera


def test_equivariance_round_trip_is_exact_for_every_marginal():
    coords, _, _ = _normalised()
    rng = np.random.default_rng(1)
    for i in range(len(coords)):
        p = tf.sample_equivariance(rng)
        back = tf.equivariance_inverse(tf.equivariance_forward(coords[i], p), p)
        # x, y, z: the axes of the xy, zy and xz marginals, all documented as exact.
        assert np.abs(back - coords[i]).max() < 1e-4


def test_flip_swaps_left_and_right_and_mirrors_x():
    coords, _, _ = _normalised(n=1)
    flipped = tf.equivariance_forward(coords[0], tf.EquivarianceParams(flip=True))
    l_wrist, r_wrist = JOINT_NAMES.index("l_wrist"), JOINT_NAMES.index("r_wrist")
    np.testing.assert_allclose(flipped[r_wrist], coords[0, l_wrist] * [-1, 1, 1])
    np.testing.assert_allclose(flipped[:, 1:], coords[0, list(FLIP_PERMUTATION), 1:])


def test_rotation_equals_rotating_the_camera_about_its_optical_axis():
    # With the principal point at the crop centre, an image rotation is a 3D rotation about z.
    coords, joints, camera = _normalised(n=5)
    angle = 25.0
    a = np.deg2rad(angle)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rotated_3d = hm.normalise(joints @ rz.T, camera, SIZE)
    mapped = tf.equivariance_forward(coords, tf.EquivarianceParams(angle_degrees=angle))
    np.testing.assert_allclose(mapped, rotated_3d, atol=1e-9)


def test_scale_equals_zooming_the_focal_length():
    coords, joints, camera = _normalised(n=5)
    s = 1.3
    zoomed = camera.copy()
    zoomed[:, :2] *= s  # zoom about the crop centre, which is the principal point here
    mapped = tf.equivariance_forward(coords, tf.EquivarianceParams(scale=s))
    np.testing.assert_allclose(mapped, hm.normalise(joints, zoomed, SIZE), atol=1e-9)


def _blob(x, y, size=SIZE):
    img = np.zeros((size, size, 3), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    img[..., 0] = (255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))).astype(np.uint8)
    return img


def _centroid(img):
    w = img[..., 0].astype(np.float64)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    return (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()


def test_image_warp_moves_pixels_where_the_label_transform_says():
    rng = np.random.default_rng(3)
    for _ in range(20):
        u, v = rng.uniform(20, 44, 2)
        p = tf.sample_equivariance(rng)
        warped = tf.apply_equivariance(_blob(u, v), p)
        point = np.zeros((17, 3))  # every joint at the blob, so a flip's left/right swap is moot
        point[:, :2] = hm.pixels_to_normalised([u, v], SIZE)
        expected = hm.normalised_to_pixels(tf.equivariance_forward(point, p)[0, :2], SIZE)
        np.testing.assert_allclose(_centroid(warped), expected, atol=0.1)


def test_inverse_variance_undoes_scale_and_swap():
    var = np.arange(17, dtype=np.float64) + 1
    p = tf.EquivarianceParams(angle_degrees=10, scale=2.0, flip=True)
    back = tf.equivariance_inverse_variance(var[list(FLIP_PERMUTATION)] * 4.0, p)
    np.testing.assert_allclose(back, var)


def test_invariance_changes_colour_not_geometry():
    img = _blob(30.0, 22.0)
    img[..., 1] = img[..., 0] // 2
    rng = np.random.default_rng(4)
    for _ in range(10):
        p = tf.sample_invariance(rng)
        out = tf.apply_invariance(img, p)
        assert out.shape == img.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, tf.apply_invariance(img, p))  # deterministic given params
        assert np.hypot(*np.subtract(_centroid(out), _centroid(img))) < 2.0 or p.noise_std > 0


def test_invariance_is_not_the_identity():
    img = np.random.default_rng(5).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    p = tf.InvarianceParams(1.2, 0.8, 1.3, 8.0, 0.8, 4.0, 7)
    assert np.abs(tf.apply_invariance(img, p).astype(int) - img).mean() > 5


def test_equivariance_rejects_non_square_images():
    with pytest.raises(ValueError, match="square crop"):
        tf.apply_equivariance(np.zeros((10, 12, 3), np.uint8), tf.EquivarianceParams())


def test_rigid_augment_moves_labels_with_the_image_and_weights_with_their_joints():
    rng = np.random.default_rng(5)
    size = 64
    # One bright pixel per joint: after the warp, each joint's pixel must sit where its label went.
    coords = np.zeros((3, 17, 3))
    coords[..., :2] = rng.uniform(-0.5, 0.5, (3, 17, 2))
    coords[..., 2] = rng.uniform(-0.5, 0.5, (3, 17))
    weights = np.tile(np.arange(17, dtype=np.float32), (3, 1))
    images = np.zeros((3, size, size, 3), np.uint8)
    pixels = np.round(hm.normalised_to_pixels(coords[..., :2], size)).astype(int)
    for b in range(3):
        images[b, pixels[b, 0, 1], pixels[b, 0, 0]] = 255  # the pelvis
    ranges = tf.EquivarianceRange(flip_probability=1.0)
    out_images, out_coords, out_weights = tf.rigid_augment(images, coords, weights, rng, ranges)
    for b in range(3):
        # Flipped: the weights were permuted exactly like the joints.
        assert out_weights[b].tolist() == [float(i) for i in FLIP_PERMUTATION]
        brightest = np.unravel_index(out_images[b, ..., 0].argmax(), (size, size))
        expected = hm.normalised_to_pixels(out_coords[b, 0, :2], size)
        assert np.abs(np.array(brightest[::-1]) - expected).max() <= 1.5


def test_recolour_changes_colours_never_geometry_and_greys_some_images():
    img = _blob(30.0, 22.0)
    img[..., 1] = img[..., 0] // 2
    batch = np.repeat(img[None], 40, axis=0)
    out = tf.recolour(batch, np.random.default_rng(0))
    assert out.shape == batch.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, tf.recolour(batch, np.random.default_rng(0)))  # seeded
    changed = np.abs(out.astype(int) - batch).reshape(40, -1).max(axis=1) > 20
    grey = (out[..., 0] == out[..., 1]).all(axis=(1, 2)) & (out[..., 1] == out[..., 2]).all(axis=(1, 2))
    assert changed.sum() >= 25 and 1 <= grey.sum() <= 20
    for image in out:  # the blob stays where it was: a colour change moves no pixel
        brightest = image.max(axis=-1, keepdims=True)  # any channel may now carry it
        assert np.hypot(*np.subtract(_centroid(brightest), _centroid(img))) < 2.0
