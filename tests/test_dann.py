import numpy as np
import pytest
import torch

from dfa_ray.method.adapt import make_batch
from dfa_ray.method.dann import DANNConfig, DANNNet, dann_step, reversal_coefficient, reverse_gradient
from dfa_ray.method.model import ModelConfig, PoseModel, images_to_tensor

TINY = ModelConfig(input_size=32, heatmap_size=8, widths=(8, 8, 16, 16), stem_width=8, decoder_width=16)


def test_gradient_reversal_is_identity_forward_and_negated_scaled_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.3 * torch.arange(3.0).expand(4, 3))


def test_reversal_schedule_rises_from_zero_to_the_weight():
    assert reversal_coefficient(0.0, 2.0) == 0.0
    values = [reversal_coefficient(p, 2.0) for p in np.linspace(0, 1, 11)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert reversal_coefficient(1.0, 2.0) == pytest.approx(2.0, abs=1e-3)


def _batches(rng):
    # Dark source images and bright target images: domains a discriminator can tell apart.
    source = rng.integers(0, 100, (16, 32, 32, 3), dtype=np.uint8)
    target = rng.integers(155, 256, (16, 32, 32, 3), dtype=np.uint8)
    coords = rng.uniform(-0.4, 0.4, (16, 17, 3))
    batch = make_batch(source, coords, np.ones((16, 17), np.uint8), np.ones(16, bool), 8, 1.0)
    return batch, images_to_tensor(target)


def _encoder_grad(net, batch, target, coefficient):
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: look at gradients, keep weights
    terms = dann_step(net, optimizer, batch, target, coefficient)
    grad = torch.cat([p.grad.flatten() for p in net.model.encoder.parameters()])
    disc = torch.cat([p.grad.flatten() for p in net.discriminator.parameters()])
    return grad, disc, terms


def test_the_domain_term_reaches_the_encoder_reversed_and_the_discriminator_directly():
    torch.manual_seed(0)
    net = DANNNet(PoseModel(TINY), DANNConfig(hidden=16))
    batch, target = _batches(np.random.default_rng(0))
    pose_only, disc0, terms = _encoder_grad(net, batch, target, 0.0)
    assert set(terms) >= {"loss_source", "loss_domain", "domain_accuracy"}
    assert disc0.abs().sum() > 0  # the discriminator learns even while the encoder ignores it
    plus, _, _ = _encoder_grad(net, batch, target, 1.0)
    double, _, _ = _encoder_grad(net, batch, target, 2.0)
    domain = plus - pose_only
    assert domain.abs().sum() > 0
    # Linear in the coefficient: the reversal layer scales the domain gradient and nothing else.
    torch.testing.assert_close(double - pose_only, 2 * domain, rtol=1e-3, atol=1e-6)


def test_the_discriminator_learns_to_separate_the_domains():
    torch.manual_seed(0)
    net = DANNNet(PoseModel(TINY), DANNConfig(hidden=16))
    optimizer = torch.optim.Adam(net.discriminator.parameters(), lr=1e-2)
    batch, target = _batches(np.random.default_rng(1))
    losses = [dann_step(net, optimizer, batch, target, 0.0) for _ in range(30)]
    assert losses[-1]["loss_domain"] < 0.5 * losses[0]["loss_domain"]
    assert losses[-1]["domain_accuracy"] > 0.8 > losses[0]["domain_accuracy"]
