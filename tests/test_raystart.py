"""The driver's Ray (dfa_ray.ops.raystart): a local start that times out is stopped and tried again, the
local cluster listens on loopback only, and a driver whose Ray never starts fails in one line and
leaves nothing that refuses the same command.

The loopback test starts a real local Ray, as the driver does, fails its first start the way a
loaded machine does, then runs a task, an actor and a 2-worker Ray Train (DDP over gloo) stage, and
lists with ``ss -ltnp`` the listening sockets of every process of the session (this process and its
descendants). About 40 s on 2 cores.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from dfa_ray.config import ConfigError, RayConfig, load_config
from dfa_ray.ops import raystart
from dfa_ray.ops.rundir import RunDir
from tests.helpers import load_job

ray = pytest.importorskip("ray")
from ray._private import ray_constants, services  # noqa: E402

self_train_job = load_job("self_train")
TIMEOUT = "The current node timed out during startup. This could happen because some of the raylet failed"


def _descendants(root: int) -> set[int]:
    """``root`` and every process below it."""
    parents = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except OSError:
            continue
    found, grew = {root}, True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in found} - found
        found |= below
        grew = bool(below)
    return found


def _listening(pids: set[int]) -> list[dict]:
    """The listening TCP sockets (``ss -ltnp``) of the processes ``pids``."""
    out = []
    for line in subprocess.run(
        ["ss", "-ltnpH"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)} & pids
        if owners:
            name = re.search(r'\("([^"]+)"', line)[1]
            out.append({"address": line.split()[3], "process": name, "pid": min(owners)})
    return out


def _is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host in ("*", "0.0.0.0", "::"):
        return False
    ip = ipaddress.ip_address(host)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def _names(pids: set[int]) -> list[str]:
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return names


def _pid() -> int:
    return os.getpid()


def _train_loop(config: dict) -> None:
    """Rank 0, with the process group up: the session's listening sockets and torch's store port."""
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        sockets = _listening(_descendants(config["driver"]))
        Path(config["out"]).write_text(
            json.dumps({"sockets": sockets, "master_port": os.environ["MASTER_PORT"]})
        )


@pytest.mark.slow  # two local Ray starts (one timed out) and a 2-worker TorchTrainer
def test_a_timed_out_start_is_stopped_and_retried_and_the_local_ray_listens_on_loopback_only(
    tmp_path, monkeypatch
):
    real_init, real_get_node, tries = ray.init, services.get_node, []

    def init(*args, **kwargs):
        tries.append(kwargs)
        return real_init(*args, **kwargs)

    def get_node(*args, **kwargs):
        # The first start: the raylet never registers, as on a loaded machine. Ray polls get_node for
        # 30 s (a constant in ray._private.node) before raising this; raised at once here, from the
        # same place, with its GCS and raylet started.
        if len(tries) == 1:
            raise Exception(f"{TIMEOUT} to startup or the GCS has become overloaded.")
        return real_get_node(*args, **kwargs)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(services, "get_node", get_node)
    lines: list[str] = []
    raystart.connect(RayConfig(num_cpus=2, object_store_mb=256, start_attempts=2), log=lines.append)
    try:
        assert len(tries) == 2 and lines == [
            f"Ray start-up failed (attempt 1 of 2): {TIMEOUT} to startup or the GCS has become overloaded.; "
            "trying again"
        ]
        # The first start's GCS and raylet were stopped: one cluster runs, and the switch is back.
        assert _names(_descendants(os.getpid())).count("gcs_server") == 1
        assert ray_constants.ENABLE_RAY_CLUSTER and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ

        @ray.remote(num_cpus=0.5)
        class Actor:
            def pid(self) -> int:
                return os.getpid()

        actor = Actor.remote()
        assert ray.get(actor.pid.remote()) != ray.get(ray.remote(_pid).remote())
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        out = tmp_path / "sockets.json"
        TorchTrainer(
            _train_loop,
            train_loop_config={"driver": os.getpid(), "out": str(out)},
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
            run_config=RunConfig(name="loopback", storage_path=str(tmp_path / "train")),
        ).fit()
        during_training = json.loads(out.read_text())
        sockets = _listening(_descendants(os.getpid())) + during_training["sockets"]
        names = {s["process"] for s in sockets}
        assert {"gcs_server", "raylet", "ray::Actor", "ray::RayTrainWo"} <= names, names
        # torch.distributed's rendezvous store (rank 0 of a train stage, on MASTER_PORT) binds every
        # interface whatever its address: torch has no setting for it. Every other socket is loopback.
        store = f":{during_training['master_port']}"
        exposed = [s for s in sockets if not _is_loopback(s["address"]) and not s["address"].endswith(store)]
        assert not exposed, exposed
    finally:
        ray.shutdown()


def test_a_driver_whose_ray_never_starts_fails_in_one_line_and_leaves_nothing_behind(
    tmp_path, capsys, monkeypatch
):
    calls = []

    def init(*args, **kwargs):
        calls.append(kwargs)
        raise Exception(f"{TIMEOUT} to startup or the GCS has become overloaded.")  # what Ray raises

    monkeypatch.setattr(ray, "init", init)
    runs = tmp_path / "runs"
    argv = ["--storage", str(runs), "--run-name", "r", "--set", "ray.start_attempts=2"]
    for _ in range(2):  # the same command, again: not refused as an existing run
        assert self_train_job.main(argv) == 1
        captured = capsys.readouterr()
        assert captured.err == (
            f"error: could not start a local Ray in 2 attempt(s): {TIMEOUT} to startup or the GCS has "
            "become overloaded.\n"
        )
        assert "Ray start-up failed (attempt 1 of 2)" in captured.out and "Traceback" not in captured.out
        run = RunDir(str(runs), "r")
        assert not Path(run.config).exists() and not Path(run.lease).exists()
    assert len(calls) == 4


def test_ray_start_attempts_is_at_least_one():
    with pytest.raises(ConfigError, match="ray.start_attempts must be at least 1, got 0"):
        load_config(None, ["ray.start_attempts=0"])
