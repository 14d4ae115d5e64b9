import numpy as np
import pytest
import torch

from dfa_ray.data import synthetic
from dfa_ray.method import heatmaps as hm
from dfa_ray.method.skeleton import BONES, JOINT_NAMES
from tests.helpers import place_in_camera, project, random_poses


def _posed(n=20, size=64, seed=0):
    rng = np.random.default_rng(seed)
    return place_in_camera(rng, random_poses(rng, n), size)


def test_normalise_denormalise_round_trip():
    joints, camera = _posed()
    coords = hm.normalise(joints, camera, 64)
    back = hm.denormalise(coords, camera, 64, joints[:, 0, 2])
    np.testing.assert_allclose(back, joints, atol=1e-6)
    assert np.all(coords[:, 0, 2] == 0)  # z is root-relative


def test_xy_is_the_projection_in_crop_coordinates():
    joints, camera = _posed()
    coords = hm.normalise(joints, camera, 64)
    pixels = project(joints, camera)
    np.testing.assert_allclose(hm.normalised_to_pixels(coords[..., :2], 64), pixels, atol=1e-9)
    # Pixel centres: pixel 0 is centred at -1 + 1/S, the last at 1 - 1/S.
    np.testing.assert_allclose(hm.pixels_to_normalised([0, 63], 64), [-1 + 1 / 64, 1 - 1 / 64])


def test_z_unit_is_half_the_crop_width_at_root_depth():
    joints, camera = _posed(n=1)
    unit = hm.depth_unit(camera, 64, joints[:, 0, 2])
    np.testing.assert_allclose(unit, 1100.0)  # the fixture's crop spans 2.2 m at the root
    coords = hm.normalise(joints, camera, 64)
    np.testing.assert_allclose(coords[0, :, 2], (joints[0, :, 2] - joints[0, 0, 2]) / 1100.0)


def test_normalise_rejects_bad_input():
    joints, camera = _posed(n=2)
    with pytest.raises(ValueError, match="camera must have shape"):
        hm.normalise(joints, camera[:1], 64)
    behind = joints.copy()
    behind[..., 2] *= -1
    with pytest.raises(ValueError, match="in front of the camera"):
        hm.normalise(behind, camera, 64)


@pytest.mark.parametrize("size,sigma", [(16, 1.0), (32, 1.0), (32, 2.0), (64, 1.5)])
def test_soft_argmax_of_rendered_gaussian_returns_its_centre(size, sigma):
    rng = np.random.default_rng(size)
    # Centres at least 3 sigma from the edge, anywhere within a cell.
    margin = 1 - 2 * (3 * sigma + 0.5) / size
    coords = torch.tensor(rng.uniform(-margin, margin, (8, 17, 3)), dtype=torch.float32)
    targets = hm.gaussian_marginals(coords, size, sigma)
    for m in targets:
        torch.testing.assert_close(m.sum(dim=(-2, -1)), torch.ones(8, 17))
    found, variance = hm.soft_argmax(hm.Marginals(*(t.clamp_min(1e-30).log() for t in targets)))
    cell = 2.0 / size
    assert (found - coords).abs().max().item() < cell / 4
    expected_var = (sigma * cell) ** 2
    assert torch.allclose(variance, torch.full_like(variance, expected_var), rtol=0.02)


def test_marginal_axes_follow_the_documented_layout():
    coords = torch.tensor([[[0.5, -0.25, 0.75]]])  # x, y, z
    t = hm.gaussian_marginals(coords, 8, 0.5)
    g = hm.grid(8)

    def peak(m):
        r, c = divmod(int(m[0, 0].argmax()), 8)
        return g[r].item(), g[c].item()

    assert peak(t.xy) == pytest.approx((-0.25, 0.5), abs=0.13)  # rows y, columns x
    assert peak(t.zy) == pytest.approx((-0.25, 0.75), abs=0.13)  # rows y, columns z
    assert peak(t.xz) == pytest.approx((0.75, 0.5), abs=0.13)  # rows z, columns x


# ------------------------------------------------------------------------------ bone-length depth prior


def test_root_depth_from_bones_recovers_the_depth_of_a_pose_with_those_bones():
    joints, camera = _posed(n=8)
    camera[:, 2:] += [[40.0, -25.0]]  # an off-centre person: the crop's principal point moves away
    bones = {JOINT_NAMES[c]: float(np.linalg.norm(joints[0, c] - joints[0, p])) for p, c in BONES}
    coords = hm.normalise(joints, camera, 64)
    np.testing.assert_allclose(
        hm.root_depth_from_bones(coords, camera, 64, bones), joints[:, 0, 2], rtol=1e-9
    )
    # A person twice the nominal size at the same place in the picture is put twice as far away.
    doubled = {name: 2 * mm for name, mm in bones.items()}
    np.testing.assert_allclose(hm.root_depth_from_bones(coords, camera, 64, doubled), 2 * joints[:, 0, 2])


def test_root_depth_from_bones_hardly_depends_on_the_focal_length():
    joints, camera = _posed(n=8)
    coords = hm.normalise(joints, camera, 64)
    depths, poses = [], []
    for scale in (1.0, 1.5):  # a wrongly assumed focal length moves the depth, not the shape
        wrong = camera * [scale, scale, 1, 1]
        depths.append(hm.root_depth_from_bones(coords, wrong, 64))
        pose = hm.denormalise(coords, wrong, 64, depths[-1])
        poses.append(pose - pose[:, :1])
    np.testing.assert_allclose(depths[1], 1.5 * depths[0], rtol=0.02)
    assert np.linalg.norm(poses[0] - poses[1], axis=-1).mean() < 10.0


def test_root_depth_from_bones_errs_on_synthetic_people_only_by_their_size():
    rows = list(synthetic.generate("synthetic-real", "test", 40, crop_size=64))
    joints = np.stack([row["joints_3d"] for row in rows]).astype(np.float64)
    camera = np.stack([row["camera"] for row in rows]).astype(np.float64)
    ratio = hm.root_depth_from_bones(hm.normalise(joints, camera, 64), camera, 64) / joints[:, 0, 2]
    # Synthetic subjects are 0.88-1.1 times the nominal adult (each bone another 0.93-1.07 times), and
    # the prior's error is that size alone: the same for every frame of a subject, whatever the pose.
    assert np.abs(ratio - 1).max() < 0.15
    subjects = np.array([row["subject"] for row in rows])
    assert len(set(subjects)) == 2
    for subject in set(subjects):
        assert np.ptp(ratio[subjects == subject]) < 1e-3


def test_root_depth_from_bones_rejects_a_pose_without_bones():
    _, camera = _posed(n=1)
    with pytest.raises(ValueError, match="no bone lengths"):
        hm.root_depth_from_bones(np.zeros((1, 17, 3)), camera, 64)
