"""Test fixtures: random plausible 3D poses in front of a camera, stick-figure renders, record rows."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dfa_ray.config import LabelConfig
from dfa_ray.data.images import encode_image
from dfa_ray.data.records import read_records
from dfa_ray.data.schema import table_to_rows
from dfa_ray.method import checkpoints
from dfa_ray.method.model import ModelConfig, PoseModel
from dfa_ray.method.skeleton import BONES, PARENTS
from dfa_ray.stages.evaluate import COLUMNS, Evaluator
from dfa_ray.stages.label import decode_frames

# The smallest model the stages accept: for tests of plumbing, not of accuracy.
TINY = ModelConfig(input_size=32, heatmap_size=8, widths=(8, 8, 8, 8), stem_width=8, decoder_width=8)


def tiny_checkpoint(folder: Path, config: ModelConfig = TINY) -> str:
    """A seeded untrained model (``TINY`` unless ``config`` says) saved as ``folder/model.pt``;
    returns its path."""
    torch.manual_seed(0)
    path = str(Path(folder) / "model.pt")
    checkpoints.save(PoseModel(config), path, stage="test")
    return path


# Rest-pose offsets from each joint's parent, in mm (x right, y down, z forward), H36M-17 order.
_OFFSETS = np.array([
    [0, 0, 0], [-130, 0, 0], [0, 450, 0], [0, 440, 0], [130, 0, 0], [0, 450, 0], [0, 440, 0],
    [0, -230, 0], [0, -250, 0], [0, -110, -40], [0, -115, 0], [150, 0, 0], [0, 280, 0], [0, 250, 0],
    [-150, 0, 0], [0, 280, 0], [0, 250, 0],
], dtype=np.float64)  # fmt: skip


def _rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-max_angle, max_angle)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def random_poses(rng: np.random.Generator, n: int) -> np.ndarray:
    """Root-relative poses (n, 17, 3) in mm: each bone of the rest pose bent by a random rotation."""
    poses = np.zeros((n, 17, 3))
    for i in range(n):
        yaw = rng.uniform(-np.pi, np.pi)
        world = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        for j in range(1, 17):
            offset = _rotation(rng, 0.8) @ _OFFSETS[j]
            poses[i, j] = poses[i, PARENTS[j]] + world @ offset
    return poses


def place_in_camera(rng: np.random.Generator, poses: np.ndarray, crop_size: int):
    """Put root-relative poses 4-5.5 m in front of a camera whose crop covers ~2.2 m at the root."""
    n = len(poses)
    root = np.stack([rng.uniform(-100, 100, n), rng.uniform(-100, 100, n), rng.uniform(4000, 5500, n)], -1)
    joints = poses + root[:, None]
    f = crop_size * root[:, 2] / 2200.0
    c = np.full(n, (crop_size - 1) / 2.0)
    camera = np.stack([f, f, c, c], -1)
    return joints, camera


def render_sticks(joints_2d: np.ndarray, size: int) -> np.ndarray:
    """Draw a stick figure (left limbs red, right limbs blue) for each pose's pixel joints (n, 17, 2)."""
    images = np.full((len(joints_2d), size, size, 3), 40, np.uint8)
    for img, pts in zip(images, joints_2d):
        for parent, child in BONES:
            colour = (220, 60, 60) if child in (4, 5, 6, 11, 12, 13) else (60, 60, 220)
            if child in (7, 8, 9, 10):
                colour = (60, 200, 60)
            p = tuple(int(round(v * 16)) for v in pts[parent])
            q = tuple(int(round(v * 16)) for v in pts[child])
            cv2.line(img, p, q, colour, max(1, size // 32), cv2.LINE_AA, shift=4)
    return images


def project(joints: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame joints (n, J, 3) to pixels (n, J, 2)."""
    fx, fy, cx, cy = (camera[:, i, None] for i in range(4))
    return np.stack(
        [fx * joints[..., 0] / joints[..., 2] + cx, fy * joints[..., 1] / joints[..., 2] + cy], -1
    )


# Record fixtures: small images and rows covering every label pattern of schema v1.
_RNG = np.random.default_rng(7)
IMAGES = [encode_image(_RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8)) for _ in range(4)]
IMAGES.append(encode_image(_RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8), format="jpeg"))


def make_rows(n: int, seed: int = 0, prefix: str = "f") -> list[dict]:
    """Rows covering every label pattern: 3D+2D, 2D only, unlabeled; with and without joints_valid."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row = {
            "frame_id": f"{prefix}{i:04d}",
            "image": IMAGES[i % len(IMAGES)],
            "joints_2d": None if i % 5 == 4 else rng.uniform(0, 24, (17, 2)).astype(np.float32),
            "joints_3d": rng.normal(0, 500, (17, 3)).astype(np.float32)
            if i % 2 == 0 and i % 5 != 4
            else None,
            "camera": np.array([500.0, 510.0, 12.0, 11.5], np.float32),
            "subject": f"S{i % 3}",
            "action": "walk" if i % 2 else "sit",
        }
        if i % 3 == 0:
            row["joints_valid"] = (rng.random(17) > 0.2).astype(np.uint8)
        rows.append(row)
    return rows


def assert_rows_equal(actual: list[dict], expected: list[dict]) -> None:
    assert [r["frame_id"] for r in actual] == [r["frame_id"] for r in expected]
    for got, want in zip(actual, expected):
        for key in ("image", "subject", "action"):
            assert got[key] == want[key], (want["frame_id"], key)
        for key in ("joints_2d", "joints_3d", "camera", "joints_valid"):
            value = want.get(key)
            if value is None:
                assert got.get(key) is None, (want["frame_id"], key)
            else:
                np.testing.assert_array_equal(got[key], np.asarray(value).reshape(got[key].shape))


def write_raw(path, rows_or_table, **kwargs) -> str:
    """Write a table straight with pyarrow, bypassing RecordWriter's validation (as other tools might)."""
    table = rows_or_table if isinstance(rows_or_table, pa.Table) else pa.table(rows_or_table)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **kwargs)
    return str(path)


def load_script(path: str) -> ModuleType:
    """Import a script of the repository (``jobs/`` and ``benchmarks/`` are not packages) as a fresh
    module; ``path`` is relative to the repository root."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, Path(__file__).resolve().parents[1] / path)
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, as an import would be: dataclasses look their module up by name.
    # Not after: cloudpickle would then send its functions to Ray workers by a module name that
    # they cannot import (no module named 'experiments'), instead of by value as a script's.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def load_job(name: str) -> ModuleType:
    """Import ``jobs/<name>.py`` as a module."""
    return load_script(f"jobs/{name}.py")


# What the converter CLI tests compare against: each converter called directly with this crop.
CLI_CROP = {"size": 64, "image_format": "png"}


def assert_subcommand_writes(argv: list[str], out: str, expected: list[dict]) -> None:
    """``prepare_data.py <argv>`` writes valid records equal to ``expected`` (converted with CLI_CROP)."""
    prepare_data = load_job("prepare_data")
    crop = ["--crop-size", str(CLI_CROP["size"]), "--image-format", CLI_CROP["image_format"]]
    assert prepare_data.main([*argv, *crop, "--out", out]) == 0
    assert prepare_data.main(["validate", out]) == 0
    assert_rows_equal(table_to_rows(read_records(out)), expected)


def in_background(work: Callable[[], object]) -> tuple[threading.Thread, dict]:
    """Run ``work`` in a daemon thread; the dict gets its ``result`` (or ``error``) and ``seconds``."""
    out: dict = {}

    def run() -> None:
        start = time.perf_counter()
        try:
            out["result"] = work()
        except BaseException as exc:  # reported by the test, which owns the assertion
            out["error"] = exc
        out["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` until it returns something true (returned), failing after ``timeout`` s.

    The pause between polls doubles from 0.1 s up to 2 s: a condition that asks Ray (a
    ``ray job`` CLI process, a state API query) costs about a core-second, and polled every 0.2 s it
    took CPU from the job it waits for. On this 2-core machine the end-to-end job test's processes
    used 104 s of user CPU with a fixed 0.2 s and 66 s with this back-off, and its call took 183 and
    153 s (one run each, back to back).
    """
    deadline = time.monotonic() + timeout
    interval = 0.1
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(2 * interval, 2.0)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def on_actors_without_ray(uri, checkpoint, out, mean_pose, batch_size, seed, corrupt=()):
    """The stage's steps on batches of ``batch_size`` shuffled frames, each batch written as its own
    file, as Ray Data's blocks arrive: ``decode_frames``, then an ``Evaluator``."""
    table = read_records(uri, columns=COLUMNS, validate=False)
    table = table.take(np.random.default_rng(seed).permutation(table.num_rows))
    actor = Evaluator(checkpoint, LabelConfig(), mean_pose)
    os.makedirs(out, exist_ok=True)
    for offset in range(0, table.num_rows, batch_size):
        part = table.slice(offset, batch_size)
        batch = {name: part.column(name).to_numpy(zero_copy_only=False) for name in COLUMNS}
        for i, frame_id in enumerate(batch["frame_id"]):
            if frame_id in corrupt:
                batch["image"][i] = batch["image"][i][:-30]  # a truncated PNG
        rows = actor(decode_frames(batch, TINY.input_size))
        columns = {name: list(v) if v.ndim > 1 else v.tolist() for name, v in rows.items()}
        pq.write_table(pa.table(columns), os.path.join(out, f"part-{offset:05d}.parquet"))
    return out
