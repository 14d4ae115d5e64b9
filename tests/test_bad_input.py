"""Bad input (issue 6, point 5): each kind gets a clear error naming the input, or, for a single bad
frame, a skip that is counted, reported by frame_id and bounded by ``label.max_error_fraction``.

One section per item of the issue's list; where another file already covers an item fully, a
comment points to it instead of a second copy. Nothing here starts Ray: the driver's checks run
before it, and the tests replace ``driver.connect`` with a function that fails if it is reached.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import secrets
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dfa_ray import driver, storage
from dfa_ray.config import Config, ConfigError, LabelConfig, load_config, replace
from dfa_ray.data.images import ImageError, decode_image, encode_image
from dfa_ray.data.records import check_frame_ids, read_records, write_records
from dfa_ray.data.schema import EmptyDatasetError, rows_to_table
from dfa_ray.data.validation import BadRecordsError, InputError
from dfa_ray.method import checkpoints
from dfa_ray.method.model import PoseModel
from dfa_ray.method.policy import num_kept
from dfa_ray.ops.rundir import RunDir
from dfa_ray.stages import label as label_stage
from dfa_ray.stages.label import (
    LABEL_SCHEMA,
    MAX_LISTED_FAILURES,
    PseudoLabeler,
    decode_frames,
    read_labels,
    select_labels,
)
from dfa_ray.storage import StorageError
from tests.helpers import TINY, load_job, make_rows, tiny_checkpoint, write_raw

self_train_job = load_job("self_train")


@pytest.fixture(scope="module")
def labeler(tmp_path_factory):
    """The label stage's two steps as Ray Data chains them: a decode task, then the labeling actor."""
    path = tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))
    actor = PseudoLabeler(path, round_index=1, config=LabelConfig(), sigma=1.0)
    return lambda batch: actor(decode_frames(batch, TINY.input_size))


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the driver gets as far as starting (or joining) Ray."""

    def connect(settings):
        raise AssertionError("Ray was started before the bad input was reported")

    monkeypatch.setattr(driver, "connect", connect)


def _run_driver(argv: list[str], capsys) -> str:
    """``jobs/self_train.py`` with ``argv``: must exit 2 with exactly one ``error:`` line; returns it."""
    assert self_train_job.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _rgb(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _claiming(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a JPEG) with a frame header claiming another size: OpenCV refuses huge ones by raising."""
    out = bytearray(data)
    at = out.index(b"\xff\xc0")
    out[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(out)


PNG = encode_image(_rgb(TINY.input_size))
JPEG = encode_image(_rgb(TINY.input_size, 1), "jpeg")
# What the labeler must accept (a square crop of another size is resized) or refuse, by kind.
WELL_FORMED = {"png": PNG, "jpeg": JPEG, "larger": encode_image(_rgb(48)), "smaller": encode_image(_rgb(16))}
REFUSED = {
    "non-square": (encode_image(_rgb(40)[:30], require_square=False), "40x30, expected a square"),
    "grayscale png": (cv2.imencode(".png", _rgb(32)[..., 0])[1].tobytes(), "grayscale"),
    "grayscale jpeg": (cv2.imencode(".jpg", _rgb(32)[..., 0])[1].tobytes(), "1 channel"),
    "rgba": (cv2.imencode(".png", np.dstack([_rgb(32), _rgb(32)[..., :1]]))[1].tobytes(), "RGBA"),
    "huge header": (_claiming(JPEG, 40000, 40000), "40000x40000"),
    "empty": (b"", "image is empty"),
    "missing": (None, "image is missing"),
    "garbage": (b"\x00garbage", "neither PNG nor JPEG"),
    "text": ("iVBORw0KGgo=", "TypeError"),  # base64 text where bytes belong
}


# ------------------------------------------------------------------------------ corrupt/truncated images
# Records: tests/test_records.py BAD_ROW_CASES (image_garbage, image_truncated, image_missing) and
# test_decode_names_the_frame_and_the_reason / test_full_decode_is_optional_and_catches_corrupt_image_data.


def test_an_image_opencv_refuses_to_decode_is_a_bad_frame_not_a_crash(tmp_path):
    """A header claiming more pixels than OpenCV's limit made ``cv2.imdecode`` raise cv2.error,
    which neither the reader's validation nor the labeler caught."""
    huge = _claiming(JPEG, 40000, 40000)
    with pytest.raises(ImageError, match="frame f7: image could not be decoded \\(40000x40000"):
        decode_image(huge, "f7")
    rows = make_rows(3)
    rows[1]["image"] = huge
    write_records(rows, tmp_path)  # the header is square 8-bit RGB: only a full decode finds it
    with pytest.raises(BadRecordsError, match="f0001: image could not be decoded") as info:
        read_records(tmp_path, decode_images=True)
    assert [frame for frame, _ in info.value.report.bad] == ["f0001"]


def _image_cases() -> st.SearchStrategy:
    """(image bytes or None, expected outcome): "ok", "error", or "either" for random byte edits."""

    def edited(data: bytes, edits: list[tuple[int, int]]) -> bytes:
        out = bytearray(data)
        for position, value in edits:
            out[position % len(out)] = value
        return bytes(out)

    base = st.sampled_from([PNG, JPEG])
    edit = st.tuples(st.integers(0, 10**6), st.integers(0, 255))
    return st.one_of(
        st.sampled_from(sorted(WELL_FORMED.values())).map(lambda data: (data, "ok")),
        st.sampled_from(sorted(REFUSED.values(), key=str)).map(lambda case: (case[0], "error")),
        base.flatmap(lambda data: st.integers(0, len(data) - 1).map(lambda cut: (data[:cut], "error"))),
        st.builds(edited, base, st.lists(edit, min_size=1, max_size=8)).map(lambda data: (data, "either")),
        st.binary(max_size=200).map(lambda data: (data, "error")),
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.text("abcXYZ019-_./", min_size=1, max_size=6), _image_cases()),
        min_size=1,
        max_size=6,
        unique_by=lambda case: case[0],
    )
)
def test_property_the_labeler_returns_one_row_per_frame_and_names_each_failure(labeler, cases):
    frame_ids = [frame_id for frame_id, _ in cases]
    images = np.empty(len(cases), dtype=object)
    images[:] = [image for _, (image, _) in cases]
    out = labeler({"frame_id": np.array(frame_ids, dtype=object), "image": images})
    assert list(out) == LABEL_SCHEMA.names
    assert out["frame_id"].tolist() == frame_ids
    assert all(len(column) == len(cases) for column in out.values())
    for i, (frame_id, (_, expected)) in enumerate(cases):
        error = out["error"][i]
        if error is None:
            assert expected != "error", (frame_id, expected)
            assert np.isfinite(out["joints"][i]).all() and 0 < out["confidence"][i] <= 1
        else:
            assert expected != "ok", error
            assert error.startswith(f"frame {frame_id}: "), error
            assert np.isnan(out["joints"][i]).all() and out["confidence"][i] == 0


def test_an_unexpected_decoder_error_fails_its_frame_not_the_batch(labeler, monkeypatch):
    """Whatever one frame's decode raises stays in that frame's row: raised from the Ray Data UDF
    it would fail the whole stage."""
    decode = label_stage.decode_resized

    def buggy(data, size):
        if data == JPEG:
            raise RuntimeError("decoder bug")
        return decode(data, size)

    monkeypatch.setattr(label_stage, "decode_resized", buggy)
    out = labeler(
        {"frame_id": np.array(["a", "b"], dtype=object), "image": np.array([PNG, JPEG], dtype=object)}
    )
    assert out["error"].tolist() == [None, "frame b: image could not be decoded (RuntimeError: decoder bug)"]
    assert np.isfinite(out["joints"][0]).all() and np.isnan(out["joints"][1]).all()


# ---------------------------------------------------------------------------------- wrong image sizes
# Records: tests/test_records.py BAD_ROW_CASES image_non_square / image_grayscale, and
# test_decode_names_the_frame_and_the_reason (non-square, grayscale, RGBA, 16-bit, 1-channel JPEG).


def test_the_labeler_resizes_other_square_crops_and_names_every_refused_image(labeler):
    names = [*WELL_FORMED, *REFUSED]
    images = np.empty(len(names), dtype=object)
    images[:] = [*WELL_FORMED.values(), *(data for data, _ in REFUSED.values())]
    out = labeler({"frame_id": np.array(names, dtype=object), "image": images})
    for i, name in enumerate(names):
        if name in WELL_FORMED:
            assert out["error"][i] is None and np.isfinite(out["joints"][i]).all(), name
        else:
            assert out["error"][i].startswith(f"frame {name}: ") and REFUSED[name][1] in out["error"][i]


# ------------------------------------------------------------------------------------- NaN/inf joints
# tests/test_records.py BAD_ROW_CASES joints_3d_nan, joints_2d_inf, camera_inf (reader, by frame_id),
# test_writer_refuses_bad_rows_and_keeps_good_batches (writer); a NaN confidence in selection:
# tests/test_policy.py test_select_rejects_bad_input.

# ---------------------------------------------------------------------------------- wrong-length lists
# tests/test_records.py BAD_ROW_CASES *_length (reader), test_rows_to_table_names_the_frame_with_a_bad_shape
# (writer), test_a_file_that_is_not_schema_v1_is_named (a whole file shaped for another skeleton).


# ---------------------------------------------------------------------------------- duplicate frame_ids
# Within a read: tests/test_records.py BAD_ROW_CASES duplicate_id; in a round's labels:
# tests/test_stages.py test_selection_refuses_a_frame_labeled_twice.


def _dataset_with_repeats(directory: pathlib.Path) -> str:
    """Two files written separately (each valid on its own) that share f0000 and f0001."""
    write_records(make_rows(4), directory, name_prefix="a")
    write_records(make_rows(2), directory, name_prefix="b")
    return str(directory)


def test_repeated_frame_ids_are_named_with_their_dataset(tmp_path):
    uri = _dataset_with_repeats(tmp_path / "target")
    with pytest.raises(InputError) as info:
        check_frame_ids(uri)
    assert str(info.value).startswith(f"{uri}: 2 frame_id(s) occur more than once (2 extra row(s) of 6)")
    assert "'f0000' x2, 'f0001' x2" in str(info.value)
    assert check_frame_ids(str(tmp_path / "target" / "a-00000.parquet")) == 4
    table = rows_to_table(make_rows(3)).to_pydict()
    table["frame_id"][1] = ""
    no_id = write_raw(tmp_path / "no-id" / "x.parquet", table)
    with pytest.raises(InputError, match=f"{no_id}: 1 of 3 frame\\(s\\) have no frame_id"):
        check_frame_ids(no_id)


def test_a_target_with_repeated_frames_stops_the_driver_before_ray_and_writes_nothing(
    tmp_path, capsys, no_ray
):
    target = _dataset_with_repeats(tmp_path / "target")
    runs = tmp_path / "runs"
    line = _run_driver(["--storage", str(runs), "--target", target], capsys)
    assert f"error: {target}: 2 frame_id(s) occur more than once" in line
    assert not runs.exists()  # fixing the input needs no --resume and no new run name


# -------------------------------------------------------------------------------------- empty datasets
# Readers: tests/test_records.py test_empty_datasets_are_errors (no files, no rows; local and S3).


@pytest.mark.parametrize("kind", ["no files", "no rows", "missing"])
def test_an_empty_input_dataset_stops_the_driver_naming_it(kind, tmp_path, capsys, no_ray):
    empty = tmp_path / "test-set"
    if kind == "no files":
        empty.mkdir()
    elif kind == "no rows":
        write_raw(empty / "part-0.parquet", rows_to_table([]))
    good = str(tmp_path / "good")
    write_records(make_rows(4), good)
    argv = ["--storage", str(tmp_path / "runs"), "--source", good, "--target", good, "--test", str(empty)]
    line = _run_driver(argv, capsys)
    expected = {
        "no files": f"no *.parquet files at {empty}",
        "no rows": f"{empty}: 1 Parquet file(s) but no rows",
        "missing": f"no *.parquet files at {empty} (it does not exist)",
    }
    assert line == f"error: {expected[kind]}"
    assert not (tmp_path / "runs").exists()


def test_an_empty_synthetic_split_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="data.synthetic_target_frames must be at least 1, got 0"):
        load_config(None, ["data.synthetic_target_frames=0"])


# ---------------------------------------------------------------------------------- a policy outside [0,1]
# Policy values: tests/test_policy.py test_invalid_policies_raise and test_select_rejects_bad_input.


@pytest.mark.parametrize(
    "override, message",
    [
        ("policy=60%,10%,120%", "policy '60%,10%,120%': maximum must be .* got 1.2"),
        ("policy=-0.1,0.1,0.9", "policy '-0.1,0.1,0.9': initial must be .* got -0.1"),
        ("label.max_error_fraction=1.5", "label.max_error_fraction must be in \\[0, 1\\], got 1.5"),
        ("label.max_error_fraction=-0.01", "label.max_error_fraction must be in \\[0, 1\\], got -0.01"),
        ("label.max_error_fraction=.nan", "label.max_error_fraction must be in \\[0, 1\\], got nan"),
    ],
    ids=["policy above 1", "policy below 0", "limit above 1", "limit below 0", "limit nan"],
)
def test_fractions_outside_0_1_are_config_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


# ------------------------------------------------------------------------------------ a missing checkpoint
# jobs/evaluate.py: tests/test_jobs_evaluate_predict.py test_evaluate_missing_checkpoint_exits_2_naming_it.


def test_a_missing_init_checkpoint_stops_the_driver_before_ray_and_writes_nothing(tmp_path, capsys, no_ray):
    missing = str(tmp_path / "nowhere")
    runs = tmp_path / "runs"
    line = _run_driver(["--storage", str(runs), "--init-checkpoint", missing], capsys)
    assert line == f"error: init_checkpoint {missing}: {missing}/model.pt does not exist"
    assert not runs.exists()


class _RunsCode:
    """A pickle that would create ``marker`` when unpickled."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_file_that_is_not_a_checkpoint_is_named_and_never_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pt"
    for data in (b"not a checkpoint", b"", checkpoints.to_bytes(PoseModel(TINY))[:300]):
        path.write_bytes(data)
        with pytest.raises(ValueError, match=f"{path} is not a dfa-ray model checkpoint"):
            checkpoints.load(str(path))
    torch.save({"model_config": {}, "state_dict": _RunsCode(marker)}, path)
    with pytest.raises(ValueError, match=f"{path} is not a dfa-ray model checkpoint") as info:
        checkpoints.load(str(path))
    assert not marker.exists()
    assert "weights_only=False" not in str(info.value)  # torch's advice would run the file's code


# ------------------------------------------ everything checkable is checked before Ray (issue 16, point 4)


def _small_dataset(tmp_path: pathlib.Path, name: str, n: int, **column: object) -> str:
    """``n`` make_rows frames at ``tmp_path/name``; ``column`` replaces one column's every value,
    written straight with pyarrow so that the writer's own checks cannot refuse it."""
    table = rows_to_table(make_rows(n)).to_pydict()
    for key, value in column.items():
        table[key] = [value] * n
    return write_raw(tmp_path / name / "part-0.parquet", table)


def _checkpoint(tmp_path: pathlib.Path, cut: bool) -> str:
    """A TINY checkpoint, cut in half (a truncated copy) or whole (a model the config does not hold)."""
    path = pathlib.Path(tiny_checkpoint(tmp_path))
    if cut:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return str(path)


def _text_file(tmp_path: pathlib.Path) -> str:
    (tmp_path / "notes.pt").write_text("epoch 1 loss 0.3\n")
    return str(tmp_path / "notes.pt")


# id -> (argv for jobs/self_train.py given tmp_path, what the error line must say, as a regex).
BAD_DRIVER_INPUTS = {
    "no workers": (lambda tmp: ["--num-workers", "0"], r"workers\.num_workers must be at least 1, got 0"),
    "no label actors": (lambda tmp: ["--label-actors", "0"], r"label\.actors must be at least 1, got 0"),
    "nan learning rate": (
        lambda tmp: ["--set", "adapt.lr=.nan"],
        r"adapt\.lr must be a finite number > 0, got nan",
    ),
    "negative learning rate": (
        lambda tmp: ["--set", "pretrain.lr=-1e-3"],
        r"pretrain\.lr must be .* got -0\.001",
    ),
    "empty label batch": (
        lambda tmp: ["--set", "label.batch_size=0"],
        r"label\.batch_size must be at least 1, got 0",
    ),
    "negative epochs": (
        lambda tmp: ["--set", "pretrain.epochs=-3"],
        r"pretrain\.epochs must be at least 0, got -3",
    ),
    "no adaptation epochs": (
        lambda tmp: ["--set", "adapt.epochs=0"],
        r"adapt\.epochs must be at least 1 when rounds",
    ),
    "unknown optimizer": (
        lambda tmp: ["--set", "adapt.optimizer=adamw"],
        r"adapt\.optimizer must be 'adam' or 'sgd', got 'adamw'",
    ),
    "policy keeping nothing": (
        lambda tmp: ["--policy", "0%,0%,0%"],
        r"policy '0%,0%,0%': initial must be above 0: the first round",
    ),
    "two bad values": (
        lambda tmp: ["--num-workers", "0", "--set", "label.rows_per_block=-1"],
        r"label\.rows_per_block must be at least 1, got -1; workers\.num_workers must be at least 1, got 0",
    ),
    "text file as checkpoint": (
        lambda tmp: ["--init-checkpoint", _text_file(tmp)],
        r"init_checkpoint \S+/notes\.pt is not a dfa-ray model checkpoint: "
        r"it is a text file \(it begins 'epoch 1",
    ),
    "truncated checkpoint": (
        lambda tmp: ["--init-checkpoint", _checkpoint(tmp, cut=True)],
        r"init_checkpoint \S+/model\.pt is not a dfa-ray model checkpoint: "
        r"it is truncated or damaged: \d+ bytes without a readable zip directory",
    ),
    "checkpoint of another model": (
        lambda tmp: ["--init-checkpoint", _checkpoint(tmp, cut=False)],
        r"init_checkpoint \S+/model\.pt does not match the config: "
        r"model\.input_size is 64 in the config, 32 in the checkpoint",
    ),
    "text file as pretrained weights": (
        lambda tmp: [
            "--set",
            "model.backbone=efficientnet_lite0",
            "--set",
            f"model.pretrained={_text_file(tmp)}",
        ],
        r"model\.pretrained \S+/notes\.pt: not a torch state_dict",
    ),
    "target image column of numbers": (
        lambda tmp: ["--target", _small_dataset(tmp, "target", 4, image=7)],
        r"\S+/target/part-0\.parquet: column 'image' has type int64, expected binary",
    ),
    "test set without 3D labels": (
        lambda tmp: ["--test", str(pathlib.Path(_small_dataset(tmp, "test", 4, joints_3d=None)).parent)],
        r"data\.test \S+/test: none of its 4 frames has joints_3d",
    ),
    "3D labels given as a 2D-only source": (
        lambda tmp: ["--source-2d", str(pathlib.Path(_small_dataset(tmp, "mpii", 4)).parent)],
        r"data\.source_2d \S+/mpii: has frames with joints_3d; give 3D sources as data\.source",
    ),
    "2D-only source without 2D labels": (
        lambda tmp: [
            "--source-2d",
            str(pathlib.Path(_small_dataset(tmp, "mpii", 4, joints_3d=None, joints_2d=None)).parent),
        ],
        r"data\.source_2d \S+/mpii: none of its 4 frames has joints_2d",
    ),
    "source too small for one step": (
        lambda tmp: ["--source", _small_dataset(tmp, "source", 4)],
        r"the source's 4 frames cannot fill one training step of "
        r"workers\.num_workers=2 x pretrain\.batch_size=32",
    ),
    "round 1 too small for one step": (
        lambda tmp: ["--target", _small_dataset(tmp, "target", 8)],
        r"the 4 of 8 target frames that policy '60%,10%,90%' keeps in round 1 "
        r"cannot fill one training step of workers\.num_workers=2 x adapt\.batch_size=32",
    ),
}


@pytest.mark.parametrize("case", BAD_DRIVER_INPUTS)
def test_a_bad_value_or_input_stops_the_driver_before_ray_naming_it(case, tmp_path, capsys, no_ray):
    make_argv, message = BAD_DRIVER_INPUTS[case]
    runs = tmp_path / "runs"
    line = _run_driver(["--storage", str(runs), *make_argv(tmp_path)], capsys)
    assert re.search(message, line), line
    assert not runs.exists()  # fixing the value needs no --resume and no new run name


def test_the_driver_script_refuses_a_bad_value_in_seconds(tmp_path):
    """The whole process, imports included, as an operator runs it (issue 16: under 45 s)."""
    script = pathlib.Path(__file__).resolve().parents[1] / "jobs" / "self_train.py"
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(script), "--storage", str(tmp_path / "runs"), "--num-workers", "0"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(script.parents[1])),
        timeout=120,
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "error: invalid config: workers.num_workers must be at least 1, got 0\n"
    assert seconds < 45 and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------- an unwritable storage URI


@pytest.mark.parametrize("kind", ["below a file", "read-only directory"])
def test_an_unwritable_storage_uri_is_a_storage_error_naming_it(kind, tmp_path, capsys, no_ray):
    if kind == "below a file":
        (tmp_path / "file").write_text("x")
        uri, reason = str(tmp_path / "file" / "runs"), "Not a directory"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes to read-only directories; 'below a file' covers root")
        (tmp_path / "ro").mkdir(mode=0o555)
        uri, reason = str(tmp_path / "ro" / "runs"), "Permission denied"
    with pytest.raises(StorageError) as info, driver.open_run(Config(storage=uri), resume=False):
        pass
    assert str(info.value).startswith(f"storage {uri} is not writable: ") and reason in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    line = _run_driver(["--storage", uri], capsys)
    assert line == f"error: {info.value}"


# ------------------------------------------- a run_name that is not one storage key (issue 6, point 6)


def test_a_run_name_is_one_storage_key_component():
    for name in ("../x", "a/b", "/abs", ".hidden", "-flag", "", "demo\n", "x" * 129, "a b"):
        with pytest.raises(ConfigError, match=f"run_name must be .* got {re.escape(repr(name))}"):
            load_config(None, [f"run_name={json.dumps(name)}"])


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.text(max_size=12), st.text("ab9._-/\\ ", max_size=6)))
def test_property_an_accepted_run_name_never_leaves_the_storage_root(name):
    try:
        config = load_config(None, [f"run_name={json.dumps(name)}"])
    except ConfigError as exc:
        assert "run_name" in str(exc)
        return
    root = RunDir("s3://bucket/runs", config.run_name).root
    assert root == f"s3://bucket/runs/{name}" and "/" not in name and name not in (".", "..")


# ------------------------------------------------------------------------------ a bucket that does not exist


def test_a_missing_bucket_is_named_and_never_created(s3, tmp_path, capsys, no_ray):
    bucket = f"dfa-missing-{secrets.token_hex(4)}"
    uri = f"s3://{bucket}/runs"
    # SeaweedFS creates a bucket on the first write to it: without the check this run would start.
    with pytest.raises(StorageError) as info, driver.open_run(Config(storage=uri), resume=False):
        pass
    assert str(info.value) == f"storage {uri}: bucket s3://{bucket} does not exist; create it first"
    line = _run_driver(["--storage", uri], capsys)
    secret = s3.env()["AWS_SECRET_ACCESS_KEY"]
    assert line == f"error: {info.value}" and secret not in line
    assert bucket not in [b["Name"] for b in storage.s3_client().list_buckets()["Buckets"]]
    # An input dataset in a missing bucket is named, and said to be missing.
    with pytest.raises(EmptyDatasetError, match=f"no \\*.parquet files at s3://{bucket}/data \\(it does not"):
        check_frame_ids(f"s3://{bucket}/data")


def test_the_run_on_an_existing_bucket_opens(s3_prefix, monkeypatch):
    monkeypatch.setattr(driver, "connect", lambda settings: None)
    with driver.open_run(Config(storage=s3_prefix), resume=False) as run:
        assert storage.exists(run.config)


# ------------------------------------------------- individual bad frames: counted, listed, and bounded


def _write_labels(folder: str, confidences, errors) -> None:
    n = len(confidences)
    table = pa.table(
        {
            "frame_id": [f"f{i:03d}" for i in range(n)],
            "joints": [[0.1] * 51] * n,
            "joint_confidence": [[float(c)] * 17 for c in confidences],
            "confidence": np.asarray(confidences, np.float32),
            "error": list(errors),
        },
        schema=LABEL_SCHEMA,
    )
    os.makedirs(folder, exist_ok=True)
    pq.write_table(table.slice(0, n // 2), os.path.join(folder, "a.parquet"))
    pq.write_table(table.slice(n // 2), os.path.join(folder, "b.parquet"))


def test_too_many_failed_frames_fail_the_round_naming_labels_limit_key_and_frames(tmp_path):
    labels, selected = str(tmp_path / "labels"), str(tmp_path / "selected.parquet")
    errors = [None] * 10
    for i in (7, 2, 5):
        errors[i] = f"frame f{i:03d}: PNG is truncated (no IEND chunk at the end)"
    _write_labels(labels, np.linspace(0.9, 0.1, 10), errors)
    with pytest.raises(InputError) as info:
        select_labels(labels, selected, 0.5, max_error_fraction=0.2)
    assert str(info.value) == (
        f"{labels}: 3 of 10 frames (30.00%) could not be labeled, more than label.max_error_fraction=0.2 "
        "allows; first failures: frame f002: PNG is truncated (no IEND chunk at the end); "
        "frame f005: PNG is truncated (no IEND chunk at the end); frame f007: PNG is truncated (no IEND "
        "chunk at the end)"
    )
    assert not os.path.exists(selected)
    stats = select_labels(labels, selected, 0.5, max_error_fraction=0.3)  # exactly at the limit
    assert stats["num_failed"] == 3 and [f["frame_id"] for f in stats["failed_frames"]] == [
        "f002",
        "f005",
        "f007",
    ]


def test_a_round_that_failed_on_the_limit_resumes_with_a_higher_one(tmp_path, monkeypatch):
    config = Config(storage=str(tmp_path))
    monkeypatch.setattr(driver, "connect", lambda settings: None)
    with driver.open_run(config, resume=False) as run:
        pass
    driver.check_resume(run, replace(config, ["label.max_error_fraction=0.5"]), resume=True)
    with pytest.raises(ConfigError, match="differs .* in: label.batch_size"):
        driver.check_resume(run, replace(config, ["label.batch_size=3"]), resume=True)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1, width=32), st.booleans()), min_size=1, max_size=60),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_property_selection_skips_failed_frames_and_fails_iff_over_the_limit(rows, limit, fraction):
    confidences = [c for c, _ in rows]
    errors = [f"frame f{i:03d}: image is missing" if bad else None for i, (_, bad) in enumerate(rows)]
    failed = sorted(f"f{i:03d}" for i, (_, bad) in enumerate(rows) if bad)
    with tempfile.TemporaryDirectory() as folder:
        labels, selected = os.path.join(folder, "labels"), os.path.join(folder, "selected.parquet")
        _write_labels(labels, confidences, errors)
        if len(failed) / len(rows) > limit:
            with pytest.raises(InputError, match=f"{len(failed)} of {len(rows)} frames") as info:
                select_labels(labels, selected, fraction, limit)
            assert labels in str(info.value) and "label.max_error_fraction" in str(info.value)
            assert failed[0] in str(info.value)
            assert not os.path.exists(selected)
            return
        stats = select_labels(labels, selected, fraction, limit)
        kept = read_labels(selected).column("frame_id").to_pylist()
    usable = len(rows) - len(failed)
    assert stats["num_frames"] == len(rows) and stats["num_failed"] == len(failed)
    assert stats["num_kept"] == len(kept) == num_kept(usable, fraction)
    assert not set(kept) & set(failed)
    assert [f["frame_id"] for f in stats["failed_frames"]] == failed[:MAX_LISTED_FAILURES]
    assert sum(stats["confidence_histogram"]["counts"]) == usable
    if kept and usable > len(kept):
        # The kept frames are the most confident usable ones.
        kept_min = min(c for i, (c, bad) in enumerate(rows) if f"f{i:03d}" in kept)
        dropped_max = max(c for i, (c, bad) in enumerate(rows) if not bad and f"f{i:03d}" not in kept)
        assert kept_min >= dropped_max or math.isclose(kept_min, dropped_max)
