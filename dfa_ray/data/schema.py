"""Record schema v1: the Parquet layout of every dfa-ray dataset, and rows <-> Arrow tables.

A dataset is a directory or S3 prefix holding one or more ``*.parquet`` files (not recursive), one
row per frame:

============  ==================  ==========================================================
column        type                meaning
============  ==================  ==========================================================
frame_id      string              unique within the dataset
image         binary              PNG or JPEG of a square RGB crop centred on the person
joints_2d     list<float32> (34)  17 x (x, y) crop pixels; null when unlabeled
joints_3d     list<float32> (51)  17 x (x, y, z) camera-frame mm (x right, y down, z forward);
                                  null when unlabeled or 2D-only
camera        list<float32> (4)   fx, fy, cx, cy of the crop in pixels
subject       string
action        string
joints_valid  list<uint8> (17)    optional; 1 = joint annotated (absent or null = all valid)
============  ==================  ==========================================================

In Python a row is a dict with those keys: ``joints_2d`` ``(17, 2)`` / ``joints_3d`` ``(17, 3)``
float arrays or None, ``camera`` array-like ``(4,)``, ``joints_valid`` ``(17,)`` uint8 or None.

``validation`` checks rows against this schema; ``records`` reads and writes datasets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dfa_ray.method.skeleton import NUM_JOINTS

SCHEMA_VERSION = "1"
_VERSION_KEY = b"dfa_ray.record_schema"

SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string()),
        pa.field("image", pa.binary()),
        pa.field("joints_2d", pa.list_(pa.float32())),
        pa.field("joints_3d", pa.list_(pa.float32())),
        pa.field("camera", pa.list_(pa.float32())),
        pa.field("subject", pa.string()),
        pa.field("action", pa.string()),
        pa.field("joints_valid", pa.list_(pa.uint8())),
    ],
    # Every field is nullable in Parquet terms (as files written by other tools are); which values
    # may be null is the validator's business, so schemas of all writers unify.
    metadata={_VERSION_KEY: SCHEMA_VERSION.encode()},
)
REQUIRED_COLUMNS: tuple[str, ...] = (
    "frame_id",
    "image",
    "joints_2d",
    "joints_3d",
    "camera",
    "subject",
    "action",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("joints_valid",)
# Values per row of each list column.
LIST_WIDTHS: dict[str, int] = {"joints_2d": NUM_JOINTS * 2, "joints_3d": NUM_JOINTS * 3, "camera": 4}
LIST_WIDTHS["joints_valid"] = NUM_JOINTS
_ROW_SHAPES = {"joints_2d": (NUM_JOINTS, 2), "joints_3d": (NUM_JOINTS, 3), "camera": (4,)}
_ROW_SHAPES["joints_valid"] = (NUM_JOINTS,)


class RecordError(ValueError):
    """Base class of record errors."""


class SchemaError(RecordError):
    """A file (or table) is not schema v1; the message names the file."""


class EmptyDatasetError(RecordError):
    """No Parquet files, or no rows, at a dataset URI."""


# --------------------------------------------------------------------------------------- row <-> table


def _list_column(rows: Sequence[Mapping], name: str, required: bool) -> pa.Array:
    """Build a list column from per-row arrays, checking each row's shape (errors name the frame)."""
    width, shape = LIST_WIDTHS[name], _ROW_SHAPES[name]
    dtype = np.uint8 if name == "joints_valid" else np.float32
    present = np.zeros(len(rows), dtype=bool)
    chunks = []
    for i, row in enumerate(rows):
        value = row.get(name)
        if value is None:
            if required:
                raise RecordError(f"frame {row.get('frame_id')!r}: {name} is missing")
            continue
        array = np.asarray(value, dtype=dtype)
        if array.shape not in (shape, (width,)):
            raise RecordError(
                f"frame {row.get('frame_id')!r}: {name} has shape {array.shape}, expected {shape}"
            )
        present[i] = True
        chunks.append(array.reshape(width))
    values = np.concatenate(chunks) if chunks else np.empty(0, dtype)
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(present * width)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=pa.array(~present))


def rows_to_table(rows: Sequence[Mapping]) -> pa.Table:
    """Convert row dicts (see module docstring) to a schema-v1 table."""
    rows = list(rows)
    for i, row in enumerate(rows):
        for key in ("frame_id", "image", "camera", "subject", "action"):
            if row.get(key) is None:
                raise RecordError(f"row {i} (frame {row.get('frame_id')!r}): {key!r} is missing")
    columns = {
        "frame_id": pa.array([str(row["frame_id"]) for row in rows], pa.string()),
        "image": pa.array([bytes(row["image"]) for row in rows], pa.binary()),
        "joints_2d": _list_column(rows, "joints_2d", required=False),
        "joints_3d": _list_column(rows, "joints_3d", required=False),
        "camera": _list_column(rows, "camera", required=True),
        "subject": pa.array([str(row["subject"]) for row in rows], pa.string()),
        "action": pa.array([str(row["action"]) for row in rows], pa.string()),
        "joints_valid": _list_column(rows, "joints_valid", required=False),
    }
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def table_to_rows(table: pa.Table) -> list[dict]:
    """Convert a schema-v1 table (or a column subset) back to row dicts with numpy arrays."""
    out = [{} for _ in range(table.num_rows)]
    for name in table.column_names:
        values = table.column(name).to_pylist()
        shape = _ROW_SHAPES.get(name)
        dtype = np.uint8 if name == "joints_valid" else np.float32
        for row, value in zip(out, values):
            row[name] = value if shape is None or value is None else np.asarray(value, dtype).reshape(shape)
    return out


def table_to_arrays(table: pa.Table | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Dense numpy view of a table or a Ray numpy batch: joints ``(N, 17, 2|3)`` float32, NaN where null.

    Keys (for the columns present): ``frame_id``, ``subject``, ``action`` (object arrays), ``image``
    (object array of still-encoded bytes), ``joints_2d`` ``(N, 17, 2)``, ``joints_3d`` ``(N, 17, 3)``,
    ``camera`` ``(N, 4)``, ``has_2d``/``has_3d`` ``(N,)`` bool, ``joints_valid`` ``(N, 17)`` uint8
    (1 where the column or the row's value is absent).
    """
    if not isinstance(table, pa.Table):
        table = _mapping_to_table(table)
    n = table.num_rows
    out: dict[str, np.ndarray] = {}
    for name in ("frame_id", "image", "subject", "action"):
        if name in table.column_names:
            out[name] = np.empty(n, dtype=object)  # filled by assignment: bytes must not become a 2D array
            out[name][:] = table.column(name).to_pylist()
    frame_ids = out.get("frame_id")
    for name in ("joints_2d", "joints_3d", "camera", "joints_valid"):
        if name not in table.column_names:
            continue
        fill = 1 if name == "joints_valid" else np.nan
        values, present = _dense(table.column(name), name, fill, frame_ids)
        out[name] = values.reshape((n, *_ROW_SHAPES[name]))
        if name in ("joints_2d", "joints_3d"):
            out["has_" + name[-2:]] = present
    if "joints_valid" not in out and ("joints_2d" in out or "joints_3d" in out):
        out["joints_valid"] = np.ones((n, NUM_JOINTS), np.uint8)
    return out


def _mapping_to_table(batch: Mapping[str, Any]) -> pa.Table:
    """A Ray numpy batch (object arrays of per-row arrays, or 2D arrays) as a table."""
    columns = {}
    for name, values in batch.items():
        if name in LIST_WIDTHS:
            rows = [None if v is None else np.asarray(v).reshape(-1) for v in values]
            columns[name] = pa.array(rows, SCHEMA.field(name).type)
        elif name in SCHEMA.names:
            columns[name] = pa.array(list(values), SCHEMA.field(name).type)
    return pa.table(columns)


def _dense(
    column: pa.ChunkedArray, name: str, fill: float, frame_ids: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, width)`` array of a list column (``fill`` for null rows) and the non-null mask."""
    width = LIST_WIDTHS[name]
    array = column.combine_chunks()
    present = ~array.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(array).fill_null(width).to_numpy()
    wrong = np.flatnonzero(lengths != width)
    if wrong.size:
        i = wrong[0]
        who = frame_ids[i] if frame_ids is not None else f"row {i}"
        raise RecordError(f"frame {who}: {name} has {lengths[i]} values, expected {width}")
    dtype = np.uint8 if name == "joints_valid" else np.float32
    out = np.full((len(array), width), fill, dtype=dtype)
    out[present] = pc.list_flatten(array).to_numpy(zero_copy_only=False).reshape(-1, width)
    return out, present


# ------------------------------------------------------------------------------------- schema checks


def conform(table: pa.Table, source: str, complete: bool) -> pa.Table:
    """Cast ``table``'s schema-v1 columns to the v1 types, or raise SchemaError naming ``source``.

    Extra columns are dropped. With ``complete`` every required column must be present and a missing
    ``joints_valid`` becomes a null column, so the result has exactly SCHEMA.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing and complete:
        raise SchemaError(
            f"{source}: missing required column(s) {missing}; schema v1 needs {list(REQUIRED_COLUMNS)}"
        )
    columns, fields = [], []
    for target in SCHEMA:
        if target.name not in table.column_names:
            if complete and target.name in OPTIONAL_COLUMNS:
                columns.append(pa.nulls(table.num_rows, target.type))
                fields.append(target)
            continue
        column = table.column(target.name)
        try:
            columns.append(column.cast(target.type) if column.type != target.type else column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise SchemaError(
                f"{source}: column {target.name!r} has type {column.type}, expected {target.type}"
            ) from None
        fields.append(target)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=SCHEMA.metadata))


def check_skeleton(table: pa.Table, source: str) -> None:
    """A file whose every labeled row has the wrong width is another skeleton, not a few bad rows."""
    for name in ("joints_2d", "joints_3d", "joints_valid"):
        if name not in table.column_names or table.column(name).null_count == table.num_rows:
            continue
        lengths = pc.list_value_length(table.column(name)).drop_null().to_numpy()
        if not (lengths == LIST_WIDTHS[name]).any():
            found = sorted(set(lengths.tolist()))
            raise SchemaError(
                f"{source}: every {name} has {found} values, expected {LIST_WIDTHS[name]} "
                f"({NUM_JOINTS} joints): not a schema-v1 (H36M-17) dataset"
            )


def check_file_schema(schema: pa.Schema, source: str) -> None:
    """Raise SchemaError naming ``source`` if a file's schema is another version, lacks a column or
    holds a column of a type that cannot be read as schema v1's."""
    version = (schema.metadata or {}).get(_VERSION_KEY)
    if version is not None and version.decode() != SCHEMA_VERSION:
        raise SchemaError(
            f"{source}: record schema version {version.decode()!r}, this reader knows v{SCHEMA_VERSION}"
        )
    missing = [name for name in REQUIRED_COLUMNS if name not in schema.names]
    if missing:
        raise SchemaError(
            f"{source}: missing required column(s) {missing} (has {schema.names}); not a schema-v1 dataset"
        )
    # Every column's type too, from the schema alone: a reader of a few columns (a driver checking
    # frame_ids before a run) must not pass a file whose other columns could never be read.
    conform(schema.empty_table(), source, complete=False)
