"""Round k's pseudo-labels with Ray Data, then the policy's global selection.

``label_frames`` streams the target's ``frame_id`` and ``image`` columns through CPU tasks that
decode them (``decode_frames``) into a pool of ``PseudoLabeler`` actors (one model load per actor)
that run Algorithm 1 (``pseudo_label``, its views built on the model's device) and writes one row
per frame to ``labels_uri`` (anchoring, where the target's 2D is a detector's, streams its
``joints_2d`` and ``joints_valid`` too: ``pseudo_label.anchor_2d``):

    frame_id          string
    joints            list<float32> (51)  17 x 3 normalised coordinates (see ``heatmaps``)
    joint_confidence  list<float32> (17)
    confidence        float32             mean of joint_confidence
    error             string              null, or why the frame could not be labeled

A frame that cannot be decoded becomes a row with an ``error`` naming it, never a lost block (Ray
Data's ``max_errored_blocks`` would silently drop every frame of the block). ``select_labels`` then
skips the failed frames, counting and listing them (and failing the round when more than
``label.max_error_fraction`` of the frames failed), ranks the rest globally (the exact top fraction,
ties by frame_id) and writes the kept ones.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dfa_ray import storage
from dfa_ray.config import LabelConfig
from dfa_ray.data.images import ImageError, decode_resized, image_size
from dfa_ray.data.validation import InputError
from dfa_ray.method import checkpoints
from dfa_ray.method.heatmaps import pixels_to_normalised
from dfa_ray.method.inference import DeviceModel
from dfa_ray.method.policy import select
from dfa_ray.method.pseudo_label import anchor_2d, pseudo_label, target_variance
from dfa_ray.method.skeleton import NUM_JOINTS
from dfa_ray.method.views import Views, frame_views, tensor_views
from dfa_ray.stages.read import check_each_frame_once, read_output, read_parquet

log = logging.getLogger(__name__)

LABEL_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string()),
        pa.field("joints", pa.list_(pa.float32())),
        pa.field("joint_confidence", pa.list_(pa.float32())),
        pa.field("confidence", pa.float32()),
        pa.field("error", pa.string()),
    ]
)

# Failed frames listed by frame_id in a round's statistics (all of them are counted).
MAX_LISTED_FAILURES = 20


def decode_frames(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Ray Data batch function, run in CPU tasks ahead of the labeling and evaluation actors: encoded
    ``image`` bytes in, ``(B, size, size, 3)`` uint8 crops, the stored ``crop_size`` (0 where it
    failed) and an ``error`` column out, the batch's other columns passed on (same rows, same order)."""
    frame_ids = [str(f) for f in batch["frame_id"]]
    images = np.zeros((len(frame_ids), size, size, 3), np.uint8)
    crop_size = np.zeros(len(frame_ids), np.int64)
    errors: list[str | None] = [None] * len(frame_ids)
    for i, (frame_id, data) in enumerate(zip(frame_ids, batch["image"])):
        try:
            crop_size[i] = image_size(data)[0]
            images[i] = decode_resized(data, size)
        except Exception as exc:
            # Raising here would fail the whole Ray Dataset for one frame. The frame's row carries
            # the reason instead, and select_labels bounds how many frames may fail.
            crop_size[i] = 0
            errors[i] = f"frame {frame_id}: {_decode_failure(data, exc)}"
    return {
        **batch,
        **(dense_2d(batch) if "joints_2d" in batch else {}),
        **(dense_3d(batch) if "joints_3d" in batch else {}),
        "frame_id": np.array(frame_ids, dtype=object),
        "image": images,
        "crop_size": crop_size,
        "error": np.array(errors, dtype=object),
    }


def dense_3d(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch's ``joints_3d`` as a dense ``(B, 51)`` array, NaN for a frame without them (a test
    set with a few frames unlabeled), for the reason ``dense_2d`` gives: Ray Data reads each file as
    its own block, so a batch may join a block whose column is all arrays with one that holds None."""
    joints = np.full((len(batch["frame_id"]), NUM_JOINTS * 3), np.nan)
    for i, value in enumerate(batch["joints_3d"]):
        if value is not None and np.size(value) == NUM_JOINTS * 3:  # None, or NaN from an all-null column
            joints[i] = np.asarray(value, np.float64).reshape(-1)
    return {"joints_3d": joints}


def dense_2d(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch's ``joints_2d`` ``(B, 34)`` and ``joints_valid`` ``(B, 17)`` as dense arrays, a frame
    without 2D all invalid: Ray Data cannot make one block of a column that mixes None and arrays
    (a target where the detector missed a few frames)."""
    n = len(batch["frame_id"])
    pixels = np.zeros((n, NUM_JOINTS * 2), np.float32)
    valid = np.zeros((n, NUM_JOINTS), np.uint8)
    flags = batch.get("joints_valid", np.full(n, None, dtype=object))
    for i, (joints, flag) in enumerate(zip(batch["joints_2d"], flags)):
        if joints is None or np.size(joints) != NUM_JOINTS * 2:  # None, or NaN from an all-null column
            continue
        pixels[i] = np.asarray(joints, np.float32).reshape(-1)
        valid[i] = 1 if flag is None or np.size(flag) != NUM_JOINTS else np.asarray(flag) > 0
    return {"joints_2d": pixels, "joints_valid": valid}


def decoded(batch: dict[str, np.ndarray], size: int, actor: str) -> tuple[np.ndarray, list[str | None]]:
    """A ``decode_frames`` batch as its ``actor`` receives it: the crops, checked to be the ``size``
    its model takes, and each frame's failure or None."""
    images = np.asarray(batch["image"])
    if images.shape != (len(batch["frame_id"]), size, size, 3):
        raise ValueError(f"the {actor}'s model takes {size} px crops; decoded images are {images.shape}")
    # A frame failed only where decode_frames wrote a reason. Ray Data hands a column of nothing
    # but None on as float NaN (Arrow's null type), so "no error" is anything but a string.
    return images, [e if isinstance(e, str) else None for e in batch["error"]]


def detected_2d(batch: dict[str, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``rows``' stored 2D keypoints in normalised crop coordinates ``(R, J, 2)`` and where they
    are valid ``(R, J)``, from a ``decode_frames`` batch (its ``dense_2d`` columns: a frame without
    any is all invalid)."""
    pixels = np.asarray(batch["joints_2d"], np.float64)[rows].reshape(len(rows), NUM_JOINTS, 2)
    crop_size = np.asarray(batch["crop_size"])[rows].reshape(-1, 1, 1)
    return pixels_to_normalised(pixels, crop_size), np.asarray(batch["joints_valid"])[rows] > 0


class PseudoLabeler:
    """Ray Data callable class: loads the round's checkpoint once, labels batches of decoded frames,
    building the views on the model's device (``views.tensor_views``)."""

    def __init__(
        self, checkpoint_uri: str, round_index: int, config: LabelConfig, sigma: float, anchor: bool = False
    ) -> None:
        model, _ = checkpoints.load(checkpoint_uri)
        self.anchor = anchor
        self.model = DeviceModel(model, config.inference, use_gpu=config.num_gpus > 0)
        self.input_size = model.config.input_size
        self.round_index = round_index
        self.config = config
        self.floor = target_variance(model.config.heatmap_size, sigma)

    def _views(self, images: torch.Tensor, views: Views) -> torch.Tensor:
        return tensor_views(images, views)

    def _predict(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return self.model.predict(images)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``decode_frames`` columns in, LABEL_SCHEMA columns out (same rows, same order)."""
        frame_ids = [str(f) for f in batch["frame_id"]]
        images, errors = decoded(batch, self.input_size, "labeler")
        n = len(frame_ids)
        good = np.flatnonzero([e is None for e in errors])
        joints = np.full((n, NUM_JOINTS * 3), np.nan, np.float32)
        joint_confidence = np.zeros((n, NUM_JOINTS), np.float32)
        if good.size:
            ids = [frame_ids[i] for i in good]
            views = frame_views(ids, self.config.seed, self.round_index, self.config.views)
            on_device = self.model.to_device(images[good])
            labels = pseudo_label(
                self._predict, on_device, views, self.floor, self._views, self.config.confidence
            )
            if self.anchor:
                labels = anchor_2d(labels, *detected_2d(batch, good))
            joints[good] = labels.joints.reshape(len(good), -1)
            joint_confidence[good] = labels.joint_confidence
        return {
            "frame_id": np.array(frame_ids, dtype=object),
            "joints": joints,
            "joint_confidence": joint_confidence,
            "confidence": joint_confidence.mean(axis=1).astype(np.float32),
            "error": np.array(errors, dtype=object),
        }


class TimedLabeler(PseudoLabeler):
    """``PseudoLabeler`` that adds up the seconds of its device work, the views and the model
    (``benchmarks/``): the rest of a call is the host work a GPU actor does serially with its GPU."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device_seconds = 0.0

    def _timed(self, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = work()
        if self.model.device.type == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: wait for them inside the span
        self.device_seconds += time.perf_counter() - start
        return result

    def _views(self, images: torch.Tensor, views: Views) -> torch.Tensor:
        return self._timed(lambda: super(TimedLabeler, self)._views(images, views))

    def _predict(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return self._timed(lambda: super(TimedLabeler, self)._predict(images))


def time_labeling(
    checkpoint_uri: str, images: np.ndarray, config: LabelConfig, sigma: float, repeats: int
) -> tuple[float, float]:
    """Median seconds per frame of a label actor on decoded uint8 ``images`` ``(N, S, S, 3)`` in one
    batch: in all, and on the host (outside the views and the model, ``TimedLabeler``)."""
    labeler = TimedLabeler(checkpoint_uri, 1, config, sigma)
    n = len(images)
    batch = {"frame_id": np.array([f"f{i}" for i in range(n)], dtype=object), "image": images,
             "error": np.full(n, None, dtype=object)}  # fmt: skip
    labeler({name: column[:2] for name, column in batch.items()})  # warm-up: allocator, cuDNN algorithms
    totals, host = [], []
    for _ in range(repeats):
        labeler.device_seconds = 0.0
        start = time.perf_counter()
        labeler(batch)
        total = time.perf_counter() - start
        totals.append(total / n)
        host.append((total - labeler.device_seconds) / n)
    return statistics.median(totals), statistics.median(host)


def _decode_failure(data: Any, exc: Exception) -> str:
    if data is None:
        return "image is missing"
    if isinstance(exc, ImageError):
        return str(exc)
    return f"image could not be decoded ({type(exc).__name__}: {exc})"


def through_actors(
    source_uri: str,
    columns: Sequence[str],
    actor: type,
    constructor_kwargs: dict[str, Any],
    out_uri: str,
    config: LabelConfig,
    input_size: int,
    what: str,
) -> None:
    """Stream ``source_uri``'s ``columns`` through ``decode_frames`` into a pool of ``actor`` (a Ray
    Data callable class taking its columns) and write the actor's rows as Parquet to ``out_uri``.

    The label section sizes both steps: CPU tasks of ``label.decode_cpus`` each decode and resize the
    images to ``input_size``, the checkpoint's; ``label.actors`` actors of ``label.num_cpus`` and
    ``label.num_gpus`` each only run the model. With the same resources (CPU actors, by default) Ray
    fuses the two steps and each actor decodes its own batches. ``what`` names the output in errors.
    """
    import ray

    dataset = read_parquet(source_uri, columns)
    decoded = dataset.repartition(target_num_rows_per_block=config.rows_per_block).map_batches(
        decode_frames,
        fn_kwargs={"size": input_size},
        batch_size=config.batch_size,
        num_cpus=config.decode_task_cpus,
        batch_format="numpy",
    )
    done = decoded.map_batches(
        actor,
        fn_constructor_kwargs=constructor_kwargs,
        compute=ray.data.ActorPoolStrategy(size=config.actors),
        batch_size=config.batch_size,
        num_cpus=config.num_cpus,
        num_gpus=config.num_gpus,
        batch_format="numpy",
    )
    out_filesystem, out_path = storage.resolve(out_uri)
    # An unreachable store fails the stage after the S3 client's retries (AWS_MAX_ATTEMPTS), with an
    # error naming the output; the stage stays uncommitted and --resume redoes it.
    with storage.storage_errors(out_uri, f"write {what} to"):
        # One file per block otherwise; each costs a round trip when read back.
        done.write_parquet(out_path, filesystem=out_filesystem, min_rows_per_file=50_000)


def label_frames(
    target_uri: str,
    checkpoint_uri: str,
    labels_uri: str,
    round_index: int,
    config: LabelConfig,
    sigma: float,
    input_size: int,
    anchor: bool = False,
) -> None:
    """Run the ensemble over every target frame with Ray Data (``through_actors``, ``PseudoLabeler``
    actors) and write LABEL_SCHEMA Parquet files; with ``anchor``, each label's image position comes
    from the target's stored 2D keypoints where they are valid (``pseudo_label.anchor_2d``)."""
    kwargs = {"checkpoint_uri": checkpoint_uri, "round_index": round_index, "config": config, "sigma": sigma}
    columns = ["frame_id", "image"]
    if anchor:
        kwargs["anchor"] = True
        columns += ["joints_2d", "joints_valid"]
    through_actors(target_uri, columns, PseudoLabeler, kwargs, labels_uri, config, input_size, "labels")


def read_labels(labels_uri: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Every label file of a round (any ``*.parquet`` under ``labels_uri``), or one such file."""
    return read_output(labels_uri, "label", columns)


def check_failures(
    labels_uri: str, frame_ids: Sequence[str], errors: Sequence[str | None], max_error_fraction: float
) -> list[dict]:
    """The frames that could not be labeled (``errors[i]`` not None), in frame_id order, the first
    MAX_LISTED_FAILURES as ``{"frame_id", "error"}``.

    Raises InputError naming ``labels_uri`` when more than ``max_error_fraction`` of the frames
    failed (``label.max_error_fraction``): the message gives the count, the fraction, the limit and
    the first failures with their reasons.
    """
    failed = sorted((str(f), str(e)) for f, e in zip(frame_ids, errors) if e is not None)
    # Error texts name their frame already; one that does not (written by another tool) gets its id.
    listed = [
        {"frame_id": f, "error": e if e.startswith(f"frame {f}:") else f"frame {f}: {e}"} for f, e in failed
    ]
    total = len(frame_ids)
    if total and len(failed) / total > max_error_fraction:
        first = "; ".join(item["error"] for item in listed[:5])
        raise InputError(
            f"{labels_uri}: {len(failed)} of {total} frames ({len(failed) / total:.2%}) could not be "
            f"labeled, more than label.max_error_fraction={max_error_fraction:g} allows; "
            f"first failures: {first}"
        )
    return listed[:MAX_LISTED_FAILURES]


def select_labels(
    labels_uri: str,
    selected_uri: str,
    fraction: float,
    max_error_fraction: float,
    expected_frames: int | None = None,
) -> dict:
    """Keep the top ``fraction`` of all labeled frames; write them to ``selected_uri``; return statistics.

    Frames that could not be labeled are skipped, counted (``num_failed``) and listed
    (``failed_frames``, see check_failures, which raises when more than ``max_error_fraction`` of
    them failed). Raises if a frame was labeled twice or, given ``expected_frames`` (the target's
    size), if the labels hold another number of frames: the stage must write every target frame
    exactly once, and a lost shard must fail the round, not shrink it.
    """
    table = read_labels(labels_uri)
    frame_ids = np.asarray(table.column("frame_id").to_pylist(), dtype=object)
    check_each_frame_once(labels_uri, frame_ids, expected_frames, "labeled")
    errors = table.column("error").to_pylist()
    failures = check_failures(labels_uri, frame_ids.tolist(), errors, max_error_fraction)
    failed = np.array([e is not None for e in errors], dtype=bool)
    if failures:
        log.warning(
            "%s: skipped %d frame(s) that could not be labeled: %s", labels_uri, failed.sum(), failures
        )
    confidence = table.column("confidence").to_numpy(zero_copy_only=False).astype(np.float64)
    usable = np.flatnonzero(~failed)
    selection = select(frame_ids[usable].tolist(), confidence[usable], fraction)
    kept = usable[selection.mask]
    kept_table = table.take(pa.array(kept)).drop_columns(["error"])
    with storage.open_output(selected_uri) as stream:
        pq.write_table(kept_table, stream)
    histogram, edges = np.histogram(confidence[usable], bins=20, range=(0.0, 1.0))
    return {
        "num_frames": int(len(frame_ids)),
        "num_failed": int(failed.sum()),
        "max_error_fraction": max_error_fraction,
        "failed_frames": failures,
        "fraction": fraction,
        "num_kept": int(selection.num_kept),
        "threshold": None if selection.threshold is None else float(selection.threshold),
        "confidence_mean": float(confidence[usable].mean()) if usable.size else None,
        "confidence_histogram": {"edges": edges.round(3).tolist(), "counts": histogram.tolist()},
    }
