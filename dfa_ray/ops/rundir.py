"""The layout of a run in storage, and the commit rule that makes ``--resume`` safe.

    <storage>/<run>/LEASE.json               the running driver's lease (dfa_ray.ops.lease), while one runs
    <storage>/<run>/config.yaml              the resolved config the run was started with
    <storage>/<run>/metrics.jsonl            one JSON line per committed evaluation (rebuilt, never appended)
    <storage>/<run>/pretrain/                model.pt, ray/ (Ray Train's files), eval/, COMMITTED.json
    <storage>/<run>/round-<k>/               labels/, selected.parquet, checkpoint/model.pt, ray/, eval/,
                                             COMMITTED.json

A stage is **committed** when its ``COMMITTED.json`` exists; that manifest is written last, after
every other output of the stage, and holds the stage's statistics, its evaluation and the seconds
each of its steps took. Nothing reads an uncommitted stage: resuming deletes it and runs it again,
and only a driver holding the run's lease may delete it, so a second driver never deletes the stage
the first is writing.
``metrics.jsonl`` is regenerated from the committed manifests, so it never holds a line of a stage
that was rerun.
"""

from __future__ import annotations

import json
import re

import pyarrow.fs as pafs

from dfa_ray import storage
from dfa_ray.ops.lease import RunLease

MANIFEST = "COMMITTED.json"
_ROUND = re.compile(r"^round-(\d+)$")


class RunDir:
    """Paths and manifests of one run (``root`` is ``<storage>/<run_name>``)."""

    def __init__(self, storage_uri: str, run_name: str) -> None:
        self.root = storage.join(storage_uri, run_name)
        self.holder: RunLease | None = None  # this driver's lease on the run, once it holds one

    @property
    def lease(self) -> str:
        """The run's lease object."""
        return storage.join(self.root, "LEASE.json")

    @property
    def config(self) -> str:
        """The run's saved config."""
        return storage.join(self.root, "config.yaml")

    @property
    def metrics(self) -> str:
        """The run's metrics.jsonl."""
        return storage.join(self.root, "metrics.jsonl")

    def stage(self, round_index: int) -> str:
        """``pretrain/`` for round 0, ``round-<k>/`` after it."""
        return storage.join(self.root, "pretrain" if round_index == 0 else f"round-{round_index}")

    def model(self, round_index: int) -> str:
        """The model a committed stage produced."""
        if round_index == 0:
            return storage.join(self.stage(0), "model.pt")
        return storage.join(self.stage(round_index), "checkpoint", "model.pt")

    def labels(self, round_index: int) -> str:
        """Round k's pseudo-labels (every target frame once)."""
        return storage.join(self.stage(round_index), "labels")

    def selected(self, round_index: int) -> str:
        """Round k's kept frames with their labels."""
        return storage.join(self.stage(round_index), "selected.parquet")

    def evaluation(self, round_index: int) -> str:
        """Each test frame's errors under the stage's model (``stages.evaluate``)."""
        return storage.join(self.stage(round_index), "eval")

    def ray_storage(self, round_index: int) -> str:
        """Where Ray Train keeps its run files for a stage."""
        return storage.join(self.stage(round_index), "ray")

    def manifest(self, round_index: int) -> str:
        """The stage's commit marker."""
        return storage.join(self.stage(round_index), MANIFEST)

    def is_committed(self, round_index: int) -> bool:
        """Whether the stage's manifest exists."""
        return storage.exists(self.manifest(round_index))

    def read_manifest(self, round_index: int) -> dict:
        """A committed stage's manifest."""
        return json.loads(storage.read_bytes(self.manifest(round_index)))

    def committed_rounds(self) -> list[int]:
        """Committed stages in order (0 = pretrain), stopping at the first gap."""
        done = []
        for k in range(0, 1 + max(self._round_numbers(), default=0)):
            if not self.is_committed(k):
                break
            done.append(k)
        return done

    def _round_numbers(self) -> list[int]:
        filesystem, path = storage.resolve(self.root)
        with storage.storage_errors(self.root, "list"):
            infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return [int(m[1]) for info in infos if (m := _ROUND.match(info.base_name))]

    def clear(self, round_index: int) -> None:
        """Delete whatever an interrupted attempt left of a stage (never a committed one), holding the
        run's lease: without it, that stage may be another live driver's work in progress."""
        if self.holder is None or not self.holder.held:
            raise RuntimeError(f"refusing to delete {self.stage(round_index)} without holding {self.lease}")
        if self.is_committed(round_index):
            raise RuntimeError(f"refusing to delete committed stage {self.stage(round_index)}")
        storage.remove_tree(self.stage(round_index))

    def commit(self, round_index: int, manifest: dict) -> None:
        """Write the stage's manifest (its last output), then rebuild metrics.jsonl from all manifests."""
        storage.write_bytes(self.manifest(round_index), json.dumps(manifest, indent=2).encode())
        self.write_metrics()

    def write_metrics(self) -> None:
        """Rebuild metrics.jsonl from the committed manifests (a resume repairs a kill in ``commit``)."""
        manifests = [self.read_manifest(k) for k in self.committed_rounds()]
        lines = [json.dumps(m["evaluation"]) for m in manifests if "evaluation" in m]
        storage.write_bytes(self.metrics, ("\n".join(lines) + "\n").encode())
