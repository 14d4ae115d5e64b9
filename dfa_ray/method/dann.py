"""DANN, the adversarial baseline of Table 1: a domain discriminator on encoder features behind a
gradient reversal layer (Ganin & Lempitsky, 2015).

The discriminator learns to tell source features from target features; the reversed gradient
trains the encoder to make them indistinguishable, while the source heatmap loss keeps the pose
decoder accurate. Unlike DFA it never uses target pose information, only the domain label.
The reversal coefficient ramps from 0 to ``weight`` with DANN's schedule ``2 / (1 + exp(-10 p)) - 1``
over training progress ``p``, so the untrained discriminator does not disturb the encoder early on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfa_ray import bounds
from dfa_ray.method.adapt import Batch, autocast, backward_step, grad_scaler
from dfa_ray.method.fitting import (
    Frames,
    Pair,
    TrainConfig,
    frames_batch,
    index_batches,
    make_optimizer,
    make_schedule,
    run_epochs,
)
from dfa_ray.method.losses import heatmap_loss
from dfa_ray.method.model import PoseModel, images_to_tensor
from dfa_ray.method.skeleton import NUM_JOINTS
from dfa_ray.method.transforms import rigid_augment


@dataclass(frozen=True)
class DANNConfig:
    """The discriminator's width and the largest gradient reversal coefficient."""

    weight: float = 1.0
    hidden: int = 128

    def __post_init__(self) -> None:
        bounds.non_negative(self, "weight")
        bounds.at_least(self, 1, "hidden")


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coefficient * grad, None


def reverse_gradient(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-coefficient`` backward."""
    return _ReverseGradient.apply(x, coefficient)


def reversal_coefficient(progress: float, weight: float) -> float:
    """DANN's schedule: 0 at the start of training, approaching ``weight`` at the end."""
    return weight * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


class DomainDiscriminator(nn.Module):
    """Pooled encoder features to one logit: positive means "target domain"."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(True), nn.Linear(hidden, hidden), nn.ReLU(True),
            nn.Linear(hidden, 1),
        )  # fmt: skip

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B,)`` for features ``(B, C, h, w)``."""
        return self.net(features.mean(dim=(2, 3))).squeeze(1)


class DANNNet(nn.Module):
    """The pose model and its domain discriminator; one encoder pass over source and target."""

    def __init__(self, model: PoseModel, config: DANNConfig = DANNConfig()) -> None:
        super().__init__()
        self.model = model
        self.discriminator = DomainDiscriminator(model.encoder.out_channels, config.hidden)

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, coefficient: float
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Source marginal logits, and domain logits for ``cat([source, target])``."""
        features = self.model.encoder(torch.cat([source, target]))
        logits = self.model.decoder(features[: len(source)])
        return logits, self.discriminator(reverse_gradient(features, coefficient))


def dann_step(
    net: DANNNet,
    optimizer: torch.optim.Optimizer,
    source: Batch,
    target_images: torch.Tensor,
    coefficient: float,
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One step on ``KL(source) + BCE(domain)``, the domain term reversed into the encoder.

    Pass a ``GradScaler`` for float16 AMP (``adapt.grad_scaler``). Returns the pose loss, the
    discriminator's loss and its accuracy on this batch (0.5 means the features no longer tell
    the domains apart).
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(source.images.device.type, amp):
        logits, domain = net(source.images, target_images, coefficient)
    labels = torch.cat([torch.zeros(len(source.images)), torch.ones(len(target_images))]).to(domain.device)
    loss_pose = heatmap_loss(logits, source.targets, source.weights)
    loss_domain = F.binary_cross_entropy_with_logits(domain.float(), labels)
    # The reversal layer already flips the domain gradient for the encoder; adding the terms trains
    # the discriminator to separate the domains and the encoder to confuse it.
    backward_step(loss_pose + loss_domain, optimizer, scaler)
    accuracy = ((domain > 0).float() == labels).float().mean()
    return {
        "loss": loss_pose.item(),
        "loss_source": loss_pose.item(),
        "loss_domain": loss_domain.item(),
        "domain_accuracy": accuracy.item(),
    }


def dann_fit(
    net: DANNNet,
    source: Frames,
    target_images: np.ndarray,
    config: TrainConfig,
    progress: tuple[float, float] = (0.0, 1.0),
    weight: float = DANNConfig.weight,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train ``net`` (model and discriminator) on labeled source and unlabeled target images.

    An epoch is one pass over the target images, as in adaptation. ``progress`` is the share of the
    whole DANN run this call covers, so training split into rounds keeps one reversal schedule.
    With ``config.augment`` both domains get the same rigid augmentation, so the discriminator
    cannot tell them apart by it.
    """
    rng = np.random.default_rng(seed)
    optimizer = make_optimizer(net, config)
    sources = index_batches(len(source), config.batch_size, rng, "the source set")
    targets = index_batches(len(target_images), config.batch_size, rng, "the target set")
    steps = len(target_images) // config.batch_size
    total = config.epochs * steps
    device = next(net.parameters()).device
    augment = (rng, config.augment_ranges) if config.augment else None
    scaler = grad_scaler(config.amp, device)

    def batches() -> Iterator[Pair]:
        for index in sources:
            batch = frames_batch(
                source, index, net.model, config.sigma, augment, rng if config.recolour else None
            )
            images = target_images[next(targets)]
            if augment is not None:
                no_joints = np.zeros((len(images), NUM_JOINTS, 3))
                images = rigid_augment(images, no_joints, no_joints[..., 0], *augment)[0]
            yield batch, images_to_tensor(images, device)

    def step(pair: Pair, i: int) -> dict[str, float]:
        coefficient = reversal_coefficient(progress[0] + (progress[1] - progress[0]) * i / total, weight)
        return dann_step(net, optimizer, *pair, coefficient, config.amp, scaler)

    schedule = make_schedule(optimizer, config, steps)
    return run_epochs(step, batches(), schedule, config, steps, 2 * config.batch_size, log=log)
