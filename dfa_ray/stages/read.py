"""Schema-v1 datasets (local or ``s3://``) as Ray datasets, through the same file listing as the
readers; and a stage's Parquet output read back in the driver, which checks it holds every frame once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dfa_ray import storage
from dfa_ray.data.records import dataset_files


def read_parquet(uri: str, columns: Sequence[str]) -> Any:
    """``ray.data.read_parquet`` over the dataset's ``*.parquet`` files, on the filesystem ``uri`` names.

    Every Ray dataset of the project starts here, so this is also where its read settings are made
    (a dataset keeps the context it was created with):
    - Ray Data's retry of failed reads and writes is off. S3 requests already retry with backoff in
      the client, as often as ``AWS_MAX_ATTEMPTS`` allows (see ``storage``); Ray's loop around that
      multiplies the bound. Measured with the store down and AWS_MAX_ATTEMPTS=2, a label write
      failed after 173 s with Ray's retries and after 1 s without.
    - Parquet is read by Ray's V1 datasource, not the default V2 (``ListFiles -> ReadFiles``). We
      pass the file list ourselves, so V2's listing task only adds a fixed wait: in Ray 2.60 it took
      2.7-3.2 s of wall time for 0.1 s of CPU on 10 local files. Measured on 2 cores: reading 120
      rows took 2.9-3.9 s with V2 and 0.3-0.5 s with V1; the source read (two datasets, a union and
      a random shuffle, 132 rows) 6.2-10.6 s against 0.7-2.3 s. A round reads four datasets.
    - One block per file: V1 splits its reads up to ``read_op_min_num_blocks`` (200), and the
      demo's source (6,000 frames in 4 files on S3) came as 174 blocks, whose random shuffle took
      17-20 s; V2 made 2 blocks of them (3-6 s), one block per file 1.6-3.6 s. The stages that
      spread frames over actors repartition by rows themselves.
    """
    import ray

    context = ray.data.DataContext.get_current()
    context.retried_io_errors = []
    context.use_datasource_v2 = False
    files = dataset_files(uri)
    filesystem, _ = storage.resolve(files[0])
    paths = [storage.resolve(f)[1] for f in files]
    return ray.data.read_parquet(
        paths, filesystem=filesystem, columns=list(columns), override_num_blocks=len(paths)
    )


def read_output(uri: str, what: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Every ``*.parquet`` file under a stage's output ``uri`` (or that one file), ``what`` naming
    the output in errors ("label", "evaluation")."""
    single = uri.endswith(".parquet") and storage.is_file(uri)
    files = [uri] if single else storage.list_files(uri, suffix=".parquet", recursive=True)
    if not files:
        raise FileNotFoundError(f"no {what} files at {uri}")
    tables = []
    for file_uri in files:
        with storage.storage_errors(file_uri, f"read {what}s"), storage.open_input(file_uri) as handle:
            tables.append(pq.read_table(handle, columns=list(columns) if columns else None))
    return pa.concat_tables(tables, promote_options="permissive")


def check_each_frame_once(uri: str, frame_ids: np.ndarray, expected_frames: int | None, done: str) -> None:
    """Raise unless a stage's output at ``uri`` holds each frame once and, given ``expected_frames``
    (its input's size), that many: a lost or repeated shard must fail the stage, not shrink it.
    ``done`` says what the stage did to a frame ("labeled", "evaluated")."""
    unique, counts = np.unique(frame_ids, return_counts=True)
    if (counts > 1).any():
        twice = unique[counts > 1][:5].tolist()
        raise ValueError(f"{uri}: {int((counts > 1).sum())} frame(s) {done} more than once, e.g. {twice}")
    if expected_frames is not None and len(frame_ids) != expected_frames:
        raise RuntimeError(
            f"{uri}: {len(frame_ids)} frames were {done}, the input has {expected_frames}; "
            "an output file is missing or extra, so the stage is not committed"
        )
