"""The driver's Ray: the job's cluster, or a private local one that listens on loopback only.

``connect`` tries ``ray.init`` up to ``ray.start_attempts`` times. On a loaded machine a local start
can miss Ray's own 30 s limit for the raylet to register ("The current node timed out during
startup"), leaving the GCS and raylet it started running; they are stopped before the next try, so
a driver never carries a dead half-cluster along. When every try fails, RayStartError says so in
one line.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dfa_ray.config import RayConfig

# Ray's switch for its single-machine mode, the default on macOS and Windows ("0": single machine).
_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayStartError(RuntimeError):
    """Ray could not be started (or joined) in the attempts allowed; the message is one line."""


@contextmanager
def loopback_only() -> Iterator[None]:
    """Ray's single-machine mode while a local cluster starts: its node address is 127.0.0.1, and its
    GCS, raylet, agents and workers listen there alone.

    On Linux Ray takes the machine's address as the node's and binds those servers to every
    interface; 127.0.0.1 passed as ``_node_ip_address`` is mapped back to that address. In its
    single-machine mode the node address stays loopback, and every listening socket of the cluster
    then is on 127.0.0.1 (measured with ``ss -ltnp``; tests/test_raystart.py checks it). Each Ray
    process reads the switch at import: the processes this start spawns take it from the environment
    (and pass it on to the workers they spawn later); this process, which has imported Ray already,
    from the constant it read. Both are restored afterwards, so that a later multi-node ``ray start``
    from this process (dfa_ray.ops.localcluster) is not refused.
    """
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_SINGLE_MACHINE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_MACHINE] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_SINGLE_MACHINE, None)
        else:
            os.environ[_SINGLE_MACHINE] = saved_env


def _child_pids() -> set[int]:
    """This process's children (read from /proc; none where there is no /proc)."""
    me, children = os.getpid(), set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # Field 4 (ppid), counted after the command name, which is in parentheses and may hold spaces.
        if int(stat.rpartition(")")[2].split()[1]) == me:
            children.add(int(entry.name))
    return children


def _stop(pids: set[int], timeout: float = 2.0) -> None:
    """SIGTERM the processes ``pids`` (children of this process), SIGKILL those left after ``timeout``,
    and reap them all. Ray's agents and workers share their raylet's fate and go with it. The timeout
    is short: a failed start's raylet and autoscaler monitor outlived SIGTERM by over 3 s (measured,
    where a 10 s timeout cost every retry 10 s), and a start that never came up has nothing to save."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.1)
        except ChildProcessError:
            pass  # already reaped


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _print(line: str) -> None:
    print(line, flush=True)  # a job's output is a pipe: a retry should show when it happens


def connect(settings: RayConfig, log: Callable[[str], None] = _print) -> None:
    """Join the job's cluster (``RAY_ADDRESS``, or ``ray.address``), else start a private local one on
    loopback; ``settings.start_attempts`` tries, then RayStartError."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = settings.address or os.environ.get("RAY_ADDRESS")
    attempts = settings.start_attempts
    for attempt in range(1, attempts + 1):
        before = _child_pids()
        try:
            if address:
                ray.init(address=address, logging_level="warning")
            else:
                with loopback_only():
                    ray.init(
                        address="local",
                        num_cpus=settings.num_cpus,
                        object_store_memory=settings.object_store_mb * 2**20,
                        # The dashboard serves the state API, which Ray Train's placement-group
                        # cleaner polls every second: without it each poll failed with a warning
                        # line in the driver's output (332 of 378 lines in a 2-round run), and the
                        # cleaner could not do its job. It costs ~1-2 s of start-up here.
                        include_dashboard=True,
                        dashboard_host="127.0.0.1",
                        logging_level="warning",
                    )
            break
        except Exception as exc:  # a start-up timeout is a bare Exception; any failure is retried
            ray.shutdown()
            _stop(_child_pids() - before)  # what this try started: a GCS and raylet that never came up
            reason = _one_line(exc)
            if attempt == attempts:
                what = f"join the Ray cluster at {address}" if address else "start a local Ray"
                raise RayStartError(f"could not {what} in {attempts} attempt(s): {reason}") from None
            log(f"Ray start-up failed (attempt {attempt} of {attempts}): {reason}; trying again")
    quiet_ray_data()


def quiet_ray_data() -> None:
    """Ray Data without its per-dataset console lines: the driver logs each stage itself.

    Progress bars are off (a job's output is a pipe) and so is the note on each execution's start
    and plan; a dataset carries the context it was created with, so this holds in the processes
    that run it too (Ray Train's split coordinators). This process's Ray Data console shows
    warnings and errors only, less the notes on the progress bars turned off here; Ray Data's log
    files (``ray-data*.log`` in the session's logs) still get every line.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # its file handlers are not streams
            handler.setLevel(logging.WARNING)
            handler.addFilter(_not_about_progress_bars)


def _not_about_progress_bars(record: logging.LogRecord) -> bool:
    return not record.name.startswith("ray.data._internal.progress")
