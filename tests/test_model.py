import numpy as np
import pytest
import torch

from dfa_ray.method import heatmaps as hm
from dfa_ray.method.adapt import DFANet, make_batch, train_step
from dfa_ray.method.inference import DeviceModel, InferenceConfig
from dfa_ray.method.metrics import mpjpe
from dfa_ray.method.model import (
    ModelConfig,
    PoseModel,
    images_to_tensor,
    num_parameters,
    predict,
    training_layout,
)
from dfa_ray.method.transforms import EquivarianceParams, equivariance_inverse
from tests.helpers import place_in_camera, project, random_poses, render_sticks

RESNET50 = ModelConfig(
    input_size=256, heatmap_size=32, block="bottleneck", depths=(3, 4, 6, 3), widths=(64, 128, 256, 512),
    stem_width=64, stem_stride=4, decoder_width=256,
)  # fmt: skip


def test_default_model_is_about_one_million_parameters_and_emits_three_marginals():
    model = PoseModel(ModelConfig())
    assert 0.7e6 < num_parameters(model) < 1.3e6
    out = model(torch.rand(2, 3, 64, 64))
    assert [tuple(m.shape) for m in out] == [(2, 17, 16, 16)] * 3


def test_resnet50_class_encoder():
    model = PoseModel(RESNET50)
    # torchvision's ResNet-50 without its classifier has 23,508,032 parameters.
    assert num_parameters(model.encoder) == 23_508_032
    assert RESNET50.feature_stride == 32


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"block": "dense"}, "model.block"),
        ({"depths": (1, 1)}, "must match"),
        ({"input_size": 60}, "multiple of the encoder stride"),
        ({"heatmap_size": 12}, "power of two"),
    ],
)
def test_config_errors_name_the_setting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_predict_restores_training_mode_and_returns_numpy():
    model = PoseModel(ModelConfig())
    coords, var = predict(model, np.zeros((3, 64, 64, 3), np.uint8))
    assert model.training and coords.shape == var.shape == (3, 17, 3)
    assert np.all(np.abs(coords) <= 1) and np.all(var >= 0)


def test_the_flip_test_averages_each_image_with_its_mirror_image_mapped_back():
    torch.manual_seed(0)
    model = PoseModel(ModelConfig())
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    mirror = EquivarianceParams(flip=True)
    plain, plain_variance = predict(model, images)
    flipped, _ = predict(model, mirrored)
    both, variance = predict(model, images, flip_test=True)
    np.testing.assert_allclose(both, (plain + equivariance_inverse(flipped, mirror)) / 2, atol=1e-6)
    assert variance.shape == plain_variance.shape
    # An untrained network is far from mirror-symmetric: the test changes its answer...
    assert np.abs(both - plain).max() > 1e-3
    # ...into one that mirrors exactly with the image: left and right swapped, x negated.
    mirrored_both, _ = predict(model, mirrored, flip_test=True)
    np.testing.assert_allclose(equivariance_inverse(mirrored_both, mirror), both, atol=1e-6)
    # The actors' DeviceModel computes the same.
    on_actor = DeviceModel(model, InferenceConfig(), use_gpu=False)
    on_device, _ = on_actor.predict(on_actor.to_device(images), flip_test=True)
    np.testing.assert_allclose(on_device, both, atol=1e-6)


@pytest.mark.parametrize("backbone", ["resnet", "efficientnet_lite0"])
def test_training_layout_gives_every_weight_its_gradients_layout_so_ddp_copies_none(backbone):
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)

    def mismatched(model: PoseModel) -> list[str]:
        sum(m.mean() for m in model(images_to_tensor(images))).backward()
        return [n for n, p in model.named_parameters() if p.grad.stride() != p.stride()]

    config = ModelConfig(backbone=backbone)
    assert "decoder.xy.weight" in mismatched(PoseModel(config))  # what DDP warned about
    assert mismatched(training_layout(PoseModel(config))) == []


@pytest.mark.slow  # 800 training steps of the default network
def test_a_one_million_parameter_model_overfits_64_samples_below_20mm():
    # 32 px crops (a quarter of the default's pixels, the same 16-cell heatmaps): 16.9 mm in ~65 s
    # where 64 px took ~100 s. At 8 cells the grid alone kept it at 35 mm (measured).
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    size = 32
    joints, camera = place_in_camera(rng, random_poses(rng, 64), size)
    images = render_sticks(project(joints, camera), size)
    config = ModelConfig(input_size=size)
    coords = hm.normalise(joints, camera, size)
    batch = make_batch(images, coords, np.ones((64, 17)), np.ones(64), config.heatmap_size, 1.0)
    model = PoseModel(config)
    net = DFANet(model)
    steps, lr = 800, 4e-3
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    for _ in range(steps):
        idx = torch.as_tensor(rng.choice(64, 32, replace=False))
        train_step(net, optimizer, batch[idx])
        schedule.step()
    coords, _ = predict(model, images)
    error = mpjpe(hm.denormalise(coords, camera, size, joints[:, 0, 2]), joints).mean()
    assert error < 20.0, f"MPJPE after overfitting: {error:.1f} mm"
