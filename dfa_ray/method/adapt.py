"""Domain Feature Alignment: ``alpha * KL(source) + beta * KL(target pseudo-labels)``.

With DFA on, the target term reaches the encoder only: target features go through the decoder
with its parameters detached, so the encoder must map target frames into features the
source-trained decoder already reads correctly. With DFA off (the paper's "w/o DFA" ablation) the
target term trains the decoder as well; both settings run through ``DFANet`` and ``train_step``.

**Batch norm in the frozen branch.** The frozen decoder is the function the source branch defines
at this step — its weights *and* its running batch-norm statistics — so its BN layers run in eval
mode for target features and never update their statistics from target batches. Normalising with
target batch statistics would absorb the domain shift in the decoder (as AdaBN does), which is
exactly the work DFA asks of the encoder, and would leak target statistics into the decoder used
at test time. The encoder sees source and target in one forward pass, so its BN layers use
statistics of the mixed batch, as they do at every step of adaptation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from dfa_ray.method.heatmaps import Marginals, gaussian_marginals
from dfa_ray.method.losses import heatmap_loss, loss_weights
from dfa_ray.method.model import PoseModel, images_to_tensor
from dfa_ray.method.transforms import (
    EquivarianceRange,
    InvarianceRange,
    apply_invariance,
    rigid_augment,
    sample_invariance,
)


@dataclass
class Batch:
    """Images with target marginals and loss weights, ready for a training step."""

    images: torch.Tensor  # (B, 3, S, S) in [0, 1]
    targets: Marginals
    weights: torch.Tensor  # (B, J, 3)

    def __getitem__(self, index: torch.Tensor | slice) -> Batch:
        """The sub-batch at ``index``."""
        return Batch(self.images[index], Marginals(*(m[index] for m in self.targets)), self.weights[index])


def make_batch(
    images: np.ndarray,
    coords: np.ndarray,
    joint_valid: np.ndarray,
    has_3d: np.ndarray,
    heatmap_size: int,
    sigma: float,
    device: torch.device | str = "cpu",
    sample_weight: np.ndarray | None = None,
    augment: tuple[np.random.Generator, EquivarianceRange] | None = None,
) -> Batch:
    """A batch from uint8 images and normalised joints ``(B, J, 3)`` (z unused where not ``has_3d``).

    ``augment`` (a generator and ranges) warps each image by a random rigid transform, its joints
    with it (``transforms.rigid_augment``).
    """
    if augment is not None:
        images, coords, joint_valid = rigid_augment(images, coords, joint_valid, *augment)
    coords_t = torch.as_tensor(np.asarray(coords, dtype=np.float32), device=device)
    coords_t = torch.where(torch.isfinite(coords_t), coords_t, torch.zeros_like(coords_t))
    weights = loss_weights(
        torch.as_tensor(np.asarray(joint_valid), device=device),
        torch.as_tensor(np.asarray(has_3d), device=device),
        None if sample_weight is None else torch.as_tensor(np.asarray(sample_weight), device=device),
    )
    return Batch(images_to_tensor(images, device), gaussian_marginals(coords_t, heatmap_size, sigma), weights)


def pseudo_label_batch(
    images: np.ndarray,
    joints: np.ndarray,
    joint_confidence: np.ndarray,
    heatmap_size: int,
    sigma: float,
    device: torch.device | str = "cpu",
    invariance: tuple[np.random.Generator, InvarianceRange] | None = None,
    weight_by_confidence: bool = True,
    augment: tuple[np.random.Generator, EquivarianceRange] | None = None,
) -> Batch:
    """A target batch from uint8 images and their pseudo-labels (normalised joints ``(B, J, 3)``).

    ``invariance`` (a generator and ranges) colour-transforms every image anew, so the encoder is
    trained towards the ensemble's label rather than its own view of one fixed image; the label is
    unchanged by a colour transform. ``weight_by_confidence`` weights each joint's loss by its
    confidence, else every joint counts fully. ``augment`` as in ``make_batch``.
    """
    if invariance is not None:
        rng, ranges = invariance
        images = np.stack([apply_invariance(image, sample_invariance(rng, ranges)) for image in images])
    weights = joint_confidence if weight_by_confidence else np.ones(joint_confidence.shape, np.float32)
    n = len(images)
    return make_batch(images, joints, weights, np.ones(n, bool), heatmap_size, sigma, device, augment=augment)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (BN uses running statistics), restoring its mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def frozen_decode(decoder: nn.Module, features: torch.Tensor) -> Marginals:
    """Decode with detached parameters and running BN statistics: gradients reach ``features`` only."""
    params = {name: p.detach() for name, p in decoder.named_parameters()}
    with eval_mode(decoder):
        return functional_call(decoder, params, (features,))


class DFANet(nn.Module):
    """Source and target through one encoder pass; the decoder is frozen for the target when ``dfa``.

    Wrap this module (not the bare model) in DDP so both branches run inside one DDP forward.
    """

    def __init__(self, model: PoseModel, dfa: bool = True) -> None:
        super().__init__()
        self.model = model
        self.dfa = dfa

    def forward(
        self, source: torch.Tensor, target: torch.Tensor | None = None
    ) -> tuple[Marginals, Marginals | None]:
        """Marginal logits for the source batch and (if given) the target batch."""
        encoder, decoder = self.model.encoder, self.model.decoder
        if target is None:
            return decoder(encoder(source)), None
        features = encoder(torch.cat([source, target]))
        f_source, f_target = features[: len(source)], features[len(source) :]
        if self.dfa:
            return decoder(f_source), frozen_decode(decoder, f_target)
        both = decoder(features)
        n = len(source)
        return Marginals(*(m[:n] for m in both)), Marginals(*(m[n:] for m in both))


def autocast(device_type: str, enabled: bool) -> torch.autocast:
    """Mixed precision when ``enabled``: float16 on CUDA, bfloat16 on CPU."""
    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    return torch.autocast(device_type, dtype=dtype, enabled=enabled)


def grad_scaler(amp: bool, device: torch.device) -> torch.amp.GradScaler | None:
    """The loss scaler float16 AMP needs (CUDA); None where autocast uses bfloat16 or is off."""
    return torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None


def backward_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None
) -> None:
    """Backpropagate ``loss`` and step ``optimizer`` (through ``scaler`` for float16 AMP)."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    source: Batch,
    target: Batch | None = None,
    alpha: float = 1.0,
    beta: float = 0.0,
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One optimiser step on ``alpha * KL(source) + beta * KL(target)``; returns the loss terms.

    ``net`` is a ``DFANet``, possibly wrapped in DDP. ``amp`` turns on autocast (float16 on CUDA,
    bfloat16 on CPU); pass a ``GradScaler`` for float16.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(source.images.device.type, amp):
        logits_s, logits_t = net(source.images, None if target is None else target.images)
    loss_s = heatmap_loss(logits_s, source.targets, source.weights)
    loss = alpha * loss_s
    loss_t = torch.zeros(())
    if target is not None:
        loss_t = heatmap_loss(logits_t, target.targets, target.weights)
        loss = loss + beta * loss_t
    backward_step(loss, optimizer, scaler)
    return {"loss": loss.item(), "loss_source": loss_s.item(), "loss_target": loss_t.item()}
