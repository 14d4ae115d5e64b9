import numpy as np
import pytest
import torch

from dfa_ray.config import AdaptConfig
from dfa_ray.data.synthetic import generate
from dfa_ray.method import dann, fitting, heatmaps
from dfa_ray.method.fitting import (
    Frames,
    PseudoLabeled,
    TrainConfig,
    adapt_fit,
    evaluate,
    fit,
    make_schedule,
    predict_mm,
    run_epochs,
    subset_frames,
)
from dfa_ray.method.model import ModelConfig, PoseModel
from tests.helpers import TINY


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


def test_fit_adapt_fit_and_dann_train_through_the_one_loop_and_schedule(rows, monkeypatch):
    """One step loop (``run_epochs``) and one schedule (``make_schedule``) for every training in
    memory; ``tests/test_stages.py`` shows the Ray Train worker uses the same two."""
    assert dann.run_epochs is fitting.run_epochs and dann.make_schedule is fitting.make_schedule
    calls = []

    def spy(name, real):
        return lambda *args, **kwargs: calls.append(name) or real(*args, **kwargs)

    for name in ("run_epochs", "make_schedule"):
        wrapped = spy(name, getattr(fitting, name))
        for module in (fitting, dann):
            monkeypatch.setattr(module, name, wrapped)
    torch.manual_seed(0)
    frames = Frames.from_rows(rows[:16], input_size=32)
    model = PoseModel(TINY)
    quiet = {"log": lambda _: None}
    stage = AdaptConfig(epochs=1, batch_size=8, augment=False)
    fit(model, frames, TrainConfig(epochs=1, batch_size=8, augment=False), **quiet)
    target = PseudoLabeled(frames.images, np.nan_to_num(frames.coords), np.ones((16, 17), np.float32))
    adapt_fit(model, frames, target, stage, **quiet)
    dann.dann_fit(dann.DANNNet(model, dann.DANNConfig(hidden=8)), frames, frames.images, stage, **quiet)
    assert calls == ["make_schedule", "run_epochs"] * 3


def test_run_epochs_resumes_at_first_epoch_and_hands_each_timed_record_to_the_hook():
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = TrainConfig(epochs=3, lr=0.1)
    schedule = make_schedule(optimizer, config, steps_per_epoch=2)
    seen, steps = [], []

    def step(pair, i):
        optimizer.step()  # what a real step does before the schedule moves on
        steps.append((pair, i))
        return {"loss": float(i)}

    history = run_epochs(
        step,
        iter(range(100)),
        schedule,
        config,
        2,
        8,
        first_epoch=1,
        on_epoch_end=seen.append,
        log=lambda _: None,
    )
    # Epochs 2 and 3 only, numbered on from the first epoch, with their global step numbers.
    assert [r["epoch"] for r in history] == [2, 3] and seen == history
    assert steps == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert [r["loss"] for r in history] == [2.5, 4.5] and all(r["images_per_s"] > 0 for r in history)
    assert schedule.last_epoch == 4


def test_recolour_reaches_the_source_batches_of_every_training(rows, monkeypatch):
    """``recolour`` in a stage's config recolours its labeled (source) images in pretraining,
    adaptation and DANN alike, and leaves them alone when off."""
    seen = []
    real = fitting.transforms.recolour
    monkeypatch.setattr(
        fitting.transforms, "recolour", lambda images, rng: seen.append(len(images)) or real(images, rng)
    )
    frames = Frames.from_rows(rows[:16], input_size=32)
    model = PoseModel(TINY)
    quiet = {"log": lambda _: None}
    target = PseudoLabeled(frames.images, np.nan_to_num(frames.coords), np.ones((16, 17), np.float32))
    for recolour in (False, True):
        seen.clear()
        stage = AdaptConfig(epochs=1, batch_size=8, augment=False, recolour=recolour)
        fit(model, frames, TrainConfig(epochs=1, batch_size=8, augment=False, recolour=recolour), **quiet)
        adapt_fit(model, frames, target, stage, **quiet)
        dann.dann_fit(dann.DANNNet(model, dann.DANNConfig(hidden=8)), frames, frames.images, stage, **quiet)
        assert seen == ([8] * 6 if recolour else [])


def test_an_adaptation_epoch_takes_at_least_min_steps_in_memory_and_on_ray_train(rows, monkeypatch):
    from dfa_ray.config import Config, WorkersConfig
    from dfa_ray.stages import train

    seen = []
    real = fitting.run_epochs
    monkeypatch.setattr(
        fitting,
        "run_epochs",
        lambda step, batches, schedule, stage, steps, *a, **k: (
            seen.append(steps) or real(step, batches, schedule, stage, steps, *a, **k)
        ),
    )
    frames = Frames.from_rows(rows[:16], input_size=32)
    target = PseudoLabeled(frames.images, np.nan_to_num(frames.coords), np.ones((16, 17), np.float32))
    for least in (0, 5):
        stage = AdaptConfig(epochs=1, batch_size=8, augment=False, min_steps_per_epoch=least)
        adapt_fit(PoseModel(TINY), frames, target, stage, log=lambda _: None)
    assert seen == [2, 5]  # 16 kept frames in batches of 8, then passed over again
    # Ray Train's workers run the same count; pretraining has no such floor.
    config = Config(workers=WorkersConfig(num_workers=2))
    assert train.steps_per_epoch(100, config, AdaptConfig(batch_size=32, min_steps_per_epoch=20), "x") == 20
    assert train.steps_per_epoch(3000, config, AdaptConfig(batch_size=32, min_steps_per_epoch=20), "x") == 46
    assert train.steps_per_epoch(100, config, TrainConfig(batch_size=32), "x") == 1
