import torch

from dfa_ray.method.heatmaps import Marginals, gaussian_marginals
from dfa_ray.method.losses import heatmap_loss, kl_divergence, loss_weights


def _targets(seed=0, b=4, size=16):
    g = torch.Generator().manual_seed(seed)
    return gaussian_marginals(torch.rand(b, 17, 3, generator=g) * 1.6 - 0.8, size, 1.0)


def _logits_of(probs: Marginals) -> Marginals:
    return Marginals(*(p.clamp_min(1e-30).log() + 3.0 for p in probs))  # any offset: softmax ignores it


def test_kl_is_zero_for_identical_distributions_and_positive_otherwise():
    t = _targets()
    kl = kl_divergence(_logits_of(t), t)
    assert kl.shape == (4, 17, 3) and kl.abs().max() < 1e-5
    other = kl_divergence(_logits_of(_targets(seed=1)), t)
    assert (other > 1e-3).all()
    uniform = kl_divergence(Marginals(*(torch.zeros_like(m) for m in t)), t)
    assert (uniform > 0).all()


def test_masked_joints_and_marginals_contribute_nothing():
    t = _targets()
    logits = Marginals(*(torch.randn_like(m, requires_grad=True) for m in t))
    valid = torch.ones(4, 17)
    valid[:, 5] = 0
    has_3d = torch.tensor([1.0, 0.0, 1.0, 1.0])
    w = loss_weights(valid, has_3d)
    loss = heatmap_loss(logits, t, w)
    loss.backward()
    assert logits.xy.grad[:, 5].abs().max() == 0  # invalid joint: no gradient anywhere
    assert logits.zy.grad[1].abs().max() == 0 and logits.xz.grad[1].abs().max() == 0  # 2D-only sample
    assert logits.xy.grad[1].abs().max() > 0  # its xy marginal still trains
    # Changing a masked term's logits leaves the loss unchanged.
    changed = Marginals(logits.xy.detach().clone(), logits.zy.detach().clone(), logits.xz.detach().clone())
    changed.xy[:, 5] += torch.randn_like(changed.xy[:, 5])
    changed.zy[1] += 5.0 * torch.randn_like(changed.zy[1])
    torch.testing.assert_close(heatmap_loss(changed, t, w), loss.detach())


def test_weights_scale_terms_and_all_zero_weights_give_zero():
    t = _targets()
    logits = Marginals(*(torch.randn_like(m) for m in t))
    kl = kl_divergence(logits, t)
    w = loss_weights(torch.ones(4, 17), torch.ones(4), torch.tensor([1.0, 0.0, 0.0, 3.0]))
    expected = (kl[0].sum() + 3 * kl[3].sum()) / (4 * 17 * 3)
    torch.testing.assert_close(heatmap_loss(logits, t, w), expected)
    assert heatmap_loss(logits, t, torch.zeros_like(w)) == 0
