"""benchmarks/looks_and_geometry.py: the domain gap taken apart into looks and geometry."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from dfa_ray.data.synthetic import DomainStyle
from dfa_ray.method import checkpoints
from dfa_ray.method.model import PoseModel
from tests.helpers import TINY, load_script

bench = load_script("benchmarks/looks_and_geometry.py")


def test_geometry_and_the_groups_of_looks_split_every_style_field_once():
    groups = [bench.GEOMETRY, *bench.LOOKS.values()]
    fields = [field for group in groups for field in group]
    assert sorted(fields) == sorted(f.name for f in dataclasses.fields(DomainStyle))


def _changed(style: DomainStyle, base: DomainStyle) -> set[str]:
    fields = dataclasses.fields(DomainStyle)
    return {f.name for f in fields if getattr(style, f.name) != getattr(base, f.name)}


def test_each_variant_differs_from_the_domains_style_in_its_group_only():
    styles = bench.variants("synthetic-real", "synthetic-source")
    plain = styles["as rendered"]
    groups = {**bench.LOOKS, "geometry": bench.GEOMETRY}
    every_look = {field for fields in bench.LOOKS.values() for field in fields}
    for name, style in styles.items():
        changed = _changed(style, plain)
        if name.endswith(", with facing cues"):
            assert _changed(style, styles[name.removesuffix(", with facing cues")]) == {"facing_cues"}
        elif name == "as rendered":
            assert not changed
        elif name == "all synthetic-source's looks":
            assert changed and changed <= every_look
        else:
            assert changed and changed <= set(groups[name.removeprefix("synthetic-source's ")]), name


def test_measure_scores_every_variant_of_both_domains_beside_the_mean_pose(tmp_path):
    path = tmp_path / "model.pt"
    pose = np.random.default_rng(0).normal(0, 200, (17, 3))
    checkpoints.save(PoseModel(TINY), path, stage="test", **checkpoints.pose_info(pose))
    result = bench.measure(str(path), test=2)
    # Six rows a domain, and one with facing cues for each row of flat bodies: the target as rendered,
    # the source drawn with the target's bodies.
    assert len(result["rows"]) == 2 * 7
    assert {name for name in result["rows"] if name.endswith("facing cues")} == {
        "synthetic-real, as rendered, with facing cues",
        "synthetic-source, synthetic-real's bodies, with facing cues",
    }
    for name, row in result["rows"].items():
        assert row["mpjpe"] > 0 and row["mean_pose_mpjpe"] > 0, name
        assert row["mpjpe_over_mean_pose"] == pytest.approx(row["mpjpe"] / row["mean_pose_mpjpe"])
        assert 0 <= row["facing_flipped"] <= 1 and min(row["x_mm"], row["y_mm"], row["z_mm"]) >= 0
        assert row["facing_within_30"] <= 1 - row["facing_flipped"]
        # The two groups' errors average to the row's MPJPE, weighted by their shares.
        parts = [
            (row["facing_flipped"], row["flipped_mpjpe"]),
            (1 - row["facing_flipped"], row["not_flipped_mpjpe"]),
        ]
        assert sum(share * error for share, error in parts if error is not None) == pytest.approx(
            row["mpjpe"]
        )


def test_a_checkpoint_without_a_mean_pose_is_refused_by_name(tmp_path):
    path = tmp_path / "model.pt"
    checkpoints.save(PoseModel(TINY), path, stage="test")
    with pytest.raises(ValueError, match="model.pt: the checkpoint carries no mean pose"):
        bench.measure(str(path), test=2)


def test_the_picture_shows_one_band_of_the_targets_frames_per_variant(tmp_path):
    path = tmp_path / "looks.png"
    bench.picture(path, columns=2, tile=32)
    image = cv2.imread(str(path))
    bands = len(bench.variants("synthetic-real", "synthetic-source"))
    assert image.shape == (bands * (24 + 32), 2 * 32, 3)
