"""benchmarks/cue_target.py: the targets it compares are the same draws of the training subjects."""

from __future__ import annotations

import numpy as np

from dfa_ray.data.records import read_records
from tests.helpers import load_script

bench = load_script("benchmarks/cue_target.py")


def test_both_targets_hold_the_same_people_split_by_subject_and_differ_only_in_looks(tmp_path):
    written = {
        cues: [
            read_records(str(path)).to_pylist()
            for path in bench.write_target(tmp_path / str(cues), cues, 40, 6)
        ]
        for cues in (False, True)
    }
    for target, scored in written.values():
        assert {r["subject"] for r in target} <= set(bench.TARGET_SUBJECTS) and target
        assert {r["subject"] for r in scored} <= set(bench.SCORED_SUBJECTS) and len(scored) == 6
    for plain, cued in zip(*(sum(parts, []) for parts in written.values()), strict=True):
        assert plain["frame_id"] == cued["frame_id"]
        np.testing.assert_array_equal(plain["joints_3d"], cued["joints_3d"])
    images = [[r["image"] for r in sum(parts, [])] for parts in written.values()]
    assert sum(a != b for a, b in zip(*images)) > len(images[0]) // 2
