"""End to end: `ray job submit` runs jobs/self_train.py against the embedded S3 on a private local Ray.

Slow (a few minutes on 2 cores): the smoke config, 2 rounds, 2 train workers, 2 label actors.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import numpy as np
import pytest

from dfa_ray import storage
from dfa_ray.config import load_config
from dfa_ray.data.records import read_records
from dfa_ray.localcluster import LocalRay
from dfa_ray.policy import num_kept
from dfa_ray.rundir import RunDir
from dfa_ray.selftrain import synthetic_name
from dfa_ray.stages.label import read_labels

REPO = Path(__file__).resolve().parents[1]
SMOKE = load_config(REPO / "configs" / "smoke.yaml")


@pytest.fixture(scope="module")
def ray_head(s3_server):
    with LocalRay(num_cpus=2, env=s3_server.env()) as head:
        yield head


@pytest.fixture(scope="module")
def storage_uri(s3_server):
    return s3_server.uri(f"e2e-{secrets.token_hex(4)}")


def _entrypoint(storage_uri: str, run_name: str, *extra: str) -> list[str]:
    return [
        "python", "jobs/self_train.py", "--config", "configs/smoke.yaml", "--storage", storage_uri,
        "--run-name", run_name, "--rounds", "2", "--num-workers", "2", "--label-actors", "2", *extra,
    ]  # fmt: skip


def _target_frames(storage_uri: str) -> list[str]:
    name = synthetic_name("synthetic-real", "train", SMOKE.data.synthetic_target_frames, SMOKE.data)
    uri = storage.join(storage_uri, "data", name)
    return sorted(read_records(uri, columns=["frame_id"]).column("frame_id").to_pylist())


def _check_committed_rounds(run: RunDir, targets: list[str]) -> None:
    policy = SMOKE.policy_schedule
    assert run.committed_rounds() == [0, 1, 2]
    for k in (1, 2):
        labeled = read_labels(run.labels(k), ["frame_id", "confidence", "error"])
        ids = labeled.column("frame_id").to_pylist()
        assert sorted(ids) == targets, f"round {k}: every target frame exactly once"
        assert labeled.column("error").null_count == len(ids)
        selection = run.read_manifest(k)["selection"]
        assert selection["num_kept"] == num_kept(len(targets), policy.fraction(k - 1))
        kept = read_labels(run.selected(k), ["frame_id", "confidence"])
        assert kept.num_rows == selection["num_kept"]
        confidence = labeled.column("confidence").to_numpy()
        # The kept frames are the most confident ones.
        assert np.min(kept.column("confidence").to_numpy()) >= np.sort(confidence)[::-1][kept.num_rows - 1]
        assert storage.exists(run.model(k))
    assert storage.exists(run.model(0))


def test_self_train_job_runs_every_stage(ray_head, storage_uri, s3):
    done = ray_head.submit(_entrypoint(storage_uri, "full"), REPO)
    assert done.succeeded, done.logs[-3000:]
    run = RunDir(storage_uri, "full")
    _check_committed_rounds(run, _target_frames(storage_uri))
    lines = [line for line in storage.read_bytes(run.metrics).decode().splitlines() if line]
    records = [__import__("json").loads(line) for line in lines]
    assert [(r["stage"], r["round"]) for r in records] == [("pretrain", 0), ("round", 1), ("round", 2)]
    assert all(r["num_frames"] == SMOKE.data.synthetic_test_frames and r["mpjpe"] > 0 for r in records)
    assert "round 2: MPJPE" in done.logs
    _assert_no_secret(s3, done.logs, run)


def _assert_no_secret(s3, logs: str, run: RunDir) -> None:
    """The S3 secret appears in no output of the run: job logs, and every file the run wrote."""
    secret = s3.env()["AWS_SECRET_ACCESS_KEY"].encode()
    assert secret not in logs.encode()
    files = storage.list_files(run.root, recursive=True)
    assert len(files) > 10
    leaking = [uri for uri in files if secret in storage.read_bytes(uri)]
    assert not leaking, f"the S3 secret is written in {leaking}"


def test_a_killed_driver_resumes_without_relabeling(ray_head, storage_uri, s3):
    run, job = RunDir(storage_uri, "killed"), f"killed-{secrets.token_hex(4)}"
    ray_head.submit(_entrypoint(storage_uri, "killed"), REPO, wait=False, job_id=job)
    deadline = time.monotonic() + 600
    # Kill the driver once round 2 has started writing (its pseudo-labels exist, nothing committed).
    while not storage.list_files(run.labels(2), suffix=".parquet", recursive=True):
        assert time.monotonic() < deadline and ray_head.job_status(job) in ("PENDING", "RUNNING"), (
            ray_head.logs(job)
        )
        time.sleep(0.5)
    ray_head.stop_job(job)
    assert ray_head.job_status(job) == "STOPPED"
    assert run.committed_rounds() == [0, 1]

    resumed = ray_head.submit(_entrypoint(storage_uri, "killed", "--resume"), REPO)
    assert resumed.succeeded, resumed.logs[-3000:]
    assert "committed through round 1" in resumed.logs
    _check_committed_rounds(run, _target_frames(storage_uri))
