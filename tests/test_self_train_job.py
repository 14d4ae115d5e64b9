"""End to end: jobs/self_train.py on a private local Ray with the embedded S3, killed and resumed.

Slow (a few minutes on 2 cores): the smoke config, 2 train workers, 2 label actors, one run. Its
drivers run as plain processes joined to the cluster (as ``ray job submit`` would), so the test can
SIGKILL them at chosen lines of their output (``dfa_ray.ops.drills``); each --resume takes the killed
driver's lease over. The last --resume goes through ``ray job submit``, as a user's retry would, and
while it runs a second driver on its run is refused (the run's lease).
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import numpy as np
import pytest

from dfa_ray import storage
from dfa_ray.config import load_config
from dfa_ray.method.policy import num_kept
from dfa_ray.ops.drills import KILL_POINTS, KillPoint, audit, run_driver, synthetic_target_ids
from dfa_ray.ops.localcluster import Job, LocalRay
from dfa_ray.ops.rundir import RunDir
from dfa_ray.stages.evaluate import summarize_errors
from dfa_ray.stages.label import read_labels
from tests.helpers import wait_for

pytestmark = pytest.mark.slow  # a private Ray head, drivers killed and resumed, `ray job submit`

REPO = Path(__file__).resolve().parents[1]
SMOKE = load_config(REPO / "configs" / "smoke.yaml")


@pytest.fixture(scope="module")
def ray_head(s3_server):
    with LocalRay(num_cpus=2, env=s3_server.env()) as head:
        yield head


@pytest.fixture(scope="module")
def storage_uri(s3_server):
    return s3_server.uri(f"e2e-{secrets.token_hex(4)}")


def _entrypoint(storage_uri: str, run_name: str) -> list[str]:
    return [
        "python", "jobs/self_train.py", "--config", "configs/smoke.yaml", "--storage", storage_uri,
        "--run-name", run_name, "--rounds", "1", "--num-workers", "2", "--label-actors", "2",
    ]  # fmt: skip


def _target_frames(storage_uri: str) -> list[str]:
    return sorted(synthetic_target_ids(storage_uri, SMOKE))


def _check_committed_round(run: RunDir, targets: list[str]) -> None:
    assert run.committed_rounds() == [0, 1] and audit(run, targets) == []
    labeled = read_labels(run.labels(1), ["frame_id", "confidence", "error"])
    assert labeled.column("error").null_count == labeled.num_rows
    selection = run.read_manifest(1)["selection"]
    assert selection["num_kept"] == num_kept(len(targets), SMOKE.policy_schedule.fraction(0))
    kept = read_labels(run.selected(1), ["frame_id", "confidence"])
    confidence = labeled.column("confidence").to_numpy()
    # The kept frames are the most confident ones.
    assert np.min(kept.column("confidence").to_numpy()) >= np.sort(confidence)[::-1][kept.num_rows - 1]


def _assert_no_secret(s3, logs: str, run: RunDir) -> None:
    """The S3 secret appears in no output of the run: job logs, and every file the run wrote."""
    secret = s3.env()["AWS_SECRET_ACCESS_KEY"].encode()
    assert secret not in logs.encode()
    files = storage.list_files(run.root, recursive=True)
    assert len(files) > 10
    leaking = [uri for uri in files if secret in storage.read_bytes(uri)]
    assert not leaking, f"the S3 secret is written in {leaking}"


# One kill of each kind the issue names, chained through one run (each --resume meets the next).
KILLS = [
    KillPoint.named("labeling", 1, delay=1.0),
    KillPoint.named("selection", 1),
    KillPoint.named("adaptation", 1, delay=3.0),
    KillPoint.named("checkpoint", 1),
]


def test_a_driver_killed_at_each_stage_resumes_and_a_submitted_retry_finishes_every_stage(
    ray_head, storage_uri, s3
):
    """The first driver pretrains through Ray Train. SIGKILL the driver (its whole process group)
    during round 1's labeling, selection and adaptation, and right after its checkpoint; after each
    kill the committed stages are whole, and --resume goes on from the last of them, never redoing a
    committed stage. Then ``ray job submit`` runs the --resume: a second driver on the live run is
    refused at once, in one line, and the job runs round 1 through every stage and releases the run.

    One run for both (they were two tests on two runs, 315-330 s together on 2 cores; this one took
    191 s): most of each driver's time goes to starting Ray actors and worker processes."""
    env = {**ray_head.env, "RAY_ADDRESS": ray_head.address}
    run = RunDir(storage_uri, "e2e")
    args = _entrypoint(storage_uri, "e2e")[2:]
    taken = r"took over the lease of run \S+ .*: its process \d+ on this machine is gone"
    output = []
    for attempt, kill in enumerate(KILLS):
        done = run_driver([*args, *(["--resume"] if attempt else [])], env, REPO, kill, timeout=600)
        output.append(done.output)
        assert done.killed, f"{kill} never came:\n{done.output[-3000:]}"
        # Read after the first driver, which renders the target.
        targets = _target_frames(storage_uri)
        assert audit(run, targets) == [], f"after the kill at {kill}"
        assert run.committed_rounds()[:1] == [0], "stage 0 is committed in the first attempt"
        if attempt:
            assert "committed through pretrain" in done.output
            # The killed driver's lease is taken over at once: its process on this machine is gone.
            assert re.search(taken, done.output)
            assert not re.search(KILL_POINTS["pretrain checkpoint"], done.output), "stage 0 was redone"

    job = ray_head.submit([*_entrypoint(storage_uri, "e2e"), "--resume"], REPO, wait=False)
    wait_for(lambda: "round 1: labeling" in ray_head.logs(job.job_id), 600, "the job to take the run over")
    # A second driver on the live run (a retry while the first still runs): refused at once, in one line.
    second = run_driver([*args, "--resume"], env, REPO, timeout=120)
    assert second.returncode == 2 and second.seconds < 60, second.output[-3000:]
    [line] = [line for line in second.output.splitlines() if line.startswith("error:")]
    assert re.fullmatch(r"error: run \S+/e2e is held by another driver: host \S+ pid \d+ .*", line)
    assert "last heartbeat" in line and "Traceback" not in second.output
    wait_for(lambda: ray_head.job_status(job.job_id) not in ("PENDING", "RUNNING"), 1800, "the job to end")
    done = Job(job.job_id, ray_head.job_status(job.job_id), ray_head.logs(job.job_id))
    assert done.succeeded, done.logs[-3000:]
    assert re.search(taken, done.logs) and "committed through pretrain" in done.logs
    assert not storage.exists(run.lease)  # released at the end
    _check_committed_round(run, targets)
    lines = [line for line in storage.read_bytes(run.metrics).decode().splitlines() if line]
    records = [json.loads(line) for line in lines]
    assert [(r["stage"], r["round"]) for r in records] == [("pretrain", 0), ("round", 1)]
    assert all(r["num_frames"] == SMOKE.data.synthetic_test_frames and r["mpjpe"] > 0 for r in records)
    assert "round 1: MPJPE" in done.logs
    # Each stage's evaluation is the summary of its per-frame errors, every test frame once.
    for record in records:
        summary = summarize_errors(run.evaluation(record["round"]), SMOKE.data.synthetic_test_frames)
        assert {"stage": record["stage"], "round": record["round"], **summary} == record
    # Each manifest says where the stage's time went: the job redid the killed round whole.
    assert set(run.read_manifest(0)["seconds"]) == {"read", "train", "checkpoint", "evaluate"}
    seconds = run.read_manifest(1)["seconds"]
    assert set(seconds) == {"label", "select", "read", "adapt", "checkpoint", "evaluate"}
    assert seconds["label"] > 0 and seconds["adapt"] > 0
    _assert_no_secret(s3, "\n".join([*output, second.output, done.logs]), run)
