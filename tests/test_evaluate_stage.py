"""Evaluation on the actors (``stages.evaluate``): per-frame errors whose summary is the in-process one."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from dfa_ray.config import LabelConfig
from dfa_ray.data import synthetic
from dfa_ray.data.records import read_records, write_records
from dfa_ray.data.validation import InputError
from dfa_ray.method import checkpoints, fitting
from dfa_ray.stages.evaluate import COLUMNS, Evaluator, evaluate_frames, summarize_errors
from dfa_ray.stages.label import decode_frames
from tests.helpers import TINY, on_actors_without_ray, tiny_checkpoint

# The actors' model runs its float32 forward pass on other batches and with another thread count
# than the in-process evaluation, so predictions may differ in their last bits (~1e-7 relative);
# the millimetre errors and every later step are float64 and the means order-independent.
RELATIVE = 1e-5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    """24 frames of two crop sizes; frames 3 and 17 without joints_3d (skipped, as in one process)."""
    rows = list(synthetic.generate("synthetic-real", "test", 12, crop_size=48))
    rows += list(synthetic.generate("synthetic-real", "train", 12, crop_size=40))
    for i in (3, 17):
        rows[i]["joints_3d"] = None
    uri = str(tmp_path_factory.mktemp("data") / "test")
    write_records(rows, uri)
    return uri


def _mean_pose(uri: str) -> np.ndarray:
    return fitting.dataset_mean_pose([uri])


def in_process(uri: str, checkpoint: str, mean_pose: np.ndarray | None) -> dict:
    model, _ = checkpoints.load(checkpoint)
    return fitting.evaluate(model, fitting.load_frames(uri, TINY.input_size), mean_pose=mean_pose)


def assert_same_summary(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_same_summary(got[key], value)
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=RELATIVE), key
        else:
            assert got[key] == value, key


def test_per_frame_errors_from_shuffled_batches_summarize_to_the_in_process_evaluation(
    checkpoint, test_set, tmp_path
):
    mean_pose = _mean_pose(test_set)
    expected = in_process(test_set, checkpoint, mean_pose)
    assert expected["num_frames"] == 22 and "mean_pose_mpjpe" in expected and "per_action" in expected
    first = on_actors_without_ray(test_set, checkpoint, tmp_path / "a", mean_pose, 5, seed=0)
    again = on_actors_without_ray(test_set, checkpoint, tmp_path / "b", mean_pose, 7, seed=1)
    summary = summarize_errors(str(first), expected_frames=24)
    assert_same_summary(summary, expected)
    # Other batches and another order give the same frames' errors: the means are exactly equal.
    assert summarize_errors(str(again), expected_frames=24) == summary
    rows = pq.read_table(first).to_pydict()
    without = [i for i, f in enumerate(rows["frame_id"]) if not rows["has_3d"][i]]
    assert len(without) == 2 and all(np.isnan(rows["mpjpe"][i]) for i in without)
    # Without a mean pose there is no baseline, as in one process.
    plain = on_actors_without_ray(test_set, checkpoint, tmp_path / "c", None, 8, seed=0)
    assert_same_summary(summarize_errors(str(plain)), in_process(test_set, checkpoint, None))


def test_evaluation_fails_naming_undecodable_frames_and_lost_or_repeated_files(
    checkpoint, test_set, tmp_path
):
    bad = on_actors_without_ray(
        test_set, checkpoint, tmp_path / "bad", None, 8, 0, corrupt={"synthetic-real/test/0/0000005"}
    )
    frame_ids = pq.read_table(bad, columns=["frame_id"]).column("frame_id").to_pylist()
    assert "synthetic-real/test/0/0000005" in frame_ids, frame_ids[:3]
    with pytest.raises(
        InputError, match="1 of 24 test frames could not be evaluated: frame synthetic-real/test/0/0000005: "
    ):
        summarize_errors(str(bad))
    good = on_actors_without_ray(test_set, checkpoint, tmp_path / "good", None, 8, 0)
    with pytest.raises(RuntimeError, match="24 frames were evaluated, the input has 25"):
        summarize_errors(str(good), expected_frames=25)
    (good / "part-00000.parquet").rename(good / "again.parquet")
    pq.write_table(pq.read_table(good / "again.parquet"), good / "part-00000.parquet")
    with pytest.raises(ValueError, match="8 frame\\(s\\) evaluated more than once"):
        summarize_errors(str(good))


def test_an_all_null_column_from_ray_reads_as_frames_without_3d(checkpoint, test_set):
    """Ray Data hands a column of nothing but nulls on as float NaN: those frames have no joints_3d."""
    table = read_records(test_set, columns=COLUMNS, validate=False).slice(0, 4)
    batch = {name: table.column(name).to_numpy(zero_copy_only=False) for name in COLUMNS}
    decoded = decode_frames(batch, TINY.input_size)
    out = Evaluator(checkpoint, LabelConfig(), None)(
        {
            **decoded,
            "joints_3d": np.full(4, np.nan),
            "action": np.full(4, np.nan),
            "error": np.full(4, np.nan),
        }
    )
    assert not out["has_3d"].any() and np.isnan(out["joint_mpjpe"]).all() and list(out["action"]) == [""] * 4
    assert all(e is None for e in out["error"])


@pytest.mark.slow  # a local Ray with two evaluation actors
def test_the_ray_stage_gives_the_in_process_metrics(checkpoint, test_set, tmp_path):
    import ray

    mean_pose = _mean_pose(test_set)
    ray.init(address="local", num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False,
             logging_level="warning")  # fmt: skip
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        config = LabelConfig(actors=2, batch_size=8, rows_per_block=8)
        out = str(tmp_path / "eval")
        evaluate_frames(test_set, checkpoint, out, config, TINY.input_size, mean_pose)
    finally:
        ray.shutdown()
    assert_same_summary(
        summarize_errors(out, expected_frames=24), in_process(test_set, checkpoint, mean_pose)
    )
