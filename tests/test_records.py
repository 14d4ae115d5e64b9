"""Record schema v1: images, row/table conversion, sharded writer, validating reader (local and S3)."""

from __future__ import annotations

import math
import tempfile

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfa_ray import storage
from dfa_ray.data import images
from dfa_ray.data.images import ImageError, decode_image, encode_image
from dfa_ray.data.records import (
    RecordWriter,
    machine_labels,
    read_records,
    read_records_with_report,
    skeleton,
    write_records,
)
from dfa_ray.data.schema import (
    SCHEMA,
    EmptyDatasetError,
    RecordError,
    SchemaError,
    rows_to_table,
    table_to_arrays,
    table_to_rows,
)
from dfa_ray.data.validation import BadRecordsError, validate_table
from tests.helpers import IMAGES, assert_rows_equal, make_rows, write_raw

# --------------------------------------------------------------------------------------------- images


_RNG = np.random.default_rng(7)


def test_png_round_trip_is_exact_and_rgb_ordered():
    rgb = _RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    data = encode_image(rgb)
    np.testing.assert_array_equal(decode_image(data), rgb)
    # OpenCV itself reads BGR: the stored file really holds red, not blue.
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[0, 0].tolist() == [0, 0, 255]
    assert images.image_size(data) == (16, 16)


def test_jpeg_round_trip_is_close():
    rgb = np.full((32, 32, 3), (200, 40, 90), np.uint8)
    decoded = decode_image(encode_image(rgb, format="jpeg"))
    assert decoded.shape == (32, 32, 3) and np.abs(decoded.astype(int) - rgb).max() <= 3


def test_encode_refuses_non_square_or_non_rgb():
    with pytest.raises(ImageError, match="16x8"):
        encode_image(np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(ImageError, match="RGB"):
        encode_image(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="bmp"):
        encode_image(np.zeros((8, 8, 3), np.uint8), format="bmp")


def _cv2_encode(image: np.ndarray, ext: str = ".png") -> bytes:
    return cv2.imencode(ext, image)[1].tobytes()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"definitely not an image", "neither PNG nor JPEG"),
        (_cv2_encode(np.zeros((8, 12, 3), np.uint8)), "12x8, expected a square"),
        (_cv2_encode(np.zeros((8, 8), np.uint8)), "grayscale"),
        (_cv2_encode(np.zeros((8, 8, 4), np.uint8)), "RGBA"),
        (_cv2_encode(np.zeros((8, 8, 3), np.uint16)), "16-bit"),
        (_cv2_encode(np.zeros((8, 8), np.uint8), ".jpg"), "1 channel"),
        (IMAGES[0][:-20], "truncated"),
        (IMAGES[-1][:-30], "truncated"),
        (IMAGES[0][:20], "truncated"),
    ],
)
def test_decode_names_the_frame_and_the_reason(data, reason):
    with pytest.raises(ImageError, match=reason) as info:
        decode_image(data, frame_id="frame-42")
    assert "frame-42" in str(info.value)


def test_corrupt_middle_is_caught_by_a_full_decode():
    data = bytearray(IMAGES[1])
    data[60:90] = b"\x00" * 30
    images.image_size(bytes(data))  # header and end marker still look fine
    with pytest.raises(ImageError, match="could not be decoded"):
        decode_image(bytes(data), frame_id="x")


# -------------------------------------------------------------------------------------- conversions


def test_rows_to_table_and_back_is_lossless():
    rows = make_rows(12)
    table = rows_to_table(rows)
    assert table.schema.equals(SCHEMA) and table.num_rows == 12
    assert_rows_equal(table_to_rows(table), rows)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"joints_2d": np.zeros((16, 2))}, "joints_2d has shape"),
        ({"joints_3d": np.zeros((17, 2))}, "joints_3d has shape"),
        ({"camera": [1.0, 2.0]}, "camera has shape"),
        ({"joints_valid": np.ones(16)}, "joints_valid has shape"),
        ({"image": None}, "'image' is missing"),
        ({"subject": None}, "'subject' is missing"),
    ],
)
def test_rows_to_table_names_the_frame_with_a_bad_shape(change, message):
    rows = make_rows(3)
    rows[1] = {**rows[1], **change}
    with pytest.raises(RecordError, match=message) as info:
        rows_to_table(rows)
    assert "f0001" in str(info.value)


_floats = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def _rows(draw):
    n = draw(st.integers(1, 6))
    rows = []
    for i in range(n):
        row = {
            "frame_id": draw(st.text(min_size=1, max_size=8)) + f"#{i}",
            "image": draw(st.sampled_from(IMAGES)),
            "camera": np.array(
                [draw(st.floats(1, 5000, width=32)) for _ in range(2)] + [0.5, -3.0], np.float32
            ),
            "subject": draw(st.text(max_size=5)),
            "action": draw(st.text(max_size=5)),
        }
        for key, shape in (("joints_2d", (17, 2)), ("joints_3d", (17, 3))):
            if draw(st.booleans()):
                # A few drawn values repeated to fill the joints: whole arrays of drawn floats overran
                # Hypothesis's buffer for most inputs, failing its filter_too_much health check.
                values = draw(st.lists(_floats, min_size=1, max_size=8))
                row[key] = np.resize(np.array(values, np.float32), shape)
        if draw(st.booleans()):
            row["joints_valid"] = np.array(
                draw(st.lists(st.integers(0, 1), min_size=17, max_size=17)), np.uint8
            )
        rows.append(row)
    return rows


@given(_rows())
@settings(max_examples=40, deadline=None)
def test_property_conversion_round_trip(rows):
    assert_rows_equal(table_to_rows(rows_to_table(rows)), rows)


@given(_rows())
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_write_read_round_trip(rows):
    with tempfile.TemporaryDirectory() as directory:
        summary = write_records(rows, directory, target_shard_bytes=2048)
        assert summary.num_frames == len(rows)
        assert_rows_equal(table_to_rows(read_records(directory, decode_images=True)), rows)


def test_table_to_arrays_fills_nulls():
    rows = make_rows(10)
    arrays = table_to_arrays(rows_to_table(rows))
    assert arrays["joints_2d"].shape == (10, 17, 2) and arrays["joints_2d"].dtype == np.float32
    assert arrays["joints_3d"].shape == (10, 17, 3) and arrays["camera"].shape == (10, 4)
    assert arrays["has_3d"].tolist() == [r["joints_3d"] is not None for r in rows]
    assert np.isnan(arrays["joints_3d"][1]).all() and np.isnan(arrays["joints_2d"][4]).all()
    np.testing.assert_array_equal(arrays["joints_2d"][0], rows[0]["joints_2d"])
    assert (arrays["joints_valid"][1] == 1).all()  # null joints_valid = all valid
    np.testing.assert_array_equal(arrays["joints_valid"][3], rows[3]["joints_valid"])
    assert arrays["image"][2] == rows[2]["image"] and arrays["frame_id"].tolist()[:2] == ["f0000", "f0001"]


def test_table_to_arrays_accepts_a_ray_style_numpy_batch():
    rows = make_rows(6)
    batch = {}
    for key in ("frame_id", "image", "joints_2d", "joints_3d", "camera"):
        batch[key] = np.empty(len(rows), dtype=object)
        batch[key][:] = [row.get(key) for row in rows]
    arrays = table_to_arrays(batch)
    assert arrays["joints_2d"].shape == (6, 17, 2)
    assert arrays["has_3d"].tolist() == [r["joints_3d"] is not None for r in rows]
    assert (arrays["joints_valid"] == 1).all()


# ------------------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("where", ["local", "s3"])
def test_write_read_round_trip_is_lossless(where, tmp_path, request):
    uri = str(tmp_path / "ds") if where == "local" else request.getfixturevalue("s3_prefix")
    rows = make_rows(40)
    summary = write_records(rows, uri, target_shard_bytes=8 * 1024)
    assert summary.num_frames == 40 and len(summary.files) > 1
    assert summary.files == storage.list_files(uri, ".parquet")
    table, report = read_records_with_report(uri, decode_images=True)
    assert report.ok and report.num_rows == 40 and len(report.files) == len(summary.files)
    assert_rows_equal(table_to_rows(table), rows)
    # The files also read as a plain Parquet dataset with the v1 schema.
    filesystem, path = storage.resolve(summary.files[0])
    schema = pq.read_schema(path, filesystem=filesystem)
    assert schema.metadata == SCHEMA.metadata and schema.names == SCHEMA.names
    # Parquet names list items "element"; the types are otherwise SCHEMA's.
    assert [str(f.type).replace("element", "item") for f in schema] == [str(f.type) for f in SCHEMA]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_machine_made_labels_are_marked_in_every_file_and_read_back(where, tmp_path, request):
    uri = str(tmp_path / "ds") if where == "local" else request.getfixturevalue("s3_prefix")
    note = "joints_2d are machine-made, not annotated: a detector"
    rows = make_rows(40)
    summary = write_records(rows, uri, target_shard_bytes=8 * 1024, machine_labels=note, skeleton="mediapipe")
    assert len(summary.files) > 1
    for file in summary.files:
        assert machine_labels(file) == note and skeleton(file) == "mediapipe"
    assert machine_labels(uri) == note and skeleton(uri) == "mediapipe"
    assert_rows_equal(table_to_rows(read_records(uri)), make_rows(40))  # still plain schema v1
    plain = str(tmp_path / "plain")
    write_records(make_rows(4), plain)
    assert machine_labels(plain) is None and skeleton(plain) == "h36m"
    with pytest.raises(ValueError, match="unknown skeleton 'smpl'"):
        write_records(make_rows(4), str(tmp_path / "other"), skeleton="smpl")


def test_shards_stay_under_the_target_size(tmp_path):
    rows = make_rows(200)
    target = 12 * 1024
    summary = write_records(rows, tmp_path, target_shard_bytes=target, row_group_bytes=5000)
    sizes = [(tmp_path / f.rsplit("/", 1)[1]).stat().st_size for f in summary.files]
    assert len(sizes) >= 8 and max(sizes) <= target
    assert sum(sizes) == summary.num_bytes
    # Nearly full: each shard but the last uses at least half of the target.
    assert min(sizes[:-1]) > target / 2
    assert [r["frame_id"] for r in table_to_rows(read_records(tmp_path, columns=["frame_id"]))] == [
        r["frame_id"] for r in rows
    ]


def test_a_row_larger_than_the_target_gets_its_own_file(tmp_path):
    big = encode_image(_RNG.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    rows = make_rows(6)
    rows[3]["image"] = big
    summary = write_records(rows, tmp_path, target_shard_bytes=len(big) // 2)
    counts = [pq.ParquetFile(f).metadata.num_rows for f in summary.files]
    assert sum(counts) == 6 and 1 in counts
    assert_rows_equal(table_to_rows(read_records(tmp_path)), rows)


def test_many_small_writes_are_grouped_into_row_groups(tmp_path):
    with RecordWriter(tmp_path, row_group_bytes=64 * 1024) as writer:
        for row in make_rows(120):
            writer.write([row])
    summary = writer.close()
    assert summary.num_frames == 120 and len(summary.files) == 1
    # ~260 KB in 64 KB row groups, not 120 one-row groups.
    assert pq.ParquetFile(summary.files[0]).num_row_groups <= 6


def test_writer_refuses_bad_rows_and_keeps_good_batches(tmp_path):
    rows = make_rows(20)
    bad = [dict(row) for row in make_rows(5, prefix="b")]
    bad[2]["joints_3d"] = np.full((17, 3), np.nan, np.float32)
    bad[4]["camera"] = [0.0, 500.0, 1.0, 1.0]
    with RecordWriter(tmp_path) as writer:
        writer.write(rows[:10])
        with pytest.raises(BadRecordsError) as info:
            writer.write(bad)
        message = str(info.value)
        assert "b0002: joints_3d contains NaN" in message and "b0004: camera focal lengths" in message
        with pytest.raises(BadRecordsError, match="f0003: duplicate frame_id"):
            writer.write(rows[3:4])
        writer.write(rows[10:])
        writer.write([dict(bad[0], frame_id="b-retry")])
    assert writer.close().num_frames == 21
    assert read_records(tmp_path).num_rows == 21


def test_writer_accepts_tables_and_fills_joints_valid(tmp_path):
    table = rows_to_table(make_rows(5)).drop_columns(["joints_valid"])
    table = table.cast(
        table.schema.set(table.schema.get_field_index("camera"), pa.field("camera", pa.list_(pa.float64())))
    )
    write_records(table, tmp_path)
    back = read_records(tmp_path)
    assert back.schema.equals(SCHEMA) and back.column("joints_valid").null_count == 5
    with pytest.raises(SchemaError, match="missing required column.*'action'"):
        write_records(table.drop_columns(["action"]), tmp_path / "other")


def test_writer_never_overwrites(tmp_path):
    write_records(make_rows(3), tmp_path)
    with pytest.raises(FileExistsError, match="part-00000.parquet"):
        write_records(make_rows(3), tmp_path)
    write_records(make_rows(3, prefix="g"), tmp_path, name_prefix="more")
    assert read_records(tmp_path).num_rows == 6


@pytest.mark.parametrize("where", ["local", "s3"])
def test_writer_deletes_its_files_when_the_block_fails(where, tmp_path, request):
    uri = str(tmp_path / "ds") if where == "local" else request.getfixturevalue("s3_prefix")
    with pytest.raises(RuntimeError, match="converter crashed"):
        with RecordWriter(uri, target_shard_bytes=4096, row_group_bytes=2048) as writer:
            writer.write(make_rows(30))
            assert storage.list_files(uri, ".parquet")  # shards were already written
            raise RuntimeError("converter crashed")
    assert storage.list_files(uri, ".parquet") == []


# ------------------------------------------------------------------------------------------ reading


def _set(column: str, value):
    def change(data: dict) -> None:
        data[column][2] = value

    return change


def _set_item(column: str, index: int, value):
    def change(data: dict) -> None:
        data[column][2] = list(data[column][2])
        data[column][2][index] = value

    return change


BAD_ROW_CASES = {
    "joints_2d_length": (_set("joints_2d", [1.0] * 32), "joints_2d has 32 values, expected 34"),
    "joints_3d_length": (_set("joints_3d", [1.0] * 50), "joints_3d has 50 values, expected 51"),
    "joints_3d_nan": (_set_item("joints_3d", 7, math.nan), "joints_3d contains NaN"),
    "joints_2d_inf": (_set_item("joints_2d", 0, math.inf), "joints_2d contains NaN"),
    "camera_missing": (_set("camera", None), "camera is missing"),
    "camera_length": (_set("camera", [1.0, 2.0, 3.0]), "camera has 3 values, expected 4"),
    "camera_inf": (_set_item("camera", 2, -math.inf), "camera contains NaN"),
    "focal_zero": (_set_item("camera", 0, 0.0), "focal lengths must be positive"),
    "focal_negative": (_set_item("camera", 1, -5.0), "focal lengths must be positive"),
    "joints_valid_length": (_set("joints_valid", [1] * 16), "joints_valid has 16 values"),
    "joints_valid_values": (_set_item("joints_valid", 3, 7), "other than 0 and 1"),
    "image_garbage": (_set("image", b"\x00garbage"), "neither PNG nor JPEG"),
    "image_truncated": (_set("image", IMAGES[0][:-40]), "truncated"),
    "image_missing": (_set("image", None), "image is missing"),
    "image_non_square": (_set("image", _cv2_encode(np.zeros((10, 14, 3), np.uint8))), "14x10"),
    "image_grayscale": (_set("image", _cv2_encode(np.zeros((10, 10), np.uint8))), "grayscale"),
    "subject_missing": (_set("subject", None), "subject is missing"),
    "duplicate_id": (_set("frame_id", "f0000"), "duplicate frame_id (row 2 of"),
}


def _raw_dataset(directory, change=None, n=8) -> tuple[list[dict], str]:
    """A dataset written straight with pyarrow: row 2 of file 1 altered by ``change``."""
    rows = make_rows(n)
    for row in rows:
        row.setdefault("joints_valid", np.ones(17, np.uint8))
    first, second = rows_to_table(rows[: n // 2]).to_pydict(), rows_to_table(rows[n // 2 :])
    if change is not None:
        change(first)
    write_raw(directory / "a.parquet", pa.table(first, schema=SCHEMA))
    write_raw(directory / "b.parquet", second)
    return rows, str(directory / "a.parquet")


@pytest.mark.parametrize("case", sorted(BAD_ROW_CASES))
def test_each_bad_row_is_named_and_nothing_else_is_lost(case, tmp_path):
    change, reason = BAD_ROW_CASES[case]
    rows, _ = _raw_dataset(tmp_path, change)
    with pytest.raises(BadRecordsError) as info:
        read_records(tmp_path)
    label = "f0000" if case == "duplicate_id" else "f0002"  # a duplicate is reported under its own id
    assert [frame for frame, _ in info.value.report.bad] == [label]
    assert reason in info.value.report.bad[0][1]
    assert f"{label}: {info.value.report.bad[0][1]}" in str(info.value)

    table, report = read_records_with_report(tmp_path, on_bad="skip")
    assert report.bad == info.value.report.bad and report.num_rows == 8
    assert_rows_equal(table_to_rows(table), rows[:2] + rows[3:])


def test_every_bad_frame_is_listed_and_rows_without_id_are_located(tmp_path):
    rows = make_rows(6)
    data = rows_to_table(rows).to_pydict()
    data["frame_id"][1] = None
    data["frame_id"][3] = ""
    data["joints_2d"][4] = [math.nan] * 34
    data["camera"][4] = [0.0, 1.0, 1.0, 1.0]
    path = write_raw(tmp_path / "only.parquet", pa.table(data, schema=SCHEMA))
    with pytest.raises(BadRecordsError) as info:
        read_records(tmp_path)
    bad = dict(info.value.report.bad)
    assert set(bad) == {f"<row 1 of {path}>", f"<row 3 of {path}>", "f0004"}
    assert "joints_2d contains NaN" in bad["f0004"] and "focal lengths" in bad["f0004"]
    table = read_records(tmp_path, on_bad="skip")
    assert table.column("frame_id").to_pylist() == ["f0000", "f0002", "f0005"]


def test_full_decode_is_optional_and_catches_corrupt_image_data(tmp_path):
    corrupt = bytearray(IMAGES[1])
    corrupt[60:90] = b"\x00" * 30
    _raw_dataset(tmp_path, _set("image", bytes(corrupt)))
    assert read_records(tmp_path).num_rows == 8  # header checks pass
    with pytest.raises(BadRecordsError, match="f0002: image could not be decoded"):
        read_records(tmp_path, decode_images=True)


def test_bad_rows_on_s3_are_named_too(s3_prefix, tmp_path):
    rows, _ = _raw_dataset(tmp_path, _set_item("joints_3d", 0, math.nan))
    for name in ("a.parquet", "b.parquet"):
        storage.write_bytes(storage.join(s3_prefix, name), (tmp_path / name).read_bytes())
    with pytest.raises(BadRecordsError, match="f0002: joints_3d contains NaN") as info:
        read_records(s3_prefix)
    assert f"{s3_prefix}/a.parquet" in str(info.value) or s3_prefix in str(info.value)
    assert read_records(s3_prefix, on_bad="skip").num_rows == 7


def _sixteen_joint_table() -> pa.Table:
    data = {
        "frame_id": ["a", "b"],
        "image": [IMAGES[0]] * 2,
        "joints_2d": [[1.0] * 32] * 2,
        "joints_3d": [[1.0] * 48, None],
        "camera": [[1.0, 1.0, 1.0, 1.0]] * 2,
        "subject": ["s"] * 2,
        "action": ["a"] * 2,
    }
    return pa.table(data)


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"x": [1, 2], "y": ["a", "b"]}), "missing required column.*'frame_id'"),
        (rows_to_table(make_rows(3)).drop_columns(["camera"]), r"missing required column\(s\) \['camera'\]"),
        (_sixteen_joint_table(), "every joints_2d has \\[32\\] values, expected 34"),
        (
            rows_to_table(make_rows(2)).set_column(2, "joints_2d", pa.array(["x", "y"])),
            "column 'joints_2d' has type string",
        ),
        (
            rows_to_table(make_rows(2)).replace_schema_metadata({b"dfa_ray.record_schema": b"2"}),
            "record schema version '2'",
        ),
    ],
)
def test_a_file_that_is_not_schema_v1_is_named(table, message, tmp_path):
    write_records(make_rows(3, prefix="good"), tmp_path)
    path = write_raw(tmp_path / "zz-foreign.parquet", table)
    with pytest.raises(SchemaError, match=message) as info:
        read_records(tmp_path, on_bad="skip")
    assert path in str(info.value)


def test_not_a_parquet_file_is_named(tmp_path, s3_prefix):
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(SchemaError, match="not a readable Parquet file") as info:
        read_records(tmp_path)
    assert str(tmp_path / "junk.parquet") in str(info.value)
    storage.write_bytes(storage.join(s3_prefix, "junk.parquet"), b"nope")
    with pytest.raises(SchemaError, match=f"{s3_prefix}/junk.parquet"):
        read_records(s3_prefix)


def test_empty_datasets_are_errors(tmp_path, s3_prefix):
    with pytest.raises(EmptyDatasetError, match=f"no \\*.parquet files at {tmp_path}"):
        read_records(tmp_path)
    with pytest.raises(EmptyDatasetError, match="no \\*.parquet files at s3://"):
        read_records(s3_prefix)
    write_raw(tmp_path / "empty.parquet", rows_to_table([]))
    with pytest.raises(EmptyDatasetError, match="no rows"):
        read_records(tmp_path)


def test_column_subsets_and_a_single_file(tmp_path):
    rows = make_rows(8)
    summary = write_records(rows, tmp_path)
    table = read_records(tmp_path, columns=["joints_3d", "subject"])
    assert table.column_names == ["joints_3d", "subject"] and table.num_rows == 8
    assert read_records(summary.files[0]).num_rows == 8
    with pytest.raises(ValueError, match="unknown column"):
        read_records(tmp_path, columns=["joints_4d"])


def test_files_without_joints_valid_read_as_all_valid(tmp_path):
    rows = make_rows(4)
    write_raw(tmp_path / "p.parquet", rows_to_table(rows).drop_columns(["joints_valid"]))
    table = read_records(tmp_path)
    assert table.column("joints_valid").null_count == 4
    assert (table_to_arrays(table)["joints_valid"] == 1).all()


def test_validation_report_statistics():
    rows = make_rows(10)
    report = validate_table(rows_to_table(rows), source="mem")
    assert report.ok and report.num_rows == 10
    assert report.labeled_2d == 0.8 and report.labeled_3d == 0.4
    assert report.image_sizes == {"24x24": 8, "32x32": 2}
    assert report.subjects == {"S0": 4, "S1": 3, "S2": 3} and report.actions == {"sit": 5, "walk": 5}
    text = report.summary()
    assert "frames:      10" in text and "24x24 8" in text and "labeled 3D:  40.0%" in text
