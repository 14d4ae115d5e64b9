"""The Human3.6M 17-joint skeleton (VideoPose3D order) and the mappings into it.

Every tensor of joints in dfa-ray uses this order. Source datasets with other skeletons are
mapped with a linear regressor ``(17, S)``: each H36M joint is a weighted sum of source joints,
and a row of zeros means the joint has no counterpart (its validity flag is 0).
"""

from __future__ import annotations

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
    "neck_nose", "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
)  # fmt: skip
NUM_JOINTS = len(JOINT_NAMES)
ROOT = 0

# Parent of each joint; the root has none.
PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
BONES: tuple[tuple[int, int], ...] = tuple((p, c) for c, p in enumerate(PARENTS) if p >= 0)

# A nominal 1.75 m adult's bone lengths in mm, each bone named by its child joint: close to Human3.6M's mean
# skeleton. The synthetic renderer scales them per subject; the bone-length depth prior
# (``heatmaps.root_depth_from_bones``) fits a predicted pose to them.
NOMINAL_BONE_MM: dict[str, float] = {
    "r_hip": 130, "r_knee": 450, "r_ankle": 440, "l_hip": 130, "l_knee": 450, "l_ankle": 440,
    "spine": 230, "thorax": 250, "neck_nose": 115, "head": 115,
    "l_shoulder": 150, "l_elbow": 280, "l_wrist": 250, "r_shoulder": 150, "r_elbow": 280, "r_wrist": 250,
}  # fmt: skip

# The skeleton MediaPipe Pose draws people with, in mm, mapped to H36M-17 as its 2D is
# (``MEDIAPIPE_TO_H36M``): the median bones of its own metric 3D estimate (world landmarks), left and
# right pooled, over the 329 person-frames of Sports2D's demo clip, footage without 3D truth
# (``benchmarks/detector_skeleton.py``). Its hips sit closer to the pelvis and its thorax lower than
# Human3.6M's (the shoulders' midpoint), so its nose and head top stand further above the thorax.
# A model that learnt a detector's 2D (``data.target_2d``) places its joints where MediaPipe does, and
# the depth prior fits its poses to this skeleton rather than to NOMINAL_BONE_MM.
MEDIAPIPE_BONE_MM: dict[str, float] = {
    "r_hip": 102, "r_knee": 376, "r_ankle": 363, "l_hip": 102, "l_knee": 376, "l_ankle": 363,
    "spine": 237, "thorax": 237, "neck_nose": 206, "head": 207,
    "l_shoulder": 154, "l_elbow": 245, "l_wrist": 220, "r_shoulder": 154, "r_elbow": 245, "r_wrist": 220,
}  # fmt: skip

# The depth prior's skeletons by name: a dataset names the one its joints follow (``records.skeleton``),
# Human3.6M's unless its writer named another.
H36M = "h36m"
BONE_PRIORS: dict[str, dict[str, float]] = {H36M: NOMINAL_BONE_MM, "mediapipe": MEDIAPIPE_BONE_MM}


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """The length of each bone (``BONES``' order, named by its child: ``JOINT_NAMES[1:]``) of poses
    ``(..., 17, D)``: ``(..., 16)``, in the joints' unit."""
    joints = np.asarray(joints, dtype=np.float64)
    parents, children = np.array(BONES).T
    return np.linalg.norm(joints[..., children, :] - joints[..., parents, :], axis=-1)


# Index of each joint's mirror image: a horizontal flip of the image turns a left limb into a right one.
FLIP_PERMUTATION: tuple[int, ...] = (0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13)

SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "l_hip", "r_hip", "spine1", "l_knee", "r_knee", "spine2", "l_ankle", "r_ankle",
    "spine3", "l_foot", "r_foot", "neck", "l_collar", "r_collar", "head", "l_shoulder",
    "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist", "l_hand", "r_hand",
)  # fmt: skip

MPII_JOINT_NAMES: tuple[str, ...] = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax", "upper_neck",
    "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)  # fmt: skip

# MediaPipe Pose (BlazePose) landmarks; left and right are the person's own, as in H36M-17.
MEDIAPIPE_JOINT_NAMES: tuple[str, ...] = (
    "nose", "l_eye_inner", "l_eye", "l_eye_outer", "r_eye_inner", "r_eye", "r_eye_outer", "l_ear",
    "r_ear", "mouth_l", "mouth_r", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist",
    "r_wrist", "l_pinky", "r_pinky", "l_index", "r_index", "l_thumb", "r_thumb", "l_hip", "r_hip",
    "l_knee", "r_knee", "l_ankle", "r_ankle", "l_heel", "r_heel", "l_foot_index", "r_foot_index",
)  # fmt: skip


def _regressor(rows: dict[str, dict[str, float]], source_names: tuple[str, ...]) -> np.ndarray:
    """Build a (17, S) regressor from ``{h36m_joint: {source_joint: weight}}``."""
    matrix = np.zeros((NUM_JOINTS, len(source_names)), dtype=np.float64)
    for joint, weights in rows.items():
        for source_joint, weight in weights.items():
            matrix[JOINT_NAMES.index(joint), source_names.index(source_joint)] = weight
    return matrix


_SAME_NAME = ("pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle",
              "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist")  # fmt: skip

# SMPL has no nose and no head top. SMPL's "head" joint sits inside the skull at about the height
# of H36M's nose joint; H36M's head joint is the top of the head, which we extrapolate one
# neck-to-head length above SMPL's head. SMPL's neck is at the base of the neck like H36M's thorax,
# and spine2 is at mid-torso like H36M's spine. These are approximations (a few cm), stated here
# because SURREAL-trained numbers on Human3.6M depend on them.
SMPL_TO_H36M = _regressor(
    {
        **{name: {name: 1.0} for name in _SAME_NAME},
        "spine": {"spine2": 1.0},
        "thorax": {"neck": 1.0},
        "neck_nose": {"head": 1.0},
        "head": {"head": 2.0, "neck": -1.0},
    },
    SMPL_JOINT_NAMES,
)

# MPII has no spine and no nose; its upper neck is not H36M's nose, so both stay invalid.
MPII_TO_H36M = _regressor(
    {
        **{name: {name: 1.0} for name in _SAME_NAME},
        "thorax": {"thorax": 1.0},
        "head": {"head_top": 1.0},
    },
    MPII_JOINT_NAMES,
)

# MediaPipe has no pelvis, spine, thorax or head top. The pelvis is the hips' midpoint and the thorax
# the shoulders' (MediaPipe's hip landmarks sit a few cm from Human3.6M's hip joint centres); the
# spine is midway between them; the nose stands for H36M's nose joint. The head top is taken one
# thorax-to-ears length above the ears' midpoint, as H36M's head joint lies about as far above the
# nose as the nose above the thorax (NOMINAL_BONE_MM). These are approximations of a few cm.
MEDIAPIPE_TO_H36M = _regressor(
    {
        **{name: {name: 1.0} for name in _SAME_NAME if name != "pelvis"},
        "pelvis": {"l_hip": 0.5, "r_hip": 0.5},
        "spine": {"l_hip": 0.25, "r_hip": 0.25, "l_shoulder": 0.25, "r_shoulder": 0.25},
        "thorax": {"l_shoulder": 0.5, "r_shoulder": 0.5},
        "neck_nose": {"nose": 1.0},
        "head": {"l_ear": 1.0, "r_ear": 1.0, "l_shoulder": -0.5, "r_shoulder": -0.5},
    },
    MEDIAPIPE_JOINT_NAMES,
)


def regressor_validity(regressor: np.ndarray) -> np.ndarray:
    """Per-joint validity (uint8, 17) of a regressor: 0 where a joint has no source counterpart."""
    return (np.abs(regressor).sum(axis=1) > 0).astype(np.uint8)


def map_joints(
    joints: np.ndarray, regressor: np.ndarray, source_valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Map ``(..., S, D)`` source joints to ``(..., 17, D)`` H36M joints and their validity.

    A mapped joint is valid when the regressor has a counterpart for it and every source joint it
    uses is valid (``source_valid``, shape ``(..., S)``, e.g. MPII's visibility of annotated joints).
    """
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape[-2] != regressor.shape[1]:
        raise ValueError(f"expected {regressor.shape[1]} source joints, got array of shape {joints.shape}")
    mapped = np.einsum("js,...sd->...jd", regressor, joints)
    valid = np.broadcast_to(regressor_validity(regressor), mapped.shape[:-1]).copy()
    if source_valid is not None:
        uses = (regressor != 0).astype(np.int64)  # (17, S)
        missing = np.einsum("js,...s->...j", uses, 1 - np.asarray(source_valid, dtype=np.int64))
        valid &= (missing == 0).astype(np.uint8)
    mapped[valid == 0] = 0.0
    return mapped, valid
