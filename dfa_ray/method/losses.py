"""The KL-divergence heatmap loss of the paper's Equation 1, with sample, joint and marginal weights.

For each sample, joint and marginal map the loss is ``KL(target || softmax(logits))`` over the
``H x H`` grid. Weights of shape ``(B, J, 3)`` (marginal order xy, zy, xz) select and scale the
terms: a 2D-only source (MPII) has weight 0 on zy and xz, a joint without a label has weight 0
everywhere. The loss is the weighted mean over the terms, so masked terms contribute nothing and
do not dilute the others; ``alpha`` and ``beta`` then weigh whole domains against each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dfa_ray.method.heatmaps import Marginals


def kl_divergence(logits: Marginals, targets: Marginals) -> torch.Tensor:
    """Per-sample, per-joint KL divergence of each marginal, ``(B, J, 3)``."""
    terms = []
    for name in Marginals._fields:
        logit, target = getattr(logits, name).float(), getattr(targets, name).float()
        if logit.shape != target.shape:
            raise ValueError(f"{name}: logits {tuple(logit.shape)} and targets {tuple(target.shape)} differ")
        log_p = F.log_softmax(logit.flatten(-2), dim=-1)
        t = target.flatten(-2)
        # xlogy gives 0 where the target is 0, so a truncated Gaussian's empty cells cost nothing.
        terms.append((torch.xlogy(t, t) - t * log_p).sum(-1))
    return torch.stack(terms, dim=-1)


def loss_weights(
    joint_valid: torch.Tensor, has_3d: torch.Tensor, sample_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Weights ``(B, J, 3)`` from joint validity ``(B, J)``, 3D-label flags and sample weights ``(B,)``."""
    joint_valid = joint_valid.float()
    marginal = torch.ones(*joint_valid.shape, 3, device=joint_valid.device)
    marginal[..., 1:] = has_3d.float()[:, None, None]
    weights = joint_valid[..., None] * marginal
    if sample_weight is not None:
        weights = weights * sample_weight.float()[:, None, None]
    return weights


def heatmap_loss(logits: Marginals, targets: Marginals, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean KL over (sample, joint, marginal) terms; 0 when every weight is 0."""
    kl = kl_divergence(logits, targets)
    if weights.shape != kl.shape:
        raise ValueError(f"weights must have shape {tuple(kl.shape)}, got {tuple(weights.shape)}")
    return (kl * weights).sum() / weights.sum().clamp_min(1e-12)
