"""Faults a preemptible cluster sees, on a multi-node Ray cluster and a real S3 server.

One ``ray.cluster_utils.Cluster`` serves the module: a head with no CPUs (as on a cloud cluster, no
work lands on it) and two worker nodes, started after the module's own EmbeddedS3 so every node has
its credentials. About 1.5 minutes on 2 cores.

- a Ray Train worker is killed mid-epoch: training resumes from the last reported checkpoint;
- the S3 server is down during a label write: the stage waits it out, or, if it stays down, fails
  after the client's bounded retries with an error naming the labels URI.

Losing a whole node mid-labeling is tests/test_localcluster.py, on real ``ray start`` raylets.
"""

from __future__ import annotations

import os
import secrets
import signal
import time

import pytest
import torch

from dfa_ray import storage
from dfa_ray.config import LabelConfig, load_config
from dfa_ray.data import synthetic
from dfa_ray.data.records import write_records
from dfa_ray.method import checkpoints
from dfa_ray.method.model import PoseModel
from dfa_ray.ops.objectstore import EmbeddedS3, free_ports
from dfa_ray.stages import train
from dfa_ray.stages.label import label_frames, read_labels
from tests.helpers import in_background, wait_for

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.state import list_actors  # noqa: E402

pytestmark = pytest.mark.slow  # a multi-node Ray cluster, killed workers, an S3 outage

SMOKE = load_config("configs/smoke.yaml", ["pretrain.epochs=6"])
LABEL = LabelConfig(actors=2, batch_size=25, rows_per_block=50, num_cpus=0.5)
NODE_ARGS = {"num_cpus": 2, "object_store_memory": 256 * 2**20}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """This module's own S3 server (the tests stop it), its AWS_* variables set for the module."""
    server = EmbeddedS3(
        tmp_path_factory.mktemp("faults-s3"), bucket="faults", secret_key=secrets.token_hex(16)
    )
    with server, pytest.MonkeyPatch.context() as patch:
        for key, value in server.env().items():
            patch.setenv(key, value)
        yield server


@pytest.fixture(scope="module")
def cluster(store):
    """Head (0 CPUs, dashboard for the state API) + two 2-CPU worker nodes; the driver is this process."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    head = {"num_cpus": 0, "include_dashboard": True, "dashboard_port": free_ports(1)[0]}
    nodes = Cluster(initialize_head=True, head_node_args={**head, "object_store_memory": 256 * 2**20})
    workers = [nodes.add_node(**NODE_ARGS) for _ in range(2)]
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, logging_level="warning")
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield nodes, workers
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 300-frame target ("small"), a 512-frame source and the smoke model's checkpoint."""
    root = tmp_path_factory.mktemp("faults-data")
    write_records(synthetic.generate("synthetic-real", "train", 300, crop_size=48), root / "small")
    write_records(
        synthetic.generate("synthetic-source", "train", 512, crop_size=48, workers=2), root / "source"
    )
    torch.manual_seed(0)
    checkpoints.save(PoseModel(SMOKE.model), str(root / "model.pt"), stage="test")
    return {name: str(root / name) for name in ("small", "source", "model.pt")}


def _alive(class_name: str) -> list:
    return list_actors(filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")], detail=True)


def _frame_ids(uri: str) -> list[str]:
    return read_labels(uri, ["frame_id"]).column("frame_id").to_pylist()


def test_a_killed_train_worker_resumes_from_the_last_checkpoint(cluster, inputs, tmp_path):
    dataset = train.read_source([inputs["source"]], seed=0)
    ray_storage = str(tmp_path / "ray")
    thread, out = in_background(
        lambda: train.run_stage(
            SMOKE, SMOKE.pretrain, {"source": dataset}, dataset.count(), ray_storage, None, "pretrain"
        )
    )

    # Ray Train writes this snapshot once a reported checkpoint is registered (a checkpoint folder
    # alone may still be uncommitted: killing then restarts from scratch). The state API can lag
    # behind, so the workers are looked up in the same wait.
    def reported_and_running() -> list:
        assert thread.is_alive(), f"training ended before a worker could be killed: {out}"
        files = storage.list_files(ray_storage, recursive=True)
        return any(f.endswith("checkpoint_manager_snapshot.json") for f in files) and _alive("RayTrainWorker")

    victim = wait_for(reported_and_running, 180, "a reported checkpoint and running workers")[-1]
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    _, metrics = out["result"]
    assert metrics["epoch"] == SMOKE.pretrain.epochs
    # The last attempt started from a checkpoint (epoch >= 1), not from scratch.
    assert 1 <= metrics["resumed_from_epoch"] < SMOKE.pretrain.epochs


def test_a_label_write_waits_out_an_s3_outage(cluster, inputs, store, monkeypatch):
    labels = store.uri(f"outage-{secrets.token_hex(4)}", "labels")
    # The retries' waits are random below 1, 2, 4, 8, 16 and 20 s (storage.py): at the default 7
    # tries they add up to less than the 6 s outage below about once in 500 requests, and one of this
    # stage's requests did so in CI. 10 tries make that about never; the mechanism is the same.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "10")
    store.stop()
    thread, out = in_background(
        lambda: label_frames(
            inputs["small"], inputs["model.pt"], labels, 1, LABEL, 1.0, SMOKE.model.input_size
        )
    )
    time.sleep(6.0)
    assert thread.is_alive(), f"the stage ended while the store was down: {out.get('error')!r}"
    store.start()  # same endpoint
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    ids = _frame_ids(labels)
    assert len(ids) == 300 and len(set(ids)) == 300, "no shard lost"


def test_a_store_that_stays_down_fails_the_stage_in_bounded_time_naming_the_uri(
    cluster, inputs, store, monkeypatch
):
    labels = store.uri(f"down-{secrets.token_hex(4)}", "labels")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    store.stop()
    try:
        start = time.perf_counter()
        with pytest.raises(storage.StorageError) as failure:
            label_frames(inputs["small"], inputs["model.pt"], labels, 1, LABEL, 1.0, SMOKE.model.input_size)
        seconds = time.perf_counter() - start
    finally:
        store.start()
    assert seconds < 60, f"gave up after {seconds:.0f} s"
    message = str(failure.value)
    assert labels in message and "could not write labels" in message
    assert store.env()["AWS_SECRET_ACCESS_KEY"] not in message
