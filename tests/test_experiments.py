import json
import math

import numpy as np
import pytest
import torch

from dfa_ray import experiments
from dfa_ray.config import AdaptConfig, Config, ExperimentsConfig, LabelConfig, load_config
from dfa_ray.data import synthetic
from dfa_ray.experiments import (
    TrialData,
    adapt_trial,
    adapting_methods,
    label_target,
    markdown,
    pretrain_trial,
    table,
    table2_methods,
    trial_method,
)
from dfa_ray.method import checkpoints
from dfa_ray.method.fitting import Frames, PseudoLabeled, TrainConfig, adapt_fit
from dfa_ray.method.model import ModelConfig, PoseModel
from dfa_ray.stages.label import PseudoLabeler, decode_frames
from tests.browser import image_sizes
from tests.helpers import load_job

TINY = ModelConfig(input_size=32, heatmap_size=8, widths=(8, 8, 8, 8), stem_width=8, decoder_width=8)
SMOKE = "configs/experiments/smoke.yaml"


def _trial(method, seed, mpjpe):
    final = {"mpjpe": mpjpe, "pa_mpjpe": mpjpe / 2, "mean_pose_mpjpe": 400.0, "mean_pose_pa_mpjpe": 300.0}
    return {"method": method, "seed": seed, "rounds": [{**final, "mpjpe_over_mean_pose": mpjpe / 400}]}


def test_rows_report_mean_std_over_seeds_and_the_gap_closed_per_seed():
    config = Config(experiments=ExperimentsConfig(seeds=(0, 1)))
    results = [_trial("only-source", 0, 300), _trial("only-source", 1, 320)]
    results += [_trial("only-target", 0, 200), _trial("only-target", 1, 200)]
    results += [_trial("dfa", 0, 250), _trial("dfa", 1, 230)]
    rows = {row["method"]: row for row in table(results, ["only-source", "dfa", "only-target"], config)}
    dfa = rows["dfa"]
    assert dfa["row"] == "Ours (DFA)" and dfa["trial"] == "dfa" and dfa["seeds"] == [0, 1]
    assert dfa["mpjpe"]["mean"] == 240 and dfa["mpjpe"]["std"] == pytest.approx(math.sqrt(200))
    assert dfa["pa_mpjpe"]["mean"] == 120
    assert dfa["gap_closed"]["values"] == [0.5, 0.75]  # (300-250)/(300-200), (320-230)/(320-200)
    assert rows["only-source"]["gap_closed"]["mean"] == 0 and rows["only-target"]["gap_closed"]["mean"] == 1
    # The mean-pose baseline comes first, and every row says its MPJPE over the baseline's.
    baseline = rows["mean-pose"]
    assert baseline["row"] == "Mean pose" and list(rows)[0] == "mean-pose"
    assert baseline["mpjpe"]["mean"] == 400 and baseline["pa_mpjpe"]["mean"] == 300
    assert baseline["gap_closed"]["values"] == [-1.0, -0.67]  # (300 - 400) / (300 - 200), -80 / 120
    assert dfa["mpjpe_over_mean_pose"]["values"] == [0.62, 0.57]
    text = markdown(table(results, ["only-source", "dfa"], config), "Table 1")
    assert text.splitlines()[0] == "| Table 1 | MPJPE (mm) | PA-MPJPE (mm) | MPJPE / mean pose | gap closed |"
    assert text.splitlines()[2].startswith("| Mean pose | 400.0 ± 0.0 | 300.0 ± 0.0 | 1.00 ± 0.00 |")


def test_table2_row_with_table1_policy_is_the_ours_trial_not_a_second_run():
    config = Config(policy="60%,5%,99%")
    assert "policy:(60%, 5%, 99%)" in table2_methods(config)
    assert "policy:(60%, 5%, 99%)" not in adapting_methods(config)
    assert trial_method(config, "policy:(60%, 5%, 99%)") == "dfa"
    assert adapting_methods(config)[:4] == ["only-target", "dann", "wo-dfa", "dfa"]
    assert len(adapting_methods(config)) == 7


def _frames(n, domain="synthetic-real"):
    rows = list(synthetic.generate(domain, "train", n, crop_size=48))
    return rows, Frames.from_rows(rows, TINY.input_size)


def test_in_process_labels_equal_the_ray_stage_labels(tmp_path):
    torch.manual_seed(0)
    model = PoseModel(TINY)
    path = str(tmp_path / "model.pt")
    checkpoints.save(model, path)
    rows, frames = _frames(10)
    config = Config(model=TINY, label=LabelConfig(seed=3, batch_size=4))
    ours = label_target(model, frames, config, seed=3, round_index=2)
    batch = {
        "frame_id": np.array([r["frame_id"] for r in rows], dtype=object),
        "image": np.array([r["image"] for r in rows], dtype=object),
    }
    ray_stage = PseudoLabeler(path, 2, config.label, config.adapt.sigma)(
        decode_frames(batch, TINY.input_size)
    )
    np.testing.assert_allclose(ours.joints.reshape(10, -1), ray_stage["joints"], atol=1e-5)
    np.testing.assert_allclose(ours.confidence, ray_stage["confidence"], atol=1e-5)


def test_dfa_adaptation_with_only_the_target_term_leaves_the_decoder_untouched():
    torch.manual_seed(0)
    model = PoseModel(TINY)
    _, source = _frames(16, "synthetic-source")
    _, target = _frames(16)
    labels = PseudoLabeled(target.images, np.nan_to_num(target.coords), np.ones((16, 17), np.float32))
    decoder = {k: v.clone() for k, v in model.decoder.named_parameters()}
    encoder = {k: v.clone() for k, v in model.encoder.named_parameters()}
    stage = AdaptConfig(epochs=1, batch_size=8, alpha=0.0, beta=1.0, dfa=True)
    adapt_fit(model, source, labels, stage, log=lambda _: None)
    assert all(torch.equal(decoder[k], v) for k, v in model.decoder.named_parameters())
    assert any(not torch.equal(encoder[k], v) for k, v in model.encoder.named_parameters())


@pytest.fixture
def local_ray():
    """The experiments job starts a private Ray in this process; stop it so later tests start clean."""
    import ray

    yield
    ray.shutdown()


def test_results_name_local_data_below_the_working_directory_relatively(tmp_path, monkeypatch):
    portable = load_job("experiments").portable
    monkeypatch.chdir(tmp_path)
    assert portable(str(tmp_path / "runs" / "data" / "test")) == "runs/data/test"
    assert portable("/elsewhere/data/test") == "/elsewhere/data/test"
    assert portable("s3://bucket/data/test") == "s3://bucket/data/test"


@pytest.mark.slow  # jobs/experiments.py end to end (24 trials, a local Ray) and its report in Chromium
def test_experiments_smoke_writes_every_row_and_a_report_that_renders(tmp_path, capsys, local_ray):
    storage = str(tmp_path / "runs")
    assert load_job("experiments").main(["--config", SMOKE, "--storage", storage]) == 0
    config = load_config(SMOKE)
    run = tmp_path / "runs" / config.run_name
    results = json.loads((run / "results.json").read_text())
    names = [row["row"] for row in results["table1"]]
    assert names == ["Mean pose", "Only source", "DANN", "w/o DFA", "Ours (DFA)", "Only target"]
    assert [row["row"] for row in results["table2"]] == [
        "Mean pose", "(60%, 0%, 60%)", "(80%, 0%, 80%)", "(100%, 0%, 100%)", "(60%, 5%, 99%)",
    ]  # fmt: skip
    for row in results["table1"] + results["table2"]:
        assert row["seeds"] == [0, 1, 2]
        values = [
            row["mpjpe"]["mean"],
            row["mpjpe"]["std"],
            row["pa_mpjpe"]["mean"],
            row["gap_closed"]["mean"],
            row["mpjpe_over_mean_pose"]["mean"],
        ]
        assert all(math.isfinite(v) for v in values), row
    trials = {(t["method"], t["seed"]): t for t in results["trials"]}
    assert len(trials) == 3 * 8
    # Every trial's final model is kept beside its result.
    assert sorted(p.stem for p in (run / "trials").glob("*.pt")) == sorted(
        p.stem for p in (run / "trials").glob("*.json")
    )
    dann = trials["dann", 0]["rounds"]
    assert len(dann) == config.rounds + 1 and all(0 < r["training"]["loss_domain"] for r in dann[1:])
    assert (run / "tables.md").read_text().count("Ours (DFA)") == 1

    # A rerun with --resume reuses every finished trial and writes the same tables.
    assert load_job("experiments").main(["--config", SMOKE, "--storage", storage, "--resume"]) == 0
    assert "24 trials (24 already done)" in capsys.readouterr().out
    rerun = json.loads((run / "results.json").read_text())
    assert rerun["table1"] == results["table1"] and rerun["table2"] == results["table2"]

    assert load_job("report").main([str(run)]) == 0
    sizes = image_sizes(run / "report" / "index.html")
    expected = {"rounds.png", "curriculum.png", "per_joint.png", "per_action.png", "skeletons.png"}
    assert set(sizes) == expected
    assert all(size is not None and min(size) > 100 for size in sizes.values()), sizes


def test_only_source_accepts_2d_only_source_frames_and_only_target_needs_3d():
    config = Config(model=TINY, pretrain=TrainConfig(epochs=1, batch_size=8, augment=False))
    source_rows, _ = _frames(16, "synthetic-source")
    mixed = [dict(r, joints_3d=None) if i % 2 else r for i, r in enumerate(source_rows)]
    source = Frames.from_rows(mixed, TINY.input_size)
    _, target = _frames(16)
    data = TrialData(source, target, target)
    result, pretrained = pretrain_trial(data, config, seed=0, log=lambda _: None)
    assert math.isfinite(result["rounds"][0]["mpjpe"])
    unlabeled = TrialData(source, source, target)
    with pytest.raises(ValueError, match="8 lack them"):
        adapt_trial("only-target", unlabeled, config, 0, pretrained, log=lambda _: None)


def test_a_source_checkpoint_is_every_seeds_only_source_and_only_target_adapts_it_on_true_labels(
    tmp_path, monkeypatch
):
    source_rows, target = _frames(16, "synthetic-source")
    data = TrialData(Frames.from_rows(source_rows, TINY.input_size), target, target)
    shipped = PoseModel(TINY)
    checkpoints.save(shipped, tmp_path / "model.pt")
    stage = AdaptConfig(epochs=1, batch_size=8, augment=False, lr=1e-4)
    config = Config(
        model=TINY, init_checkpoint=str(tmp_path / "model.pt"), rounds=2, adapt=stage,
        pretrain=TrainConfig(lr=3e-3),
    )  # fmt: skip
    rates, fit = [], experiments.fit

    sizes = []

    def recording_fit(model, frames, stage, *args):
        rates.append(stage.lr)
        sizes.append(len(frames))
        return fit(model, frames, stage, *args)

    monkeypatch.setattr(experiments, "fit", recording_fit)
    quiet = {"log": lambda _: None}
    first, pretrained = pretrain_trial(data, config, seed=0, **quiet)
    second, _ = pretrain_trial(data, config, seed=1, **quiet)
    # No training: both seeds are the shipped model, scored the same.
    assert first["rounds"][0]["mpjpe"] == second["rounds"][0]["mpjpe"]
    assert first["rounds"][0]["init_checkpoint"] == config.init_checkpoint
    model, _ = checkpoints.from_bytes(pretrained)
    for key, value in shipped.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    # "Only target" starts from it and trains round after round on the target frames' true labels,
    # a held-out tenth of them deciding when to stop (at most only_target_max_rounds).
    upper, _ = adapt_trial("only-target", data, config, 0, pretrained, **quiet)
    rounds = [r["round"] for r in upper["rounds"]]
    assert rounds == list(range(len(rounds)))
    assert 2 <= len(rounds) <= 1 + config.experiments.only_target_max_rounds
    assert upper["rounds"][0]["mpjpe"] == first["rounds"][0]["mpjpe"]
    assert upper["rounds"][-1]["mpjpe"] != upper["rounds"][0]["mpjpe"]
    assert all(math.isfinite(r["held_out_mpjpe"]) for r in upper["rounds"][1:])
    # True labels train at the supervised rate, the adaptation's otherwise; on frames but the held-out.
    assert rates == [config.pretrain.lr] * (len(rounds) - 1)
    assert sizes == [len(target) - 2] * (len(rounds) - 1)  # 16 frames, a tenth held out: 2


def test_only_target_trains_until_the_held_out_target_frames_stop_improving(monkeypatch):
    source_rows, target = _frames(20, "synthetic-source")
    data = TrialData(Frames.from_rows(source_rows, TINY.input_size), target, target)
    config = Config(model=TINY, experiments=ExperimentsConfig(only_target_max_rounds=4))
    model = PoseModel(TINY)
    held_out = iter([100.0, 90.0, 89.5, 50.0, 40.0])  # before training, then after each round
    monkeypatch.setattr(experiments, "fit", lambda *args: [{"loss": 0.0}])
    real_evaluate = experiments.evaluate

    def scripted(model, frames, **kwargs):
        # The held-out tenth (2 of 20 frames) is scripted; the test frames are really evaluated.
        return {"mpjpe": next(held_out)} if len(frames) == 2 else real_evaluate(model, frames, **kwargs)

    monkeypatch.setattr(experiments, "evaluate", scripted)
    history = experiments.target_label_rounds(model, data, config, 0, lambda _: None)
    # 100 -> 90 is a 10 % gain; 90 -> 89.5 is under 1 %: it stops there, the later gains unseen.
    assert [r["held_out_mpjpe"] for r in history] == [90.0, 89.5]
    config = Config(model=TINY, experiments=ExperimentsConfig(only_target_max_rounds=1))
    held_out = iter([100.0, 50.0, 40.0])
    assert len(experiments.target_label_rounds(model, data, config, 0, lambda _: None)) == 1
