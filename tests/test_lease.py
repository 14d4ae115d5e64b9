"""The run lease on the real SeaweedFS and on local disk: one holder, refusal naming it, takeover of a
stale or dead holder's lease, exactly one winner among concurrent starters, release, a holder that
stops once its lease is taken, and the driver refused in one line while another holds its run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dfa_ray import driver, storage
from dfa_ray.config import ConfigError, differences, load_config, replace
from dfa_ray.ops.lease import LeaseHeld, RunLease
from dfa_ray.ops.rundir import RunDir
from tests.helpers import load_job, wait_for

self_train_job = load_job("self_train")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["local", "s3"])
def lease_uri(request, tmp_path):
    """``<root>/run/LEASE.json`` on local disk or on the session's SeaweedFS."""
    root = request.getfixturevalue("s3_prefix") if request.param == "s3" else str(tmp_path)
    return storage.join(root, "run", "LEASE.json")


def _fake_lease(uri: str, timeout_s: float, **body: object) -> None:
    """A lease written by a driver of another machine (its process cannot be looked up here)."""
    fields = {"owner": "elsewhere", "host": "other-host", "pid": 4242, "process": "boot/pid:[1]/4242/9",
              "started": "2026-01-01T00:00:00Z", "beat": "2026-01-01T00:00:00Z", "beats": 0,
              "timeout_s": timeout_s, **body}  # fmt: skip
    storage.write_bytes(uri, json.dumps(fields).encode())


def test_a_second_driver_is_refused_in_one_line_naming_the_holder_until_it_releases(lease_uri):
    first = RunLease(lease_uri, log=pytest.fail)
    with first:
        assert first.held and storage.is_file(lease_uri)
        with pytest.raises(LeaseHeld) as info:
            RunLease(lease_uri).acquire()
        message, run = str(info.value), lease_uri.rpartition("/")[0]
        assert "\n" not in message and f"run {run} is held by another driver" in message
        assert f"pid {os.getpid()}" in message and "host " in message
        assert "last heartbeat 0 s ago" in message or "last heartbeat 1 s ago" in message
    assert not first.held and not storage.exists(lease_uri)
    second = RunLease(lease_uri, log=pytest.fail)
    with second:
        assert second.held


def test_the_heartbeat_keeps_a_lease_live_past_its_timeout(lease_uri):
    with RunLease(lease_uri, timeout_s=3, heartbeat_s=0.5):
        time.sleep(4.5)  # every beat renews: the lease is never 3 s old
        with pytest.raises(LeaseHeld):
            RunLease(lease_uri).acquire()
        beats = json.loads(storage.read_bytes(lease_uri))["beats"]
        assert beats >= 5


def test_a_stale_lease_is_taken_over_and_that_is_logged(lease_uri):
    _fake_lease(lease_uri, timeout_s=30)
    with pytest.raises(LeaseHeld, match="host other-host pid 4242 .* taken over"):
        RunLease(lease_uri).acquire()  # 30 s without a beat: not yet stale
    _fake_lease(lease_uri, timeout_s=1)
    time.sleep(2.5)  # S3 ages have 1 s resolution
    lines: list[str] = []
    with RunLease(lease_uri, log=lines.append) as lease:
        assert lease.held and json.loads(storage.read_bytes(lease_uri))["owner"] == lease.owner
    [line] = lines
    assert "took over the lease" in line and "host other-host pid 4242" in line
    assert "no heartbeat for" in line and "past its 1 s timeout" in line


def test_a_lease_whose_process_on_this_machine_is_gone_is_taken_over_at_once(lease_uri):
    # A driver SIGKILLs itself while holding the lease, as a killed driver would leave it.
    code = (
        "import os, signal, sys; from dfa_ray.ops.lease import RunLease; "
        "RunLease(sys.argv[1], log=print).acquire(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code, lease_uri], env=env, capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    dead = json.loads(storage.read_bytes(lease_uri))["pid"]
    lines: list[str] = []
    with RunLease(lease_uri, log=lines.append):
        pass
    assert lines == [lines[0]] and f"its process {dead} on this machine is gone" in lines[0]


def _contend(lease: RunLease, start: threading.Barrier, outcomes: list[str]) -> None:
    start.wait()
    try:
        lease.acquire()
        outcomes.append("held")
    except LeaseHeld as exc:
        outcomes.append(str(exc))


def test_of_drivers_started_together_exactly_one_holds_the_run(lease_uri):
    for trial in range(3):
        uri = lease_uri.replace("/run/", f"/run-{trial}/")
        leases = [RunLease(uri, log=pytest.fail) for _ in range(6)]
        start, outcomes = threading.Barrier(len(leases)), []
        threads = [threading.Thread(target=_contend, args=(lease, start, outcomes)) for lease in leases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        try:
            assert outcomes.count("held") == 1 and len(outcomes) == len(leases), outcomes
            assert all("is held by another driver" in o for o in outcomes if o != "held")
        finally:
            for lease in leases:
                lease.release()
        assert not storage.exists(uri)


def test_a_holder_whose_lease_is_taken_stops_and_leaves_the_new_lease_alone(lease_uri):
    lost: list[str] = []
    holder = RunLease(lease_uri, timeout_s=3, heartbeat_s=0.5, on_lost=lost.append)
    holder.acquire()
    _fake_lease(lease_uri, timeout_s=30)  # another driver took the run
    wait_for(lambda: lost, 10, "the holder to notice")
    assert not holder.held
    assert lost == [f"the lease {lease_uri} was taken over by another driver; stopping at once so as not to "
                    "write beside it"]  # fmt: skip
    holder.release()
    assert json.loads(storage.read_bytes(lease_uri))["owner"] == "elsewhere"


def test_the_lease_timeout_leaves_room_for_the_holder_to_give_up_first():
    with pytest.raises(ValueError, match="at least 6 heartbeats"):
        RunLease("/tmp/x/LEASE.json", timeout_s=30, heartbeat_s=10)


def test_a_holder_that_cannot_renew_for_half_its_timeout_stops(tmp_path):
    lost: list[str] = []
    uri = str(tmp_path / "run" / "LEASE.json")
    holder = RunLease(uri, timeout_s=3, heartbeat_s=0.5, on_lost=lost.append)
    holder.acquire()
    (tmp_path / "run").rename(tmp_path / "moved")
    (tmp_path / "run").write_text("a file where the run's folder was: every renewal fails")
    started = time.monotonic()
    wait_for(lambda: lost, 10, "the holder to give up")
    assert 1.5 <= time.monotonic() - started < 4.0 and not holder.held
    [line] = lost
    assert re.match(rf"could not renew the lease {re.escape(uri)} for \d s: ", line) and "\n" not in line
    holder.release()


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_a_second_driver_on_a_live_run_exits_2_in_one_line_before_ray(resume, lease_uri, capsys, monkeypatch):
    monkeypatch.setattr(driver, "connect", lambda settings: pytest.fail("the second driver reached Ray"))
    storage_uri = lease_uri.rpartition("/run/")[0]
    run = RunDir(storage_uri, "run")
    argv = ["--storage", storage_uri, "--run-name", "run", *(["--resume"] if resume else [])]
    started = time.monotonic()
    with RunLease(run.lease):  # the first driver, running
        assert self_train_job.main(argv) == 2
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: run {run.root} is held by another driver: host ") and "\n" not in err
    assert f"pid {os.getpid()}" in err and "last heartbeat" in err
    assert not storage.exists(run.config) and not storage.exists(run.lease)


def test_lease_settings_are_config_values_that_a_resume_may_change(tmp_path):
    with pytest.raises(
        ConfigError, match="lease.timeout_s \\(60.0\\) must be at least 6 x lease.heartbeat_s"
    ):
        load_config(None, ["lease.timeout_s=60", "lease.heartbeat_s=15"])
    config = load_config(None, [f"storage={tmp_path}"])
    assert (
        differences(
            config, replace(config, ["lease.timeout_s=300", "lease.heartbeat_s=30"]), ("ray", "lease")
        )
        == []
    )
