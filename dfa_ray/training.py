"""The training loop in plain torch: decoded frames in memory, epochs of ``train_step``, evaluation.

Ray Train workers call ``fit`` on their shard; tests and benchmarks call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dfa_ray import heatmaps, metrics
from dfa_ray.adapt import DFANet, make_batch, train_step
from dfa_ray.data.images import decode_resized, image_size
from dfa_ray.data.records import read_records
from dfa_ray.data.schema import table_to_rows
from dfa_ray.model import PoseModel, predict
from dfa_ray.skeleton import NUM_JOINTS


@dataclass
class Frames:
    """Decoded frames at the model's input size, with normalised targets and what evaluation needs."""

    frame_ids: list[str]
    images: np.ndarray  # (N, S, S, 3) uint8
    coords: np.ndarray  # (N, 17, 3) normalised; z NaN where there is no 3D label
    joint_valid: np.ndarray  # (N, 17) uint8
    has_3d: np.ndarray  # (N,) bool
    camera: np.ndarray  # (N, 4) of the stored crop
    crop_size: np.ndarray  # (N,) stored crop size in pixels
    joints_3d: np.ndarray  # (N, 17, 3) mm, NaN where absent
    actions: list[str]

    def __len__(self) -> int:
        """Number of frames."""
        return len(self.frame_ids)

    @classmethod
    def from_rows(cls, rows: Sequence[dict], input_size: int) -> Frames:
        """Decode schema-v1 rows (dicts) and resize their crops to ``input_size``."""
        n = len(rows)
        images = np.empty((n, input_size, input_size, 3), np.uint8)
        coords = np.full((n, NUM_JOINTS, 3), np.nan)
        joints_3d = np.full((n, NUM_JOINTS, 3), np.nan)
        camera = np.zeros((n, 4))
        crop_size = np.zeros(n, np.int64)
        valid = np.ones((n, NUM_JOINTS), np.uint8)
        for i, row in enumerate(rows):
            crop_size[i] = image_size(row["image"])[0]
            images[i] = decode_resized(row["image"], input_size, row["frame_id"])
            camera[i] = row["camera"]
            if row.get("joints_valid") is not None:
                valid[i] = row["joints_valid"]
            if row.get("joints_3d") is not None:
                joints_3d[i] = np.asarray(row["joints_3d"]).reshape(NUM_JOINTS, 3)
                # Normalised coordinates do not depend on the crop's resolution, so no resize is needed.
                coords[i] = heatmaps.normalise(joints_3d[i : i + 1], camera[i : i + 1], crop_size[i])[0]
            elif row.get("joints_2d") is not None:
                pixels = np.asarray(row["joints_2d"]).reshape(NUM_JOINTS, 2)
                coords[i, :, :2] = heatmaps.pixels_to_normalised(pixels, crop_size[i])
            else:
                valid[i] = 0
        return cls(
            frame_ids=[str(r["frame_id"]) for r in rows],
            images=images,
            coords=coords,
            joint_valid=valid,
            has_3d=np.isfinite(joints_3d).all(axis=(1, 2)),
            camera=camera,
            crop_size=crop_size,
            joints_3d=joints_3d,
            actions=[str(r.get("action", "")) for r in rows],
        )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training stage."""

    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    optimizer: str = "adam"  # "adam" or "sgd" (momentum 0.9, as in the paper)
    weight_decay: float = 0.0
    sigma: float = 1.0  # target Gaussian width in heatmap cells
    amp: bool = False
    # Rows each Ray Train worker shuffles across before batching, anew every pass: datasets stored in
    # video order (Human3.6M) would otherwise give batches of one subject and one action.
    shuffle_buffer: int = 1024


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser a ``TrainConfig`` names."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay
        )
    raise ValueError(f"train.optimizer must be 'adam' or 'sgd', got {config.optimizer!r}")


def fit(
    model: PoseModel,
    source: Frames,
    config: TrainConfig,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train on labeled frames (3D and 2D-only mixed) with a cosine learning-rate schedule."""
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    net = DFANet(model)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = max(1, len(source) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    history = []
    for epoch in range(config.epochs):
        start, order, losses = time.perf_counter(), rng.permutation(len(source)), []
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            batch = make_batch(
                source.images[idx], source.coords[idx], source.joint_valid[idx], source.has_3d[idx],
                model.config.heatmap_size, config.sigma, device,
            )  # fmt: skip
            losses.append(train_step(net, optimizer, batch, amp=config.amp)["loss"])
            schedule.step()
        seconds = time.perf_counter() - start
        loss, speed = float(np.mean(losses)), len(order) / seconds
        history.append({"epoch": epoch + 1, "loss": loss, "images_per_s": speed})
        log(f"epoch {epoch + 1}/{config.epochs}  loss {loss:.4f}  {speed:.0f} img/s")
    return history


def predict_mm(model: PoseModel, frames: Frames, batch_size: int = 256) -> np.ndarray:
    """Predicted camera-frame joints (mm), given each frame's true root depth (MargiPose protocol)."""
    coords = np.concatenate(
        [predict(model, frames.images[i : i + batch_size])[0] for i in range(0, len(frames), batch_size)]
    )
    out = np.empty_like(coords, dtype=np.float64)
    for size in np.unique(frames.crop_size):
        rows = frames.crop_size == size
        out[rows] = heatmaps.denormalise(
            coords[rows], frames.camera[rows], int(size), frames.joints_3d[rows, 0, 2]
        )
    return out


def evaluate(model: PoseModel, frames: Frames, batch_size: int = 256) -> dict:
    """MPJPE / PA-MPJPE summary (mm) over frames that have 3D labels."""
    labeled = np.flatnonzero(frames.has_3d)
    if labeled.size == 0:
        raise ValueError("evaluation needs frames with joints_3d; none of the given frames has them")
    subset = subset_frames(frames, labeled)
    return metrics.summarize(predict_mm(model, subset, batch_size), subset.joints_3d, subset.actions)


def load_frames(uri: str, input_size: int) -> Frames:
    """Read and decode a whole schema-v1 dataset (for evaluation sets that fit in memory)."""
    columns = ["frame_id", "image", "joints_2d", "joints_3d", "camera", "action", "joints_valid"]
    return Frames.from_rows(table_to_rows(read_records(uri, columns=columns)), input_size)


def subset_frames(frames: Frames, index: np.ndarray) -> Frames:
    """The frames at ``index``."""
    return Frames(
        frame_ids=[frames.frame_ids[i] for i in index],
        images=frames.images[index],
        coords=frames.coords[index],
        joint_valid=frames.joint_valid[index],
        has_3d=frames.has_3d[index],
        camera=frames.camera[index],
        crop_size=frames.crop_size[index],
        joints_3d=frames.joints_3d[index],
        actions=[frames.actions[i] for i in index],
    )
