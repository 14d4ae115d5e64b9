"""Image bytes of schema-v1 records: PNG or JPEG, square, RGB."""

from __future__ import annotations

import cv2
import numpy as np

_FORMATS = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg"}


def encode_image(rgb: np.ndarray, format: str = "png", jpeg_quality: int = 95) -> bytes:
    """Encode a uint8 ``(H, W, 3)`` RGB image as PNG or JPEG bytes."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    if format not in _FORMATS:
        raise ValueError(f"image format must be one of {sorted(_FORMATS)}, got {format!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if _FORMATS[format] == ".jpg" else []
    ok, data = cv2.imencode(_FORMATS[format], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {format}")
    return data.tobytes()


def decode_image(data: bytes, frame_id: str = "?") -> np.ndarray:
    """Decode PNG/JPEG bytes to a square uint8 RGB image; errors name the frame."""
    array = np.frombuffer(data, np.uint8) if data else np.empty(0, np.uint8)
    bgr = cv2.imdecode(array, cv2.IMREAD_COLOR) if array.size else None
    if bgr is None:
        raise ValueError(f"frame {frame_id}: image bytes are not a decodable PNG/JPEG ({len(array)} bytes)")
    if bgr.shape[0] != bgr.shape[1]:
        raise ValueError(f"frame {frame_id}: image must be a square crop, got {bgr.shape[1]}x{bgr.shape[0]}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
