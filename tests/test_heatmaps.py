import numpy as np
import pytest
import torch

from dfa_ray import heatmaps as hm
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
