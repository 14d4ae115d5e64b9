"""The plain parts of the Ray stages, called without Ray: the labeler, selection, label joins, batches."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dfa_ray.config import AdaptConfig, LabelConfig, load_config
from dfa_ray.data import synthetic
from dfa_ray.method import checkpoints, fitting
from dfa_ray.method.fitting import TrainConfig
from dfa_ray.method.model import PoseModel
from dfa_ray.method.policy import num_kept
from dfa_ray.method.views import frame_views
from dfa_ray.stages import train
from dfa_ray.stages.label import (
    LABEL_SCHEMA,
    PseudoLabeler,
    decode_frames,
    read_labels,
    select_labels,
)
from dfa_ray.stages.progress import EpochLine
from dfa_ray.stages.train import AttachPseudoLabels, source_batch, target_batch
from tests.helpers import TINY, tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def _batch(n: int = 6) -> dict[str, np.ndarray]:
    rows = list(synthetic.generate("synthetic-real", "test", n, crop_size=48))
    return {
        "frame_id": np.array([r["frame_id"] for r in rows], dtype=object),
        "image": np.array([r["image"] for r in rows], dtype=object),
    }


def test_labeler_is_deterministic_per_frame_and_reports_bad_images(checkpoint):
    actor = PseudoLabeler(checkpoint, round_index=1, config=LabelConfig(), sigma=1.0)

    def labeler(batch):  # the stage's decode task, then its actor
        return actor(decode_frames(batch, TINY.input_size))

    batch = _batch()
    batch["image"][2] = batch["image"][2][:-30]  # truncated PNG
    out = labeler(batch)
    assert list(out) == LABEL_SCHEMA.names
    assert (
        out["error"][2] is not None
        and "truncated" in out["error"][2]
        and batch["frame_id"][2] in out["error"][2]
    )
    good = [i for i in range(6) if i != 2]
    assert all(out["error"][i] is None for i in good)
    assert np.isfinite(out["joints"][good]).all() and out["joints"].shape == (6, 51)
    assert ((out["confidence"][good] > 0) & (out["confidence"][good] <= 1)).all()
    # The same frame gets the same views and labels whatever batch it arrives in.
    alone = labeler({name: values[[4]] for name, values in batch.items()})
    np.testing.assert_allclose(alone["joints"][0], out["joints"][4], atol=1e-5)
    kinds = LabelConfig().views
    views_a = frame_views(["a", "b"], 0, 1, kinds)
    views_b = frame_views(["b"], 0, 1, kinds)
    assert views_a.params[2][1] == views_b.params[2][0]
    assert frame_views(["b"], 0, 2, kinds).params[2][0] != views_b.params[2][0]


def test_labeler_labels_frames_whose_error_column_arrives_from_ray_as_nan(checkpoint):
    """Ray Data hands a decode batch's all-None ``error`` column on as float NaN (Arrow's null type):
    every frame of it decoded, so every frame must be labeled, not written as NaN without a reason."""
    actor = PseudoLabeler(checkpoint, round_index=1, config=LabelConfig(), sigma=1.0)
    decoded = decode_frames(_batch(), TINY.input_size)
    expected = actor(decoded)
    out = actor({**decoded, "error": np.full(6, np.nan, np.float32)})
    assert all(e is None for e in out["error"]) and np.isfinite(out["joints"]).all()
    np.testing.assert_allclose(out["joints"], expected["joints"])


def test_an_anchoring_labeler_takes_the_stored_2d_where_valid_in_the_stored_crops_pixels(checkpoint):
    rows = list(synthetic.generate("synthetic-real", "test", 4, crop_size=48))
    batch = _batch(4)
    batch["joints_2d"] = np.array([r["joints_2d"] for r in rows] + [None], dtype=object)[:4]
    batch["joints_2d"][3] = None  # a frame the detector missed
    valid = [None, np.ones(17, np.uint8), np.zeros(17, np.uint8), None]
    batch["joints_valid"] = np.array(valid, dtype=object)
    plain = PseudoLabeler(checkpoint, round_index=1, config=LabelConfig(), sigma=1.0)
    anchored = PseudoLabeler(checkpoint, round_index=1, config=LabelConfig(), sigma=1.0, anchor=True)
    decoded = decode_frames(batch, TINY.input_size)
    assert list(decoded["crop_size"]) == [48] * 4
    # Dense columns, a missed frame all invalid: Ray Data cannot make a block of None mixed with arrays.
    assert decoded["joints_2d"].dtype == np.float32 and decoded["joints_2d"].shape == (4, 34)
    assert decoded["joints_valid"].tolist() == [[1] * 17, [1] * 17, [0] * 17, [0] * 17]
    ours, theirs = anchored(decoded), plain(decoded)
    xy = ours["joints"].reshape(4, 17, 3)
    for i in (0, 1):  # all valid: the stored pixels, normalised by the stored crop's size
        np.testing.assert_allclose(xy[i, :, :2], (2 * rows[i]["joints_2d"] + 1) / 48 - 1, atol=1e-5)
    for i in (2, 3):  # nothing valid or nothing stored: the ensemble's label
        np.testing.assert_allclose(ours["joints"][i], theirs["joints"][i], atol=1e-6)
    np.testing.assert_allclose(xy[..., 2], theirs["joints"].reshape(4, 17, 3)[..., 2], atol=1e-6)


def test_labeler_refuses_crops_of_another_size_than_its_model_takes(checkpoint):
    actor = PseudoLabeler(checkpoint, round_index=1, config=LabelConfig(), sigma=1.0)
    with pytest.raises(ValueError, match=f"takes {TINY.input_size} px crops; decoded images are"):
        actor(decode_frames(_batch(2), TINY.input_size * 2))


def _write_labels(folder, confidences, errors=None) -> None:
    n = len(confidences)
    table = pa.table(
        {
            "frame_id": [f"f{i:03d}" for i in range(n)],
            "joints": [[0.1] * 51] * n,
            "joint_confidence": [[c] * 17 for c in confidences],
            "confidence": np.asarray(confidences, np.float32),
            "error": errors or [None] * n,
        },
        schema=LABEL_SCHEMA,
    )
    half = n // 2
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.slice(0, half), folder / "a.parquet")
    pq.write_table(table.slice(half), folder / "b.parquet")


def test_selection_is_global_exact_and_skips_failed_frames(tmp_path):
    confidences = np.linspace(0.9, 0.1, 10)
    errors = [None] * 10
    errors[0] = "frame f000: image is truncated"  # the most confident frame cannot be used
    _write_labels(tmp_path / "labels", confidences, errors)
    stats = select_labels(str(tmp_path / "labels"), str(tmp_path / "selected.parquet"), 0.5, 0.1)
    kept = read_labels(str(tmp_path / "selected.parquet"))
    assert stats["num_frames"] == 10 and stats["num_failed"] == 1
    assert stats["failed_frames"] == [{"frame_id": "f000", "error": errors[0]}]
    assert stats["num_kept"] == num_kept(9, 0.5) == kept.num_rows == 4
    assert kept.column("frame_id").to_pylist() == ["f001", "f002", "f003", "f004"]
    assert stats["threshold"] == pytest.approx(confidences[4])
    assert sum(stats["confidence_histogram"]["counts"]) == 9


def test_selection_refuses_a_frame_labeled_twice(tmp_path):
    _write_labels(tmp_path / "labels", [0.5, 0.4])
    pq.write_table(pq.read_table(tmp_path / "labels" / "a.parquet"), tmp_path / "labels" / "c.parquet")
    with pytest.raises(ValueError, match="1 frame\\(s\\) labeled more than once.*f000"):
        select_labels(str(tmp_path / "labels"), str(tmp_path / "selected.parquet"), 1.0, 0.0)


def test_selection_refuses_labels_with_a_missing_shard(tmp_path):
    _write_labels(tmp_path / "labels", [0.5, 0.4, 0.3, 0.2])
    args = (str(tmp_path / "labels"), str(tmp_path / "selected.parquet"), 1.0, 0.0)
    assert select_labels(*args, expected_frames=4)["num_frames"] == 4
    (tmp_path / "labels" / "b.parquet").unlink()
    with pytest.raises(RuntimeError, match="2 frames were labeled, the input has 4"):
        select_labels(*args, expected_frames=4)


def test_attach_keeps_selected_frames_with_their_labels(tmp_path):
    _write_labels(tmp_path / "labels", [0.9, 0.8, 0.7, 0.6])
    select_labels(str(tmp_path / "labels"), str(tmp_path / "selected.parquet"), 0.5, 0.0)
    attach = AttachPseudoLabels(str(tmp_path / "selected.parquet"))
    batch = {
        "frame_id": np.array(["f003", "f000", "f001", "x"], dtype=object),
        "image": np.array([b"3", b"0", b"1", b"x"], dtype=object),
    }
    out = attach(batch)
    assert out["frame_id"].tolist() == ["f000", "f001"] and out["image"].tolist() == [b"0", b"1"]
    assert out["joints"].shape == (2, 51) and np.allclose(out["joints"], 0.1)
    np.testing.assert_allclose(out["joint_confidence"], [[0.9] * 17, [0.8] * 17], rtol=1e-6)


def test_batches_from_ray_style_numpy_columns():
    model = PoseModel(TINY)
    rows = list(synthetic.generate("synthetic-source", "train", 4, crop_size=48))
    rows[1]["joints_3d"] = None  # a 2D-only row
    batch = {
        "frame_id": np.array([r["frame_id"] for r in rows], dtype=object),
        "image": np.array([r["image"] for r in rows], dtype=object),
        "joints_2d": np.stack([r["joints_2d"].reshape(-1) for r in rows]),
        "joints_3d": np.array(
            [None if r["joints_3d"] is None else r["joints_3d"].reshape(-1) for r in rows], dtype=object
        ),
        "camera": np.stack([r["camera"] for r in rows]),
        "joints_valid": np.ones((4, 17), np.uint8),
    }
    source = source_batch(batch, model, 1.0)
    assert source.images.shape == (4, 3, 32, 32)
    assert source.weights[1, :, 1:].sum() == 0 and source.weights[0].min() > 0  # no depth target for 2D-only
    confidence = np.tile(np.linspace(0.1, 0.9, 17, dtype=np.float32), (4, 1))
    columns = {
        "frame_id": batch["frame_id"],
        "image": batch["image"],
        "joints": np.zeros((4, 51), np.float32),
    }
    columns["joint_confidence"] = confidence
    plain = AdaptConfig(target_invariance=False, weight_by_confidence=False, augment=False)
    cpu = torch.device("cpu")
    target = target_batch(columns, model, plain, cpu, np.random.default_rng(0))
    assert target.images.shape == (4, 3, 32, 32) and target.targets.xy.shape == (4, 17, 8, 8)
    assert torch.all(target.weights == 1)
    both = AdaptConfig(target_invariance=True, weight_by_confidence=True, augment=False)
    varied = target_batch(columns, model, both, cpu, np.random.default_rng(0))
    # The colour transform changes pixels, never the targets; weights follow the joint confidence.
    assert not torch.equal(varied.images, target.images)
    assert torch.equal(varied.targets.xy, target.targets.xy)
    np.testing.assert_allclose(varied.weights[0, :, 0].numpy(), confidence[0])
    # The rigid augmentation moves images and targets together.
    warped = target_batch(columns, model, AdaptConfig(), cpu, np.random.default_rng(0))
    assert not torch.equal(warped.targets.xy, target.targets.xy)


class _Shard:
    """A Ray Data shard's ``iter_batches`` over numpy columns (what a worker's dataset shard yields)."""

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self.columns = columns

    def iter_batches(self, batch_size: int, drop_last: bool, **_: object):
        n = len(self.columns["frame_id"])
        for start in range(0, n - batch_size + 1 if drop_last else n, batch_size):
            yield {name: values[start : start + batch_size] for name, values in self.columns.items()}


def _source_columns(n: int) -> dict[str, np.ndarray]:
    rows = list(synthetic.generate("synthetic-source", "train", n, crop_size=48))
    return {
        "frame_id": np.array([r["frame_id"] for r in rows], dtype=object),
        "image": np.array([r["image"] for r in rows], dtype=object),
        "joints_2d": np.stack([r["joints_2d"].reshape(-1) for r in rows]),
        "joints_3d": np.stack([r["joints_3d"].reshape(-1) for r in rows]),
        "camera": np.stack([r["camera"] for r in rows]),
        "joints_valid": np.ones((n, 17), np.uint8),
    }


@pytest.fixture
def ray_train_worker(monkeypatch, tmp_path):
    """Ray Train's worker API, faked in this process: one rank on the CPU, shards from ``shards``,
    each report recorded with a copy of its checkpoint, ``resume_from`` as ray.train.get_checkpoint()."""
    import ray.train
    import ray.train.torch

    state = {"shards": {}, "reports": [], "resume_from": None}

    def report(metrics, checkpoint=None):
        copy = None
        if checkpoint is not None:
            copy = tmp_path / f"report-{len(list(tmp_path.iterdir()))}"
            shutil.copytree(checkpoint.path, copy)
        state["reports"].append((metrics, copy))

    def get_checkpoint():
        folder = state["resume_from"]
        return None if folder is None else ray.train.Checkpoint.from_directory(str(folder))

    monkeypatch.setattr(ray.train, "report", report)
    monkeypatch.setattr(ray.train, "get_checkpoint", get_checkpoint)
    monkeypatch.setattr(ray.train, "get_dataset_shard", lambda name: state["shards"][name])
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace(get_world_rank=lambda: 0))
    monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(ray.train.torch, "prepare_model", lambda net: net)
    return state


def _pretraining(ray_train_worker: dict, epochs: int) -> train.WorkerLoop:
    """A worker's pretraining loop of ``epochs`` epochs of 2 steps on a shard of 8 source frames."""
    ray_train_worker["shards"]["source"] = _Shard(_source_columns(8))
    return train.WorkerLoop(
        stage=TrainConfig(epochs=epochs, batch_size=4, augment=False), model=TINY, seed=0,
        init_checkpoint=None, steps_per_epoch=2,
    )  # fmt: skip


def test_the_ray_train_worker_trains_through_the_one_loop_and_resumes_from_its_state(
    ray_train_worker, monkeypatch
):
    # The worker's loop and schedule are fitting's own, the ones fit, adapt_fit and DANN use.
    assert train.run_epochs is fitting.run_epochs and train.make_schedule is fitting.make_schedule
    calls = []

    def spy(name):
        real = getattr(fitting, name)
        return lambda *args, **kwargs: calls.append(name) or real(*args, **kwargs)

    for name in ("run_epochs", "make_schedule"):
        monkeypatch.setattr(train, name, spy(name))
    loop = _pretraining(ray_train_worker, epochs=3)
    train.train_loop(loop)
    assert calls == ["make_schedule", "run_epochs"]
    reports = ray_train_worker["reports"]
    assert [m["epoch"] for m, _ in reports] == [1, 2, 3] and all(
        m["resumed_from_epoch"] == 0 for m, _ in reports
    )
    assert set(reports[0][0]) == {
        "epoch", "resumed_from_epoch", "loss", "loss_source", "loss_target", "images_per_s_per_worker",
    }  # fmt: skip
    # Every epoch's checkpoint holds the model and the train state (model, optimiser, schedule, epoch).
    first = reports[0][1]
    assert checkpoints.load(first)[1] == {"epoch": 1}
    assert torch.load(first / "train_state.pt", weights_only=True)["epoch"] == 1

    # A restarted worker group resumes after the reported epoch, with the schedule where it was.
    ray_train_worker["reports"] = []
    ray_train_worker["resume_from"] = first
    train.train_loop(loop)
    resumed = ray_train_worker["reports"]
    assert [m["epoch"] for m, _ in resumed] == [2, 3] and all(
        m["resumed_from_epoch"] == 1 for m, _ in resumed
    )
    final = torch.load(resumed[-1][1] / "train_state.pt", weights_only=True)
    uninterrupted = torch.load(reports[-1][1] / "train_state.pt", weights_only=True)
    assert final["schedule"]["last_epoch"] == uninterrupted["schedule"]["last_epoch"] == 6


def test_the_driver_shows_one_line_per_epoch_from_every_workers_report(ray_train_worker, capsys):
    # Rank 0's reports as the worker loop makes them, and a second rank's beside them, as Ray
    # Train hands them to the controller's callbacks.
    loop = _pretraining(ray_train_worker, epochs=2)
    train.train_loop(loop)
    # The worker's own INFO line per report (a raw TrainingReport) is off.
    from ray.train.v2._internal.execution import context

    assert not logging.getLogger(context.__file__).isEnabledFor(logging.INFO)
    ranks = [
        [metrics, {**metrics, "loss": metrics["loss"] + 1.0, "loss_source": metrics["loss"] + 1.0}]
        for metrics, _ in ray_train_worker["reports"]
    ]
    callback = EpochLine("pretrain", 2)
    for metrics in ranks:
        callback.after_report(run_context=None, metrics=metrics, checkpoint=None)
    lines = capsys.readouterr().out.splitlines()
    expected = [
        f"pretrain: epoch {m[0]['epoch']}/2  loss {m[0]['loss'] + 0.5:.4f}  "
        f"{2 * m[0]['images_per_s_per_worker']:.0f} images/s on 2 workers"
        for m in ranks
    ]
    assert lines == expected

    # Adapting shows the two terms; the first epoch of a restarted worker group says where it resumed.
    adapted = {**ranks[1][0], "loss_source": 1.0, "loss_target": 0.25, "loss": 1.25, "resumed_from_epoch": 1}
    callback = EpochLine("round 3", 2)
    callback.after_report(run_context=None, metrics=[adapted], checkpoint=None)
    assert capsys.readouterr().out == (
        f"round 3: epoch 2/2  loss 1.2500 (source 1.0000, target 0.2500)  "
        f"{adapted['images_per_s_per_worker']:.0f} images/s on 1 worker  "
        "(workers restarted from epoch 1's checkpoint)\n"
    )


def test_a_stage_gives_ray_train_the_epoch_lines_its_warnings_only_and_a_data_config_that_does_not_warn(
    monkeypatch, tmp_path
):
    import warnings

    import ray.train
    import ray.train.torch

    given = {}

    class Stop(Exception):
        pass

    class FakeTrainer:
        def __init__(self, loop, **kwargs):
            given.update(kwargs)

        def fit(self):
            raise Stop

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", FakeTrainer)
    config = load_config("configs/smoke.yaml")
    with pytest.raises(Stop):
        train.run_stage(config, config.adapt, {}, 64, str(tmp_path), None, "round 2")
    run_config = given["run_config"]
    [callback] = run_config.callbacks
    assert isinstance(callback, ray.train.UserCallback) and (callback.stage, callback.epochs) == (
        "round 2", config.adapt.epochs,
    )  # fmt: skip
    assert run_config.logging_config.log_level == "WARNING"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        given["dataset_config"]._resolve_execution_options("source")


@pytest.mark.slow  # a local Ray
def test_the_source_is_shuffled_as_a_whole_so_a_small_dataset_unioned_last_is_drawn_early(tmp_path):
    import ray

    from dfa_ray.data.records import write_records
    from dfa_ray.data.schema import rows_to_table
    from tests.helpers import make_rows, write_raw

    large, small = str(tmp_path / "large"), str(tmp_path / "small")
    write_records(make_rows(120, prefix="large"), large, target_shard_bytes=16 * 1024)
    write_records(make_rows(12, seed=1, prefix="small"), small)
    ray.init(address="local", num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False,
             logging_level="warning")  # fmt: skip
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        orders = [
            [row["frame_id"] for row in train.read_source([large, small], seed).iter_rows()]
            for seed in (1, 2)
        ]
        repeated = [row["frame_id"] for row in train.read_source([large, small, small, small], 1).iter_rows()]
        # A file without joints_valid (read as all valid) shuffles together with the others.
        table = rows_to_table(make_rows(6, prefix="novalid")).drop_columns(["joints_valid"])
        novalid = str(Path(write_raw(tmp_path / "novalid" / "part-0.parquet", table)).parent)
        mixed = list(train.read_source([large, novalid, novalid], 2).iter_rows())
    finally:
        ray.shutdown()
    # A dataset named three times is read once and drawn three times as often.
    assert len(repeated) == 120 + 3 * 12 and set(repeated) == set(orders[0])
    assert all(repeated.count(f"small{i:04d}") == 3 for i in range(12))
    assert len(mixed) == 132 and all(
        list(row["joints_valid"]) == [1] * 17 for row in mixed if row["frame_id"].startswith("novalid")
    )
    for order in orders:
        assert len(order) == len(set(order)) == 132
        # Read in order, the small dataset's frames would be the last 12; shuffled, a few come early.
        assert sum(frame_id.startswith("small") for frame_id in order[:66]) >= 2
    assert orders[0] != orders[1]  # each stage draws in its own order
