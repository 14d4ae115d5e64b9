from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from dfa_ray.method.metrics import (
    describe,
    facing_angle,
    mean_pose,
    mean_pose_baseline,
    mpjpe,
    pa_mpjpe,
    procrustes_align,
    summarize,
    trunk_angle,
)
from dfa_ray.method.skeleton import JOINT_NAMES, NUM_JOINTS, ROOT


def random_poses(rng: np.random.Generator, n: int) -> np.ndarray:
    # Random 3D point clouds of human size (mm); non-planar, so a mirror image is not a rotation.
    return rng.normal(scale=300.0, size=(n, NUM_JOINTS, 3)) + np.array([0.0, 0.0, 4000.0])


def similarity_copy(gt, scale, rotations, translations):
    return scale * np.einsum("nij,nkj->nki", rotations, gt) + translations[:, None, :]


def test_pa_mpjpe_is_zero_for_a_scaled_rotated_translated_copy():
    rng = np.random.default_rng(0)
    gt = random_poses(rng, 8)
    rotations = Rotation.random(8, random_state=1).as_matrix()
    translations = rng.normal(scale=500.0, size=(8, 3))
    pred = similarity_copy(gt, 0.7, rotations, translations)

    assert np.abs(pa_mpjpe(pred, gt)).max() < 1e-6
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-6)
    assert mpjpe(pred, gt).mean() > 10.0


def procrustes_rotations(aligned, pred):
    # Recover the linear part that maps centred pred onto centred aligned (pred is full rank).
    a = aligned - aligned.mean(axis=1, keepdims=True)
    p = pred - pred.mean(axis=1, keepdims=True)
    linear = np.stack([np.linalg.lstsq(p_i, a_i, rcond=None)[0].T for p_i, a_i in zip(p, a, strict=True)])
    scales = np.cbrt(np.linalg.det(linear))
    return linear / np.abs(scales)[:, None, None]


def test_pa_alignment_does_not_allow_reflections():
    rng = np.random.default_rng(2)
    gt = random_poses(rng, 8)
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    # A reflection would map the mirror image back exactly; a proper rotation cannot.
    assert pa_mpjpe(mirrored, gt).mean(axis=1).min() > 1.0
    rotations = procrustes_rotations(procrustes_align(mirrored, gt), mirrored)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-9)


def test_mpjpe_hand_computed_with_shifted_root():
    gt = random_poses(np.random.default_rng(3), 1)
    pred = gt + np.array([25.0, -40.0, 130.0])  # a global offset must cost nothing
    pred[0, 3, 0] += 10.0  # r_ankle 10 mm off along x
    expected = np.zeros((1, NUM_JOINTS))
    expected[0, 3] = 10.0
    np.testing.assert_allclose(mpjpe(pred, gt), expected, atol=1e-9)
    assert mpjpe(pred, gt).mean() == pytest.approx(10.0 / 17.0, abs=1e-6)


def test_mpjpe_hand_computed_when_only_the_root_moves():
    gt = random_poses(np.random.default_rng(4), 1)
    pred = gt.copy()
    pred[0, ROOT] += np.array([3.0, 4.0, 0.0])  # |(3, 4, 0)| = 5 mm
    # Root-relative, every other joint appears 5 mm off and the root itself 0 mm: 16 * 5 / 17.
    errors = mpjpe(pred, gt)
    assert errors[0, ROOT] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(np.delete(errors[0], ROOT), 5.0, atol=1e-9)
    assert errors.mean() == pytest.approx(16 * 5.0 / 17, abs=1e-6)


def closed_form_pa_case():
    """Ground truth centred at the origin, and a prediction with two joints pushed apart.

    Joints 0, 7 and 8 sit at the origin; the other 14 come in +/- pairs, so the centroid is 0.
    The prediction moves joint 7 by +v and joint 8 by -v. That perturbation E has zero mean and
    E^T G = v (g_7 - g_8)^T = 0, so the cross-covariance stays G^T G (symmetric positive definite):
    the optimal rotation is the identity, the translation zero, and the scale
    s = |G|^2 / (|G|^2 + 2 |v|^2).
    """
    pairs = {
        (1, 4): (100, 0, 0),
        (2, 5): (0, 200, 0),
        (3, 6): (0, 0, 300),
        (9, 10): (100, 100, 0),
        (11, 14): (0, 100, 100),
        (12, 15): (100, 0, 100),
        (13, 16): (50, 50, 50),
    }
    gt = np.zeros((NUM_JOINTS, 3))
    for (plus, minus), point in pairs.items():
        gt[plus] = point
        gt[minus] = np.negative(point)
    v = np.array([30.0, 40.0, 0.0])  # |v| = 50
    pred = gt.copy()
    pred[7] += v
    pred[8] -= v
    # |G|^2 = 2 * (100^2 + 200^2 + 300^2 + 3 * 2 * 100^2 + 3 * 50^2) = 2 * 207500 = 415000
    # s = 415000 / (415000 + 2 * 50^2) = 415000 / 420000 = 83 / 84
    s = 83 / 84
    # Joint i lands at s * (g_i + e_i): error (1 - s) |g_i| = |g_i| / 84, and s * 50 for joints 7, 8.
    expected = np.linalg.norm(gt, axis=1) / 84
    expected[[7, 8]] = s * 50.0
    return gt, pred, expected


def test_pa_mpjpe_hand_computed_closed_form():
    gt, pred, expected = closed_form_pa_case()
    np.testing.assert_allclose(pa_mpjpe(pred[None], gt[None])[0], expected, atol=1e-6)
    # A similarity transform of the prediction must not change PA-MPJPE.
    rotation = Rotation.from_euler("xyz", [30, -50, 110], degrees=True).as_matrix()
    moved = 1.3 * pred @ rotation.T + np.array([10.0, 20.0, 3000.0])
    np.testing.assert_allclose(pa_mpjpe(moved[None], gt[None])[0], expected, atol=1e-6)


def reference_pa_mpjpe(pred, gt):
    # Independent implementation: scipy's orthogonal Procrustes plus the closed-form scale.
    out = []
    for p, g in zip(pred, gt, strict=True):
        pc, gc = p - p.mean(axis=0), g - g.mean(axis=0)
        rotation, singular_sum = orthogonal_procrustes(pc, gc)
        assert np.linalg.det(rotation) > 0  # noisy rotated copies: the best orthogonal map is proper
        aligned = singular_sum / (pc**2).sum() * pc @ rotation + g.mean(axis=0)
        out.append(np.linalg.norm(aligned - g, axis=1))
    return np.array(out)


def test_pa_mpjpe_matches_scipy_reference():
    rng = np.random.default_rng(5)
    gt = random_poses(rng, 16)
    rotations = Rotation.random(16, random_state=6).as_matrix()
    pred = similarity_copy(gt, 1.2, rotations, rng.normal(scale=100.0, size=(16, 3)))
    pred += rng.normal(scale=40.0, size=pred.shape)
    result = pa_mpjpe(pred, gt)
    assert result.mean() > 1.0
    np.testing.assert_allclose(result, reference_pa_mpjpe(pred, gt), atol=1e-6)


def test_mpjpe_ignores_any_translation_of_the_prediction():
    rng = np.random.default_rng(7)
    gt = random_poses(rng, 10)
    pred = gt + rng.normal(scale=30.0, size=gt.shape)
    before = mpjpe(pred, gt)
    for _ in range(5):
        shifted = pred + rng.normal(scale=1000.0, size=(10, 1, 3))
        np.testing.assert_allclose(mpjpe(shifted, gt), before, atol=1e-9)


def test_degenerate_prediction_gives_no_nan():
    gt = random_poses(np.random.default_rng(8), 2)
    pred = np.full_like(gt, 123.0)  # every joint at one point
    aligned = procrustes_align(pred, gt)
    assert np.isfinite(aligned).all()
    # Only a translation is possible: every joint lands on the ground-truth centroid.
    np.testing.assert_allclose(aligned, np.broadcast_to(gt.mean(axis=1, keepdims=True), gt.shape))
    assert np.isfinite(pa_mpjpe(pred, gt)).all()
    assert np.isfinite(pa_mpjpe(gt, np.zeros_like(gt))).all()  # degenerate ground truth too


def test_valid_mask_excludes_joints_from_errors_and_alignment():
    rng = np.random.default_rng(9)
    gt = random_poses(rng, 4)
    rotations = Rotation.random(4, random_state=10).as_matrix()
    pred = similarity_copy(gt, 0.9, rotations, rng.normal(size=(4, 3)))
    pred[:, 10] += 500.0  # the head is wildly off ...
    valid = np.ones((4, NUM_JOINTS), dtype=np.uint8)
    valid[:, 10] = 0  # ... but has no ground truth
    pred[:, 10] = np.nan

    masked = pa_mpjpe(pred, gt, valid)
    assert np.isnan(masked[:, 10]).all()
    # Aligning on the valid joints only recovers the similarity exactly.
    assert np.nanmax(masked) < 1e-6
    assert np.isnan(mpjpe(pred, gt, valid)[:, 10]).all()


def test_missing_root_voids_the_sample_for_mpjpe():
    gt = random_poses(np.random.default_rng(11), 2)
    valid = np.ones((2, NUM_JOINTS), dtype=bool)
    valid[1, ROOT] = False
    errors = mpjpe(gt + 1.0, gt, valid)
    assert np.isnan(errors[1]).all()
    assert np.isfinite(errors[0]).all()


def test_summarize_per_action_and_per_joint():
    gt = random_poses(np.random.default_rng(12), 5)
    pred = gt.copy()
    actions = ["walk", "sit", "walk", "sit", "sit"]
    pred[[0, 2], 3, 0] += 10.0  # walk: one joint 10 mm off -> 10 / 17
    pred[[1, 3, 4], 5, 1] += 34.0  # sit: one joint 34 mm off -> 34 / 17 = 2
    pred[4, 6, 2] += 17.0  # one sit frame also has joint 6 17 mm off -> +1 for that frame

    summary = summarize(pred, gt, actions)
    json.dumps(summary, allow_nan=False)

    assert summary["num_frames"] == 5
    walk, sit = summary["per_action"]["walk"], summary["per_action"]["sit"]
    assert walk["num_frames"] == 2 and sit["num_frames"] == 3
    assert walk["mpjpe"] == pytest.approx(10 / 17, abs=1e-6)
    assert sit["mpjpe"] == pytest.approx((2 + 2 + 3) / 3, abs=1e-6)
    assert summary["mpjpe"] == pytest.approx((10 / 17 * 2 + 2 + 2 + 3) / 5, abs=1e-6)

    pa = pa_mpjpe(pred, gt)
    assert walk["pa_mpjpe"] == pytest.approx(pa[[0, 2]].mean(), abs=1e-9)
    assert sit["pa_mpjpe"] == pytest.approx(pa[[1, 3, 4]].mean(), abs=1e-9)
    assert summary["pa_mpjpe"] == pytest.approx(pa.mean(), abs=1e-9)

    assert tuple(summary["per_joint"]) == JOINT_NAMES
    assert summary["per_joint"]["r_ankle"]["mpjpe"] == pytest.approx(10 * 2 / 5, abs=1e-6)
    assert summary["per_joint"]["l_knee"]["mpjpe"] == pytest.approx(34 * 3 / 5, abs=1e-6)
    for j, joint in enumerate(JOINT_NAMES):
        assert summary["per_joint"][joint]["pa_mpjpe"] == pytest.approx(pa[:, j].mean())

    def plain_values(node):
        for key, value in node.items():
            assert type(key) is str
            if isinstance(value, dict):
                plain_values(value)
            else:
                assert type(value) in (float, int), (key, type(value))

    plain_values(summary)
    assert type(summary["mpjpe"]) is float and type(summary["num_frames"]) is int


def test_summarize_with_mask_uses_only_valid_entries():
    gt = random_poses(np.random.default_rng(13), 2)
    pred = gt.copy()
    pred[0, 3, 0] += 1000.0  # a huge error on an invalid joint must not count
    pred[1, 3, 0] += 17.0
    valid = np.ones((2, NUM_JOINTS), dtype=int)
    valid[0, 3] = 0
    summary = summarize(pred, gt, valid=valid)
    assert summary["mpjpe"] == pytest.approx(17.0 / 33, abs=1e-6)  # 33 valid entries
    assert summary["per_joint"]["r_ankle"]["mpjpe"] == pytest.approx(17.0, abs=1e-6)
    json.dumps(summary, allow_nan=False)


def test_summarize_without_valid_entries_gives_none_not_nan():
    gt = random_poses(np.random.default_rng(14), 1)
    valid = np.ones((1, NUM_JOINTS), dtype=int)
    valid[:, 3] = 0
    summary = summarize(gt, gt, valid=valid)
    assert summary["per_joint"]["r_ankle"] == {"mpjpe": None, "pa_mpjpe": None}
    json.dumps(summary, allow_nan=False)


@pytest.mark.parametrize(
    ("pred_shape", "gt_shape", "pattern"),
    [
        ((2, 16, 3), (2, 16, 3), r"\(2, 16, 3\)"),
        ((2, 17, 2), (2, 17, 2), r"\(2, 17, 2\)"),
        ((17, 3), (17, 3), r"\(17, 3\)"),
        ((2, 17, 3), (3, 17, 3), r"pred \(2, 17, 3\), gt \(3, 17, 3\)"),
    ],
)
@pytest.mark.parametrize("metric", [mpjpe, pa_mpjpe, summarize])
def test_bad_shapes_raise_naming_the_shapes(metric, pred_shape, gt_shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        metric(np.zeros(pred_shape), np.zeros(gt_shape))


def test_bad_valid_mask_and_actions_raise():
    gt = np.zeros((2, NUM_JOINTS, 3))
    with pytest.raises(ValueError, match=r"valid must have shape \(2, 17\).*\(2, 16\)"):
        mpjpe(gt, gt, np.ones((2, 16)))
    with pytest.raises(ValueError, match="only 0/1"):
        pa_mpjpe(gt, gt, np.full((2, NUM_JOINTS), 2))
    with pytest.raises(ValueError, match=r"one entry per frame \(2\), got 3"):
        summarize(gt, gt, actions=["a", "b", "c"])


def test_nan_at_valid_joint_raises():
    gt = np.zeros((2, NUM_JOINTS, 3))
    pred = gt.copy()
    pred[1, 4, 2] = np.nan
    for metric in (mpjpe, pa_mpjpe, procrustes_align):
        with pytest.raises(ValueError, match="pred has a non-finite coordinate at valid sample 1, joint 4"):
            metric(pred, gt)


def test_mean_pose_baseline_predicts_the_labeled_frames_mean_at_each_true_root():
    rng = np.random.default_rng(0)
    train = rng.normal(0, 300, (5, 17, 3)) + np.array([0, 0, 4000])
    unlabeled = np.full((1, 17, 3), np.nan)  # a 2D-only frame: no 3D label, not in the mean
    pose = mean_pose(np.concatenate([train, unlabeled]))
    np.testing.assert_allclose(pose, (train - train[:, :1]).mean(0))
    assert np.all(pose[0] == 0)
    test = rng.normal(0, 300, (4, 17, 3)) + np.array([100, -50, 5000])
    baseline = mean_pose_baseline(pose, test)
    # The same as summarize of the mean pose placed at each test frame's root.
    expected = summarize(pose + test[:, :1], test)
    assert baseline["mpjpe"] == pytest.approx(expected["mpjpe"]) and baseline["num_frames"] == 4
    pred = test + rng.normal(0, 20, test.shape)
    summary = summarize(pred, test, mean_pose=pose)
    assert summary["mean_pose_mpjpe"] == pytest.approx(expected["mpjpe"])
    assert summary["mean_pose_pa_mpjpe"] == pytest.approx(expected["pa_mpjpe"])
    assert summary["mpjpe_over_mean_pose"] == pytest.approx(summary["mpjpe"] / expected["mpjpe"])
    assert summary["pa_mpjpe_over_mean_pose"] == pytest.approx(summary["pa_mpjpe"] / expected["pa_mpjpe"])
    line = describe(summary)
    assert f"MPJPE {summary['mpjpe']:.1f} mm ({summary['mpjpe_over_mean_pose']:.2f}x mean pose" in line
    plain = summarize(pred, test)  # no baseline given: none shown
    assert "mean_pose_mpjpe" not in plain and "mean pose" not in describe(plain)
    with pytest.raises(ValueError, match="no frame has finite joints_3d"):
        mean_pose(unlabeled)


def test_trunk_angle_is_the_rotation_of_the_trunk_and_ignores_the_limbs():
    rng = np.random.default_rng(3)
    gt = random_poses(rng, 4)
    thorax = JOINT_NAMES.index("thorax")
    tilted = gt.copy()
    # Turn each whole pose about its root by 30 degrees about an axis across the trunk: the trunk turns 30.
    for i in range(4):
        trunk = gt[i, thorax] - gt[i, ROOT]
        axis = np.cross(trunk, rng.normal(size=3))
        turn = Rotation.from_rotvec(np.radians(30.0) * axis / np.linalg.norm(axis)).as_matrix()
        tilted[i] = (gt[i] - gt[i, ROOT]) @ turn.T + gt[i, ROOT]
    np.testing.assert_allclose(trunk_angle(tilted, gt), 30.0, atol=1e-9)
    limbs = gt.copy()
    limbs[:, JOINT_NAMES.index("l_ankle")] += 500.0  # not the trunk: no angle
    np.testing.assert_allclose(trunk_angle(limbs, gt), 0.0, atol=1e-6)
    valid = np.ones((4, NUM_JOINTS), np.uint8)
    valid[1, thorax] = 0
    tilted[1, thorax] = np.nan  # an invalid joint may hold anything
    angles = trunk_angle(tilted, gt, valid)
    assert np.isnan(angles[1]) and np.allclose(angles[[0, 2, 3]], 30.0)


def test_facing_angle_is_180_for_a_front_back_flip_and_ignores_the_lean():
    rng = np.random.default_rng(4)
    gt = random_poses(rng, 3)
    thorax = JOINT_NAMES.index("thorax")
    relative = gt - gt[:, ROOT : ROOT + 1]
    # Turned half a turn about its upright (facing away), the body's left points the other way.
    flipped = gt.copy()
    leaned = gt.copy()
    for i in range(3):
        across = relative[i, JOINT_NAMES.index("l_hip")] - relative[i, JOINT_NAMES.index("r_hip")]
        across += relative[i, JOINT_NAMES.index("l_shoulder")] - relative[i, JOINT_NAMES.index("r_shoulder")]
        up = relative[i, thorax] - (relative[i, thorax] @ across) / (across @ across) * across
        half_turn = Rotation.from_rotvec(np.pi * up / np.linalg.norm(up)).as_matrix()
        flipped[i] = relative[i] @ half_turn.T + gt[i, ROOT]
        # Leaning about the across axis itself turns the trunk but not the direction across the body.
        turn = Rotation.from_rotvec(np.radians(25.0) * across / np.linalg.norm(across)).as_matrix()
        leaned[i] = relative[i] @ turn.T + gt[i, ROOT]
    np.testing.assert_allclose(facing_angle(flipped, gt), 180.0, atol=1e-6)
    np.testing.assert_allclose(facing_angle(leaned, gt), 0.0, atol=1e-6)
    assert np.all(trunk_angle(leaned, gt) > 1.0)
    valid = np.ones((3, NUM_JOINTS), np.uint8)
    valid[2, JOINT_NAMES.index("r_shoulder")] = 0
    angles = facing_angle(flipped, gt, valid)
    assert np.isnan(angles[2]) and np.allclose(angles[:2], 180.0)
