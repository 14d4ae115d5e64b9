"""The training loop in plain torch: decoded frames in memory, epochs of ``train_step``, evaluation.

Ray Train workers call ``fit`` on their shard; tests and benchmarks call it directly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from dfa_ray import heatmaps, metrics
from dfa_ray.adapt import Batch, DFANet, grad_scaler, make_batch, pseudo_label_batch, train_step
from dfa_ray.data.images import decode_resized, image_size
from dfa_ray.data.records import read_records
from dfa_ray.data.schema import table_to_rows
from dfa_ray.model import PoseModel, predict
from dfa_ray.skeleton import NUM_JOINTS
from dfa_ray.transforms import EquivarianceRange, InvarianceRange

if TYPE_CHECKING:  # config imports this module for TrainConfig
    from dfa_ray.config import AdaptConfig


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
    # Warp each training image by a random rigid transform from the equivariance view's ranges
    # (``label.equivariance``), its labels with it: a model never trained on rotated, scaled or
    # flipped crops makes that view of the ensemble far worse than the original one.
    augment: bool = True
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


@dataclass
class PseudoLabeled:
    """Target frames kept by the policy, with their ensemble pseudo-labels (normalised space)."""

    images: np.ndarray  # (N, S, S, 3) uint8
    joints: np.ndarray  # (N, 17, 3)
    joint_confidence: np.ndarray  # (N, 17)

    def __len__(self) -> int:
        """Number of frames."""
        return len(self.images)


def index_batches(
    num_frames: int, batch_size: int, rng: np.random.Generator, name: str
) -> Iterator[np.ndarray]:
    """Indices of full batches forever, in a fresh random order every pass."""
    if num_frames < batch_size:
        raise ValueError(f"{name} has {num_frames} frames, fewer than one batch of {batch_size}")
    while True:
        order = rng.permutation(num_frames)
        for step in range(num_frames // batch_size):
            yield order[step * batch_size : (step + 1) * batch_size]


def frames_batch(
    frames: Frames,
    index: np.ndarray,
    model: PoseModel,
    sigma: float,
    augment: tuple[np.random.Generator, EquivarianceRange] | None = None,
) -> Batch:
    """The training batch of labeled ``frames`` at ``index`` (3D and 2D-only mixed)."""
    return make_batch(
        frames.images[index], frames.coords[index], frames.joint_valid[index], frames.has_3d[index],
        model.config.heatmap_size, sigma, next(model.parameters()).device, augment=augment,
    )  # fmt: skip


def run_epochs(
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    steps_per_epoch: int,
    step: Callable[[int], dict[str, float]],
    images_per_step: int,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """``config.epochs`` epochs of ``step(global_step)`` under a one-cycle learning-rate schedule.

    Returns one record per epoch: the mean of each term ``step`` returned, and images per second.
    """
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    history = []
    for epoch in range(config.epochs):
        start, totals = time.perf_counter(), {}
        for i in range(steps_per_epoch):
            for key, value in step(epoch * steps_per_epoch + i).items():
                totals[key] = totals.get(key, 0.0) + value / steps_per_epoch
            schedule.step()
        speed = steps_per_epoch * images_per_step / (time.perf_counter() - start)
        history.append({"epoch": epoch + 1, **totals, "images_per_s": speed})
        terms = "  ".join(f"{key} {value:.4f}" for key, value in totals.items())
        log(f"epoch {epoch + 1}/{config.epochs}  {terms}  {speed:.0f} img/s")
    return history


def fit(
    model: PoseModel,
    source: Frames,
    config: TrainConfig,
    seed: int = 0,
    log: Callable[[str], None] = print,
    equivariance: EquivarianceRange = EquivarianceRange(),
) -> list[dict]:
    """Train on labeled frames (3D and 2D-only mixed): pretraining, or the "only target" bound.

    ``equivariance`` are the ranges of the rigid augmentation (when ``config.augment``).
    """
    rng = np.random.default_rng(seed)
    net = DFANet(model)
    optimizer = make_optimizer(model, config)
    batches = index_batches(len(source), config.batch_size, rng, "the training set")
    augment = (rng, equivariance) if config.augment else None
    scaler = grad_scaler(config.amp, next(model.parameters()).device)

    def step(_: int) -> dict[str, float]:
        batch = frames_batch(source, next(batches), model, config.sigma, augment)
        return train_step(net, optimizer, batch, amp=config.amp, scaler=scaler)

    return run_epochs(optimizer, config, len(source) // config.batch_size, step, config.batch_size, log)


def adapt_fit(
    model: PoseModel,
    source: Frames,
    target: PseudoLabeled,
    stage: AdaptConfig,
    invariance: InvarianceRange,
    seed: int = 0,
    log: Callable[[str], None] = print,
    equivariance: EquivarianceRange = EquivarianceRange(),
) -> list[dict]:
    """One round of adaptation: ``alpha * KL(source) + beta * KL(target pseudo-labels)``, DFA per ``stage``.

    An epoch is one pass over the kept target frames, each step pairing a target batch with a
    source batch, as the Ray Train stage does.
    """
    rng = np.random.default_rng(seed)
    net = DFANet(model, dfa=stage.dfa)
    optimizer = make_optimizer(model, stage)
    sources = index_batches(len(source), stage.batch_size, rng, "the source set")
    targets = index_batches(len(target), stage.batch_size, rng, "the kept target frames")
    device = next(model.parameters()).device
    augment = (rng, equivariance) if stage.augment else None
    scaler = grad_scaler(stage.amp, device)

    def step(_: int) -> dict[str, float]:
        t = next(targets)
        target_batch = pseudo_label_batch(
            target.images[t], target.joints[t], target.joint_confidence[t], model.config.heatmap_size,
            stage.sigma, device, (rng, invariance) if stage.target_invariance else None,
            stage.weight_by_confidence, augment,
        )  # fmt: skip
        source_batch = frames_batch(source, next(sources), model, stage.sigma, augment)
        return train_step(
            net, optimizer, source_batch, target_batch, stage.alpha, stage.beta, stage.amp, scaler
        )

    steps = len(target) // stage.batch_size
    return run_epochs(optimizer, stage, steps, step, 2 * stage.batch_size, log)


def to_mm(frames: Frames, coords: np.ndarray) -> np.ndarray:
    """Normalised joints of ``frames`` to camera-frame mm, given each frame's true root depth."""
    out = np.empty_like(coords, dtype=np.float64)
    for size in np.unique(frames.crop_size):
        rows = frames.crop_size == size
        out[rows] = heatmaps.denormalise(
            coords[rows], frames.camera[rows], int(size), frames.joints_3d[rows, 0, 2]
        )
    return out


def predict_mm(model: PoseModel, frames: Frames, batch_size: int = 256) -> np.ndarray:
    """Predicted camera-frame joints (mm), given each frame's true root depth (MargiPose protocol)."""
    coords = np.concatenate(
        [predict(model, frames.images[i : i + batch_size])[0] for i in range(0, len(frames), batch_size)]
    )
    return to_mm(frames, coords)


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


def concat_frames(parts: Sequence[Frames]) -> Frames:
    """One ``Frames`` of several (e.g. every source dataset), in order."""
    values = {}
    for field in dataclasses.fields(Frames):
        columns = [getattr(part, field.name) for part in parts]
        values[field.name] = sum(columns, []) if isinstance(columns[0], list) else np.concatenate(columns)
    return Frames(**values)
