import warnings

import numpy as np
import pytest
import torch

from dfa_ray.method.adapt import DFANet, frozen_decode, grad_scaler, make_batch, train_step
from dfa_ray.method.heatmaps import gaussian_marginals
from dfa_ray.method.losses import heatmap_loss
from dfa_ray.method.model import ModelConfig, PoseModel

CONFIG = ModelConfig()


def _batch(seed, n=4):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    coords = rng.uniform(-0.7, 0.7, (n, 17, 3))
    return make_batch(images, coords, np.ones((n, 17)), np.ones(n), CONFIG.heatmap_size, 1.0)


def _grads(module):
    return [p.grad for p in module.parameters()]


def _target_term_grads(dfa):
    torch.manual_seed(0)
    model = PoseModel(CONFIG)
    net = DFANet(model, dfa=dfa)
    source, target = _batch(0), _batch(1)
    _, logits_t = net(source.images, target.images)
    heatmap_loss(logits_t, target.targets, target.weights).backward()
    return model


def test_dfa_target_term_reaches_the_encoder_only():
    model = _target_term_grads(dfa=True)
    assert all(g is None or g.abs().max() == 0 for g in _grads(model.decoder))
    assert sum(g.abs().sum().item() for g in _grads(model.encoder) if g is not None) > 0


def test_without_dfa_the_target_term_trains_the_decoder_too():
    model = _target_term_grads(dfa=False)
    assert sum(g.abs().sum().item() for g in _grads(model.decoder) if g is not None) > 0


def test_with_dfa_the_source_term_still_trains_the_decoder():
    torch.manual_seed(0)
    model = PoseModel(CONFIG)
    logits_s, _ = DFANet(model, dfa=True)(_batch(0).images, _batch(1).images)
    source = _batch(0)
    heatmap_loss(logits_s, source.targets, source.weights).backward()
    decoder_grads = [g for g in _grads(model.decoder) if g is not None]
    assert len(decoder_grads) == len(list(model.decoder.parameters()))
    assert all(g.abs().sum() > 0 for g in decoder_grads)


def test_frozen_branch_decodes_as_the_decoder_does_and_leaves_its_statistics_untouched():
    torch.manual_seed(0)
    model = PoseModel(CONFIG)
    features = model.encoder(_batch(1).images)
    before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    out = frozen_decode(model.decoder, features)
    for k, v in model.decoder.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed in the frozen branch"
    with torch.no_grad():
        expected = model.decoder(features)  # in training mode: the batch's statistics
    torch.testing.assert_close(out.xy, expected.xy)


def test_dfa_and_without_dfa_give_the_same_marginals_and_batch_norm_statistics():
    """The two settings differ in where the target loss's gradient goes, nothing else."""
    outputs, statistics = [], []
    for dfa in (True, False):
        torch.manual_seed(0)
        model = PoseModel(CONFIG)
        outputs.append(DFANet(model, dfa=dfa)(_batch(0).images, _batch(1).images))
        statistics.append({k: v.clone() for k, v in model.state_dict().items() if "running" in k})
    for with_dfa, without in zip(*outputs):
        for a, b in zip(with_dfa, without):
            torch.testing.assert_close(a, b)
    assert statistics[0].keys() == statistics[1].keys() and statistics[0]
    for k, v in statistics[0].items():
        assert torch.equal(v, statistics[1][k]), k


@pytest.mark.parametrize("dfa", [True, False])
def test_train_step_combines_alpha_and_beta(dfa):
    torch.manual_seed(0)
    model = PoseModel(CONFIG)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step must not move weights
    losses = train_step(DFANet(model, dfa), optimizer, _batch(0), _batch(1), alpha=0.5, beta=0.1)
    assert losses["loss"] == pytest.approx(
        0.5 * losses["loss_source"] + 0.1 * losses["loss_target"], rel=1e-5
    )
    assert losses["loss_target"] > 0


def test_dfa_adaptation_moves_encoder_weights_and_not_decoder_weights_from_target_alone():
    torch.manual_seed(0)
    model = PoseModel(CONFIG)
    decoder_before = [p.detach().clone() for p in model.decoder.parameters()]
    encoder_before = [p.detach().clone() for p in model.encoder.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_step(DFANet(model, dfa=True), optimizer, _batch(0), _batch(1), alpha=0.0, beta=1.0)
    assert all(torch.equal(p, q) for p, q in zip(model.decoder.parameters(), decoder_before))
    assert any(not torch.equal(p, q) for p, q in zip(model.encoder.parameters(), encoder_before))


def test_amp_on_cpu_runs_in_bfloat16():
    torch.manual_seed(0)
    model = PoseModel(CONFIG)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = train_step(DFANet(model), optimizer, _batch(0), _batch(1), alpha=1.0, beta=1.0, amp=True)
    assert np.isfinite(losses["loss"])


def test_make_batch_targets_weights_and_2d_only_rows():
    coords = np.random.default_rng(3).uniform(-0.7, 0.7, (2, 17, 3))
    coords[1, :, 2] = np.nan  # a 2D-only row has no depth
    valid = np.ones((2, 17))
    valid[0, 4] = 0
    b = make_batch(
        np.zeros((2, 64, 64, 3), np.uint8), coords, valid, np.array([1, 0]), CONFIG.heatmap_size, 1.0
    )
    expected = gaussian_marginals(torch.as_tensor(coords[:1], dtype=torch.float32), CONFIG.heatmap_size, 1.0)
    torch.testing.assert_close(b.targets.xy[:1], expected.xy)
    assert torch.isfinite(b.targets.zy).all()
    assert b.weights[0, 4].sum() == 0 and b.weights[0, 3].tolist() == [1, 1, 1]
    assert b.weights[1, 3].tolist() == [1, 0, 0]


def test_only_float16_amp_on_cuda_gets_a_loss_scaler():
    # bfloat16 (CPU autocast) has float32's range and needs none; every training loop asks here.
    assert grad_scaler(True, torch.device("cpu")) is None
    assert grad_scaler(False, torch.device("cuda")) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # without a GPU torch warns that the scaler disables itself
        assert isinstance(grad_scaler(True, torch.device("cuda")), torch.amp.GradScaler)
