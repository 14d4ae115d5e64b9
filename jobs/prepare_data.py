"""Make and check datasets in record schema v1 (``dfa_ray.data.schema``), locally or in S3.

    python jobs/prepare_data.py synthetic --domain synthetic-source --split train --n 2000 --out URI
    python jobs/prepare_data.py synthetic ... --style flesh_mm=[40,110]     # a DomainStyle field changed
    python jobs/prepare_data.py h36m      --root H36M_PROCESSED --split train --every 5 --out URI
    python jobs/prepare_data.py surreal   --root SURREAL/data/cmu --split train --every 10 --out URI
    python jobs/prepare_data.py mpii      --root MPII_DIR --out URI
    python jobs/prepare_data.py video     VIDEO_OR_FOLDER --every 5 --out URI [--calibration F]
    python jobs/prepare_data.py validate  URI [--headers-only]
    python jobs/prepare_data.py grid      synthetic-source synthetic-real [URI ...] --out samples.png

``URI`` is a local directory or ``s3://bucket/prefix`` (S3 settings from the standard AWS_*
variables). Writers refuse to overwrite an existing dataset.

Each subcommand is one ``add_<name>(subparsers)`` function that defines its arguments and sets
``func`` to a ``cmd_<name>(args) -> int`` handler; register it in ``SUBCOMMANDS``.

Exit codes: 0 success; 1 bad frames (each named, with the reason, on stderr); 2 the input could not
be read at all (no files, not schema v1, storage error, missing dataset files) or bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from dfa_ray import storage
from dfa_ray.cli import exit_code
from dfa_ray.config import apply_overrides
from dfa_ray.data import h36m, mpii, multiview, preview, surreal, synthetic, video
from dfa_ray.data.crop import CropSpec
from dfa_ray.data.records import MiB, dataset_files, read_records, read_records_with_report, write_records
from dfa_ray.data.schema import RecordError, table_to_rows
from dfa_ray.storage import StorageError

# Errors that mean "this input or output is unusable": reported in one line, exit code 2.
_INPUT_ERRORS = (RecordError, StorageError, FileNotFoundError, FileExistsError, KeyError, ValueError)


def _progress(
    rows: Iterable[dict], label: str, total: int | None = None, every_s: float = 5.0
) -> Iterator[dict]:
    """Pass rows through, printing a count and rate to stderr every ``every_s`` seconds and at the end."""
    start = last = time.perf_counter()
    count = 0
    of = f"/{total}" if total else ""
    for count, row in enumerate(rows, start=1):
        yield row
        now = time.perf_counter()
        if now - last >= every_s:
            print(f"{label}: {count}{of} frames ({count / (now - start):.0f}/s)", file=sys.stderr, flush=True)
            last = now
    elapsed = max(time.perf_counter() - start, 1e-9)
    print(
        f"{label}: {count} frames in {elapsed:.1f} s ({count / elapsed:.0f}/s)", file=sys.stderr, flush=True
    )


def _write(
    rows: Iterable[dict],
    args: argparse.Namespace,
    label: str,
    total: int | None = None,
    machine_labels: str | None = None,
    skeleton: str | None = None,
) -> int:
    # Refuse before converting anything: a converter may run for hours before its first shard.
    if storage.list_files(args.out, suffix=".parquet"):
        raise FileExistsError(f"{args.out} already holds a dataset; choose a new --out")
    if machine_labels:
        print(f"labels: {machine_labels}")
    summary = write_records(
        _progress(rows, label, total),
        args.out,
        target_shard_bytes=args.shard_mb * MiB,
        machine_labels=machine_labels,
        skeleton=skeleton,
    )
    if summary.num_frames == 0:
        print(f"error: {label}: no frames matched; nothing written to {args.out}", file=sys.stderr)
        return 2
    size = f"{summary.num_bytes / MiB:.1f} MiB in {len(summary.files)} file(s)"
    print(f"wrote {summary.num_frames} frames, {size} to {args.out}")
    return 0


def _add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="new dataset: local directory or s3://bucket/prefix")
    parser.add_argument(
        "--shard-mb", type=int, default=64, help="target Parquet file size in MiB (default 64)"
    )


def _add_crop_args(parser: argparse.ArgumentParser, splits: Iterable[str], split: str | None = None) -> None:
    parser.add_argument("--root", type=Path, required=True, help="the dataset's published directory")
    parser.add_argument("--split", required=split is None, default=split, choices=tuple(splits))
    _add_crop_spec_args(parser)
    _add_output_args(parser)


def _add_crop_spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crop-size", type=int, default=256, help="crop side in pixels")
    parser.add_argument("--margin", type=float, default=1.25, help="box side / the joints' extent")
    parser.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg")


def _crop(args: argparse.Namespace) -> CropSpec:
    return CropSpec(args.crop_size, args.margin, args.image_format)


# ------------------------------------------------------------------------------------------ synthetic


def domain_style(domain: str, overrides: list[str]) -> synthetic.DomainStyle | None:
    """``domain``'s style with ``FIELD=VALUE`` overrides (YAML values; lists become ranges), or None
    for none; a field the style lacks is named with the ones it has."""
    if not overrides:
        return None
    try:
        return synthetic.restyled(domain, apply_overrides({}, overrides))
    except ValueError as exc:
        raise ValueError(f"--style {' '.join(map(repr, overrides))}: {exc}") from None


def cmd_synthetic(args: argparse.Namespace) -> int:
    """Render a split of the synthetic benchmark to records."""
    style = domain_style(args.domain, args.style)
    rows = synthetic.generate(
        args.domain, args.split, args.n, args.seed, args.crop_size, workers=args.workers, style=style
    )
    return _write(rows, args, f"{args.domain}/{args.split}", args.n)


def add_synthetic(subparsers: argparse._SubParsersAction) -> None:
    """Register ``synthetic``."""
    parser = subparsers.add_parser("synthetic", help="render the procedural two-domain benchmark")
    parser.add_argument("--domain", required=True, choices=synthetic.DOMAINS)
    parser.add_argument("--split", required=True, choices=synthetic.SPLITS)
    parser.add_argument("--n", type=int, required=True, help="number of frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="render processes")
    parser.add_argument(
        "--style",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="render in the domain's style with this DomainStyle field changed, e.g. flesh_mm=[40,110]",
    )
    _add_output_args(parser)
    parser.set_defaults(func=cmd_synthetic)


# -------------------------------------------------------------------------------------- real datasets


def cmd_h36m(args: argparse.Namespace) -> int:
    """Convert h36m-fetch's processed/ directory."""
    rows = h36m.convert_h36m(args.root, args.split, args.every, args.cameras, _crop(args))
    return _write(rows, args, f"h36m/{args.split}")


def add_h36m(subparsers: argparse._SubParsersAction) -> None:
    """Register ``h36m``."""
    parser = subparsers.add_parser("h36m", help="Human3.6M (h36m-fetch layout), Protocol 1 splits")
    _add_crop_args(parser, h36m.SPLITS)
    parser.add_argument("--every", type=int, default=1, help="keep every n-th annotated frame")
    parser.add_argument("--cameras", nargs="+", default=None, help=f"subset of {h36m.CAMERAS}")
    parser.set_defaults(func=cmd_h36m)


def cmd_surreal(args: argparse.Namespace) -> int:
    """Convert SURREAL's data/cmu directory."""
    rows = surreal.convert_surreal(
        args.root, args.split, args.every, args.runs, args.min_in_frame, _crop(args)
    )
    return _write(rows, args, f"surreal/{args.split}")


def add_surreal(subparsers: argparse._SubParsersAction) -> None:
    """Register ``surreal``."""
    parser = subparsers.add_parser("surreal", help="SURREAL (*_info.mat + .mp4), SMPL-24 -> H36M-17")
    _add_crop_args(parser, surreal.SPLITS)
    parser.add_argument("--every", type=int, default=1, help="keep every n-th video frame")
    parser.add_argument("--runs", type=int, nargs="+", default=None, help="subset of runs 0 1 2")
    parser.add_argument("--min-in-frame", type=int, default=12, help="skip frames with fewer joints in view")
    parser.set_defaults(func=cmd_surreal)


def cmd_mpii(args: argparse.Namespace) -> int:
    """Convert MPII Human Pose (2D only)."""
    rows = mpii.convert_mpii(args.root, args.split, args.min_joints, _crop(args))
    return _write(rows, args, f"mpii/{args.split}")


def add_mpii(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mpii``."""
    parser = subparsers.add_parser("mpii", help="MPII Human Pose (official .mat), 2D only")
    _add_crop_args(parser, mpii.SPLITS, split="train")
    parser.add_argument("--min-joints", type=int, default=8, help="skip people with fewer valid joints")
    parser.set_defaults(func=cmd_mpii)


# ------------------------------------------------------------------------------------------ footage


def _video_camera(args: argparse.Namespace, source: video.FrameSource) -> video.Camera:
    """The full frame's camera the flags give, or the nominal one of uncalibrated footage."""
    if args.calibration and args.calibration.name.endswith(".qca.txt"):
        return multiview.qca_camera(args.calibration, args.camera)
    if args.calibration:
        return video.read_calibration(args.calibration, args.camera)
    if args.camera:
        raise ValueError("--camera picks a camera of a --calibration file; give one")
    if args.intrinsics:
        flag = "--intrinsics " + " ".join(f"{v:g}" for v in args.intrinsics)
        return video.Camera(tuple(args.intrinsics), flag)
    if args.focal_px:
        return video.focal_camera(args.focal_px, source.width, source.height)
    return video.nominal_camera(source.width, source.height)


def cmd_video(args: argparse.Namespace) -> int:
    """Cut every person of a video or image folder into unlabeled records."""
    source = video.FrameSource(args.input, args.name)
    camera = _video_camera(args, source)
    print(f"camera: {camera.source}")
    if any(camera.distortion):
        print(f"camera: lens distortion {list(camera.distortion)} is not removed from the frames")
    report = video.VideoReport(str(args.input))
    rows = video.video_rows(source, camera, report, args.every, _crop(args), args.max_people, args.labels_2d)
    # With the 2D kept, a model adapted to these records learns MediaPipe's joints (video.SKELETON).
    notes = {"machine_labels": video.MACHINE_LABELS, "skeleton": video.SKELETON} if args.labels_2d else {}
    code = _write(rows, args, f"video/{source.name}", **notes)
    print(report.summary())
    return code


def add_video(subparsers: argparse._SubParsersAction) -> None:
    """Register ``video``."""
    parser = subparsers.add_parser(
        "video",
        help="real footage (a video or an image folder): every person MediaPipe Pose finds",
        description=video.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, help="a video file or a folder of images of one camera")
    parser.add_argument("--every", type=int, default=1, help="read every n-th frame (default 1)")
    parser.add_argument("--max-people", type=int, default=4, help="people to look for in a frame")
    parser.add_argument("--name", help="the source's name in frame ids (default: the file or folder name)")
    parser.add_argument(
        "--labels-2d",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep MediaPipe's 2D landmarks as joints_2d: machine-made labels, marked so in the files, "
        "which self-training on these frames learns from (data.target_2d) and which can serve as a "
        "2D-only source (data.source_2d); --no-labels-2d: frames without any 2D (default: kept)",
    )
    camera = parser.add_mutually_exclusive_group()
    camera.add_argument(
        "--calibration", type=Path, help="Pose2Sim / Sports2D calibration TOML, or a Qualisys .qca.txt"
    )
    camera.add_argument(
        "--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"), help="full-frame pixels"
    )
    camera.add_argument("--focal-px", type=float, help="focal length in pixels, principal point centred")
    parser.add_argument("--camera", help="with --calibration: the camera (section or name) to use")
    _add_crop_spec_args(parser)
    _add_output_args(parser)
    parser.set_defaults(func=cmd_video)


# ------------------------------------------------------------------------------------ validate, grid


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate every row of a dataset; print a summary, then each bad frame and why."""
    decode = not args.headers_only
    _, report = read_records_with_report(args.uri, on_bad="skip", decode_images=decode)
    print(report.summary())
    # Say what was checked: a header check passes an image whose pixel data is corrupt.
    images = "decoded" if decode else "headers and end markers checked only; pixel data not decoded"
    print(f"images:      {images}")
    if report.ok:
        print("OK: every frame is valid" + ("" if decode else " (image headers only)"))
        return 0
    for frame_id, reason in report.bad:
        print(f"BAD {frame_id}: {reason}", file=sys.stderr)
    print(f"INVALID: {len(report.bad)} bad frame(s) of {report.num_rows} in {args.uri}", file=sys.stderr)
    return 1


def add_validate(subparsers: argparse._SubParsersAction) -> None:
    """Register ``validate URI``."""
    parser = subparsers.add_parser(
        "validate",
        help="check every row of a schema-v1 dataset (local dir, s3://bucket/prefix or one .parquet file)",
    )
    parser.add_argument("uri", help="dataset directory, s3://bucket/prefix, or a .parquet file")
    parser.add_argument(
        "--headers-only",
        action="store_true",
        help="check each image's header and end marker (~7 us/frame, which catches truncated files) "
        "instead of decoding it fully (~0.3 ms per 128 px PNG, which also catches corrupt pixel data)",
    )
    parser.set_defaults(func=cmd_validate)


def _first_rows(source: str, n: int, split: str, seed: int) -> list[dict]:
    """The first ``n`` frames of a synthetic domain (rendered) or of a dataset's first file."""
    if source in synthetic.DOMAINS:
        return list(synthetic.generate(source, split, n, seed))
    table = read_records(dataset_files(source)[0], columns=["frame_id", "image", "joints_2d", "joints_valid"])
    return table_to_rows(table.slice(0, n))


def cmd_grid(args: argparse.Namespace) -> int:
    """Save the first frames of each source, skeletons drawn, as one PNG grid."""
    bands = [(source, _first_rows(source, args.n, args.split, args.seed)) for source in args.sources]
    picture = preview.grid(bands, args.columns, args.tile)
    preview.save_png(picture, args.out)
    print(f"wrote {picture.shape[1]}x{picture.shape[0]} grid of {len(bands)} source(s) to {args.out}")
    return 0


def add_grid(subparsers: argparse._SubParsersAction) -> None:
    """Register ``grid``."""
    parser = subparsers.add_parser("grid", help="save sample frames with their 2D skeletons as a PNG grid")
    parser.add_argument("sources", nargs="+", help=f"synthetic domains {synthetic.DOMAINS} or dataset URIs")
    parser.add_argument("--out", required=True, help="PNG path or s3:// URI")
    parser.add_argument("--n", type=int, default=16, help="frames per source")
    parser.add_argument("--columns", type=int, default=8)
    parser.add_argument("--tile", type=int, default=128, help="tile side in pixels")
    parser.add_argument("--split", choices=synthetic.SPLITS, default="train", help="for synthetic domains")
    parser.add_argument("--seed", type=int, default=0, help="for synthetic domains")
    parser.set_defaults(func=cmd_grid)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_synthetic,
    add_h36m,
    add_surreal,
    add_mpii,
    add_video,
    add_validate,
    add_grid,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="prepare_data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code."""
    args = build_parser().parse_args(argv)
    return exit_code(lambda: args.func(args), _INPUT_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
