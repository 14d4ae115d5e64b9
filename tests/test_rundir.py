"""Run layout and the commit rule: manifests last, metrics rebuilt from manifests, uncommitted cleared
under the run's lease only."""

from __future__ import annotations

import json

import pytest

from dfa_ray import storage
from dfa_ray.ops.lease import RunLease
from dfa_ray.ops.rundir import RunDir


def _evaluation(k: int) -> dict:
    return {"stage": "pretrain" if k == 0 else "round", "round": k, "mpjpe": 100.0 - k, "num_frames": 4}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_commits_metrics_and_clearing(where, tmp_path, request):
    root = request.getfixturevalue("s3_prefix") if where == "s3" else str(tmp_path)
    run = RunDir(root, "r")
    assert run.committed_rounds() == []
    for k in (0, 1):
        storage.write_bytes(run.model(k), b"weights")
        run.commit(k, {"evaluation": _evaluation(k)})
    # Round 2 was interrupted: outputs without a manifest.
    storage.write_bytes(storage.join(run.labels(2), "part-0.parquet"), b"partial")
    assert run.committed_rounds() == [0, 1]
    lines = storage.read_bytes(run.metrics).decode().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1]

    with pytest.raises(RuntimeError, match="refusing to delete .* without holding .*LEASE.json"):
        run.clear(2)  # another driver may be writing it
    with RunLease(run.lease) as run.holder:
        run.clear(2)
        with pytest.raises(RuntimeError, match="refusing to delete committed"):
            run.clear(1)
    assert not storage.list_files(run.stage(2), recursive=True)
    assert not run.holder.held and not storage.exists(run.lease)
    run.commit(2, {"evaluation": _evaluation(2)})
    assert run.committed_rounds() == [0, 1, 2]
    assert len(storage.read_bytes(run.metrics).decode().splitlines()) == 3


def test_a_gap_stops_the_committed_sequence(tmp_path):
    run = RunDir(str(tmp_path), "r")
    run.commit(0, {"evaluation": _evaluation(0)})
    run.commit(2, {"evaluation": _evaluation(2)})  # round 1 missing: round 2 cannot be trusted
    assert run.committed_rounds() == [0]
