"""Pretraining and DFA adaptation as Ray Train ``TorchTrainer`` runs (DDP: gloo on CPU, nccl on GPU).

Each worker reads its shard of the ``source`` dataset (and, when adapting, of the selected ``target``
frames with their pseudo-labels), decodes batches, and trains a ``DFANet`` wrapped by
``prepare_model`` through ``fitting.run_epochs``, the loop ``fit`` and ``adapt_fit`` run, with
``training``'s optimiser and schedule. Every rank runs exactly ``steps_per_epoch`` steps: the shards are
split equally and read as endless streams, so no rank waits in an all-reduce another never reaches.
Rank 0 reports a checkpoint every epoch (model, optimiser, schedule), which is what a restarted
worker group resumes from.
"""

from __future__ import annotations

import collections
import functools
import itertools
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dfa_ray import storage
from dfa_ray.config import AdaptConfig, Config
from dfa_ray.data.images import decode_resized
from dfa_ray.data.records import dataset_files
from dfa_ray.data.schema import REQUIRED_COLUMNS
from dfa_ray.data.validation import InputError
from dfa_ray.method import checkpoints
from dfa_ray.method.adapt import Batch, DFANet, grad_scaler, pseudo_label_batch
from dfa_ray.method.fitting import (
    Frames,
    Pair,
    TrainConfig,
    dfa_step,
    frames_batch,
    make_optimizer,
    make_schedule,
    run_epochs,
)
from dfa_ray.method.model import ModelConfig, PoseModel, create_model, training_layout
from dfa_ray.method.skeleton import NUM_JOINTS
from dfa_ray.method.transforms import EquivarianceRange
from dfa_ray.stages.read import read_parquet

SOURCE_COLUMNS = [c for c in REQUIRED_COLUMNS if c not in ("subject", "action")] + ["joints_valid"]
_STATE_FILE = "train_state.pt"


def _endless(shard: Any, batch_size: int, name: str, shuffle_buffer: int, seed: int) -> Iterator[dict]:
    """Shuffled batches of a dataset shard forever, pass after pass (every rank starts a pass together)."""
    for number in itertools.count():
        empty = True
        for batch in shard.iter_batches(
            batch_size=batch_size,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=shuffle_buffer or None,
            local_shuffle_seed=seed * 100_003 + number,
        ):
            empty = False
            yield batch
        if empty:
            raise ValueError(
                f"the {name} shard of this worker holds fewer than batch_size={batch_size} frames"
            )


def _rows(batch: dict[str, np.ndarray]) -> list[dict]:
    n = len(batch["frame_id"])
    return [{name: values[i] for name, values in batch.items()} for i in range(n)]


def source_batch(
    batch: dict[str, np.ndarray],
    model: PoseModel,
    sigma: float,
    augment: tuple[np.random.Generator, EquivarianceRange] | None = None,
    recolour: np.random.Generator | None = None,
) -> Batch:
    """A training batch (on the model's device) from a numpy batch of schema-v1 rows."""
    frames = Frames.from_rows(_rows(batch), model.config.input_size)
    return frames_batch(frames, np.arange(len(frames)), model, sigma, augment, recolour)


def target_batch(
    batch: dict[str, np.ndarray],
    model: PoseModel,
    stage: AdaptConfig,
    device: torch.device,
    rng: np.random.Generator,
) -> Batch:
    """A training batch from target frames joined with their pseudo-labels (normalised coordinates)."""
    size = model.config.input_size
    images = np.stack([decode_resized(d, size, f) for d, f in zip(batch["image"], batch["frame_id"])])
    joints = np.stack([np.asarray(j, np.float32).reshape(NUM_JOINTS, 3) for j in batch["joints"]])
    confidence = np.stack([np.asarray(c, np.float32) for c in batch["joint_confidence"]])
    return pseudo_label_batch(
        images, joints, confidence, model.config.heatmap_size, stage.sigma, device,
        (rng, stage.target_invariance_ranges) if stage.target_invariance else None,
        stage.weight_by_confidence, (rng, stage.augment_ranges) if stage.augment else None,
    )  # fmt: skip


class AttachPseudoLabels:
    """Ray Data callable class: keeps the selected target frames and adds their ``joints`` column."""

    def __init__(self, selected_uri: str) -> None:
        with storage.open_input(selected_uri) as handle:
            table = pq.read_table(handle, columns=["frame_id", "joints", "joint_confidence"])
        ids = table.column("frame_id").to_pylist()
        self.joints = dict(zip(ids, table.column("joints").to_pylist()))
        self.confidence = dict(zip(ids, table.column("joint_confidence").to_pylist()))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows of ``batch`` whose frame was selected, with their pseudo-label."""
        keep = np.array([f in self.joints for f in batch["frame_id"]], dtype=bool)
        kept = batch["frame_id"][keep]
        joints = np.array([self.joints[f] for f in kept], dtype=np.float32)
        confidence = np.array([self.confidence[f] for f in kept], dtype=np.float32)
        return {
            "frame_id": kept,
            "image": batch["image"][keep],
            "joints": joints.reshape(-1, NUM_JOINTS * 3),
            "joint_confidence": confidence.reshape(-1, NUM_JOINTS),
        }


@dataclass(frozen=True)
class WorkerLoop:
    """What each Ray Train worker of one stage is given (pickled to every worker)."""

    stage: TrainConfig  # an AdaptConfig adapts (source and target batches), a TrainConfig pretrains
    model: ModelConfig  # the network a stage without ``init_checkpoint`` creates
    seed: int
    init_checkpoint: str | None
    steps_per_epoch: int  # the same on every rank, so no rank waits in an all-reduce another skips


def _resume(
    model: PoseModel,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> int:
    """Restore the last reported ``train_state.pt`` of a restarted worker group; the epochs it finished."""
    import ray.train

    resume = ray.train.get_checkpoint()
    if resume is None:
        return 0
    with resume.as_directory() as folder:
        state = torch.load(Path(folder) / _STATE_FILE, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return state["epoch"]


def train_loop(loop: WorkerLoop) -> None:
    """Ray Train's ``train_loop_per_worker`` (bound to ``loop``): one stage on this worker's shards,
    through ``fitting.run_epochs``, whose epoch hook reports metrics and rank 0's checkpoint."""
    import ray.train
    import ray.train.torch

    from dfa_ray.stages.progress import quiet_worker_reports

    quiet_worker_reports()
    stage = loop.stage
    adapting = isinstance(stage, AdaptConfig)
    torch.manual_seed(loop.seed)
    model = checkpoints.load(loop.init_checkpoint)[0] if loop.init_checkpoint else create_model(loop.model)
    device = ray.train.torch.get_device()
    net = ray.train.torch.prepare_model(DFANet(training_layout(model), dfa=adapting and stage.dfa))
    model = net.module.model if hasattr(net, "module") else net.model
    optimizer = make_optimizer(model, stage)
    schedule = make_schedule(optimizer, stage, loop.steps_per_epoch)
    first_epoch = _resume(model, optimizer, schedule, device)

    rank = ray.train.get_context().get_world_rank()
    # Per rank and per (resumed) start, so no two workers and no restart replay the same order.
    seed = (loop.seed * 1000 + rank) * 1000 + first_epoch
    sources = _endless(
        ray.train.get_dataset_shard("source"), stage.batch_size, "source", stage.shuffle_buffer, seed
    )
    targets = None
    if adapting:
        shard = ray.train.get_dataset_shard("target")
        targets = _endless(shard, stage.batch_size, "target", stage.shuffle_buffer, seed + 1)
    rng = np.random.default_rng([loop.seed, rank, first_epoch])
    augment = (rng, stage.augment_ranges) if stage.augment else None

    def batches() -> Iterator[Pair]:
        for raw in sources:
            source = source_batch(raw, model, stage.sigma, augment, rng if stage.recolour else None)
            target = None
            if targets:
                target = target_batch(next(targets), model, stage, device, rng)
            yield source, target

    def report(record: dict) -> None:
        metrics = {
            "epoch": record["epoch"],
            # > 0 after a worker-group restart: the epoch of the checkpoint this attempt resumed from.
            "resumed_from_epoch": first_epoch,
            **{key: record[key] for key in ("loss", "loss_source", "loss_target")},
            "images_per_s_per_worker": record["images_per_s"],
        }
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if rank == 0:
                torch.save(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "schedule": schedule.state_dict(), "epoch": record["epoch"]},
                    Path(folder) / _STATE_FILE,
                )  # fmt: skip
                checkpoints.save(model, folder, epoch=record["epoch"])
                checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=checkpoint)

    alpha, beta = (stage.alpha, stage.beta) if adapting else (1.0, 0.0)
    step = dfa_step(net, optimizer, stage, grad_scaler(stage.amp, device), alpha, beta)
    images = stage.batch_size * (2 if adapting else 1)
    steps = loop.steps_per_epoch
    # Workers log nothing per epoch: the driver prints one line from all their reports (progress.py).
    run_epochs(step, batches(), schedule, stage, steps, images, first_epoch, report, log=lambda _: None)


def read_source(uris: list[str], seed: int) -> Any:
    """One Ray dataset over every source dataset's files (a missing ``joints_valid`` reads as all
    valid), shuffled as a whole by ``seed``: the workers' local shuffle buffers alone would hand a
    round's few hundred steps the first files' frames only, the same ones every round, and never a
    dataset unioned last (a 2D-only source). The in-process loop draws from all alike. A URI given
    ``k`` times (``driver.source_2d_mix``) is read once and its rows repeated ``k`` times."""
    parts = []
    for uri, copies in collections.Counter(uris).items():
        with storage.open_input(dataset_files(uri)[0]) as handle:
            names = pq.read_schema(handle).names
        part = read_parquet(uri, [c for c in SOURCE_COLUMNS if c in names])
        # Arrow in, Arrow out: a numpy batch would come back with tensor columns that the other
        # parts' list columns cannot be shuffled together with.
        if "joints_valid" not in names:
            part = part.map_batches(_all_valid, batch_format="pyarrow")
        if copies > 1:
            part = part.map_batches(_repeat, fn_kwargs={"copies": copies}, batch_format="pyarrow")
        parts.append(part)
    dataset = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    # Materialised before the trainer starts, for the reason given in read_selected_target.
    return dataset.random_shuffle(seed=seed).materialize()


def _repeat(batch: pa.Table, copies: int) -> pa.Table:
    return pa.concat_tables([batch] * copies)


def _all_valid(batch: pa.Table) -> pa.Table:
    ones = pa.array([[1] * NUM_JOINTS] * batch.num_rows, pa.list_(pa.uint8()))
    return batch.append_column("joints_valid", ones)


def read_selected_target(target_uri: str, selected_uri: str, rows_per_block: int) -> Any:
    """The target frames the policy kept, each with its pseudo-label ``joints``, materialised."""
    import ray

    dataset = read_parquet(target_uri, ["frame_id", "image"])
    selected = dataset.repartition(target_num_rows_per_block=rows_per_block).map_batches(
        AttachPseudoLabels,
        fn_constructor_kwargs={"selected_uri": selected_uri},
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.25,
        batch_format="numpy",
    )
    # Materialised before the trainer takes its CPUs: on a small node the read tasks of a lazy
    # dataset would wait forever for CPUs the workers hold. Adaptation reads it every epoch anyway.
    return selected.materialize()


def steps_per_epoch(num_frames: int, config: Config, stage: TrainConfig, frames: str) -> int:
    """Steps of ``workers.num_workers x batch_size`` frames in an epoch over ``num_frames`` frames
    (an adaptation's at least ``min_steps_per_epoch``); an InputError naming ``frames`` (e.g. "the
    source's 40 frames") when they cannot fill one."""
    per_step = config.workers.num_workers * stage.batch_size
    if num_frames < per_step:
        section = "adapt" if isinstance(stage, AdaptConfig) else "pretrain"
        raise InputError(
            f"{frames} cannot fill one training step of workers.num_workers={config.workers.num_workers} x "
            f"{section}.batch_size={stage.batch_size} frames; lower the batch size or keep more frames"
        )
    return stage.steps_per_epoch(num_frames // per_step)


def run_stage(
    config: Config,
    stage: TrainConfig,
    datasets: dict[str, Any],
    num_frames: int,
    storage_uri: str,
    init_checkpoint: str | None,
    name: str,
) -> tuple[PoseModel, dict]:
    """Train one stage with a TorchTrainer; returns the final model and the last epoch's metrics.

    ``num_frames`` is the size of the dataset that defines an epoch (source for pretraining, the
    selected target frames for adaptation). Ray Train's own files go under ``storage_uri`` in a
    fresh, uniquely named run: an existing name would be silently resumed. The driver's output gets
    one line per epoch, starting with ``name`` (``progress.EpochLine``), and Ray Train's warnings
    and errors; its INFO lines (worker group started, each report as a raw dict) go to its log files.
    """
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from dfa_ray.stages.progress import EpochLine

    workers = config.workers
    steps = steps_per_epoch(num_frames, config, stage, f"{num_frames} training frames")
    filesystem, path = storage.resolve(storage_uri)
    if filesystem.type_name != "s3":
        storage.makedirs(storage_uri)
    loop = WorkerLoop(
        stage=stage,
        model=config.model,
        seed=config.seed,
        init_checkpoint=init_checkpoint,
        steps_per_epoch=steps,
    )
    trainer = TorchTrainer(
        functools.partial(train_loop, loop),
        scaling_config=ScalingConfig(
            num_workers=workers.num_workers,
            use_gpu=workers.use_gpu,
            resources_per_worker={"CPU": workers.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=f"train-{uuid.uuid4().hex[:12]}",
            storage_path=path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=2),
            callbacks=[EpochLine(name, stage.epochs)],
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
        datasets=datasets,
        # The defaults Ray Train would build (DataConfig.default_ingest_options) pass the deprecated
        # exclude_resources on, and every stage warned about it; these are the same defaults without it.
        dataset_config=DataConfig(execution_options=ExecutionOptions()),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training under {storage_uri} finished without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as folder:
        model, _ = checkpoints.load(folder)
    return model, dict(result.metrics or {})
