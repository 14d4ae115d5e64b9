"""The experiments report redraws from ``results.json`` alone: no test data set, no trials."""

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pytest

from dfa_ray.data import synthetic
from dfa_ray.data.images import decode_image
from dfa_ray.data.records import write_records
from dfa_ray.experiments import example_frames, example_rows
from dfa_ray.method.fitting import LOAD_COLUMNS, Frames, load_frames, subset_frames
from dfa_ray.report import FIGURES, _round_curves
from dfa_ray.report import example_frames as report_examples
from tests.helpers import load_job, make_rows

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "results" / "bench"


def test_example_frames_carry_the_stored_crops_and_true_joints_through_json(tmp_path):
    rows = make_rows(8)
    write_records(rows, tmp_path / "test")
    wanted = ["f0006", "f0000", "f0002"]  # the figure's order, not the data set's
    picked = example_rows(str(tmp_path / "test"), wanted, ["frame_id", "image", "joints_3d"])
    results = json.loads(json.dumps({"examples": example_frames(picked)}))
    images, truth = report_examples(results)
    assert list(images) == wanted
    for frame_id in wanted:
        row = rows[int(frame_id[1:])]
        np.testing.assert_array_equal(images[frame_id], decode_image(row["image"]))
        np.testing.assert_array_equal(truth[frame_id], row["joints_3d"])
    with pytest.raises(ValueError, match=r"lacks the example frames \['nope'\]"):
        example_rows(str(tmp_path / "test"), ["f0000", "nope"], ["frame_id"])


def test_example_rows_decode_as_the_whole_split_does(tmp_path):
    # trial_skeletons.py predicts the examples from these rows alone, without reading the split whole.
    rows = list(synthetic.generate("synthetic-real", "test", 6, crop_size=32))
    write_records(rows, tmp_path / "test")
    wanted = [rows[5]["frame_id"], rows[1]["frame_id"]]
    picked = Frames.from_rows(example_rows(str(tmp_path / "test"), wanted, LOAD_COLUMNS), 32)
    whole = load_frames(str(tmp_path / "test"), 32)
    expected = subset_frames(whole, np.array([whole.frame_ids.index(f) for f in wanted]))
    for field in dataclasses.fields(Frames):
        np.testing.assert_array_equal(getattr(picked, field.name), getattr(expected, field.name), field.name)


def test_the_committed_report_redraws_where_its_data_does_not_exist(tmp_path, monkeypatch):
    shutil.copytree(COMMITTED, tmp_path / "bench", ignore=shutil.ignore_patterns("report"))
    committed_page = (COMMITTED / "report" / "index.html").read_text()
    # results.json names its test set by a path relative to where the experiments ran: from here
    # it names nothing, as on a clean clone, so reading it would fail the redraw.
    monkeypatch.chdir(tmp_path)
    results = json.loads(Path("bench/results.json").read_text())
    assert not Path(results["data"]["test"]).exists()

    assert load_job("report").main(["bench"]) == 0
    report = tmp_path / "bench" / "report"
    assert (report / "index.html").read_text() == committed_page
    for name in FIGURES:
        image = cv2.imread(str(report / name))
        assert image is not None and min(image.shape[:2]) > 100, name


def test_results_without_their_example_frames_are_refused_with_the_way_out(tmp_path, capsys):
    results = json.loads((COMMITTED / "results.json").read_text())
    del results["examples"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert load_job("report").main([str(tmp_path)]) == 2
    assert "jobs/experiments.py with --resume" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_the_rounds_figure_holds_a_stopped_seed_at_its_last_error():
    def trial(method, errors):
        return {"method": method, "rounds": [{"mpjpe": e, "pa_mpjpe": e / 2} for e in errors]}

    # "Only target" stops when its held-out frames stop improving: seeds stop after different rounds.
    stopped = [trial("only-target", [200.0, 150.0]), trial("only-target", [200.0, 160.0, 140.0, 130.0])]
    groups = {"only-source": [trial("only-source", [200.0])] * 2, "only-target": stopped}
    figure, ax = plt.subplots()
    _round_curves(ax, groups, ["only-source", "only-target"], "mpjpe")
    [line] = [line for line in ax.get_lines() if line.get_label() == "Only target"]
    np.testing.assert_allclose(line.get_ydata(), [200.0, 155.0, 145.0, 140.0])
    plt.close(figure)
