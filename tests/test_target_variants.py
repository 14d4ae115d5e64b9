"""benchmarks/target_variants.py: the targets it compares are the same draws of the training subjects."""

from __future__ import annotations

import numpy as np

from dfa_ray.data.records import read_records
from tests.helpers import load_script

bench = load_script("benchmarks/target_variants.py")


def test_every_target_holds_the_same_people_split_by_subject_and_differs_only_in_looks(tmp_path):
    written = {
        name: [
            read_records(str(path)).to_pylist() for path in bench.write_target(tmp_path / name, style, 40, 6)
        ]
        for name, style in bench.TARGETS.items()
    }
    for target, scored in written.values():
        assert {r["subject"] for r in target} <= set(bench.TARGET_SUBJECTS) and target
        assert {r["subject"] for r in scored} <= set(bench.SCORED_SUBJECTS) and len(scored) == 6
    rendered, *others = ([*target, *scored] for target, scored in written.values())
    for other in others:
        for plain, restyled in zip(rendered, other, strict=True):
            assert plain["frame_id"] == restyled["frame_id"]
            np.testing.assert_array_equal(plain["joints_3d"], restyled["joints_3d"])
        assert sum(a["image"] != b["image"] for a, b in zip(rendered, other)) > len(rendered) // 2
    assert bench.TARGETS["source-bodies"].lit_bodies and not bench.TARGETS["as-rendered"].lit_bodies
