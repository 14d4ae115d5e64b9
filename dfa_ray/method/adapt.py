"""Domain Feature Alignment: ``alpha * KL(source) + beta * KL(target pseudo-labels)``.

With DFA on, the target term reaches the encoder only: target features go through the decoder
with its parameters detached, so the encoder must map target frames into features the
source-trained decoder already reads correctly. With DFA off (the paper's "w/o DFA" ablation) the
target term trains the decoder as well; both settings run through ``DFANet`` and ``train_step``.

**Batch norm: DFA and w/o DFA differ in the target gradient's path only.** In both, source and
target go through the encoder and the decoder as one batch: every BN layer normalises with the
mixed batch's statistics, and its running statistics follow the mixed batch. With DFA the target's
marginals come from a second pass of that batch through the decoder with detached weights and a
copy of its buffers: the same values, the running statistics updated once, and the target loss's
gradient reaching the encoder alone. Until 2026-12-03 (``067a4d8``) the frozen branch decoded the
target features alone in eval mode with running statistics the source alone had updated, so the
ablation changed two things at once. On the target's *training* frames (their truth a diagnostic
only), seed 0's pseudo-labels went 154.8 -> 155.3 -> 155.8 mm over three rounds that way, and
154.8 -> 152.3 -> 149.8 mm this way (w/o DFA: 152.1 after round 3); docs/results.md has the
tables this changed.
"""

from __future__ import annotations

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


def frozen_decode(decoder: nn.Module, features: torch.Tensor) -> Marginals:
    """Decode with detached parameters and a copy of the buffers: the decoder's output, in its mode,
    with gradients reaching ``features`` only and no running statistic updated."""
    params = {name: p.detach() for name, p in decoder.named_parameters()}
    buffers = {name: b.clone() for name, b in decoder.named_buffers()}
    return functional_call(decoder, (params, buffers), (features,))


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
        n = len(source)
        features = encoder(torch.cat([source, target]))
        both = decoder(features)
        if self.dfa:
            # The source half detached too: the target loss reaches no weight through BN's batch statistics.
            both_frozen = frozen_decode(decoder, torch.cat([features[:n].detach(), features[n:]]))
            return Marginals(*(m[:n] for m in both)), Marginals(*(m[n:] for m in both_frozen))
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
