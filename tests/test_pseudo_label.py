import numpy as np
import pytest

from dfa_ray.method import heatmaps as hm
from dfa_ray.method import transforms as tf
from dfa_ray.method.pseudo_label import PseudoLabels, anchor_2d, combine, pseudo_label, target_variance
from dfa_ray.method.skeleton import JOINT_NAMES
from dfa_ray.method.views import EquivarianceView, sample_views
from tests.helpers import load_script, place_in_camera, project, random_poses, render_sticks

SIZE = 64
FLOOR = target_variance(16, 1.0)


def _scene(n=12, seed=0):
    rng = np.random.default_rng(seed)
    joints, camera = place_in_camera(rng, random_poses(rng, n), SIZE)
    return hm.normalise(joints, camera, SIZE), render_sticks(project(joints, camera), SIZE), rng


def _oracle(gt, views, noise=0.0, rng=None):
    """A predictor that knows each frame's ground truth and which view it is looking at."""
    per_view = [
        np.stack([tf.equivariance_forward(g, p) for g, p in zip(gt, params)])
        if isinstance(kind, EquivarianceView)
        else gt
        for kind, params in zip(views.kinds, views.params)
    ]

    def predict(images):
        assert len(images) == len(views.kinds) * len(gt)
        coords = np.concatenate(per_view)
        if noise:
            coords = coords + rng.normal(0, noise, coords.shape)
        return coords, np.full(coords.shape, FLOOR / 2)  # sharper than the floor

    return predict


def test_perfect_predictor_ensemble_equals_ground_truth_with_full_confidence():
    gt, images, rng = _scene()
    views = sample_views([rng] * len(gt))
    assert any(p.flip for p in views.params[2]) and any(not p.flip for p in views.params[2])
    labels = pseudo_label(_oracle(gt, views), images, views, FLOOR)
    np.testing.assert_allclose(labels.joints, gt, atol=1e-5)
    np.testing.assert_allclose(labels.confidence, 1.0, atol=1e-6)
    assert labels.joints.dtype == np.float32 and labels.joint_confidence.shape == (len(gt), 17)


def test_averaging_three_noisy_views_beats_one_view():
    gt, images, rng = _scene(n=64, seed=1)
    views = sample_views([rng] * len(gt))
    noisy = _oracle(gt, views, noise=0.02, rng=np.random.default_rng(2))
    labels = pseudo_label(noisy, images, views, FLOOR)
    single, _ = noisy(np.zeros((3 * len(gt), 1)))
    one_view_error = np.linalg.norm(single[: len(gt)] - gt, axis=-1).mean()
    ensemble_error = np.linalg.norm(labels.joints - gt, axis=-1).mean()
    assert ensemble_error < 0.75 * one_view_error  # ~1/sqrt(3) for independent noise


def test_density_confidence_falls_with_disagreement_and_with_diffuse_views():
    gt, _, _ = _scene(n=1)
    spread = np.full((3, 1, 17), FLOOR)
    agree = combine(np.stack([gt] * 3), spread, FLOOR, "density")
    shifted = np.stack([gt, gt, gt + 0.05])
    disagree = combine(shifted, spread, FLOOR, "density")
    diffuse = combine(np.stack([gt] * 3), spread * 4, FLOOR, "density")
    assert agree.confidence[0] == pytest.approx(1.0)
    assert disagree.confidence[0] < agree.confidence[0]
    assert diffuse.confidence[0] == pytest.approx(4**-1.5)
    assert np.all((disagree.joint_confidence > 0) & (disagree.joint_confidence <= 1))


def _turned(joints, degrees):
    """``joints`` (N, J, 3) rotated about the vertical (y) axis through their root."""
    a = np.radians(degrees)
    rotation = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    root = joints[:, :1]
    return (joints - root) @ rotation.T + root


def test_facing_confidence_drops_frames_whose_views_turn_the_body_round():
    gt, _, _ = _scene(n=2, seed=3)
    spread = np.full((3, 2, 17), FLOOR)
    views = np.stack([gt, gt, gt])
    views[2, 1] = _turned(gt[1:2], 180)[0]  # one view sees frame 1 from behind
    labels = combine(views, spread, FLOOR, "facing")
    assert labels.confidence[0] == pytest.approx(1.0)
    np.testing.assert_allclose(labels.joint_confidence[0], 1.0, atol=1e-6)
    # the mean of two views facing one way and one the other faces the first way: 2 agree, 1 opposes
    assert labels.confidence[1] == pytest.approx(2 / 3, abs=0.02)
    # a small turn costs little, and shifting a view without turning it costs nothing
    slight = np.stack([gt, gt, _turned(gt, 20)])
    assert 0.9 < combine(slight, spread, FLOOR, "facing").confidence.min() < 1.0
    shifted = combine(np.stack([gt, gt, gt + 0.05]), spread, FLOOR, "facing")
    np.testing.assert_allclose(shifted.confidence, 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="unknown confidence 'peak'"):
        combine(views, spread, FLOOR, "peak")


def test_model_predictor_runs_on_real_views():
    from dfa_ray.method.model import ModelConfig, PoseModel, predict

    gt, images, rng = _scene(n=4)
    model = PoseModel(ModelConfig())
    labels = pseudo_label(lambda x: predict(model, x), images, sample_views([rng] * 4), FLOOR)
    assert labels.joints.shape == (4, 17, 3) and np.all(np.isfinite(labels.joints))
    assert np.all((labels.confidence > 0) & (labels.confidence <= 1))


def test_mismatched_views_are_rejected():
    gt, images, rng = _scene(n=3)
    with pytest.raises(ValueError, match="3 images but views drawn for 2 frames"):
        pseudo_label(_oracle(gt, sample_views([rng] * 3)), images, sample_views([rng] * 2), FLOOR)


def test_anchor_2d_takes_the_detected_image_position_and_drops_a_mirrored_body():
    rng = np.random.default_rng(5)
    joints = rng.uniform(-0.5, 0.5, (3, 17, 3)).astype(np.float32)
    left, right = JOINT_NAMES.index("l_hip"), JOINT_NAMES.index("r_hip")
    joints[:, left, 0], joints[:, right, 0] = 0.3, -0.3  # every label has the body's left at image right
    labels = PseudoLabels(joints, np.full((3, 17), 0.5, np.float32), np.full(3, 0.5, np.float32))
    detected = joints[..., :2] + 0.05
    detected[1, left, 0], detected[1, right, 0] = -0.4, 0.4  # the detector sees frame 1 the other way
    valid = np.ones((3, 17), bool)
    valid[0, 5] = False  # frame 0: one joint unseen keeps the ensemble's position
    valid[2, JOINT_NAMES.index("r_shoulder")] = False  # frame 2: left and right cannot be checked
    detected[2, left, 0], detected[2, right, 0] = -0.4, 0.4
    out = anchor_2d(labels, detected, valid)
    np.testing.assert_allclose(out.joints[..., 2], joints[..., 2])  # depth stays the ensemble's
    np.testing.assert_allclose(out.joints[0, 5], joints[0, 5])
    seen = valid[..., None] & np.ones(2, bool)
    np.testing.assert_allclose(out.joints[..., :2][seen], detected[seen], atol=1e-6)
    np.testing.assert_allclose(out.confidence, [0.5, 0.0, 0.5])
    assert (out.joint_confidence[1] == 0).all() and (out.joint_confidence[[0, 2]] == 0.5).all()
    with pytest.raises(ValueError, match="do not match labels"):
        anchor_2d(labels, detected[:2], valid[:2])


def test_the_confidence_benchmark_scores_each_ranking_against_the_oracle():
    bench = load_script("benchmarks/confidence.py")
    error = np.array([10.0, 50.0, 30.0, 20.0])
    perfect = bench.ranking(error, -error, keep=0.5)
    assert perfect == {"kept_mpjpe": 15.0, "dropped_mpjpe": 40.0, "spearman": pytest.approx(1.0)}
    assert bench.ranking(error, error, keep=0.5)["spearman"] == pytest.approx(-1.0)
    args = bench.build_parser().parse_args(["models/source/model.pt", "--frames", "24", "--keep", "0.5"])
    found = bench.run(args)
    rankings = found["rankings"]
    assert found["frames"] == 24
    assert set(rankings) == {"facing", "density", "sharpness", "mirror_agreement", "oracle"}
    assert rankings["oracle"]["spearman"] == pytest.approx(1.0)
    turned = found["turned_round"]
    assert 0 <= turned["share"] <= 1 and turned["mpjpe_rest"] > 0
    # At their true image position the labels keep only their depth's error: less than all of it.
    assert 0 < found["pseudo_label_mpjpe_at_true_2d"] < found["pseudo_label_mpjpe"]
    # The oracle keeps the best-labelled half: no ranking beats it, and halves average to the whole.
    for ranked in rankings.values():
        assert ranked["kept_mpjpe"] >= rankings["oracle"]["kept_mpjpe"] - 1e-9
        assert ranked["kept_mpjpe"] + ranked["dropped_mpjpe"] == pytest.approx(
            2 * found["pseudo_label_mpjpe"], rel=1e-9
        )
