"""Pictures for people to look at: 2D skeletons drawn on crops, tiled into a labelled grid.

Left limbs are drawn yellow and right limbs cyan, so a left/right mix-up in a converter shows at a
glance; invalid joints are not drawn.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np

from dfa_ray import storage
from dfa_ray.data.images import decode_image, encode_image
from dfa_ray.method.skeleton import BONES, JOINT_NAMES

_LEFT, _RIGHT, _CENTRE = (255, 220, 0), (0, 220, 255), (255, 255, 255)
_SUBPIXEL_BITS = 4  # cv2 drawing takes fixed-point coordinates: 1/16 px


def draw_skeleton(
    rgb: np.ndarray, joints_2d: np.ndarray, valid: np.ndarray | None = None, thickness: int = 1
) -> np.ndarray:
    """A copy of ``rgb`` with the bones between valid, finite joints ``(17, 2)`` (crop pixels) drawn."""
    out = np.ascontiguousarray(rgb).copy()
    joints = np.asarray(joints_2d, dtype=np.float64)
    ok = np.isfinite(joints).all(axis=1)
    if valid is not None:
        ok &= np.asarray(valid).astype(bool)
    fixed = np.round(np.nan_to_num(joints) * (1 << _SUBPIXEL_BITS)).astype(np.int64)
    for parent, child in BONES:
        if ok[parent] and ok[child]:
            side = JOINT_NAMES[child][0]
            colour = _LEFT if side == "l" else _RIGHT if side == "r" else _CENTRE
            p, q = (tuple(int(v) for v in fixed[k]) for k in (parent, child))
            cv2.line(out, p, q, colour, thickness, cv2.LINE_AA, _SUBPIXEL_BITS)
    return out


def row_picture(row: Mapping, size: int) -> np.ndarray:
    """One record row as a ``size``-pixel tile, its 2D skeleton drawn when it has one."""
    image = decode_image(row["image"], row.get("frame_id"))
    scale = size / image.shape[0]
    tile = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    joints = row.get("joints_2d")
    if joints is None:
        return tile
    # Pixel centres sit at integers, so the crop's pixel grid maps by (u + 0.5) * scale - 0.5.
    joints = (np.asarray(joints, dtype=np.float64).reshape(-1, 2) + 0.5) * scale - 0.5
    return draw_skeleton(tile, joints, row.get("joints_valid"))


def grid(bands: Sequence[tuple[str, Iterable[Mapping]]], columns: int, tile: int = 128) -> np.ndarray:
    """One band per ``(label, rows)``: the label, then up to ``columns`` tiles per line, lines as needed."""
    pictures = []
    for label, rows in bands:
        tiles = [row_picture(row, tile) for row in rows]
        if not tiles:
            raise ValueError(f"{label}: no frames to show")
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
        lines = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
        header = np.full((24, columns * tile, 3), 32, np.uint8)
        cv2.putText(header, label, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        pictures += [header, *lines]
    return np.vstack(pictures)


def save_png(rgb: np.ndarray, uri: str | os.PathLike) -> None:
    """Write an RGB picture as PNG to a local path or ``s3://`` URI (local parent folders are made)."""
    if not storage.is_s3(uri):
        os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    storage.write_bytes(uri, encode_image(rgb, "png", require_square=False))
