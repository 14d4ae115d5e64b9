import numpy as np
import pytest
import torch

from dfa_ray import heatmaps
from dfa_ray.data.synthetic import generate
from dfa_ray.model import ModelConfig, PoseModel
from dfa_ray.training import Frames, TrainConfig, evaluate, fit, predict_mm, subset_frames


@pytest.fixture(scope="module")
def rows():
    return list(generate("synthetic-source", "train", 48, crop_size=96))


def test_frames_decode_resize_and_keep_normalised_targets(rows):
    two_d = dict(rows[1], joints_3d=None, joints_valid=np.array([1] * 7 + [0] + [1] * 9, np.uint8))
    unlabeled = dict(rows[2], joints_3d=None, joints_2d=None)
    frames = Frames.from_rows([rows[0], two_d, unlabeled], input_size=64)
    assert frames.images.shape == (3, 64, 64, 3) and list(frames.crop_size) == [96] * 3
    assert frames.has_3d.tolist() == [True, False, False]
    expected = heatmaps.normalise(rows[0]["joints_3d"][None], rows[0]["camera"][None], 96)[0]
    np.testing.assert_allclose(frames.coords[0], expected, atol=1e-5)
    # A 2D-only frame keeps its image-plane target and has no depth.
    np.testing.assert_allclose(
        frames.coords[1, :, :2], heatmaps.pixels_to_normalised(rows[1]["joints_2d"], 96), atol=1e-5
    )
    assert np.isnan(frames.coords[1, :, 2]).all() and frames.joint_valid[1, 7] == 0
    assert frames.joint_valid[2].sum() == 0


def test_fit_lowers_the_loss_and_evaluate_reports_millimetres(rows):
    torch.manual_seed(0)
    frames = Frames.from_rows(rows, input_size=64)
    model = PoseModel(ModelConfig())
    history = fit(model, frames, TrainConfig(epochs=3, batch_size=16, lr=3e-3), log=lambda _: None)
    assert history[-1]["loss"] < history[0]["loss"]
    summary = evaluate(model, frames)
    assert summary["num_frames"] == 48 and 0 < summary["pa_mpjpe"] < summary["mpjpe"] < 2000
    # Perfect normalised coordinates come back as the ground truth in mm.
    sub = subset_frames(frames, np.arange(4))
    mm = heatmaps.denormalise(sub.coords, sub.camera, 96, sub.joints_3d[:, 0, 2])
    np.testing.assert_allclose(mm, sub.joints_3d, atol=1e-2)
    assert predict_mm(model, sub).shape == (4, 17, 3)


def test_evaluate_needs_3d_labels(rows):
    frames = Frames.from_rows([dict(rows[0], joints_3d=None)], input_size=64)
    with pytest.raises(ValueError, match="joints_3d"):
        evaluate(PoseModel(ModelConfig()), frames)
