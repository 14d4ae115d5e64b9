"""The training loop in plain torch: decoded frames in memory, epochs of ``train_step``, evaluation.

``run_epochs`` is the project's one step loop, ``make_optimizer`` and ``make_schedule`` its one
optimiser and learning-rate schedule: ``fit`` and ``adapt_fit`` (frames in memory: the experiments,
tests and benchmarks), ``dann.dann_fit`` and the Ray Train workers (``stages.train.train_loop``,
on their dataset shards) all train through them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dfa_ray import bounds
from dfa_ray.data.images import decode_resized, image_size
from dfa_ray.data.records import dataset_files, read_records
from dfa_ray.data.schema import table_to_arrays, table_to_rows
from dfa_ray.method import heatmaps, metrics, transforms
from dfa_ray.method.adapt import Batch, DFANet, grad_scaler, make_batch, pseudo_label_batch, train_step
from dfa_ray.method.model import PoseModel, predict
from dfa_ray.method.skeleton import NUM_JOINTS
from dfa_ray.method.transforms import EquivarianceRange, InvarianceRange


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
            actions=[str(r.get("action") or "") for r in rows],
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
    # Warp each training image by a random rigid transform from ``augment_ranges``, its labels with
    # it: a model never trained on rotated, scaled or flipped crops makes an equivariance view of the
    # ensemble far worse than the original one. The ranges are the training's own, by default the
    # paper's equivariance view's; an ensemble of wider views (``label.views``) wants them widened too.
    augment: bool = True
    augment_ranges: EquivarianceRange = EquivarianceRange()
    # Recolour each labeled training image at random (``transforms.recolour``): hue, channel order,
    # grey. Off by default, as in the paper; the shipped source model and the demo train with it.
    recolour: bool = False
    # Rows each Ray Train worker shuffles across before batching, anew every pass: datasets stored in
    # video order (Human3.6M) would otherwise give batches of one subject and one action.
    shuffle_buffer: int = 1024

    def __post_init__(self) -> None:
        bounds.at_least(self, 0, "epochs", "shuffle_buffer")
        bounds.at_least(self, 1, "batch_size")
        bounds.positive(self, "lr", "sigma")
        bounds.non_negative(self, "weight_decay")
        if self.optimizer not in ("adam", "sgd"):
            raise bounds.FieldError("optimizer", f"must be 'adam' or 'sgd', got {self.optimizer!r}")

    def steps_per_epoch(self, steps_per_pass: int) -> int:
        """Steps in an epoch whose pass over its frames takes ``steps_per_pass``: that pass."""
        return steps_per_pass


@dataclass(frozen=True)
class AdaptConfig(TrainConfig):
    """One adaptation stage per round: ``alpha * KL(source) + beta * KL(target pseudo-labels)``."""

    epochs: int = 2
    lr: float = 1e-3
    alpha: float = 1.0
    beta: float = 1.0
    dfa: bool = True  # the target term updates the encoder only (decoder frozen for the target branch)
    # Colour-transform each target image anew every step (labels are unchanged by it), so the encoder
    # is trained towards the ensemble's label, not its own view. Its own ranges, the invariance
    # view's by default: a section reads no other section's settings.
    target_invariance: bool = True
    target_invariance_ranges: InvarianceRange = InvarianceRange()
    weight_by_confidence: bool = True  # per-joint loss weights = the pseudo-label's joint confidence
    # An epoch is one pass over the kept target frames, but at least this many steps (passes again
    # within it): a short clip's 100 kept frames would otherwise adapt for one or two steps a round.
    min_steps_per_epoch: int = 0
    # Each round adapts the source model (round 0's) on its pseudo-labels, a new student, instead of
    # continuing the last round's model; the labels still come from the last round's model, so its
    # mistakes reach the next round through them alone. On the benchmark it held 12 rounds level,
    # without the continued rounds' gains (docs/results.md, "The paper's budget on a GPU").
    from_source: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        bounds.non_negative(self, "alpha", "beta")
        bounds.at_least(self, 0, "min_steps_per_epoch")

    def steps_per_epoch(self, steps_per_pass: int) -> int:
        """Steps in an epoch whose pass over the kept target frames takes ``steps_per_pass``."""
        return max(steps_per_pass, self.min_steps_per_epoch)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser a ``TrainConfig`` names (its ``__post_init__`` admits only these two)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


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
    recolour: np.random.Generator | None = None,
) -> Batch:
    """The training batch of labeled ``frames`` at ``index`` (3D and 2D-only mixed), its images
    recoloured (``transforms.recolour``) with the ``recolour`` generator where one is given."""
    images = frames.images[index] if recolour is None else transforms.recolour(frames.images[index], recolour)
    return make_batch(
        images, frames.coords[index], frames.joint_valid[index], frames.has_3d[index],
        model.config.heatmap_size, sigma, next(model.parameters()).device, augment=augment,
    )  # fmt: skip


def make_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of every training stage: one cycle over ``config.epochs`` epochs."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )


# A step's inputs: the source batch and the target's (a pseudo-labeled Batch, DANN's image tensor, or None).
Pair = tuple[Batch, Any]
Step = Callable[[Pair, int], dict[str, float]]


def dfa_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    scaler: torch.amp.GradScaler | None,
    alpha: float = 1.0,
    beta: float = 0.0,
) -> Step:
    """The ``run_epochs`` step of pretraining and adaptation: ``adapt.train_step`` on each pair."""

    def step(pair: Pair, _: int) -> dict[str, float]:
        return train_step(net, optimizer, pair[0], pair[1], alpha, beta, config.amp, scaler)

    return step


def run_epochs(
    step: Step,
    batches: Iterator[Pair],
    schedule: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    steps_per_epoch: int,
    images_per_step: int,
    first_epoch: int = 0,
    on_epoch_end: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """The one step loop: epochs ``first_epoch + 1 .. config.epochs`` of ``step(next(batches), global_step)``.

    Every training in the project runs through it: ``fit``, ``adapt_fit``, DANN and the Ray Train
    workers (whose ``on_epoch_end`` reports the checkpoint). ``schedule`` (``make_schedule``, its
    state restored on a resume) steps after every step. Returns one record per epoch run: the mean
    of each term ``step`` returned and images per second; ``on_epoch_end`` gets each record after
    it is timed.
    """
    history = []
    for epoch in range(first_epoch, config.epochs):
        start, totals = time.perf_counter(), {}
        for i in range(steps_per_epoch):
            for key, value in step(next(batches), epoch * steps_per_epoch + i).items():
                totals[key] = totals.get(key, 0.0) + value / steps_per_epoch
            schedule.step()
        speed = steps_per_epoch * images_per_step / (time.perf_counter() - start)
        record = {"epoch": epoch + 1, **totals, "images_per_s": speed}
        history.append(record)
        terms = "  ".join(f"{key} {value:.4f}" for key, value in totals.items())
        log(f"epoch {epoch + 1}/{config.epochs}  {terms}  {speed:.0f} img/s")
        if on_epoch_end is not None:
            on_epoch_end(record)
    return history


def fit(
    model: PoseModel,
    source: Frames,
    config: TrainConfig,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train on labeled frames (3D and 2D-only mixed): pretraining, or the "only target" bound."""
    rng = np.random.default_rng(seed)
    optimizer = make_optimizer(model, config)
    steps = config.steps_per_epoch(len(source) // config.batch_size)
    augment = (rng, config.augment_ranges) if config.augment else None
    batches = (
        (frames_batch(source, index, model, config.sigma, augment, rng if config.recolour else None), None)
        for index in index_batches(len(source), config.batch_size, rng, "the training set")
    )
    scaler = grad_scaler(config.amp, next(model.parameters()).device)
    step = dfa_step(DFANet(model), optimizer, config, scaler)
    schedule = make_schedule(optimizer, config, steps)
    return run_epochs(step, batches, schedule, config, steps, config.batch_size, log=log)


def adapt_fit(
    model: PoseModel,
    source: Frames,
    target: PseudoLabeled,
    stage: AdaptConfig,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """One round of adaptation: ``alpha * KL(source) + beta * KL(target pseudo-labels)``, DFA per ``stage``.

    An epoch is one pass over the kept target frames, each step pairing a target batch with a
    source batch, as the Ray Train stage does.
    """
    rng = np.random.default_rng(seed)
    optimizer = make_optimizer(model, stage)
    sources = index_batches(len(source), stage.batch_size, rng, "the source set")
    targets = index_batches(len(target), stage.batch_size, rng, "the kept target frames")
    device = next(model.parameters()).device
    augment = (rng, stage.augment_ranges) if stage.augment else None
    recolour_target = (rng, stage.target_invariance_ranges) if stage.target_invariance else None

    def batches() -> Iterator[Pair]:
        for t in targets:
            target_batch = pseudo_label_batch(
                target.images[t], target.joints[t], target.joint_confidence[t], model.config.heatmap_size,
                stage.sigma, device, recolour_target,
                stage.weight_by_confidence, augment,
            )  # fmt: skip
            source_batch = frames_batch(
                source, next(sources), model, stage.sigma, augment, rng if stage.recolour else None
            )
            yield source_batch, target_batch

    steps = stage.steps_per_epoch(len(target) // stage.batch_size)
    scaler = grad_scaler(stage.amp, device)
    step = dfa_step(DFANet(model, dfa=stage.dfa), optimizer, stage, scaler, stage.alpha, stage.beta)
    schedule = make_schedule(optimizer, stage, steps)
    return run_epochs(step, batches(), schedule, stage, steps, 2 * stage.batch_size, log=log)


def to_mm(frames: Frames, coords: np.ndarray) -> np.ndarray:
    """Normalised joints of ``frames`` to camera-frame mm, given each frame's true root depth."""
    return heatmaps.denormalise(coords, frames.camera, frames.crop_size, frames.joints_3d[:, 0, 2])


def predict_mm(model: PoseModel, frames: Frames, batch_size: int = 256) -> np.ndarray:
    """Predicted camera-frame joints (mm), given each frame's true root depth (MargiPose protocol),
    with the flip test (``model.mirror_average``) as every evaluation."""
    coords = np.concatenate(
        [
            predict(model, frames.images[i : i + batch_size], flip_test=True)[0]
            for i in range(0, len(frames), batch_size)
        ]
    )
    return to_mm(frames, coords)


def evaluate(
    model: PoseModel, frames: Frames, batch_size: int = 256, mean_pose: np.ndarray | None = None
) -> dict:
    """MPJPE / PA-MPJPE summary (mm) over frames that have 3D labels, beside the ``mean_pose``
    baseline when one is given (see ``metrics.summarize``)."""
    labeled = np.flatnonzero(frames.has_3d)
    if labeled.size == 0:
        raise ValueError("evaluation needs frames with joints_3d; none of the given frames has them")
    subset = subset_frames(frames, labeled)
    pred = predict_mm(model, subset, batch_size)
    return metrics.summarize(pred, subset.joints_3d, subset.actions, mean_pose=mean_pose)


# The columns ``Frames.from_rows`` decodes.
LOAD_COLUMNS = ["frame_id", "image", "joints_2d", "joints_3d", "camera", "action", "joints_valid"]


def load_frames(uri: str, input_size: int) -> Frames:
    """Read and decode a whole schema-v1 dataset (for evaluation sets that fit in memory)."""
    return Frames.from_rows(table_to_rows(read_records(uri, columns=LOAD_COLUMNS)), input_size)


def dataset_mean_pose(uris: Sequence[str]) -> np.ndarray | None:
    """``metrics.mean_pose`` of every labeled frame of the datasets (None when no frame has 3D
    labels), reading the ``joints_3d`` column one file at a time so a large source never sits in
    memory whole."""
    means, counts = [], []
    for uri in uris:
        for file in dataset_files(uri):
            arrays = table_to_arrays(read_records(file, columns=["joints_3d"], validate=False))
            labeled = arrays["has_3d"]
            if labeled.any():
                means.append(metrics.mean_pose(arrays["joints_3d"][labeled]))
                counts.append(int(labeled.sum()))
    return np.average(means, axis=0, weights=counts) if counts else None


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
