"""The one round loop (``rounds.run_rounds``): its steps, and that the driver and the experiments run it."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from dfa_ray import driver, experiments
from dfa_ray.config import AdaptConfig, Config, DataConfig, LabelConfig, WorkersConfig
from dfa_ray.data import synthetic
from dfa_ray.data.records import write_records
from dfa_ray.experiments import InMemoryRounds, TrialData, adapt_trial, label_errors
from dfa_ray.method import checkpoints, fitting, metrics, rounds
from dfa_ray.method.fitting import Frames, TrainConfig
from dfa_ray.method.model import PoseModel
from dfa_ray.method.policy import Policy
from dfa_ray.ops.drills import KILL_POINTS
from dfa_ray.ops.rundir import RunDir
from tests.helpers import TINY, load_script


class FakeBackend:
    """Records the steps it is asked for and hands each step's output to the next."""

    num_target = 10

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def label(self, k):
        self.calls.append(("label", k))
        return f"labels-{k}"

    def select(self, k, labels, fraction):
        self.calls.append(("select", k, labels, fraction))
        stats = {"num_frames": 10, "num_kept": round(10 * fraction), "threshold": 0.5, "num_failed": 0}
        return f"kept-{k}", stats

    def read(self, k, kept):
        self.calls.append(("read", k, kept))
        return f"inputs-{k}"

    def adapt(self, k, inputs, selection):
        self.calls.append(("adapt", k, inputs, selection["num_kept"]))
        return {"loss": 1.0}

    def save(self, k):
        self.calls.append(("save", k))
        return f"round-{k}/model.pt"

    def evaluate(self, k):
        self.calls.append(("evaluate", k))
        return {"stage": "round", "round": k, "mpjpe": 100.0 / k, "pa_mpjpe": 50.0, "num_frames": 5}

    def commit(self, k, record):
        self.calls.append(("commit", k, record))


def test_a_round_labels_selects_reads_adapts_saves_evaluates_and_commits_in_order():
    backend, lines = FakeBackend(), []
    records = rounds.run_rounds(backend, Policy.parse("60%,10%,80%"), range(2, 4), 5, lines.append)
    steps = [call[:2] for call in backend.calls]
    each = ["label", "select", "read", "adapt", "save", "evaluate", "commit"]
    assert steps == [(name, 2) for name in each] + [(name, 3) for name in each]
    # Round k keeps the policy's fraction of round k; each step gets the previous one's output.
    assert backend.calls[1] == ("select", 2, "labels-2", 0.7) and backend.calls[2] == ("read", 2, "kept-2")
    assert backend.calls[3] == ("adapt", 2, "inputs-2", 7)
    record = backend.calls[6][2]
    assert record == records[0] and set(record) == {"selection", "training", "evaluation", "seconds"}
    assert set(record["seconds"]) == {"label", "select", "read", "adapt", "checkpoint", "evaluate"}
    # The log has every line the driver-kill drills wait for, and the result line.
    text = "\n".join(lines)
    for pattern in KILL_POINTS.values():
        if "{k}" in pattern:
            assert re.search(pattern.format(k=3), text), pattern
    assert "  round 3: MPJPE 33.3 mm  PA-MPJPE 50.0 mm  (5 test frames)" in lines


def _dataset(path, n: int) -> str:
    write_records(list(synthetic.generate("synthetic-real", "test", n, crop_size=32)), path)
    return str(path)


def test_the_driver_runs_the_same_round_loop_from_the_first_uncommitted_round(tmp_path, monkeypatch):
    assert driver.run_rounds is rounds.run_rounds is experiments.run_rounds
    target = _dataset(tmp_path / "target", 4)
    config = Config(
        storage=str(tmp_path / "runs"), run_name="r", rounds=4, model=TINY,
        data=DataConfig(source=(target,), target=target, test=target),
        # Steps the 4 frames can fill, as the driver checks before it starts.
        workers=WorkersConfig(num_workers=1), pretrain=TrainConfig(batch_size=4),
        adapt=AdaptConfig(batch_size=2),
    )  # fmt: skip
    run = RunDir(config.storage, config.run_name)
    for k in (0, 1):  # an earlier attempt committed pretraining and round 1
        run.commit(k, {"evaluation": {"stage": "round", "round": k}})
    inputs = driver.Inputs([target], target, target, 4, None)
    monkeypatch.setattr(driver, "connect", lambda settings: None)
    monkeypatch.setattr(driver, "load_inputs", lambda config, log: inputs)
    monkeypatch.setattr(driver, "pretrain", lambda *args: pytest.fail("pretraining is committed"))
    seen = []
    monkeypatch.setattr(driver, "run_rounds", lambda *args: seen.append(args))
    lines = []
    driver.self_train(config, resume=True, log=lines.append)
    [(backend, policy, todo, epochs, _)] = seen
    # A run begun before the driver looked for the target's 2D is resumed as it began, and says so.
    assert f"target 2D: {run.root} began without looking for it, and is resumed as it began" in lines
    assert isinstance(backend, driver.RayRounds) and backend.num_target == 4
    assert todo == range(2, 5) and policy == config.policy_schedule and epochs == config.adapt.epochs


def test_a_2d_only_source_joins_the_source_and_its_machine_made_labels_are_said(tmp_path):
    source = _dataset(tmp_path / "source", 4)
    rows = [
        {**row, "joints_3d": None} for row in synthetic.generate("synthetic-real", "train", 3, crop_size=32)
    ]
    real_2d = str(tmp_path / "real-2d")
    write_records(rows, real_2d, machine_labels="joints_2d are machine-made, not annotated: a detector")
    config = Config(data=DataConfig(source=(source,), source_2d=(real_2d,), target=source, test=source))
    driver.check_inputs(config, ray_train=False)
    lines = []
    inputs = driver.load_inputs(config, lines.append)
    assert inputs.source == [source, real_2d]
    assert lines == [f"source {real_2d}: joints_2d are machine-made, not annotated: a detector"]
    # The mean-pose baseline is the 3D source's alone.
    expected = driver.load_inputs(
        Config(data=DataConfig(source=(source,), target=source, test=source)), print
    )
    np.testing.assert_array_equal(inputs.mean_pose, expected.mean_pose)
    # A share repeats the 2D-only frames to make it up: 4 x 3 of 16 frames.
    most = dataclasses.replace(config.data, source_2d_share=0.75)
    lines = []
    inputs = driver.load_inputs(dataclasses.replace(config, data=most), lines.append)
    assert inputs.source == [source, real_2d, real_2d, real_2d, real_2d]
    assert lines[0] == (
        "source: the 2D-only data's 3 frames repeated 4 times, 75% of the source "
        "(data.source_2d_share 0.75; 4 frames with 3D)"
    )
    assert len(lines) == 2  # the machine-made labels are said once


def _trial_data() -> TrialData:
    def frames(domain: str, n: int) -> Frames:
        return Frames.from_rows(list(synthetic.generate(domain, "train", n, crop_size=48)), TINY.input_size)

    return TrialData(
        frames("synthetic-source", 16), frames("synthetic-real", 16), frames("synthetic-real", 8)
    )


def _trial_config(rounds: int) -> Config:
    """A tiny trial's: keeping 50 %, 75 %, 100 % of its 16 target frames, an epoch of batches of 4."""
    return Config(
        model=TINY, rounds=rounds, policy="50%,25%,100%",
        adapt=AdaptConfig(epochs=1, batch_size=4), label=LabelConfig(batch_size=8),
    )  # fmt: skip


def test_an_experiment_trial_self_trains_through_the_round_loop_deterministically(monkeypatch):
    config = _trial_config(rounds=2)
    data = _trial_data()
    torch.manual_seed(0)
    pretrained = checkpoints.to_bytes(PoseModel(TINY))
    backends = []
    real = rounds.run_rounds
    monkeypatch.setattr(
        experiments, "run_rounds", lambda backend, *args: backends.append(backend) or real(backend, *args)
    )
    quiet = {"log": lambda _: None}
    first, model_bytes = adapt_trial("dfa", data, config, 1, pretrained, **quiet)
    again, _ = adapt_trial("dfa", data, config, 1, pretrained, **quiet)
    assert [type(b) for b in backends] == [InMemoryRounds, InMemoryRounds]
    history = first["rounds"]
    assert [r["round"] for r in history] == [0, 1, 2]
    assert [r["selection"]["num_kept"] for r in history[1:]] == [8, 12]
    assert set(history[1]["seconds"]) == {"label", "select", "read", "adapt", "checkpoint", "evaluate"}
    # Every evaluation stands beside the source's mean pose.
    baseline = metrics.mean_pose_baseline(data.mean_pose, data.test.joints_3d)["mpjpe"]
    assert all(r["mean_pose_mpjpe"] == pytest.approx(baseline) for r in history)
    # Seeded: the same trial twice gives the same numbers.
    assert [r["mpjpe"] for r in again["rounds"]] == [r["mpjpe"] for r in history]
    np.testing.assert_array_equal(first["examples"]["joints_mm"], again["examples"]["joints_mm"])
    # The trial hands its final model back, carrying the source's mean pose: it scores as the last round.
    model, info = checkpoints.from_bytes(model_bytes)
    assert (info["stage"], info["seed"]) == ("dfa", 1)
    np.testing.assert_allclose(info["mean_pose"], data.mean_pose, atol=0.05)
    assert fitting.evaluate(model, data.test)["mpjpe"] == pytest.approx(history[-1]["mpjpe"])


@pytest.mark.parametrize("from_source", [False, True])
def test_from_source_adapts_round_0s_model_each_round_on_the_last_rounds_labels(
    from_source, tmp_path, monkeypatch
):
    config = Config(
        model=TINY, rounds=3, policy="50%,0%,50%",
        adapt=AdaptConfig(epochs=1, batch_size=4, from_source=from_source), label=LabelConfig(batch_size=8),
    )  # fmt: skip
    torch.manual_seed(0)
    model = PoseModel(TINY)
    first = next(model.parameters())
    seen = {"label": [], "adapt": []}
    real_label = experiments.label_target

    def label(model, *args):
        seen["label"].append(first.detach().clone())
        return real_label(model, *args)

    def adapt(model, *args):  # each round moves the weights by one
        seen["adapt"].append(first.detach().clone())
        with torch.no_grad():
            first.add_(1.0)
        return [{"loss": 0.0}]

    monkeypatch.setattr(experiments, "label_target", label)
    monkeypatch.setattr(experiments, "adapt_fit", adapt)
    start = first.detach().clone()
    backend = InMemoryRounds(model, _trial_data(), config, 0, True, lambda _: None)
    rounds.run_rounds(backend, config.policy_schedule, range(1, 4), 1, lambda _: None)
    assert len(seen["label"]) == len(seen["adapt"]) == 3
    # The labels always come from the last round's model...
    for k, weights in enumerate(seen["label"]):
        torch.testing.assert_close(weights, start + (1.0 if from_source and k else k))
    # ...and each round adapts round 0's model with from_source, the last round's without.
    for k, weights in enumerate(seen["adapt"]):
        torch.testing.assert_close(weights, start + (0.0 if from_source else k))

    # The driver's rounds: Ray Train starts from round 0's checkpoint, or the last round's.
    target = _dataset(tmp_path / "target", 4)
    ray_config = dataclasses.replace(
        config, storage=str(tmp_path / "runs"), data=DataConfig(source=(target,), target=target, test=target)
    )
    run = RunDir(ray_config.storage, "r")
    starts = []
    monkeypatch.setattr(driver.train, "run_stage", lambda *args: starts.append(args[5]) or (None, {}))
    driver.RayRounds(ray_config, run, driver.Inputs([target], target, target, 4, None)).adapt(
        3, {}, {"num_kept": 2}
    )
    assert starts == [run.model(0 if from_source else 2)]


def test_a_target_with_machine_made_2d_learns_from_it_and_one_with_annotated_2d_does_not(tmp_path):
    source = _dataset(tmp_path / "source", 4)  # annotated 2D and 3D: labels a target never gives
    rows = [
        {**row, "joints_3d": None} for row in synthetic.generate("synthetic-real", "train", 3, crop_size=32)
    ]
    footage = str(tmp_path / "footage")
    write_records(rows, footage, machine_labels="joints_2d are machine-made, not annotated: a detector")
    base = Config(data=DataConfig(source=(source,), target=footage, test=source), adapt=AdaptConfig(lr=1e-4))
    lines = []
    config = driver.use_target_2d(base, lines.append)
    assert config.data.source_2d == (footage,) and config.adapt.lr == base.pretrain.lr != base.adapt.lr
    assert lines and "a detector" in lines[0] and "data.target_2d" in lines[0]
    assert driver.use_target_2d(config, print) == config  # resolved once: a resumed run compares equal
    off = dataclasses.replace(base, data=dataclasses.replace(base.data, target_2d=False))
    annotated = dataclasses.replace(base, data=dataclasses.replace(base.data, target=source))
    synthetic_target = dataclasses.replace(base, data=dataclasses.replace(base.data, target=None))
    for unchanged in (off, annotated, synthetic_target):
        assert driver.use_target_2d(unchanged, lambda line: pytest.fail(line)) == unchanged


def _round_1_labels(labels: str) -> tuple:
    """A tiny trial's round-1 labels by Table 1's backend and by ``anchored_rounds.py --labels``'s:
    ``(bench, model, config, data, plain, theirs)``."""
    bench = load_script("benchmarks/anchored_rounds.py")
    config = Config(model=TINY, label=LabelConfig(batch_size=8))
    data = _trial_data()
    torch.manual_seed(0)
    model = PoseModel(TINY)
    plain = InMemoryRounds(model, data, config, 1, True, print).label(1)
    theirs = bench.BACKENDS[labels](model, data, config, 1, True, print).label(1)
    return bench, model, config, data, plain, theirs


def test_the_anchored_rounds_benchmark_labels_at_the_true_2d_with_the_ensembles_depth():
    bench, model, config, data, plain, anchored = _round_1_labels("true-2d")
    np.testing.assert_allclose(anchored.joints[..., :2], data.target.coords[..., :2], atol=1e-6)
    np.testing.assert_allclose(anchored.joints[..., 2], plain.joints[..., 2])
    assert not np.allclose(plain.joints[..., :2], data.target.coords[..., :2], atol=1e-2)
    # The benchmark's trials are Table 1's (adapt_trial) with this backend in the round loop.
    config = dataclasses.replace(
        config, rounds=1, policy="100%,0%,100%", adapt=AdaptConfig(epochs=1, batch_size=4)
    )
    pretrained = checkpoints.to_bytes(model)
    kwargs = {"log": lambda _: None}
    ones = [
        adapt_trial("wo-dfa", data, config, 1, pretrained, **kwargs, backend_class=c)[0]
        for c in (InMemoryRounds, bench.AnchoredRounds)
    ]
    errors = [trial["rounds"][1]["selection"]["label_mpjpe_all"] for trial in ones]
    assert errors[1] < errors[0]


def test_the_oracle_selection_keeps_the_truly_best_of_the_ensembles_own_labels():
    *_, data, plain, oracle = _round_1_labels("oracle-selection")
    np.testing.assert_array_equal(oracle.joints, plain.joints)
    np.testing.assert_array_equal(oracle.joint_confidence, plain.joint_confidence)
    error = label_errors(plain, data.target)
    assert np.all((oracle.confidence > 0) & (oracle.confidence <= 1))
    # Ranked by the truth: the best-scored half is the half with the smallest errors.
    best = np.argsort(-oracle.confidence)[:8]
    assert set(best) == set(np.argsort(error)[:8])
    assert set(np.argsort(-plain.confidence)[:8]) != set(np.argsort(error)[:8])  # a ranking of its own


def test_the_true_label_rounds_train_on_the_truth_of_the_frames_the_ensemble_is_surest_of():
    *_, data, plain, true = _round_1_labels("true-3d")
    np.testing.assert_allclose(true.joints, data.target.coords, atol=1e-6)
    assert label_errors(true, data.target).max() < 1e-3 < label_errors(plain, data.target).min()
    np.testing.assert_array_equal(true.joint_confidence, 1.0)  # every joint at full weight
    np.testing.assert_array_equal(true.confidence, plain.confidence)  # the policy keeps Table 1's frames


def test_a_trial_continued_from_its_round_1_model_repeats_the_longer_trials_rounds():
    config = _trial_config(rounds=3)
    data = _trial_data()
    torch.manual_seed(0)
    pretrained = checkpoints.to_bytes(PoseModel(TINY))
    quiet = {"log": lambda _: None}
    whole, _ = adapt_trial("dfa", data, config, 1, pretrained, **quiet)
    _, after_1 = adapt_trial("dfa", data, _trial_config(rounds=1), 1, pretrained, **quiet)
    rest, _ = adapt_trial("dfa", data, config, 1, after_1, **quiet, first_round=2)
    assert [r["round"] for r in rest["rounds"]] == [1, 2, 3]
    assert [r["selection"]["num_kept"] for r in rest["rounds"][1:]] == [12, 16]
    # Round 1's model scores as round 1 did; rounds 2 and 3 are the longer trial's, to the last bit.
    assert [r["mpjpe"] for r in rest["rounds"]] == [r["mpjpe"] for r in whole["rounds"][1:]]
    with pytest.raises(ValueError, match="first_round=2"):
        adapt_trial("only-target", data, config, 1, after_1, **quiet, first_round=2)
