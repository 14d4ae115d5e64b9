"""dfa_ray.ops.localcluster: worker nodes that are real `ray start` raylets, on one machine.

The scenario of tests/test_faults.py (a label stage loses the node of one of its actors and still
labels every frame exactly once), but on the nodes users get from ``python -m dfa_ray.ops.localcluster``
(separate ``ray start --block`` process groups on free ports, with token authentication) instead of
``ray.cluster_utils``' in-process nodes. Then ``stop()`` must leave no process of the cluster
running, and the CLI must serve until SIGTERM and then stop all it started. About a minute on 2 cores.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfa_ray.config import LabelConfig
from dfa_ray.data import synthetic
from dfa_ray.data.records import read_records, write_records
from dfa_ray.method import checkpoints
from dfa_ray.method.model import ModelConfig, PoseModel
from dfa_ray.ops.localcluster import LocalRay, instructions
from dfa_ray.ops.objectstore import EmbeddedS3
from dfa_ray.stages.label import label_frames, read_labels
from tests.helpers import in_background, wait_for

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
from ray.util.state import list_actors, list_tasks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FRAMES = 1500
LABEL = LabelConfig(actors=2, batch_size=25, rows_per_block=50, num_cpus=0.5)
# CPU actors decode their own batches: Ray fuses the decode step into the labeler's actors.
LABELER = "MapWorker(MapBatches(decode_frames)->MapBatches(PseudoLabeler))"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """This module's own S3 server, with credentials enforced."""
    server = EmbeddedS3(
        tmp_path_factory.mktemp("localcluster-s3"), bucket="localcluster", secret_key=secrets.token_hex(16)
    )
    with server:
        yield server


@pytest.fixture
def cluster(s3, tmp_path):
    """A head with 0 CPUs and two 2-CPU worker nodes; this process is the driver (token auth, S3 env)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    local = LocalRay(
        env=s3.env(), worker_nodes=2, worker_cpus=2, object_store_memory=256 * 2**20, log_dir=tmp_path / "ray"
    )
    with pytest.MonkeyPatch.context() as patch, local:
        for key, value in s3.env().items():
            patch.setenv(key, value)
        patch.setenv("RAY_AUTH_MODE", "token")
        # Ray reads RAY_AUTH_MODE once, when it is imported (measured: the variable set later is ignored
        # and the GCS refuses the driver, "InvalidAuthToken"); re-read it, as ray.init does for its own
        # clusters.
        Config.initialize("")
        ray.init(address=local.address, logging_level="warning")
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            yield local
        finally:
            ray.shutdown()
    # Back to this process's own setting for the tests after this one, and without the token it
    # cached: a later driver of a cluster without auth kept it, and that cluster's workers then
    # failed to fetch the driver's objects ("OwnerDiedError"; measured with tests/test_faults.py run
    # after this module, which passes with the cache reset).
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture
def inputs(s3):
    """A synthetic target and a checkpoint of the default model, both on S3 like a real run's."""
    prefix = f"localcluster-{secrets.token_hex(4)}"
    target, model = s3.uri(prefix, "target"), s3.uri(prefix, "model.pt")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3.env().items():
            patch.setenv(key, value)
        write_records(synthetic.generate("synthetic-real", "train", FRAMES, crop_size=48, workers=2), target)
        torch.manual_seed(0)
        # The default model, not the smoke one: on a quiet machine the smoke model labels all frames in
        # ~2 s, too soon after the first batch to kill a node mid-stage (measured).
        checkpoints.save(PoseModel(ModelConfig()), model, stage="test")
        frame_ids = read_records(target, columns=["frame_id"]).column("frame_id").to_pylist()
    return {"target": target, "model": model, "labels": s3.uri(prefix, "labels"), "frame_ids": frame_ids}


def _live_processes(pgid: int | None = None, pid: int | None = None) -> list[int]:
    """Pids of processes in group ``pgid`` (or the process ``pid``) that still run; zombies, which
    only wait for a parent to reap them, do not count."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (pid is not None and int(entry.name) != pid):
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat.rpartition(")")[2].split()[:3]
        if state != "Z" and (pgid is None or int(group) == pgid):
            found.append(int(entry.name))
    return found


@pytest.mark.slow  # real `ray start` nodes, one of them killed mid-labeling
def test_label_actors_spread_over_the_worker_nodes_and_survive_losing_one(cluster, inputs):
    groups = [node.process.pid for node in cluster.workers] + [cluster._process.pid]
    thread, out = in_background(
        lambda: label_frames(
            inputs["target"], inputs["model"], inputs["labels"], 1, LABEL, 1.0, ModelConfig().input_size
        )
    )
    actors = wait_for(
        lambda: (lambda found: found if len(found) == 2 else None)(
            list_actors(filters=[("class_name", "=", LABELER), ("state", "=", "ALIVE")], detail=True)
        ),
        120,
        "2 alive label actors",
    )
    # The head has no CPUs, so the pool lands on the worker nodes, one actor on each.
    assert {actor.node_id for actor in actors} == {node.node_id for node in cluster.workers}
    # Kill once labeling is under way. Earlier, Ray Data is still listing the input with FooterReader
    # actors, and losing one of those fails the whole Dataset (measured, Ray 2.60): a retry of the
    # stage's window, not of the actor pool this test is about.
    wait_for(
        lambda: list_tasks(filters=[("name", "=", f"{LABELER}.submit"), ("state", "=", "FINISHED")]),
        120,
        "the first labeled batch",
    )
    assert thread.is_alive(), "the stage ended before the node could be killed: make the target larger"
    victim_actor = actors[0]
    index = next(i for i, node in enumerate(cluster.workers) if node.node_id == victim_actor.node_id)
    victim = cluster.kill_node(index)
    assert not victim.running
    # SIGKILL is delivered to the group at once, but each process takes a moment to die.
    wait_for(lambda: not _live_processes(pgid=victim.process.pid), 10, f"{victim.name}'s group to die")

    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    ids = read_labels(inputs["labels"], ["frame_id"]).column("frame_id").to_pylist()
    assert len(ids) == FRAMES and sorted(ids) == sorted(inputs["frame_ids"]), (
        f"every frame exactly once: {len(ids)} labels, {len(set(ids))} distinct, of {FRAMES} frames"
    )
    # The node is really gone: Ray declares it dead, and its actor's process no longer runs.
    wait_for(lambda: victim.name not in cluster.alive_nodes(), 60, f"{victim.name} to be declared dead")
    wait_for(lambda: not _live_processes(pid=victim_actor.pid), 30, "the killed node's actor to exit")
    assert cluster.workers[1 - index].running

    ray.shutdown()  # a driver still connected holds the head's shutdown up for 30 s (measured)
    cluster.stop()  # the fixture's stop() then finds nothing left to do
    assert not cluster.running and not any(node.running for node in cluster.workers)
    wait_for(lambda: not any(_live_processes(pgid=g) for g in groups), 30, "every node's processes to exit")


@pytest.mark.slow  # a real head and worker node
def test_a_worker_whose_start_times_out_is_started_again(tmp_path, monkeypatch):
    real_spawn, spawned = LocalRay._spawn, []

    def spawn(self, name, *flags):
        spawned.append(name)
        if spawned.count("worker-1") == 1 and name == "worker-1":
            # What `ray start` prints and does when its raylet does not register in 30 s (a CI run).
            (self.log_dir / f"{name}.log").write_text(
                "Exception: The current node timed out during startup. This could happen because some "
                "of the raylet failed to startup or the GCS has become overloaded.\n"
            )
            return subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"], start_new_session=True)
        return real_spawn(self, name, *flags)

    monkeypatch.setattr(LocalRay, "_spawn", spawn)
    with LocalRay(worker_nodes=1, object_store_memory=128 * 2**20, log_dir=tmp_path) as local:
        assert spawned == ["head", "worker-1", "worker-1"]
        assert [node.name for node in local.workers] == ["worker-1"] and local.workers[0].running
        assert local.alive_nodes()["worker-1"] == local.workers[0].node_id


def test_cli_instructions_print_no_secret_yet_recover_it(s3, tmp_path):
    local = LocalRay(env=s3.env(), worker_nodes=2, worker_cpus=2, log_dir=tmp_path)  # not started
    text = instructions(local, s3)
    secret = s3.env()["AWS_SECRET_ACCESS_KEY"]
    assert secret not in text
    exports = [line.strip() for line in text.splitlines() if line.strip().startswith("export ")]
    assert f"export RAY_ADDRESS={local.address}" in " ".join(exports)
    # Paste the printed lines into a shell, as the user would: they must give back every S3 setting.
    echo = 'printf "%s\\n" "$AWS_SECRET_ACCESS_KEY" "$AWS_ENDPOINT_URL_S3" "$RAY_AUTH_MODE"'
    script = "\n".join([*exports, echo])
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={"PATH": os.defpath})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [secret, s3.endpoint_url, "token"]


def _ray_processes_of(port: int) -> list[str]:
    """Command lines of running processes that name ``port`` (a GCS or S3 port only this test uses)."""
    found = []
    for pid in _live_processes():
        try:
            command = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if re.search(rf"[:=]{port}\b", command):
            found.append(command)
    return found


@pytest.mark.slow  # the CLI starts a Ray head, a worker node and an S3 server
def test_cli_serves_a_cluster_until_sigterm_then_stops_all_it_started(tmp_path):
    output = tmp_path / "cli.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))}
    env["HOME"] = str(tmp_path / "home")  # a fresh machine: no ~/.ray/auth_token yet
    command = [sys.executable, "-m", "dfa_ray.ops.localcluster", "--workers", "1", "--worker-cpus", "1"]
    command += ["--object-store-mb", "128", "--s3-dir", str(tmp_path / "s3")]
    with open(output, "w") as out:
        cli = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        wait_for(lambda: "Ctrl-C" in output.read_text() or cli.poll() is not None, 120, "the CLI to print")
        text = output.read_text()
        assert cli.poll() is None, text
        gcs = int(re.search(r"export RAY_ADDRESS=127\.0\.0\.1:(\d+)", text)[1])
        s3 = int(re.search(r"export AWS_ENDPOINT_URL_S3=http://127\.0\.0\.1:(\d+)", text)[1])
        assert "workers: worker-1 (1 CPUs)" in text and 'AWS_SECRET_ACCESS_KEY="$(' in text
        assert (tmp_path / "home" / ".ray" / "auth_token").is_file(), "the head made the token it needs"
        running = _ray_processes_of(gcs)
        assert any("--head" in c for c in running) and any("--node-name=worker-1" in c for c in running)
        assert _ray_processes_of(s3), "the S3 server runs"
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=90) == 0, output.read_text()
        wait_for(lambda: not _ray_processes_of(gcs) and not _ray_processes_of(s3), 30, "the cluster to stop")
    finally:
        if cli.poll() is None:  # the nodes are in sessions of their own: give it the chance to stop them
            cli.send_signal(signal.SIGTERM)
            cli.wait(timeout=90)
