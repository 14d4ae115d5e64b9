"""Read and write schema-v1 datasets (see ``schema``) on local paths and ``s3://`` alike.

Reading validates every row (``validation``) and reports bad ones by ``frame_id`` with a reason;
``on_bad="raise"`` lists every bad frame, ``on_bad="skip"`` drops just those rows. A file that is
not schema v1 at all (a required column missing, an incompatible type, every labeled row shaped for
another skeleton) raises ``SchemaError`` naming the file. The writer validates too, so bad rows are
refused at the source rather than discovered by a training job.

**Machine-made labels.** A dataset whose labels were made by a program, not annotated by people
(``prepare_data.py video --labels-2d``: MediaPipe's 2D landmarks) says so in every file's Parquet
metadata (``RecordWriter(machine_labels=...)``); ``machine_labels(uri)`` reads it back, and every job
that trains on such a dataset prints it. Its joints may follow the detector's skeleton rather than
Human3.6M's (MediaPipe's hips and nose are not H36M's joints): ``RecordWriter(skeleton=...)`` names it
and ``skeleton(uri)`` reads it back, for the depth prior of ``jobs/predict.py``.

Validation cost per frame (128 px PNG crops, one core, all checks): ~7 us with the default image
check (header + end marker, which also catches truncated files); ~0.3 ms with ``decode_images=True``
(a full ``cv2.imdecode`` of every image).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dfa_ray import storage
from dfa_ray.data.schema import (
    SCHEMA,
    EmptyDatasetError,
    SchemaError,
    check_file_schema,
    check_skeleton,
    conform,
    rows_to_table,
)
from dfa_ray.data.validation import BadRecordsError, InputError, ValidationReport, check_rows
from dfa_ray.method.skeleton import BONE_PRIORS, H36M

log = logging.getLogger(__name__)

MiB = 1 << 20
# Parquet metadata key: how a dataset's labels were made, when a program made them.
MACHINE_LABELS_KEY = b"dfa_ray.machine_labels"
# Parquet metadata key: the skeleton the joints follow, when not Human3.6M's (a detector's landmarks).
SKELETON_KEY = b"dfa_ray.skeleton"


def dataset_files(uri: str | os.PathLike) -> list[str]:
    """The ``*.parquet`` files of a dataset (a single ``.parquet`` file is a dataset of one)."""
    if str(uri).endswith(".parquet") and storage.is_file(uri):
        return [str(uri)]
    files = storage.list_files(uri, suffix=".parquet")
    if not files:
        # A misspelt path or bucket reads as empty too; say which it is.
        missing = "" if storage.exists(uri) else " (it does not exist)"
        raise EmptyDatasetError(f"no *.parquet files at {uri}{missing}")
    return files


def _metadata(uri: str | os.PathLike) -> dict[bytes, bytes]:
    with storage.storage_errors(str(uri), "read Parquet metadata"):
        with storage.open_input(dataset_files(uri)[0]) as handle:
            return pq.read_schema(handle).metadata or {}


def machine_labels(uri: str | os.PathLike) -> str | None:
    """How the dataset's labels were made, when a program made them (None: annotated, or unlabeled)."""
    note = _metadata(uri).get(MACHINE_LABELS_KEY)
    return note.decode() if note else None


def annotated_2d(uri: str | os.PathLike) -> bool:
    """Whether the dataset's frames carry 2D that no program made: a labeled dataset (renders, a
    capture). Reads the ``joints_2d`` column alone."""
    if machine_labels(uri):
        return False
    joints_2d = read_records(uri, columns=["joints_2d"], validate=False).column("joints_2d")
    return joints_2d.null_count < len(joints_2d)


def skeleton(uri: str | os.PathLike) -> str:
    """The skeleton the dataset's joints follow, a key of ``skeleton.BONE_PRIORS``: Human3.6M's unless
    its writer named another (``RecordWriter(skeleton=...)``)."""
    name = _metadata(uri).get(SKELETON_KEY, H36M.encode()).decode()
    if name not in BONE_PRIORS:
        known = ", ".join(BONE_PRIORS)
        raise SchemaError(f"{uri}: unknown skeleton {name!r} in its metadata (known: {known})")
    return name


def _read_file(file_uri: str, columns: list[str]) -> pa.Table:
    with storage.storage_errors(file_uri, "read Parquet file"), storage.open_input(file_uri) as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except pa.ArrowInvalid as exc:
            raise SchemaError(f"{file_uri}: not a readable Parquet file ({exc})") from None
        check_file_schema(parquet.schema_arrow, file_uri)
        present = [name for name in columns if name in parquet.schema_arrow.names]
        table = parquet.read(columns=present)
    table = conform(table, file_uri, complete=False)
    if "joints_valid" in columns and "joints_valid" not in table.column_names:
        table = table.append_column(
            SCHEMA.field("joints_valid"), pa.nulls(table.num_rows, pa.list_(pa.uint8()))
        )
    check_skeleton(table, file_uri)
    return table.select(columns)


def read_records_with_report(
    uri: str | os.PathLike,
    columns: Sequence[str] | None = None,
    validate: bool = True,
    on_bad: str = "raise",
    decode_images: bool = False,
    max_threads: int = 8,
) -> tuple[pa.Table, ValidationReport]:
    """Like ``read_records`` but also returns the ValidationReport (bad rows, statistics)."""
    if on_bad not in ("raise", "skip"):
        raise ValueError(f"on_bad must be 'raise' or 'skip', got {on_bad!r}")
    wanted = list(SCHEMA.names if columns is None else columns)
    unknown = [name for name in wanted if name not in SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; schema v1 has {SCHEMA.names}")
    # frame_id is always read: bad rows are reported by it.
    to_read = wanted if "frame_id" in wanted else ["frame_id", *wanted]
    files = dataset_files(uri)
    with ThreadPoolExecutor(max_workers=max(1, min(max_threads, len(files)))) as pool:
        tables = list(pool.map(lambda f: _read_file(f, to_read), files))

    report = ValidationReport(source=str(uri), files=list(files))
    report.num_rows = sum(t.num_rows for t in tables)
    if report.num_rows == 0:
        raise EmptyDatasetError(f"{uri}: {len(files)} Parquet file(s) but no rows")
    if validate:
        report.num_rows = 0
        seen: dict[str, str] = {}
        for i, (file_uri, table) in enumerate(zip(files, tables)):
            part, bad = check_rows(table, file_uri, seen, decode_images)
            part.files = []
            report.merge(part)
            if bad.any() and on_bad == "skip":
                tables[i] = table.filter(pa.array(~bad))
    if report.bad and on_bad == "raise":
        raise BadRecordsError(report)
    if report.bad:
        log.warning("%s: skipped %d bad frame(s): %s", uri, len(report.bad), report.bad[:10])
    table = pa.concat_tables(tables).select(wanted)
    return table.replace_schema_metadata(SCHEMA.metadata), report


def read_records(
    uri: str | os.PathLike,
    columns: Sequence[str] | None = None,
    validate: bool = True,
    on_bad: str = "raise",
    decode_images: bool = False,
) -> pa.Table:
    """Read a schema-v1 dataset (local dir, ``s3://`` prefix or one file), validating every row.

    ``on_bad="raise"`` raises BadRecordsError listing every bad frame; ``"skip"`` drops only the bad
    rows and logs them (use ``read_records_with_report`` to get them). ``decode_images`` adds a full
    decode of each image to the (header-level) image checks.
    """
    return read_records_with_report(uri, columns, validate, on_bad, decode_images)[0]


def check_frame_ids(uri: str | os.PathLike, max_examples: int = 5) -> int:
    """Require every ``frame_id`` of a dataset to be present and unique; returns the number of frames.

    Reads the ``frame_id`` column alone (no images), so a driver can check each input before any
    stage starts. Raises EmptyDatasetError (no files or no rows), SchemaError (a file that is not
    schema v1) or InputError naming ``uri`` with the repeated ids and their counts.
    """
    ids = read_records(uri, columns=["frame_id"], validate=False).column("frame_id")
    missing = ids.null_count + (pc.sum(pc.equal(ids, "")).as_py() or 0)
    if missing:
        raise InputError(f"{uri}: {missing} of {len(ids)} frame(s) have no frame_id")
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        values = repeated.field("values").to_pylist()
        times = repeated.field("counts").to_pylist()
        examples = ", ".join(f"{value!r} x{n}" for value, n in zip(values[:max_examples], times))
        raise InputError(
            f"{uri}: {len(repeated)} frame_id(s) occur more than once ({sum(times) - len(times)} extra "
            f"row(s) of {len(ids)}), e.g. {examples}; every frame_id of a dataset must be unique"
        )
    return len(ids)


# ------------------------------------------------------------------------------------------- writing


@dataclass
class WriteSummary:
    """What a RecordWriter stored."""

    num_frames: int
    files: list[str]
    num_bytes: int = 0


class RecordWriter:
    """Write rows to sharded Parquet files ``{name_prefix}-00000.parquet``... under ``uri``.

    A new file starts when the current one would exceed ``target_shard_bytes`` (a single larger row
    gets a file of its own). Rows are buffered into row groups of about ``row_group_bytes``. Every
    batch is validated first (``validate=True``): bad rows raise BadRecordsError and nothing of that
    batch is written. An existing file of the same name is an error, never overwritten. If the
    ``with`` block raises, the files written so far are deleted. ``machine_labels`` marks the
    dataset's labels as made by a program (how, in words; see the module docstring); ``skeleton``
    names the skeleton its joints follow when not Human3.6M's (``skeleton.BONE_PRIORS``).
    """

    def __init__(
        self,
        uri: str | os.PathLike,
        target_shard_bytes: int = 64 * MiB,
        name_prefix: str = "part",
        row_group_bytes: int | None = None,
        validate: bool = True,
        machine_labels: str | None = None,
        skeleton: str | None = None,
    ) -> None:
        if target_shard_bytes <= 0:
            raise ValueError(f"target_shard_bytes must be positive, got {target_shard_bytes}")
        storage.join(uri, name_prefix)  # rejects "..", "/" and empty prefixes early
        self.uri = str(uri)
        self.target_shard_bytes = target_shard_bytes
        self.row_group_bytes = row_group_bytes or min(target_shard_bytes, 16 * MiB)
        self.name_prefix = name_prefix
        self.validate = validate
        if skeleton is not None and skeleton not in BONE_PRIORS:
            raise ValueError(f"unknown skeleton {skeleton!r} (known: {', '.join(BONE_PRIORS)})")
        notes = {MACHINE_LABELS_KEY: machine_labels, SKELETON_KEY: skeleton}
        self.schema = SCHEMA.with_metadata(
            {**SCHEMA.metadata, **{key: value.encode() for key, value in notes.items() if value}}
        )
        self._seen: dict[str, str] = {}  # frame_id -> batch that wrote it, for duplicate checks
        self._batches = 0
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0
        self._files: list[str] = []
        self._num_frames = 0
        self._num_bytes = 0
        self._shard: tuple[Any, Any, str] | None = None  # (stream, ParquetWriter, uri)
        self._row_groups = 0  # in the current shard
        self._closed = False

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: type | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, rows: Iterable[Mapping] | pa.Table | pa.RecordBatch) -> None:
        """Validate and buffer rows (dicts) or a table; full row groups are written out."""
        if self._closed:
            raise RuntimeError(f"RecordWriter for {self.uri} is closed")
        if isinstance(rows, pa.RecordBatch):
            rows = pa.Table.from_batches([rows])
        if isinstance(rows, pa.Table):
            table = conform(rows, self.uri, complete=True)
        else:
            table = rows_to_table(list(rows))
        if table.num_rows == 0:
            return
        self._batches += 1
        if self.validate:
            source = f"batch {self._batches} written to {self.uri}"
            report, _ = check_rows(table, source, self._seen, decode_images=False)
            if report.bad:
                # The refused batch's frame_ids must not count as written.
                for fid in table.column("frame_id").to_pylist():
                    if self._seen.get(fid) == source:
                        del self._seen[fid]
                raise BadRecordsError(report)
        self._pending.append(table)
        self._pending_bytes += int(_row_bytes(table).sum())
        if self._pending_bytes >= self.row_group_bytes:
            self._flush()

    def close(self) -> WriteSummary:
        """Write what is buffered, finish the current file and return what was written."""
        if not self._closed:
            self._flush()
            self._finish_shard()
            self._closed = True
        return WriteSummary(self._num_frames, list(self._files), self._num_bytes)

    def abort(self) -> None:
        """Drop buffered rows and delete every file this writer created."""
        self._pending, self._closed = [], True
        if self._shard is not None:
            stream, writer, _ = self._shard
            self._shard = None
            try:
                writer.close()
                stream.close()
            except (OSError, pa.ArrowException):
                pass  # the file is deleted below either way
        for file_uri in self._files:
            try:
                storage.delete(file_uri)
            except storage.StorageError as exc:
                log.warning("could not delete partial file %s: %s", file_uri, exc)

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        sizes = _row_bytes(table)
        self._pending, self._pending_bytes = [], 0
        start = 0
        while start < table.num_rows:
            used = self._shard[0].tell() if self._shard else 0
            # Room left in the current file after the footer: the schema plus ~1 KiB of column-chunk
            # metadata per row group (this one included).
            footer = 2048 + 1024 * (self._row_groups + 1)
            room = self.target_shard_bytes - used - footer
            count = int(np.searchsorted(np.cumsum(sizes[start:]), room, side="right"))
            if count == 0 and self._shard is not None and used > 0:
                self._finish_shard()
                continue
            count = max(count, 1)
            if self._shard is None:
                self._open_shard()
            piece = table.slice(start, count)
            self._shard[1].write_table(piece, row_group_size=count)
            self._row_groups += 1
            self._num_frames += count
            start += count
            if start < table.num_rows:  # the next row did not fit
                self._finish_shard()

    def _open_shard(self) -> None:
        file_uri = storage.join(self.uri, f"{self.name_prefix}-{len(self._files):05d}.parquet")
        if storage.exists(file_uri):
            raise FileExistsError(
                f"{file_uri} already exists; write to an empty location or another name_prefix"
            )
        filesystem, path = storage.resolve(file_uri)
        if filesystem.type_name != "s3":
            storage.makedirs(self.uri)
        with storage.storage_errors(file_uri, "write"):
            stream = filesystem.open_output_stream(path)
            writer = pq.ParquetWriter(
                stream,
                self.schema,
                # PNG/JPEG bytes do not compress further; compressing them only costs CPU.
                compression={name: ("none" if name == "image" else "zstd") for name in SCHEMA.names},
                use_dictionary=["subject", "action"],
                write_statistics=["frame_id", "subject", "action"],
            )
        self._files.append(file_uri)
        self._shard = (stream, writer, file_uri)
        self._row_groups = 0

    def _finish_shard(self) -> None:
        if self._shard is None:
            return
        stream, writer, file_uri = self._shard
        self._shard = None
        with storage.storage_errors(file_uri, "finish writing"):
            writer.close()
            self._num_bytes += stream.tell()
            stream.close()


def _row_bytes(table: pa.Table) -> np.ndarray:
    """Estimated stored bytes per row: the image plus an even share of the other columns."""
    n = table.num_rows
    images = pc.binary_length(table.column("image")).to_numpy(zero_copy_only=False).astype(np.int64)
    others = sum(table.column(name).nbytes for name in table.column_names if name != "image")
    return images + 4 + int(np.ceil(others / max(n, 1)))


def write_records(rows: Iterable[Mapping] | pa.Table, uri: str | os.PathLike, **kwargs: Any) -> WriteSummary:
    """Write rows or a table to a new dataset at ``uri`` (RecordWriter keyword arguments apply)."""
    with RecordWriter(uri, **kwargs) as writer:
        if isinstance(rows, pa.Table):
            writer.write(rows)
        else:
            batch: list[Mapping] = []
            for row in rows:
                batch.append(row)
                if len(batch) == 1024:
                    writer.write(batch)
                    batch = []
            writer.write(batch)
    return writer.close()
