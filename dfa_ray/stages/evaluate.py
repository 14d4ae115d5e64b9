"""Evaluation on the actors: each test frame's errors with Ray Data, their summary in the driver.

``evaluate_frames`` streams the test set through the label stage's pipeline (``label.through_actors``:
decode tasks, then a pool of the label section's actors, one model load each on its device) into
``Evaluator`` actors, which write one row per test frame to ``errors_uri``:

    frame_id                     string
    action                       string    "" where the dataset has none
    has_3d                       bool      the frame has joints_3d; only these are scored
    mpjpe, pa_mpjpe              float64   the frame's mean over joints (mm), NaN where not scored
    joint_mpjpe, joint_pa_mpjpe  (17) float64 per joint
    joint_mean_pose_mpjpe, joint_mean_pose_pa_mpjpe   the mean-pose baseline's, given a mean pose
    error                        string    null, or why the frame's image could not be decoded

``summarize_errors`` reads them back in the driver and returns ``metrics.aggregate`` of them: the
summary ``fitting.evaluate`` gives in one process (the experiments' trials), from the same
per-frame errors through the same function. The errors stay float64 on the way, so the two differ
only where the model's float32 forward pass does (another batch size and thread count).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dfa_ray.config import LabelConfig
from dfa_ray.data.validation import InputError
from dfa_ray.method import checkpoints, heatmaps, metrics
from dfa_ray.method.inference import DeviceModel
from dfa_ray.method.skeleton import NUM_JOINTS, ROOT
from dfa_ray.stages.label import decoded, through_actors
from dfa_ray.stages.read import check_each_frame_once, read_output

COLUMNS = ["frame_id", "image", "joints_3d", "camera", "action"]
JOINT = "joint_"  # prefix of the per-joint columns, one per key of metrics.frame_errors


def _truth(value: Any) -> np.ndarray | None:
    """A frame's joints_3d as ``(17, 3)`` mm, or None without them: ``label.decode_frames`` hands a
    missing value on as a row of NaN (``label.dense_3d``)."""
    joints = np.asarray(value, dtype=np.float64).reshape(-1)
    if joints.size != NUM_JOINTS * 3 or not np.isfinite(joints).all():
        return None
    return joints.reshape(NUM_JOINTS, 3)


class Evaluator:
    """Ray Data callable class: loads a checkpoint once and scores batches of decoded test frames
    (``label.decode_frames``) against their joints_3d, in mm at each frame's true root depth and with
    the flip test, as ``fitting.evaluate`` does, and beside ``mean_pose`` when one is given."""

    def __init__(self, checkpoint_uri: str, config: LabelConfig, mean_pose: np.ndarray | None) -> None:
        model, _ = checkpoints.load(checkpoint_uri)
        self.model = DeviceModel(model, config.inference, use_gpu=config.num_gpus > 0)
        self.input_size = model.config.input_size
        self.mean_pose = mean_pose

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``decode_frames`` columns in, the module's columns out (same rows, same order)."""
        n = len(batch["frame_id"])
        images, errors = decoded(batch, self.input_size, "evaluator")
        truth = [_truth(j) for j in batch["joints_3d"]]
        scored = np.flatnonzero([e is None and t is not None for e, t in zip(errors, truth)])
        keys = ["mpjpe", "pa_mpjpe"] + (
            ["mean_pose_mpjpe", "mean_pose_pa_mpjpe"] if self.mean_pose is not None else []
        )
        per_joint = {key: np.full((n, NUM_JOINTS), np.nan) for key in keys}
        if scored.size:
            coords, _ = self.model.predict(self.model.to_device(images[scored]), flip_test=True)
            gt = np.stack([truth[i] for i in scored])
            camera = np.stack([np.asarray(batch["camera"][i], np.float64) for i in scored])
            pred = heatmaps.denormalise(
                coords, camera, np.asarray(batch["crop_size"])[scored], gt[:, ROOT, 2]
            )
            for key, values in metrics.frame_errors(pred, gt, mean_pose=self.mean_pose).items():
                per_joint[key][scored] = values
        return {
            "frame_id": np.array([str(f) for f in batch["frame_id"]], dtype=object),
            "action": np.array([a if isinstance(a, str) else "" for a in batch["action"]], dtype=object),
            "has_3d": np.array([t is not None for t in truth]),
            "mpjpe": per_joint["mpjpe"].mean(axis=1),
            "pa_mpjpe": per_joint["pa_mpjpe"].mean(axis=1),
            **{JOINT + key: values for key, values in per_joint.items()},
            "error": np.array(errors, dtype=object),
        }


def evaluate_frames(
    test_uri: str,
    checkpoint_uri: str,
    errors_uri: str,
    config: LabelConfig,
    input_size: int,
    mean_pose: np.ndarray | None,
) -> None:
    """Score every test frame with ``Evaluator`` actors (the label section's) and write their rows to
    ``errors_uri``; ``input_size`` is the checkpoint's."""
    kwargs = {"checkpoint_uri": checkpoint_uri, "config": config, "mean_pose": mean_pose}
    through_actors(test_uri, COLUMNS, Evaluator, kwargs, errors_uri, config, input_size, "evaluation")


def summarize_errors(errors_uri: str, expected_frames: int | None = None) -> dict:
    """``metrics.aggregate`` of the frames with joints_3d written to ``errors_uri``.

    Raises, naming ``errors_uri``: when a frame is there twice or, given ``expected_frames`` (the
    test set's size), when another number of frames is (a lost shard must fail the evaluation, not
    shrink it); InputError when a frame's image could not be decoded, as the in-process evaluation
    does, naming the first such frames; ValueError when no frame has joints_3d.
    """
    table = read_output(errors_uri, "evaluation")
    frame_ids = np.asarray(table.column("frame_id").to_pylist(), dtype=object)
    check_each_frame_once(errors_uri, frame_ids, expected_frames, "evaluated")
    failed = sorted(e for e in table.column("error").to_pylist() if e is not None)
    if failed:
        raise InputError(
            f"{errors_uri}: {len(failed)} of {len(frame_ids)} test frames could not be evaluated: "
            + "; ".join(failed[:5])
        )
    rows = np.flatnonzero(table.column("has_3d").to_numpy(zero_copy_only=False))
    if rows.size == 0:
        raise ValueError(
            f"{errors_uri}: evaluation needs frames with joints_3d; none of the test frames has them"
        )
    per_joint = {
        name.removeprefix(JOINT): np.stack(table.column(name).to_numpy(zero_copy_only=False))[rows]
        for name in table.column_names
        if name.startswith(JOINT)
    }
    actions = np.asarray(table.column("action").to_pylist(), dtype=object)[rows]
    return metrics.aggregate(per_joint, actions.tolist())
