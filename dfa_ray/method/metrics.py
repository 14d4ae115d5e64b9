"""Pose-error metrics on Human3.6M-17 joints: MPJPE, PA-MPJPE and a JSON-ready summary.

MPJPE (protocol 1) is the Euclidean distance per joint after both poses are made root-relative, so
a global offset of the prediction costs nothing. PA-MPJPE (protocol 2) first aligns the prediction
to the ground truth with the least-squares similarity transform (rotation, uniform scale,
translation; Umeyama 1991), so only the articulated shape is judged. Both return per-sample,
per-joint errors in the input unit (millimetres); :func:`frame_errors` gathers them per frame and
:func:`aggregate` averages them, wherever they were computed: ``summarize`` does both in one process,
the evaluation actors (``stages.evaluate``) the first and the driver the second.

An optional validity mask ``(N, 17)`` of 0/1 marks joints without ground truth (e.g. joints a source
skeleton lacks). Their errors are NaN so that means skip them, and PA alignment ignores them.

A number alone does not say whether a model learned anything: the **mean-pose baseline** predicts the
mean root-relative pose of the labeled source training frames (the only 3D labels a run has) for
every test frame, and ``summarize(..., mean_pose=...)`` reports its errors and the model's ratio to
them beside the model's own (below 1 means the model knows more than the average person).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from dfa_ray.method.skeleton import JOINT_NAMES, NUM_JOINTS, ROOT

# A pose whose spread is below this fraction of its coordinates' magnitude is a single point up to
# rounding: scale and rotation are then undefined, so alignment falls back to a pure translation
# instead of dividing by ~0. Relative, so that it does not depend on the unit or the offset.
_DEGENERATE_RELATIVE_SPREAD = 1e-9


def _check_poses(pred: np.ndarray, gt: np.ndarray, num_joints: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of ``(N, J, 3)`` pose arrays and return them as float64."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    joints = "J" if num_joints is None else str(num_joints)
    for name, array in (("pred", pred), ("gt", gt)):
        if not (array.ndim == 3 and array.shape[2] == 3 and num_joints in (None, array.shape[1])):
            raise ValueError(f"{name} must have shape (N, {joints}, 3), got {array.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: pred {pred.shape}, gt {gt.shape}")
    return pred, gt


def _check_valid(valid: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Return the validity mask as a bool ``(N, J)`` array (all True when ``valid`` is None)."""
    if valid is None:
        return np.ones(shape, dtype=bool)
    valid = np.asarray(valid)
    if valid.shape != shape:
        raise ValueError(f"valid must have shape {shape} to match the poses, got {valid.shape}")
    if not np.isin(valid, (0, 1)).all():
        bad = valid[~np.isin(valid, (0, 1))].flat[0]
        raise ValueError(f"valid must contain only 0/1, found {bad!r}")
    return valid.astype(bool)


def _check_finite(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> None:
    """Reject NaN/inf coordinates at valid joints; invalid joints may hold anything."""
    for name, array in (("pred", pred), ("gt", gt)):
        bad = valid & ~np.isfinite(array).all(axis=2)
        if bad.any():
            sample, joint = np.argwhere(bad)[0]
            raise ValueError(f"{name} has a non-finite coordinate at valid sample {sample}, joint {joint}")


def mpjpe(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Root-relative per-joint position error ``(N, 17)`` in float64; NaN where ``valid`` is 0."""
    pred, gt = _check_poses(pred, gt, NUM_JOINTS)
    mask = _check_valid(valid, pred.shape[:2])
    # A root-relative position is undefined without a root, so a missing root voids the whole sample.
    mask = mask & mask[:, ROOT : ROOT + 1]
    _check_finite(pred, gt, mask)
    pred_rel = pred - pred[:, ROOT : ROOT + 1]
    gt_rel = gt - gt[:, ROOT : ROOT + 1]
    with np.errstate(invalid="ignore"):  # invalid joints may hold NaN; they are masked out below
        error = np.linalg.norm(pred_rel - gt_rel, axis=2)
    return np.where(mask, error, np.nan)


def procrustes_align(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Map each ``(J, 3)`` prediction onto its ground truth with the best similarity transform.

    The transform (proper rotation, uniform scale, translation) minimises the squared distance over
    the joints marked in ``valid`` (all joints when None) and is then applied to every joint. A
    sample whose valid predicted joints all coincide is only translated onto the ground-truth
    centroid; a sample with no valid joint is returned unchanged.
    """
    pred, gt = _check_poses(pred, gt, None)
    mask = _check_valid(valid, pred.shape[:2])
    _check_finite(pred, gt, mask)
    weight = mask[:, :, None].astype(np.float64)  # (N, J, 1)
    count = weight.sum(axis=1, keepdims=True)  # (N, 1, 1)
    safe_count = np.maximum(count, 1.0)
    # Zero the invalid joints so NaN placeholders there cannot leak into the sums.
    pred_w = np.where(weight > 0, pred, 0.0)
    gt_w = np.where(weight > 0, gt, 0.0)
    mu_pred = pred_w.sum(axis=1, keepdims=True) / safe_count
    mu_gt = gt_w.sum(axis=1, keepdims=True) / safe_count
    pred_c = (pred_w - mu_pred) * weight
    gt_c = (gt_w - mu_gt) * weight

    # Cross-covariance H = sum_j p_j g_j^T; with H = U S V^T the best rotation acting on column
    # vectors is V D U^T, where D flips the last axis if that is needed to avoid a reflection.
    cov = np.einsum("nji,njk->nik", pred_c, gt_c)
    u, s, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(np.einsum("nij,njk->nik", u, vt)))
    sign = np.where(sign == 0, 1.0, sign)
    d = np.ones_like(s)
    d[:, -1] = sign
    rotation = np.einsum("nji,nj,nkj->nik", vt, d, u)  # V diag(d) U^T
    variance = (pred_c**2).sum(axis=(1, 2))
    degenerate = variance <= _DEGENERATE_RELATIVE_SPREAD**2 * (pred_w**2).sum(axis=(1, 2))
    scale = np.where(degenerate, 1.0, (s * d).sum(axis=1) / np.where(degenerate, 1.0, variance))
    rotation[degenerate] = np.eye(3)

    # Row-vector form of x -> scale * R (x - mu_pred) + mu_gt, applied to all joints.
    aligned = scale[:, None, None] * np.einsum("njk,nik->nji", pred - mu_pred, rotation) + mu_gt
    empty = count[:, 0, 0] == 0
    aligned[empty] = pred[empty]
    return aligned


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-joint error ``(N, 17)`` after Procrustes alignment on the valid joints; NaN where invalid."""
    pred, gt = _check_poses(pred, gt, NUM_JOINTS)
    mask = _check_valid(valid, pred.shape[:2])
    aligned = procrustes_align(pred, gt, mask)
    with np.errstate(invalid="ignore"):
        error = np.linalg.norm(aligned - gt, axis=2)
    return np.where(mask, error, np.nan)


# The two errors every evaluation reports; the mean-pose baseline's carry the prefix ``mean_pose_``.
METRICS = ("mpjpe", "pa_mpjpe")


def trunk_angle(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-sample angle ``(N,)`` in degrees between the predicted and the true trunk (pelvis to
    thorax), both in the camera's frame; NaN where either joint is invalid.

    MPJPE mixes how a pose is articulated with how it is turned; PA-MPJPE removes the turn. This
    says how far the body's lean is off, which a camera higher or lower than any the model was
    trained with gets wrong (the person predicted upright in the camera's frame).
    """
    thorax = JOINT_NAMES.index("thorax")
    return _direction_angle(pred, gt, valid, [ROOT, thorax], lambda p: p[:, 1] - p[:, 0])


# Left minus right, at the hips and at the shoulders: the body's left, across it.
ACROSS_JOINTS = tuple(JOINT_NAMES.index(name) for name in ("l_hip", "r_hip", "l_shoulder", "r_shoulder"))


def _across(joints: np.ndarray) -> np.ndarray:
    """Left hip minus right hip plus left shoulder minus right shoulder, from ``(N, 4, D)``."""
    return joints[:, 0] - joints[:, 1] + joints[:, 2] - joints[:, 3]


def across_body(poses: np.ndarray) -> np.ndarray:
    """The direction across the body, towards its left, ``(N, D)`` from poses ``(N, 17, D)`` (2D or 3D)."""
    return _across(np.asarray(poses)[:, list(ACROSS_JOINTS)])


def facing_angle(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-sample angle ``(N,)`` in degrees between the predicted and the true direction across the
    body (left hip minus right hip plus left shoulder minus right shoulder), both in the camera's
    frame; NaN where any of the four joints is invalid.

    It says which way the body is turned: near 180 the person is seen facing away when they face the
    camera or the other way round (a front/back flip), which a body without a visible face or feet
    allows. A flip swaps left and right limbs in depth, so one costs far more MPJPE than its shape
    error suggests.
    """
    return _direction_angle(pred, gt, valid, list(ACROSS_JOINTS), _across)


def _direction_angle(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None,
    joints: list[int],
    direction: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Angle in degrees between ``direction`` of the predicted and of the true ``joints`` ``(N, k, 3)``."""
    pred, gt = _check_poses(pred, gt, NUM_JOINTS)
    mask = _check_valid(valid, pred.shape[:2])
    ok = mask[:, joints].all(axis=1)
    _check_finite(pred[:, joints], gt[:, joints], np.repeat(ok[:, None], len(joints), axis=1))
    a, b = direction(pred[:, joints]), direction(gt[:, joints])
    with np.errstate(invalid="ignore", divide="ignore"):  # invalid samples may hold NaN or coincide
        cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.where(ok, np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))), np.nan)


def _mean(errors: np.ndarray) -> float | None:
    """Mean of the non-NaN entries as a Python float, or None when there are none.

    The sum is exactly rounded (``math.fsum``), so the mean does not depend on the order of the
    frames: evaluation actors hand their rows back in any order, and must give the in-process number."""
    kept = errors[~np.isnan(errors)]
    return math.fsum(kept.tolist()) / kept.size if kept.size else None


def mean_pose(joints_3d: np.ndarray) -> np.ndarray:
    """The mean root-relative pose ``(17, 3)`` of the frames whose every joint is finite (labeled)."""
    joints = np.asarray(joints_3d, dtype=np.float64)
    if not (joints.ndim == 3 and joints.shape[1:] == (NUM_JOINTS, 3)):
        raise ValueError(f"joints_3d must have shape (N, {NUM_JOINTS}, 3), got {joints.shape}")
    labeled = joints[np.isfinite(joints).all(axis=(1, 2))]
    if not len(labeled):
        raise ValueError("no frame has finite joints_3d: the mean pose is undefined")
    return (labeled - labeled[:, ROOT : ROOT + 1]).mean(axis=0)


def _placed(pose: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The root-relative ``pose`` (17, 3) at each ground-truth frame's true root, the protocol a
    model's evaluation follows (it is given the true root depth), so the two are scored alike."""
    gt = np.asarray(gt, dtype=np.float64)
    return np.broadcast_to(np.asarray(pose, dtype=np.float64), gt.shape) + gt[:, ROOT : ROOT + 1]


def mean_pose_baseline(
    pose: np.ndarray, gt: np.ndarray, actions: Sequence[str] | None = None, valid: np.ndarray | None = None
) -> dict[str, Any]:
    """``summarize`` of predicting the root-relative ``pose`` (17, 3) for every ground-truth frame."""
    return summarize(_placed(pose, gt), gt, actions, valid)


def _ratio(value: float | None, baseline: float | None) -> float | None:
    return None if value is None or not baseline else value / baseline


def frame_errors(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None, mean_pose: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Each frame's per-joint errors ``(N, 17)`` of each of ``METRICS`` and, given ``mean_pose``, of
    the mean-pose baseline (``mean_pose_mpjpe``, ``mean_pose_pa_mpjpe``); NaN where ``valid`` is 0."""
    errors = {"mpjpe": mpjpe(pred, gt, valid), "pa_mpjpe": pa_mpjpe(pred, gt, valid)}
    if mean_pose is not None:
        baseline = _placed(mean_pose, gt)
        errors["mean_pose_mpjpe"] = mpjpe(baseline, gt, valid)
        errors["mean_pose_pa_mpjpe"] = pa_mpjpe(baseline, gt, valid)
    return errors


def aggregate(errors: Mapping[str, np.ndarray], actions: Sequence[str] | None = None) -> dict[str, Any]:
    """JSON-ready means of ``frame_errors`` (mm), its frames in any order: overall, per joint and per
    action (``actions``, one per frame), beside the mean-pose baseline when ``errors`` hold it.

    Each mean is over all valid (frame, joint) errors, which without a mask equals the standard
    mean over frames of the mean over joints. A mean with no valid entry is None rather than NaN,
    because NaN is not valid JSON. With the baseline's errors, the summary adds its means
    (``mean_pose_mpjpe``, ``mean_pose_pa_mpjpe``) and the model's ratios to them
    (``mpjpe_over_mean_pose``, ``pa_mpjpe_over_mean_pose``).
    """
    num_frames = errors["mpjpe"].shape[0]
    summary: dict[str, Any] = {name: _mean(errors[name]) for name in METRICS}
    summary["num_frames"] = num_frames
    summary["per_joint"] = {
        joint: {name: _mean(errors[name][:, j]) for name in METRICS} for j, joint in enumerate(JOINT_NAMES)
    }
    if actions is not None:
        if isinstance(actions, str):
            raise ValueError("actions must be a sequence of action names, got a single string")
        labels = np.array([str(a) for a in actions], dtype=object)
        if labels.shape != (num_frames,):
            raise ValueError(f"actions must have one entry per frame ({num_frames}), got {len(labels)}")
        summary["per_action"] = {}
        for action in sorted(set(labels)):
            rows = labels == action
            entry: dict[str, Any] = {name: _mean(errors[name][rows]) for name in METRICS}
            entry["num_frames"] = int(rows.sum())
            summary["per_action"][action] = entry
    if "mean_pose_mpjpe" in errors:
        for name in METRICS:
            summary[f"mean_pose_{name}"] = _mean(errors[f"mean_pose_{name}"])
            summary[f"{name}_over_mean_pose"] = _ratio(summary[name], summary[f"mean_pose_{name}"])
    return summary


def summarize(
    pred: np.ndarray,
    gt: np.ndarray,
    actions: Sequence[str] | None = None,
    valid: np.ndarray | None = None,
    mean_pose: np.ndarray | None = None,
) -> dict[str, Any]:
    """``aggregate`` of ``frame_errors``: the summary of predictions ``pred`` against ``gt``, beside the
    baseline of ``mean_pose`` (the labeled source frames' ``mean_pose``) when one is given."""
    return aggregate(frame_errors(pred, gt, valid, mean_pose), actions)


def describe(summary: dict[str, Any]) -> str:
    """One line of a summary's errors, each beside the mean-pose baseline when the summary has it:
    ``MPJPE 140.3 mm (0.55x mean pose 255.0)  PA-MPJPE 90.2 mm (0.71x mean pose 127.1)``."""
    parts = []
    for name, title in (("mpjpe", "MPJPE"), ("pa_mpjpe", "PA-MPJPE")):
        text = f"{title} {summary[name]:.1f} mm"
        ratio = summary.get(f"{name}_over_mean_pose")
        if ratio is not None:
            text += f" ({ratio:.2f}x mean pose {summary[f'mean_pose_{name}']:.1f})"
        parts.append(text)
    return "  ".join(parts)
