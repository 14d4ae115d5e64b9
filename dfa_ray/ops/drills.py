"""Driver-loss drills: run ``jobs/self_train.py``, SIGKILL it at a chosen point, audit what it left.

A **kill point** is a line of the driver's own progress output (a stage starting, a checkpoint
written) and a delay after it; ``KILL_POINTS`` names the ones the method has. ``run_driver`` starts
the driver as its own process group and kills the whole group there, as a lost node would: no
handler runs, nothing is flushed. ``audit`` then checks the commit rule of ``rundir``: every
committed stage is whole (labels hold every target frame exactly once, the selection matches the
manifest, the model exists) and metrics.jsonl lists exactly the committed evaluations. Whatever an
uncommitted stage left is allowed: ``--resume`` deletes it.

Used by ``tests/test_self_train_job.py`` (one kill per kind) and ``benchmarks/driver_kill.py``
(random kill points, repeated); an operator can run the benchmark against a real cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dfa_ray import storage
from dfa_ray.config import Config
from dfa_ray.data.records import read_records
from dfa_ray.driver import synthetic_uri
from dfa_ray.ops.rundir import RunDir
from dfa_ray.stages.label import read_labels

# The driver's progress lines that start each part of a run (see driver.self_train).
KILL_POINTS = {
    "pretraining": r"pretrain: \d+ epochs on",
    "pretrain checkpoint": r"pretrain: checkpoint",
    "labeling": r"round {k}: labeling",
    "selection": r"round {k}: labeled in",
    "adaptation": r"round {k}: adapting",
    "checkpoint": r"round {k}: checkpoint",
}


@dataclass(frozen=True)
class KillPoint:
    """SIGKILL the driver ``delay`` seconds after its first output line matching ``pattern``."""

    pattern: str
    delay: float = 0.0

    @classmethod
    def named(cls, name: str, round_index: int = 1, delay: float = 0.0) -> KillPoint:
        """One of KILL_POINTS (round-stage kinds in round ``round_index``)."""
        return cls(KILL_POINTS[name].format(k=round_index), delay)


@dataclass
class DriverRun:
    """How one driver process ended."""

    returncode: int | None
    output: str
    killed: bool  # by the kill point (not the timeout)
    seconds: float
    timed_out: bool = False
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line)


def run_driver(
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: str | os.PathLike,
    kill: KillPoint | None = None,
    timeout: float = 900.0,
    echo: Callable[[str], None] | None = None,
) -> DriverRun:
    """Run ``python jobs/self_train.py *args`` in ``cwd``; kill it at ``kill`` (if the line comes)."""
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "jobs/self_train.py", *args],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    state = {"killed": False, "timed_out": False}

    def stop(reason: str) -> None:
        if process.poll() is None:
            state[reason] = True
            os.killpg(process.pid, signal.SIGKILL)

    watchdog = threading.Timer(timeout, stop, ("timed_out",))
    watchdog.start()
    pending: threading.Timer | None = None
    lines: list[tuple[float, str]] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append((time.monotonic() - start, line.rstrip("\n")))
            if echo:
                echo(line.rstrip("\n"))
            if kill is not None and pending is None and re.search(kill.pattern, line):
                pending = threading.Timer(kill.delay, stop, ("killed",))
                pending.start()
        process.wait()
    finally:
        watchdog.cancel()
        if pending is not None:
            pending.cancel()
    return DriverRun(
        process.returncode,
        "\n".join(text for _, text in lines),
        state["killed"],
        time.monotonic() - start,
        state["timed_out"],
        lines,
    )


def audit(run: RunDir, target_ids: Sequence[str]) -> list[str]:
    """What is wrong with ``run``'s committed stages (empty: every committed stage is whole)."""
    problems = []
    expected = sorted(target_ids)
    manifests = {k: run.read_manifest(k) for k in run.committed_rounds()}
    for k, manifest in manifests.items():
        where = "pretrain" if k == 0 else f"round {k}"
        if not storage.is_file(run.model(k)):
            problems.append(f"{where}: committed without its model {run.model(k)}")
        if k == 0:
            continue
        try:
            labeled = sorted(read_labels(run.labels(k), ["frame_id"]).column("frame_id").to_pylist())
            kept = read_labels(run.selected(k), ["frame_id"]).num_rows
        except OSError as exc:
            problems.append(f"{where}: committed, but its labels cannot be read: {exc}")
            continue
        if labeled != expected:
            problems.append(f"{where}: labels hold {len(labeled)} frames ({len(set(labeled))} distinct), "
                            f"the target {len(expected)}")  # fmt: skip
        if kept != manifest["selection"]["num_kept"]:
            problems.append(f"{where}: selected.parquet has {kept} rows, the manifest says "
                            f"{manifest['selection']['num_kept']}")  # fmt: skip
    stages = [(m["evaluation"]["stage"], m["evaluation"]["round"]) for m in manifests.values()]
    logged = []
    if storage.exists(run.metrics):
        text = storage.read_bytes(run.metrics).decode()
        logged = [(r["stage"], r["round"]) for r in map(json.loads, filter(None, text.splitlines()))]
    # A kill between a manifest and the metrics rebuild leaves the last line out; a resume rewrites it.
    if logged != stages and logged != stages[:-1]:
        problems.append(f"metrics.jsonl lists {logged}, the committed stages are {stages}")
    return problems


def synthetic_target_ids(storage_uri: str, config: Config) -> list[str]:
    """The frame_ids of the synthetic target that runs of ``config`` on ``storage_uri`` label (what
    ``audit`` expects); the first run renders it."""
    data = config.data
    uri = synthetic_uri(storage_uri, "synthetic-real", "train", data.synthetic_target_frames, data)
    return read_records(uri, columns=["frame_id"]).column("frame_id").to_pylist()


def repo_root() -> Path:
    """The checkout this module belongs to (where ``jobs/self_train.py`` is)."""
    return Path(__file__).resolve().parents[2]
