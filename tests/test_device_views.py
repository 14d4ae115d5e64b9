"""The views built on the model's device against the host path (``transforms``), the reference."""

import dataclasses

import numpy as np
import pytest
import torch

from dfa_ray.data import synthetic
from dfa_ray.data.images import decode_resized
from dfa_ray.method import device_views as dv
from dfa_ray.method import transforms as tf
from dfa_ray.method.inference import DeviceModel, InferenceConfig
from dfa_ray.method.model import ModelConfig, PoseModel, images_to_tensor, predict
from dfa_ray.method.pseudo_label import pseudo_label
from dfa_ray.method.views import sample_views, tensor_views
from tests.test_pseudo_label import FLOOR, _oracle, _scene

SIZE = 64


@pytest.fixture(scope="module")
def renders():
    rows = synthetic.generate("synthetic-real", "test", 12, crop_size=SIZE)
    return np.stack([decode_resized(row["image"], SIZE) for row in rows])


def _levels(tensor: torch.Tensor) -> np.ndarray:
    return (tensor * 255).round().permute(0, 2, 3, 1).numpy().astype(int)


def test_invariance_on_the_device_agrees_with_the_host_to_a_level(renders):
    rng = np.random.default_rng(0)
    params = [dataclasses.replace(tf.sample_invariance(rng), noise_std=0.0) for _ in renders]
    params[:4] = [dataclasses.replace(p, blur_sigma=s) for p, s in zip(params, (0.3, 0.55, 0.8, 1.0))]
    host = np.stack([tf.apply_invariance(image, p) for image, p in zip(renders, params)]).astype(int)
    device = _levels(dv.invariance(images_to_tensor(renders), params))
    difference = np.abs(device - host)
    # The same arithmetic and 8-bit roundings (OpenCV's fixed-point HSV included); only float32
    # values within rounding error of a whole level may land on the neighbouring one.
    assert difference.max() <= 1
    assert (difference > 0).mean() < 0.03


def test_device_noise_has_the_drawn_spread_and_follows_the_frame_not_the_batch(renders):
    rng = np.random.default_rng(1)
    params = [dataclasses.replace(tf.sample_invariance(rng), blur_sigma=0.0, noise_std=6.0) for _ in renders]
    images = images_to_tensor(renders)
    quiet = dv.invariance(images, [dataclasses.replace(p, noise_std=0.0) for p in params])
    noisy = dv.invariance(images, params)
    # Away from the clipping at 0 and 255, the noise is the rounded Gaussian: std 6 levels (+ 1/12).
    inside = ((quiet > 20 / 255) & (quiet < 235 / 255)).numpy()
    spread = ((noisy - quiet) * 255).numpy()[inside].std()
    assert spread == pytest.approx(np.sqrt(36 + 1 / 12), rel=0.05)
    alone = dv.invariance(images[3:4], params[3:4])
    torch.testing.assert_close(alone[0], noisy[3], atol=0, rtol=0)


def test_equivariance_on_the_device_agrees_with_cv2_warp_affine(renders):
    rng = np.random.default_rng(2)
    params = [tf.sample_equivariance(rng) for _ in renders]
    host = np.stack([tf.apply_equivariance(image, p) for image, p in zip(renders, params)]).astype(int)
    device = _levels(dv.equivariance(images_to_tensor(renders), params))
    difference = np.abs(device - host)
    # Both sample the source at the same inverse map; OpenCV interpolates at 1/32-pixel steps in
    # fixed point, which moves a render's soft edges by at most a level or two.
    assert difference.max() <= 2
    assert difference.mean() < 0.01


def test_views_on_the_device_reject_a_wrong_batch():
    images = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="2 images but 3 equivariance transforms"):
        dv.equivariance(images, [tf.EquivarianceParams()] * 3)
    with pytest.raises(ValueError, match=r"square images \(B, 3, S, S\), got \(2, 3, 8, 6\)"):
        dv.invariance(torch.zeros(2, 3, 8, 6), [tf.sample_invariance(np.random.default_rng(0))] * 2)


def test_the_ensemble_with_views_on_the_device_recovers_the_truth():
    gt, images, rng = _scene()
    views = sample_views([rng] * len(gt))
    labels = pseudo_label(_oracle(gt, views), images_to_tensor(images), views, FLOOR, tensor_views)
    np.testing.assert_allclose(labels.joints, gt, atol=1e-5)
    np.testing.assert_allclose(labels.confidence, 1.0, atol=1e-6)


def test_a_cpu_device_model_ignores_the_gpu_switches_and_predicts_as_the_model_does():
    torch.manual_seed(0)
    model = PoseModel(
        ModelConfig(input_size=32, heatmap_size=8, widths=(8, 8, 8, 8), stem_width=8, decoder_width=8)
    )
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = predict(model, images)
    switches = InferenceConfig(
        amp="bf16", channels_last=True, pin_memory=True, non_blocking=True, compile=True
    )
    on_cpu = DeviceModel(model, switches, use_gpu=False)
    assert on_cpu.switches == InferenceConfig() and on_cpu.device.type == "cpu"
    for got, want in zip(on_cpu.predict(on_cpu.to_device(images)), expected):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="amp.*'bf16' or 'fp16', got 'fp8'"):
        InferenceConfig(amp="fp8")
