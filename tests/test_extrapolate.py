"""The GPU-cluster model of benchmarks/extrapolate.py: its arithmetic, on hand-set inputs."""

import argparse

import pytest

from dfa_ray import config as config_module
from dfa_ray.method.model import ModelConfig, PoseModel
from dfa_ray.ops.drills import repo_root
from tests.helpers import load_script

extrapolate = load_script("benchmarks/extrapolate.py")

MEASURED = {
    "parameters": 25_000_000,
    "label_gflops_per_frame": 30.0,
    "train_gflops_per_sample": 60.0,
    "label_cpu_side_ms_per_frame": 2.0,
    "decode_ms_per_image": 0.5,
    "image_bytes_per_frame": 30_000.0,
    "label_bytes_per_frame": 436.0,
}


def _args(**changes: object) -> argparse.Namespace:
    values = dict(frames=312_000, source_frames=100_000, inference_tflops=10.0, train_tflops=15.0)
    values.update(gpu_label_fps=None, pcie_gbs=12.0, network_gbps=10.0, gpu_node_usd=1.0, head_usd=0.5)
    return argparse.Namespace(**{**values, **changes})


@pytest.fixture(scope="module")
def paper():
    return config_module.load_config(repo_root() / "configs" / "paper.yaml")


def test_labeling_scales_with_gpus_and_adds_cpu_gpu_and_copy_time(paper):
    one, four = (extrapolate.round_costs(paper, MEASURED, _args(), g)[0] for g in (1, 4))
    seconds_per_frame = 2e-3 + 30.0 / 10e3 + 3 * 256**2 * 3 / 12e9
    assert one["label_fps_per_gpu"] == pytest.approx(1 / seconds_per_frame)
    assert one["label_h"] == pytest.approx(312_000 * seconds_per_frame / 3600)
    assert four["label_h"] == pytest.approx(one["label_h"] / 4)
    # A measured GPU rate replaces the modelled one.
    measured = extrapolate.round_costs(paper, MEASURED, _args(gpu_label_fps=500.0), 1)[0]
    assert measured["label_h"] == pytest.approx(312_000 / 500 / 3600)


def test_adaptation_steps_take_the_longer_of_gpu_work_and_the_all_reduce(paper):
    rows = extrapolate.round_costs(paper, MEASURED, _args(), 4)
    first = rows[0]
    assert first["kept"] == int(0.6 * 312_000)  # the paper's policy starts at 60 %
    assert rows[-1]["kept"] == int(paper.policy_schedule.fraction(paper.rounds - 1) * 312_000)
    assert first["allreduce_s"] == pytest.approx(2 * 3 / 4 * 4 * 25e6 * 8 / 10e9)
    batch = paper.adapt.batch_size
    assert first["step_gpu_s"] == pytest.approx(batch * 60.0 / 15e3)
    cpu = batch * 2 * 0.5e-3
    assert first["adapt_step_s"] == pytest.approx(cpu + max(first["step_gpu_s"], first["allreduce_s"]))
    steps = paper.adapt.epochs * (first["kept"] // (4 * batch))
    assert first["adapt_h"] == pytest.approx(steps * first["adapt_step_s"] / 3600)
    assert extrapolate.round_costs(paper, MEASURED, _args(), 1)[0]["allreduce_s"] == 0.0
    # A faster network helps only while the all-reduce is the longer part.
    fast = extrapolate.round_costs(paper, MEASURED, _args(network_gbps=1000.0), 4)[0]
    assert fast["adapt_step_s"] == pytest.approx(cpu + fast["step_gpu_s"])


def test_cost_is_node_hours_at_the_stated_prices(paper):
    row = extrapolate.round_costs(paper, MEASURED, _args(), 8)[0]
    assert row["usd"] == pytest.approx((row["label_h"] + row["adapt_h"]) * (8 * 1.0 + 0.5))
    assert row["s3_read_gb"] == pytest.approx((312_000 + 100_000 + row["kept"]) * 30_000 / 1e9)


def test_flop_count_of_a_training_image_exceeds_twice_its_forward():
    model = PoseModel(ModelConfig())
    forward = extrapolate.flops(model, 64, backward=False)
    train = extrapolate.flops(model, 64, backward=True)
    assert forward > 1e7 and 2 * forward < train < 4 * forward
