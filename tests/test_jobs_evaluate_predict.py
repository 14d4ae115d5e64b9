"""jobs/evaluate.py, jobs/predict.py and jobs/pretrain.py on a tiny model and six synthetic frames."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

from dfa_ray import driver, storage
from dfa_ray.data import synthetic
from dfa_ray.data.records import write_records
from dfa_ray.method import checkpoints, heatmaps, metrics
from dfa_ray.method.fitting import evaluate, load_frames, predict_mm
from dfa_ray.method.model import ModelConfig, PoseModel
from dfa_ray.method.skeleton import MEDIAPIPE_BONE_MM
from dfa_ray.ops.rundir import RunDir
from dfa_ray.stages import evaluate as evaluate_stage
from dfa_ray.stages import train
from tests.helpers import load_job, on_actors_without_ray

evaluate_job = load_job("evaluate")
predict_job = load_job("predict")
pretrain_job = load_job("pretrain")

TINY = ModelConfig(input_size=32, heatmap_size=8, widths=(8, 8, 8, 8), stem_width=8, decoder_width=8)
TINY_FLAGS = [
    "model.input_size=32", "model.heatmap_size=8", "model.widths=[8, 8, 8, 8]", "model.stem_width=8",
    "model.decoder_width=8",
]  # fmt: skip


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A saved tiny model, six labeled synthetic frames and the same frames without joints_3d."""
    root = tmp_path_factory.mktemp("assets")
    model = PoseModel(TINY)
    checkpoint = root / "ckpt"
    checkpoints.save(model, checkpoint, stage="test")
    rows = list(synthetic.generate("synthetic-real", "test", 6, crop_size=32))
    write_records(rows, root / "data")
    write_records([{**row, "joints_3d": None} for row in rows], root / "no3d")
    return {"checkpoint": str(checkpoint), "data": str(root / "data"), "no3d": str(root / "no3d")}


def _png_shape(path) -> tuple[int, ...]:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape


def _lines(directory) -> list[dict]:
    return [json.loads(line) for line in (directory / "predictions.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("form", ["directory", "file"])
def test_evaluate_prints_one_json_object_matching_training_evaluate(form, assets, capsys):
    checkpoint = assets["checkpoint"] + ("/model.pt" if form == "file" else "")
    assert evaluate_job.main(["--checkpoint", checkpoint, "--data", assets["data"], "--batch-size", "4"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 1
    result = json.loads(captured.out)
    for key in ("mpjpe", "pa_mpjpe", "per_joint", "per_action", "num_frames", "checkpoint", "data"):
        assert key in result
    assert result["num_frames"] == 6 and result["num_frames_without_3d"] == 0
    assert result["checkpoint"] == checkpoint and result["data"] == assets["data"]
    assert result["checkpoint_info"] == {"stage": "test"}
    # This checkpoint carries no mean pose and none was asked for: no baseline, and the output says so.
    assert result["mean_pose_from"] is None and "mean_pose_mpjpe" not in result
    model, _ = checkpoints.load(assets["checkpoint"])
    expected = evaluate(model, load_frames(assets["data"], TINY.input_size))
    assert result["mpjpe"] == pytest.approx(expected["mpjpe"], rel=1e-9)
    assert result["pa_mpjpe"] == pytest.approx(expected["pa_mpjpe"], rel=1e-9)
    assert result["per_action"].keys() == expected["per_action"].keys()
    assert len(result["per_joint"]) == 17
    assert "evaluated 6 frames" in captured.err


def test_evaluate_shows_the_mean_pose_of_the_checkpoint_or_of_a_given_dataset(assets, tmp_path, capsys):
    frames = load_frames(assets["data"], TINY.input_size)
    pose = metrics.mean_pose(frames.joints_3d)
    checkpoint = str(tmp_path / "with-pose.pt")
    checkpoints.save(PoseModel(TINY), checkpoint, stage="pretrain", **checkpoints.pose_info(pose))
    assert evaluate_job.main(["--checkpoint", checkpoint, "--data", assets["data"]]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    expected = metrics.mean_pose_baseline(np.round(pose, 1), frames.joints_3d)
    assert result["mean_pose_from"] == "checkpoint"
    assert result["mean_pose_mpjpe"] == pytest.approx(expected["mpjpe"])
    assert result["mean_pose_pa_mpjpe"] == pytest.approx(expected["pa_mpjpe"])
    assert result["mpjpe_over_mean_pose"] == pytest.approx(result["mpjpe"] / expected["mpjpe"])
    assert "x mean pose" in captured.err
    # --mean-pose-from takes the baseline from that dataset's labeled frames instead.
    args = [
        "--checkpoint",
        assets["checkpoint"],
        "--data",
        assets["data"],
        "--mean-pose-from",
        assets["data"],
    ]
    assert evaluate_job.main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mean_pose_from"] == assets["data"]
    assert result["mean_pose_mpjpe"] == pytest.approx(
        metrics.mean_pose_baseline(pose, frames.joints_3d)["mpjpe"]
    )
    args[-1] = assets["no3d"]
    assert evaluate_job.main(args) == 2
    assert "none of its frames has joints_3d" in capsys.readouterr().err


def test_evaluate_without_joints_3d_exits_2_naming_the_dataset(assets, capsys):
    assert evaluate_job.main(["--checkpoint", assets["checkpoint"], "--data", assets["no3d"]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"error: {assets['no3d']}: none of its 6 frames has joints_3d" in captured.err


def test_evaluate_missing_checkpoint_exits_2_naming_it(assets, tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    assert evaluate_job.main(["--checkpoint", missing, "--data", assets["data"]]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and missing in captured.err and len(captured.err.strip().splitlines()) == 1


def test_evaluate_missing_dataset_exits_2_naming_it(assets, tmp_path, capsys):
    missing = str(tmp_path / "no-data")
    assert evaluate_job.main(["--checkpoint", assets["checkpoint"], "--data", missing]) == 2
    assert missing in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- predict


def test_predict_on_records_writes_joints_and_pictures(assets, tmp_path):
    out = tmp_path / "preds"
    args = ["--checkpoint", assets["checkpoint"], "--data", assets["data"], "--n", "4", "--out", str(out)]
    assert predict_job.main([*args, "--panel-size", "64"]) == 0
    lines = _lines(out)
    assert len(lines) == 4
    frames = load_frames(assets["data"], TINY.input_size)
    model, _ = checkpoints.load(assets["checkpoint"])
    expected_mm = predict_mm(model, frames)[:4]
    for line, frame_id, want in zip(lines, frames.frame_ids, expected_mm):
        assert line["frame_id"] == frame_id
        assert np.asarray(line["joints_normalised"]).shape == (17, 3)
        assert np.asarray(line["joints_2d"]).shape == (17, 2)
        mm = np.asarray(line["joints_mm"])
        assert mm.shape == (17, 3) and np.all(mm[0] == 0)
        # Root-relative millimetres: the true root depth and the record's camera, as evaluation uses.
        np.testing.assert_allclose(mm, want - want[0], atol=0.02)
        assert line["root_depth_mm"] == pytest.approx(
            frames.joints_3d[frames.frame_ids.index(frame_id), 0, 2]
        )
        assert line["root_depth_source"] == "joints_3d"
        assert line["png"] == frame_id.replace("/", "_") + ".png"
        assert _png_shape(out / line["png"]) == (64, 128, 3)
    assert sorted(p.name for p in out.iterdir()) == sorted(["predictions.jsonl"] + [x["png"] for x in lines])


def test_predict_sheet_shows_pictures_evenly_spaced_through_the_frames(assets, tmp_path):
    out = tmp_path / "preds"
    args = ["--checkpoint", assets["checkpoint"], "--data", assets["data"], "--n", "5", "--out", str(out)]
    assert predict_job.main([*args, "--panel-size", "64", "--sheet", "3"]) == 0
    lines = _lines(out)
    sheet = cv2.imread(str(out / "sheet.png"))
    assert sheet.shape == (2 * 64, 2 * 128, 3)  # three pictures two to a row
    # Frames 0, 2 and 4 in order; the caption covers only the bottom rows of each.
    for tile, line in zip(
        [sheet[:64, :128], sheet[:64, 128:], sheet[64:, :128]], [lines[0], lines[2], lines[4]]
    ):
        picture = cv2.imread(str(out / line["png"]))
        np.testing.assert_array_equal(tile[:40], picture[:40])
    assert not sheet[64:, 128:].any()


def test_predict_on_records_without_joints_3d_gives_millimetres_from_the_bone_length_prior(assets, tmp_path):
    out = tmp_path / "preds"
    args = ["--checkpoint", assets["checkpoint"], "--data", assets["no3d"], "--n", "0", "--out", str(out)]
    assert predict_job.main([*args, "--panel-size", "32"]) == 0
    lines = _lines(out)
    assert len(lines) == 6
    frames = load_frames(assets["no3d"], TINY.input_size)
    for line, camera in zip(lines, frames.camera):
        assert line["root_depth_source"] == "bone-length prior (h36m)" and "nominal adult" in line["note"]
        normalised, mm = np.asarray(line["joints_normalised"]), np.asarray(line["joints_mm"])
        assert mm.shape == (17, 3) and np.all(mm[0] == 0)
        # The depth is the prior's on this very prediction, and the millimetres rest on it.
        depth = heatmaps.root_depth_from_bones(normalised[None], camera[None], 32)[0]
        assert line["root_depth_mm"] == pytest.approx(depth, rel=1e-3)
        want = heatmaps.denormalise(normalised[None], camera[None], 32, np.array([depth]))[0]
        np.testing.assert_allclose(mm, want - want[0], atol=0.05 + 1e-3 * np.abs(want - want[0]).max())


def test_a_checkpoint_that_learnt_a_detectors_2d_sizes_its_poses_by_that_detectors_skeleton(
    assets, tmp_path, capsys
):
    """A model adapted to MediaPipe's 2D (found by the driver for records without any) draws
    MediaPipe's joints: its checkpoint says so, and predict's depth prior follows it, not the records."""
    model, _ = checkpoints.load(assets["checkpoint"])
    frames = load_frames(assets["no3d"], TINY.input_size)
    for name, expected in (("mediapipe", MEDIAPIPE_BONE_MM), ("nobody", None)):
        checkpoint = str(tmp_path / name / "model.pt")
        checkpoints.save(model, checkpoint, stage="round", **checkpoints.pose_info(None, name))
        out = tmp_path / f"preds-{name}"
        args = ["--checkpoint", checkpoint, "--data", assets["no3d"], "--n", "2", "--out", str(out)]
        if expected is None:
            assert predict_job.main(args) == 2
            assert "error: the checkpoint's skeleton 'nobody' is unknown" in capsys.readouterr().err
            continue
        assert predict_job.main([*args, "--panel-size", "32"]) == 0
        for line, camera in zip(_lines(out), frames.camera):
            assert line["root_depth_source"] == "bone-length prior (mediapipe)"
            normalised = np.asarray(line["joints_normalised"])[None]
            depth = heatmaps.root_depth_from_bones(normalised, camera[None], 32, expected)[0]
            assert line["root_depth_mm"] == pytest.approx(depth, rel=1e-3)


def test_predict_on_an_image_file_centre_crops_and_assumes_a_camera(assets, tmp_path):
    rng = np.random.default_rng(0)
    image = tmp_path / "person.png"
    cv2.imwrite(str(image), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))  # 40 wide, 30 high
    out = tmp_path / "preds"
    assert (
        predict_job.main(["--checkpoint", assets["checkpoint"], "--images", str(image), "--out", str(out)])
        == 0
    )
    (line,) = _lines(out)
    assert line["file"] == str(image) and line["png"] == "person.png"
    # Focal length = the 40x30 image's diagonal; principal point at the centre, moved into the 30 px crop.
    assert line["camera"] == [50.0, 50.0, 14.5, 14.5]
    assert line["root_depth_mm"] == 5000.0 and "assumed" in line["note"]
    assert line["root_depth_source"] == "--root-depth-mm"
    normalised, mm = np.asarray(line["joints_normalised"]), np.asarray(line["joints_mm"])
    assert normalised.shape == (17, 3) and mm.shape == (17, 3) and np.all(mm[0] == 0)
    # 2D joints are in the original image's pixels: the crop starts 5 px from the left.
    crop_pixels = ((normalised[:, :2] + 1) * 30 - 1) / 2
    np.testing.assert_allclose(np.asarray(line["joints_2d"]), crop_pixels + [5, 0], atol=0.01)
    assert _png_shape(out / "person.png") == (256, 512, 3)  # the default panel size


def test_predict_refuses_an_existing_output_and_unreadable_images(assets, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "preds"
    base = ["--checkpoint", assets["checkpoint"], "--out", str(out), "--panel-size", "32"]
    assert predict_job.main([*base, "--images", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert predict_job.main([*base, "--data", assets["data"], "--n", "1"]) == 0
    assert predict_job.main([*base, "--data", assets["data"], "--n", "1"]) == 2
    assert "already holds predictions.jsonl" in capsys.readouterr().err


def test_predict_names_pictures_safely_and_apart(assets, tmp_path):
    assert predict_job.safe_name("synthetic-real/test/0/0000001") == "synthetic-real_test_0_0000001"
    assert predict_job.safe_name("../..") == "_"
    images = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        images.append(str(tmp_path / folder / "a.jpg"))
        cv2.imwrite(images[-1], np.full((20, 20, 3), 128, np.uint8))
    out = tmp_path / "preds"
    base = ["--checkpoint", assets["checkpoint"], "--out", str(out), "--panel-size", "32"]
    assert predict_job.main([*base, "--images", *images]) == 0
    assert [(line["file"], line["png"]) for line in _lines(out)] == [
        (images[0], "a.png"),
        (images[1], "a-2.png"),
    ]
    assert _png_shape(out / "a-2.png") == (32, 64, 3)


# ------------------------------------------------------------------------------------------- pretrain


def test_pretrain_takes_the_drivers_flags_and_makes_the_same_config(tmp_path):
    argv = [
        "--config", "configs/smoke.yaml", "--storage", str(tmp_path), "--run-name", "r1",
        "--num-workers", "1", "--use-gpu", "--source", "a", "b", "--set", "pretrain.epochs=5",
    ]  # fmt: skip
    config, resume = pretrain_job.parse_config(argv)
    assert not resume
    assert config.storage == str(tmp_path) and config.run_name == "r1"
    assert config.workers.num_workers == 1 and config.workers.use_gpu and config.pretrain.epochs == 5
    assert config.data.source == ("a", "b")
    assert config.label.num_gpus == 1  # --use-gpu also gives each label actor a GPU
    assert pretrain_job.parse_config([*argv, "--resume"])[1]


def test_pretrain_bad_flags_exit_2(tmp_path, capsys):
    assert pretrain_job.main(["--set", "pretrain.nonsense=1", "--storage", str(tmp_path)]) == 2
    assert "pretrain.nonsense" in capsys.readouterr().err
    assert pretrain_job.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_pretrain_commits_stage_0_for_the_driver_to_resume(assets, tmp_path, monkeypatch, capsys):
    """The job's flow with Ray replaced by fakes: what it commits is what the driver resumes from."""
    calls = []

    class FakeDataset:
        def count(self):
            return 6

    def fake_run_stage(config, stage, datasets, num_frames, storage_uri, init_checkpoint, name):
        calls.append((stage, num_frames, storage_uri, init_checkpoint))
        return PoseModel(config.model), {"loss": 1.5}

    monkeypatch.setattr(driver, "connect", lambda settings: None)
    monkeypatch.setattr(train, "read_source", lambda uris, seed: FakeDataset())
    monkeypatch.setattr(train, "run_stage", fake_run_stage)

    # The evaluation actors' steps in this process: Ray Data would start a Ray and leave it running.
    def evaluate_in_process(test, model, out, config, size, mean_pose):
        on_actors_without_ray(test, model, out, mean_pose, batch_size=4, seed=0)

    monkeypatch.setattr(evaluate_stage, "evaluate_frames", evaluate_in_process)
    sets = [f"--set={flag}" for flag in TINY_FLAGS]
    argv = [
        "--storage", str(tmp_path), "--run-name", "r", "--source", assets["data"], "--target", assets["no3d"],
        "--test", assets["data"], "--rounds", "1", "--set", "pretrain.epochs=1", *sets,
        # Steps the 6 frames can fill, as the job checks before it starts.
        "--num-workers", "1", "--set", "pretrain.batch_size=6", "--set", "adapt.batch_size=3",
    ]  # fmt: skip
    assert pretrain_job.main(argv) == 0
    run = RunDir(str(tmp_path), "r")
    assert run.committed_rounds() == [0]
    assert len(calls) == 1 and calls[0][1:] == (6, run.ray_storage(0), None)
    manifest = run.read_manifest(0)
    assert manifest["training"] == {"loss": 1.5}
    assert manifest["evaluation"]["stage"] == "pretrain" and manifest["evaluation"]["num_frames"] == 6
    # The checkpoint carries the source's mean pose, and the evaluation is shown beside it.
    source_pose = metrics.mean_pose(load_frames(assets["data"], TINY.input_size).joints_3d)
    assert checkpoints.load(run.model(0))[1] == {"stage": "pretrain", **checkpoints.pose_info(source_pose)}
    assert manifest["evaluation"]["mean_pose_mpjpe"] > 0 and "mpjpe_over_mean_pose" in manifest["evaluation"]
    records = [json.loads(line) for line in storage.read_bytes(run.metrics).decode().splitlines()]
    assert [m["stage"] for m in records] == ["pretrain"]
    assert re.search(r"pretrain: MPJPE [\d.]+ mm \([\d.]+x mean pose [\d.]+\)", capsys.readouterr().out)
    # The driver, given the same flags and --resume, accepts the run and skips what is committed.
    config, _ = pretrain_job.parse_config([*argv, "--resume"])
    driver.check_resume(run, config, resume=True)
    # Rerunning: refused without --resume, a no-op with it.
    assert pretrain_job.main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert pretrain_job.main([*argv, "--resume"]) == 0
    assert "already committed" in capsys.readouterr().out
    assert len(calls) == 1


def test_a_checkpoints_info_reads_as_one_short_line():
    from dfa_ray.method.checkpoints import describe_info

    line = describe_info({"stage": "round", "round": 3, "mean_pose": [[0.0, 0.0, 0.0]] * 17})
    assert line == "stage round, round 3, with its source's mean pose"
    assert describe_info({}) == "no info"
