"""Algorithm 1: pseudo-labels for unlabeled frames from an ensemble of views.

For each frame the model predicts on every view of ``label.views`` (``views``: by default the
paper's original image, invariance (colour) view and equivariance (rigid) view); each prediction is
mapped back to the original frame by its view's exact inverse, and they are averaged. The views are
built either on the host (``views.host_views``, numpy and OpenCV, one image at a time) or in batches
on the model's device (``views.tensor_views``), from the same sampled parameters; label actors use
the device, so a GPU's host does little but copy.

**Representation.** A pseudo-label is the averaged soft-argmax coordinates ``(J, 3)`` in normalised
space plus confidences — 17 x 3 floats per frame instead of three 17 x H x H heatmaps. Averaging
coordinates is faithful to averaging predictions: every inverse is exact on coordinates (see
``transforms``), whereas warping the zy/xz heatmaps back through a rotation is not possible.
Training regenerates Gaussian target marginals from the coordinates, exactly as it does for
source labels.

**Confidence** (``label.confidence``), one of two scores:

- ``density``, CC-SSL's: a joint scores the peak of the averaged heatmap. We evaluate that quantity
  in 3D without warping: each view ``v`` contributes an isotropic Gaussian at its prediction ``p_v``
  with variance ``s_v`` (its own mean soft-argmax variance, floored at the training target's variance
  ``s_t``), and the joint's confidence is the averaged density at the pseudo-label, relative to the
  peak of a target Gaussian:

      c_j = mean_v (s_t / s_v)^(3/2) * exp(-|p_v - p|^2 / (2 s_v))

  ``c_j`` lies in (0, 1] and is 1 exactly when all the views agree and are as sharp as training
  targets; disagreement between the views and diffuse heatmaps both lower it.
- ``facing`` (the default): whether the views agree on which way the body faces. With ``a_v`` the
  direction across the body (``metrics.across_body``) in view ``v``'s prediction mapped back and
  ``a`` the pseudo-label's, every joint of the frame scores ``mean_v (1 + cos angle(a_v, a)) / 2``,
  1 when every view sees the body turned the same way. A network that cannot tell a body's front
  from its back turns it between the views, and such a frame's pseudo-label is far off: its left
  and right limbs swap in depth. On the first 1,000 target training frames of the benchmark (truth
  a diagnostic only, ``benchmarks/confidence.py``) the 60 % of round-1 pseudo-labels that ``facing``
  keeps are 140 mm off and those it drops 177 mm (Spearman 0.37 with the negated error), against
  149 and 163 mm (0.12) for ``density``.

A frame's confidence is the mean of its joints' confidences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dfa_ray.method.metrics import ACROSS_JOINTS, across_body
from dfa_ray.method.transforms import mean_variance
from dfa_ray.method.views import Views, host_views

# the views' images -> (normalised joints (V*B, J, 3), per-axis variances (V*B, J, 3)), as numpy
Predictor = Callable[[Any], tuple[np.ndarray, np.ndarray]]
# The scores ``label.confidence`` may name (the module's docstring).
Confidence = Literal["density", "facing"]


@dataclass(frozen=True)
class PseudoLabels:
    """Ensemble pseudo-labels of a batch."""

    joints: np.ndarray  # (B, J, 3) float32, normalised space
    joint_confidence: np.ndarray  # (B, J) float32 in (0, 1]
    confidence: np.ndarray  # (B,) float32, mean over joints


def target_variance(heatmap_size: int, sigma: float) -> float:
    """Variance of a training target's Gaussian in normalised units (``sigma`` in heatmap cells)."""
    return (2.0 * sigma / heatmap_size) ** 2


def facing_agreement(coords: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Per frame ``(B,)``, how far ``V`` views ``(V, B, J, 3)`` agree with the pseudo-label ``(B, J, 3)``
    on the direction across the body: ``mean_v (1 + cos angle) / 2``, in [0, 1]."""
    across = np.stack([across_body(view) for view in coords])
    label = across_body(joints)
    norms = np.linalg.norm(across, axis=-1) * np.linalg.norm(label, axis=-1)
    cosine = (across * label).sum(axis=-1) / np.maximum(norms, np.finfo(np.float64).tiny)
    return ((1.0 + cosine) / 2.0).mean(axis=0)


def combine(
    coords: np.ndarray, spread: np.ndarray, floor_variance: float, confidence: Confidence = "facing"
) -> PseudoLabels:
    """Average ``V`` views already mapped to the original frame and score them by ``confidence``.

    ``coords`` is ``(V, B, J, 3)`` and ``spread`` the matching mean variances ``(V, B, J)``.
    """
    coords = np.asarray(coords, dtype=np.float64)
    spread = np.maximum(np.asarray(spread, dtype=np.float64), floor_variance)
    if coords.shape[:-1] != spread.shape or coords.shape[-1] != 3:
        raise ValueError(f"coords {coords.shape} and spread {spread.shape} do not match (V, B, J, 3)")
    joints = coords.mean(axis=0)
    if confidence == "density":
        distance2 = ((coords - joints) ** 2).sum(axis=-1)
        density = (floor_variance / spread) ** 1.5 * np.exp(-distance2 / (2 * spread))
        joint_confidence = density.mean(axis=0)
    elif confidence == "facing":
        joint_confidence = np.repeat(facing_agreement(coords, joints)[:, None], joints.shape[1], axis=1)
    else:
        raise ValueError(f"unknown confidence {confidence!r}: expected 'density' or 'facing'")
    return PseudoLabels(
        joints=joints.astype(np.float32),
        joint_confidence=joint_confidence.astype(np.float32),
        confidence=joint_confidence.mean(axis=-1).astype(np.float32),
    )


def anchor_2d(labels: PseudoLabels, xy: np.ndarray, valid: np.ndarray) -> PseudoLabels:
    """Pseudo-labels whose image position comes from a 2D detector run on the same frames.

    ``xy`` ``(B, J, 2)`` holds the detector's keypoints in normalised crop coordinates and ``valid``
    ``(B, J)`` where it saw them. A detector made from real photographs places real people's joints
    in the image far better than a model trained on renders, but says nothing of depth: where it saw a
    joint, the label takes its x and y and keeps the ensemble's z. Where the ensemble has the body's
    left and right the other way round from the detector (its hips and shoulders across the image),
    its depths belong to a body facing the other way, so the frame gets confidence 0 and the policy
    keeps it last; a frame without the four joints detected keeps its confidence.
    """
    xy = np.asarray(xy, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    n = len(labels.joints)
    if xy.shape != (n, labels.joints.shape[1], 2) or valid.shape != xy.shape[:2]:
        raise ValueError(
            f"2D keypoints {xy.shape} and valid {valid.shape} do not match labels {labels.joints.shape}"
        )
    checked = valid[:, list(ACROSS_JOINTS)].all(axis=1)
    mirrored = checked & (np.sign(across_body(xy)[:, 0]) != np.sign(across_body(labels.joints)[:, 0]))
    joints = labels.joints.copy()
    joints[..., :2] = np.where(valid[..., None], xy, joints[..., :2])
    joint_confidence = np.where(mirrored[:, None], 0.0, labels.joint_confidence).astype(np.float32)
    return PseudoLabels(joints.astype(np.float32), joint_confidence, joint_confidence.mean(axis=-1))


def pseudo_label(
    predict: Predictor,
    images: Any,
    views: Views,
    floor_variance: float,
    make_views: Callable[[Any, Views], Any] = host_views,
    confidence: Confidence = "facing",
) -> PseudoLabels:
    """Algorithm 1 on a batch of ``B`` images: ``V`` views, mapped back, averaged.

    ``make_views`` builds the views as one batch of ``V*B`` images for ``predict``: ``host_views`` for
    uint8 arrays ``(B, S, S, 3)``, ``tensor_views`` for image tensors on the model's device.
    ``confidence`` names the score (the module's docstring).
    """
    n = len(images)
    if len(views) != n:
        raise ValueError(f"{n} images but views drawn for {len(views)} frames")
    coords, variance = predict(make_views(images, views))
    coords = np.asarray(coords, dtype=np.float64).reshape(len(views.kinds), n, *coords.shape[1:])
    spread = mean_variance(np.asarray(variance, dtype=np.float64)).reshape(len(views.kinds), n, -1)
    back = [kind.to_original(c, s, p) for kind, p, c, s in zip(views.kinds, views.params, coords, spread)]
    return combine(np.stack([c for c, _ in back]), np.stack([s for _, s in back]), floor_variance, confidence)
