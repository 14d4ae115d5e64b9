"""jobs/prepare_data.py: synthetic datasets to local dirs and S3, validation and its exit codes, grids."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pyarrow as pa
import pytest

from dfa_ray import storage
from dfa_ray.data import synthetic
from dfa_ray.data.records import read_records, write_records
from dfa_ray.data.schema import SCHEMA, rows_to_table, table_to_rows
from tests.helpers import IMAGES, assert_rows_equal, load_job, make_rows, write_raw

SCRIPT = Path(__file__).resolve().parents[1] / "jobs" / "prepare_data.py"
prepare_data = load_job("prepare_data")


def _bad_dataset(directory: Path) -> None:
    data = rows_to_table(make_rows(10)).to_pydict()
    data["joints_3d"][2] = [math.nan] * 51
    data["image"][5] = IMAGES[0][:-25]
    data["camera"][7] = [-1.0, 500.0, 1.0, 1.0]
    write_raw(directory / "part-0.parquet", pa.table(data, schema=SCHEMA))


def test_validate_good_dataset_prints_a_summary(tmp_path, capsys):
    write_records(make_rows(10), tmp_path)
    assert prepare_data.main(["validate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for expected in (
        "frames:      10 in 1 file(s)",
        "labeled 2D:  80.0%",
        "labeled 3D:  40.0%",
        "24x24 8",
        "32x32 2",
    ):
        assert expected in out
    assert "S0 4, S1 3, S2 3" in out and "sit 5, walk 5" in out and "OK" in out


def test_validate_bad_dataset_names_every_bad_frame(tmp_path, capsys):
    _bad_dataset(tmp_path)
    assert prepare_data.main(["validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "frames:      10" in captured.out
    assert "BAD f0002: joints_3d contains NaN" in captured.err
    assert "BAD f0005: PNG is truncated" in captured.err
    assert "BAD f0007: camera focal lengths must be positive" in captured.err
    assert "INVALID: 3 bad frame(s) of 10" in captured.err


@pytest.mark.parametrize("kind", ["missing", "foreign"])
def test_validate_unreadable_dataset_exits_2_naming_the_problem(kind, tmp_path, capsys):
    if kind == "foreign":
        write_raw(tmp_path / "other.parquet", pa.table({"a": [1]}))
    assert prepare_data.main(["validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        "no *.parquet files" if kind == "missing" else f"{tmp_path}/other.parquet: missing required"
    ) in err


def test_validate_an_s3_dataset(s3_prefix, capsys):
    write_records(make_rows(6), s3_prefix)
    assert prepare_data.main(["validate", s3_prefix]) == 0
    assert f"dataset:     {s3_prefix}" in capsys.readouterr().out
    storage.write_bytes(
        storage.join(s3_prefix, "bad.parquet"),
        (storage.read_bytes(storage.join(s3_prefix, "part-00000.parquet"))),
    )
    assert prepare_data.main(["validate", s3_prefix]) == 1
    assert "BAD f0000: duplicate frame_id" in capsys.readouterr().err


def test_validate_decodes_images_unless_told_to_check_headers_only(tmp_path, capsys):
    rows = make_rows(4)
    corrupt = bytearray(IMAGES[1])
    corrupt[60:90] = b"\x00" * 30  # pixel data: the header and end marker stay intact
    rows[2]["image"] = bytes(corrupt)
    write_records(rows, tmp_path)
    assert prepare_data.main(["validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "images:      decoded" in captured.out
    assert "BAD f0002: image could not be decoded" in captured.err
    assert prepare_data.main(["validate", "--headers-only", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "images:      headers and end markers checked only; pixel data not decoded" in out
    assert "OK: every frame is valid (image headers only)" in out


def test_validate_on_a_frozen_store_fails_in_bounded_time_naming_the_endpoint(s3, s3_prefix):
    """Issue 16: with the store SIGSTOPped (it accepts connections and never answers) validate
    printed nothing for minutes. The tries and timeouts come from the environment; short ones here
    keep the test to seconds (the defaults' bound: tests/test_storage.py, docs/operations.md)."""
    write_records(make_rows(4), s3_prefix)
    env = dict(
        os.environ,
        PYTHONPATH=str(SCRIPT.parents[1]),
        AWS_MAX_ATTEMPTS="2",
        DFA_S3_CONNECT_TIMEOUT="1",
        DFA_S3_REQUEST_TIMEOUT="1",
    )
    pid = s3.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "validate", s3_prefix],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        seconds = time.perf_counter() - start
    finally:
        os.kill(pid, signal.SIGCONT)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: could not list {s3_prefix} at {s3.endpoint_url}: "), lines[0]
    assert "ListObjectsV2" in lines[0] and "AWS_MAX_ATTEMPTS=2 tries timed out" in lines[0]
    assert s3.env()["AWS_SECRET_ACCESS_KEY"] not in result.stderr
    assert seconds < 60, f"gave up after {seconds:.0f} s"
    assert read_records(s3_prefix).num_rows == 4  # the store answers again


def test_validate_as_a_script_sets_the_exit_code(tmp_path):
    _bad_dataset(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[1]))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1 and "BAD f0002" in result.stderr and "frames:      10" in result.stdout
    usage = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120
    )
    assert usage.returncode == 2 and "validate" in usage.stderr


@pytest.mark.parametrize("where", ["local", "s3"])
def test_synthetic_writes_valid_records_that_round_trip_losslessly(where, tmp_path, request, capsys):
    out = request.getfixturevalue("s3_prefix") if where == "s3" else str(tmp_path / "source")
    args = ["synthetic", "--domain", "synthetic-source", "--split", "train", "--n", "300", "--workers", "2"]
    assert prepare_data.main([*args, "--out", out, "--shard-mb", "2"]) == 0
    assert "wrote 300 frames" in capsys.readouterr().out
    assert prepare_data.main(["validate", out]) == 0
    table = read_records(out)
    assert len(storage.list_files(out, suffix=".parquet")) > 1  # sharded at 2 MiB
    # Rendering is a pure function of (domain, split, index, seed): the records hold exactly those frames.
    expected = list(synthetic.generate("synthetic-source", "train", 300))
    assert_rows_equal(table_to_rows(table), expected)
    # reader -> writer -> reader is lossless, to and from S3 and local alike.
    copy = storage.join(out, "copy") if where == "s3" else str(tmp_path / "copy")
    write_records(table, copy)
    assert read_records(copy).equals(table)


def test_synthetic_renders_in_a_style_with_fields_changed_and_names_an_unknown_field(tmp_path, capsys):
    out = str(tmp_path / "fuller")
    args = ["synthetic", "--domain", "synthetic-source", "--split", "train", "--n", "4", "--workers", "1"]
    assert (
        prepare_data.main(
            [*args, "--style", "flesh_mm=[40, 110]", "--style", "contrast=[0.5,0.8]", "--out", out]
        )
        == 0
    )
    style = dataclasses.replace(synthetic.STYLES["synthetic-source"], flesh_mm=(40, 110), contrast=(0.5, 0.8))
    assert_rows_equal(
        table_to_rows(read_records(out)),
        list(synthetic.generate("synthetic-source", "train", 4, style=style)),
    )
    capsys.readouterr()
    assert prepare_data.main([*args, "--style", "flesh=[40,110]", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--style 'flesh=[40,110]'" in err and "flesh_mm" in err
    assert (
        prepare_data.main([*args, "--style", "flesh_mm=[110,40]", "--out", str(tmp_path / "reversed")]) == 2
    )
    assert "flesh_mm must be a range" in capsys.readouterr().err


def test_writers_refuse_an_existing_dataset_before_converting(tmp_path, capsys):
    args = ["synthetic", "--domain", "synthetic-real", "--split", "test", "--n", "5", "--out", str(tmp_path)]
    assert prepare_data.main(args) == 0
    capsys.readouterr()
    assert prepare_data.main(args) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} already holds a dataset" in err and "frames in" not in err


def test_grid_saves_one_band_per_source(tmp_path, capsys):
    write_records(make_rows(5), tmp_path / "data")
    out = tmp_path / "pictures" / "grid.png"
    argv = ["grid", "synthetic-source", "synthetic-real", str(tmp_path / "data"), "--n", "5"]
    assert prepare_data.main([*argv, "--columns", "4", "--tile", "32", "--out", str(out)]) == 0
    picture = cv2.imread(str(out))
    # Three bands, each a 24 px label strip and two lines of 4 tiles.
    assert picture.shape == (3 * (24 + 2 * 32), 4 * 32, 3)
    assert prepare_data.main(["grid", "nowhere-dataset", "--out", str(out)]) == 2
    assert "no *.parquet files at nowhere-dataset" in capsys.readouterr().err
