"""Row-level validation of schema-v1 tables: every bad row is named by frame_id, with its reasons."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dfa_ray.data.images import ImageError, check_square, decode_image, image_size
from dfa_ray.data.schema import LIST_WIDTHS, RecordError, conform


class InputError(ValueError):
    """An input of a job as a whole (a dataset, a checkpoint, a round's labels) is unusable; the
    message names it and says what is wrong."""


@dataclass
class ValidationReport:
    """What validation found: bad rows by frame_id with a reason, plus summary statistics.

    Statistics count every row read, bad ones included (an image size is counted when its header
    parses). ``labeled_2d``/``labeled_3d`` are fractions of rows with non-null joints.
    """

    source: str
    num_rows: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    num_labeled_2d: int = 0
    num_labeled_3d: int = 0
    image_sizes: Counter = field(default_factory=Counter)
    subjects: Counter = field(default_factory=Counter)
    actions: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no row is bad."""
        return not self.bad

    @property
    def labeled_2d(self) -> float:
        """Fraction of rows with 2D joints."""
        return self.num_labeled_2d / self.num_rows if self.num_rows else 0.0

    @property
    def labeled_3d(self) -> float:
        """Fraction of rows with 3D joints."""
        return self.num_labeled_3d / self.num_rows if self.num_rows else 0.0

    def merge(self, other: ValidationReport) -> None:
        """Add another part's findings (e.g. the next file of a dataset) to this report."""
        self.num_rows += other.num_rows
        self.bad += other.bad
        self.num_labeled_2d += other.num_labeled_2d
        self.num_labeled_3d += other.num_labeled_3d
        self.image_sizes.update(other.image_sizes)
        self.subjects.update(other.subjects)
        self.actions.update(other.actions)
        self.files += other.files

    def summary(self, max_names: int = 12) -> str:
        """A human-readable multi-line summary (bad frames are listed separately by callers)."""

        def counts(counter: Counter) -> str:
            items = [f"{key} {n}" for key, n in sorted(counter.items())]
            more = f", ... (+{len(items) - max_names})" if len(items) > max_names else ""
            return ", ".join(items[:max_names]) + more

        files = f" in {len(self.files)} file(s)" if self.files else ""
        return "\n".join(
            [
                f"dataset:     {self.source}",
                f"frames:      {self.num_rows}{files}",
                f"labeled 2D:  {self.labeled_2d:.1%} ({self.num_labeled_2d})",
                f"labeled 3D:  {self.labeled_3d:.1%} ({self.num_labeled_3d})",
                f"image sizes: {counts(self.image_sizes)}",
                f"subjects ({len(self.subjects)}): {counts(self.subjects)}",
                f"actions ({len(self.actions)}): {counts(self.actions)}",
                f"bad frames:  {len(self.bad)}",
            ]
        )


class BadRecordsError(RecordError):
    """Rows failed validation; ``.report.bad`` lists every ``(frame_id, reason)``."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        lines = [f"  {frame_id}: {reason}" for frame_id, reason in report.bad]
        super().__init__(
            f"{report.source}: {len(report.bad)} bad frame(s) of {report.num_rows}:\n" + "\n".join(lines)
        )


def _list_checks(column: pa.ChunkedArray, name: str, required: bool, reasons: defaultdict) -> np.ndarray:
    """Record per-row problems of a list column; returns ``(N, width)`` float values (NaN if unusable)."""
    width = LIST_WIDTHS[name]
    array = column.combine_chunks()
    null = array.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(array).fill_null(0).to_numpy()
    values = np.full((len(array), width), np.nan)
    if required:
        for i in np.flatnonzero(null):
            reasons[i].append(f"{name} is missing")
    for i in np.flatnonzero(~null & (lengths != width)):
        reasons[i].append(f"{name} has {lengths[i]} values, expected {width}")
    usable = ~null & (lengths == width)
    if usable.any():
        flat = pc.list_flatten(array.filter(pa.array(usable))).to_numpy(zero_copy_only=False)
        values[usable] = flat.astype(np.float64).reshape(-1, width)
        for i in np.flatnonzero(usable & ~np.isfinite(values).all(axis=1)):
            reasons[i].append(f"{name} contains NaN, inf or null values")
    return values


def _binary_views(column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """Zero-copy uint8 views of each row of a binary column (None for null)."""
    views: list[np.ndarray | None] = []
    for chunk in column.chunks:
        validity, offsets_buf, data_buf = chunk.buffers()
        offsets = np.frombuffer(offsets_buf, np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
        data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.empty(0, np.uint8)
        null = chunk.is_null().to_numpy(zero_copy_only=False) if validity is not None else None
        for i in range(len(chunk)):
            views.append(None if null is not None and null[i] else data[offsets[i] : offsets[i + 1]])
    return views


def _image_checks(column: pa.ChunkedArray, decode: bool, reasons: defaultdict, sizes: Counter) -> None:
    for i, data in enumerate(_binary_views(column)):
        if data is None or len(data) == 0:
            reasons[i].append("image is missing")
            continue
        try:
            size = image_size(data)
            sizes[f"{size[0]}x{size[1]}"] += 1
            check_square(size)
            if decode:
                decode_image(data)
        except ImageError as exc:
            reasons[i].append(str(exc))


def check_rows(
    table: pa.Table, source: str, seen: dict[str, str] | None, decode_images: bool
) -> tuple[ValidationReport, np.ndarray]:
    """Validate ``table`` (any subset of the schema columns); returns the report and a bad-row mask."""
    n = table.num_rows
    names = table.column_names
    report = ValidationReport(source=source, num_rows=n)
    reasons: defaultdict[int, list[str]] = defaultdict(list)

    frame_ids = table.column("frame_id").to_pylist() if "frame_id" in names else [None] * n
    labels = [fid if fid else f"<row {i} of {source}>" for i, fid in enumerate(frame_ids)]
    if "frame_id" in names:
        seen = {} if seen is None else seen
        for i, fid in enumerate(frame_ids):
            if not fid:
                reasons[i].append("frame_id is missing or empty")
            elif fid in seen:
                reasons[i].append(f"duplicate frame_id (row {i} of {source}; first seen in {seen[fid]})")
            else:
                seen[fid] = source
    for name in ("joints_2d", "joints_3d", "camera", "joints_valid"):
        if name not in names:
            continue
        values = _list_checks(table.column(name), name, name == "camera", reasons)
        if name == "camera":
            finite = np.isfinite(values).all(axis=1)
            for i in np.flatnonzero(finite & ((values[:, 0] <= 0) | (values[:, 1] <= 0))):
                reasons[i].append(
                    f"camera focal lengths must be positive, got fx={values[i, 0]}, fy={values[i, 1]}"
                )
        elif name == "joints_valid":
            for i in np.flatnonzero(np.isfinite(values).all(axis=1) & (values > 1).any(axis=1)):
                reasons[i].append("joints_valid holds values other than 0 and 1")
        else:
            labeled = int(table.column(name).length() - table.column(name).null_count)
            setattr(report, f"num_labeled_{name[-2:]}", labeled)
    for name in ("subject", "action"):
        if name in names:
            values = table.column(name).to_pylist()
            for i in (i for i, v in enumerate(values) if v is None):
                reasons[i].append(f"{name} is missing")
            getattr(report, name + "s").update(v for v in values if v is not None)
    if "image" in names:
        _image_checks(table.column("image"), decode_images, reasons, report.image_sizes)

    bad = np.zeros(n, dtype=bool)
    for i in sorted(reasons):
        bad[i] = True
        report.bad.append((labels[i], "; ".join(reasons[i])))
    return report, bad


def validate_table(table: pa.Table, source: str = "table", decode_images: bool = False) -> ValidationReport:
    """Check every row of a schema-v1 table (or column subset); ``source`` names it in messages."""
    return check_rows(conform(table, source, complete=False), source, None, decode_images)[0]
