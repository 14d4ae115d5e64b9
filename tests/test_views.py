"""The ensemble's views from configuration: the paper's three views stay what they were."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from dfa_ray.config import LabelConfig
from dfa_ray.data import synthetic
from dfa_ray.stages.label import PseudoLabeler, decode_frames, frame_views
from tests.helpers import TINY, tiny_checkpoint

# Recorded at commit 2c6a99e (views hard-coded: original, invariance, equivariance) with torch
# 2.13.0+cpu, before the views came from configuration: the default config must label exactly so.
PINNED = Path(__file__).parent / "fixtures" / "paper_views_labels.npz"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def paper_labels(checkpoint: str) -> dict[str, np.ndarray]:
    """The default config's transforms and labels of six frames, round 2, seed 3."""
    rows = list(synthetic.generate("synthetic-real", "test", 6, crop_size=48))
    batch = {
        "frame_id": np.array([r["frame_id"] for r in rows], dtype=object),
        "image": np.array([r["image"] for r in rows], dtype=object),
    }
    config = LabelConfig(seed=3)
    views = frame_views(list(batch["frame_id"]), config.seed, 2, config.views)
    labels = PseudoLabeler(checkpoint, round_index=2, config=config, sigma=1.0)(
        decode_frames(batch, TINY.input_size)
    )
    return {
        "invariance": np.array([dataclasses.astuple(p) for p in views.params[1]], np.float64),
        "equivariance": np.array([dataclasses.astuple(p) for p in views.params[2]], np.float64),
        "joints": labels["joints"],
        "joint_confidence": labels["joint_confidence"],
    }


def test_the_default_views_label_bit_for_bit_as_the_hard_coded_three_did(checkpoint):
    pinned = np.load(PINNED)
    got = paper_labels(checkpoint)
    assert sorted(got) == sorted(pinned.files)
    for name in pinned.files:
        np.testing.assert_array_equal(got[name], pinned[name], err_msg=name)
