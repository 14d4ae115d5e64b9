"""Image bytes of schema-v1 records: square 8-bit RGB crops as PNG or JPEG.

``image_size`` reads the size from the header alone and checks the end marker, so validating a
dataset catches truncated files at ~7 us per frame without decoding; ``decode_image`` does the full
decode and names the frame in its errors.
"""

from __future__ import annotations

import cv2
import numpy as np


class ImageError(ValueError):
    """Image bytes are not a decodable square 8-bit RGB PNG/JPEG."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# PNG colour types that decode to RGB without dropping information: truecolour and palette.
_PNG_COLOUR = {0: "grayscale", 2: "RGB", 3: "RGB", 4: "grayscale+alpha", 6: "RGBA"}
# JPEG start-of-frame markers (C4, C8 and CC are other segments).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_FORMATS = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg"}


def _png_header(data: bytes | np.ndarray) -> tuple[int, int]:
    head = bytes(data[:26])
    if len(data) < 26 + len(_PNG_IEND) or head[12:16] != b"IHDR":
        raise ImageError("PNG is truncated before its header ends")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    depth, colour = head[24], head[25]
    if _PNG_COLOUR.get(colour) != "RGB":
        raise ImageError(f"PNG is {_PNG_COLOUR.get(colour, f'colour type {colour}')}, expected RGB")
    if depth != 8:
        raise ImageError(f"PNG has {depth}-bit samples, expected 8-bit")
    if bytes(data[-len(_PNG_IEND) :]) != _PNG_IEND:
        raise ImageError("PNG is truncated (no IEND chunk at the end)")
    return width, height


def _jpeg_header(data: bytes | np.ndarray) -> tuple[int, int]:
    size, pos = len(data), 2
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            raise ImageError(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        length = (int(data[pos + 2]) << 8) | int(data[pos + 3])
        if marker in _JPEG_SOF:
            if pos + 10 > size:
                break
            precision, channels = data[pos + 4], data[pos + 9]
            height = (int(data[pos + 5]) << 8) | int(data[pos + 6])
            width = (int(data[pos + 7]) << 8) | int(data[pos + 8])
            if channels != 3:
                raise ImageError(f"JPEG has {channels} channel(s), expected 3 (RGB)")
            if precision != 8:
                raise ImageError(f"JPEG has {precision}-bit samples, expected 8-bit")
            # Encoders may pad after the end-of-image marker; a missing one means a truncated file.
            if not bytes(data[-64:]).rstrip(b"\x00").endswith(b"\xff\xd9"):
                raise ImageError("JPEG is truncated (no end-of-image marker)")
            return width, height
        if marker == 0xDA:
            raise ImageError("JPEG has image data before any frame header")
        pos += 2 + length
    raise ImageError("JPEG is truncated before its frame header")


def image_size(data: bytes | np.ndarray) -> tuple[int, int]:
    """``(width, height)`` of PNG/JPEG bytes from the header alone; raises ImageError if not 8-bit RGB."""
    if len(data) == 0:
        raise ImageError("image is empty")
    if bytes(data[:8]) == _PNG_SIGNATURE:
        return _png_header(data)
    if bytes(data[:3]) == b"\xff\xd8\xff":
        return _jpeg_header(data)
    raise ImageError(f"image is neither PNG nor JPEG (starts with {bytes(data[:4]).hex()})")


def check_square(size: tuple[int, int]) -> None:
    """Raise ImageError unless ``(width, height)`` is a non-empty square."""
    if size[0] != size[1] or size[0] == 0:
        raise ImageError(f"image is {size[0]}x{size[1]}, expected a square crop")


def encode_image(
    rgb: np.ndarray, format: str = "png", jpeg_quality: int = 95, require_square: bool = True
) -> bytes:
    """Encode a uint8 ``(S, S, 3)`` RGB image as PNG or JPEG bytes (any shape without ``require_square``)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"image must be uint8 (S, S, 3) RGB, got {rgb.dtype} {rgb.shape}")
    if require_square:
        check_square((rgb.shape[1], rgb.shape[0]))
    if format not in _FORMATS:
        raise ValueError(f"image format must be one of {sorted(_FORMATS)}, got {format!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if _FORMATS[format] == ".jpg" else []
    ok, data = cv2.imencode(_FORMATS[format], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageError(f"OpenCV could not encode a {rgb.shape} image as {format}")
    return data.tobytes()


def decode_image(data: bytes | np.ndarray, frame_id: str | None = None) -> np.ndarray:
    """Decode PNG/JPEG bytes to a uint8 ``(S, S, 3)`` RGB array; errors name ``frame_id``."""
    where = f"frame {frame_id}: " if frame_id is not None else ""
    try:
        size = image_size(data)
        check_square(size)
    except ImageError as exc:
        raise ImageError(f"{where}{exc}") from None
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        # OpenCV raises instead of returning None for some headers, e.g. a size over its pixel limit;
        # callers count ImageError as one bad frame, any other error would fail the whole batch.
        raise ImageError(f"{where}image could not be decoded ({size[0]}x{size[1]}: {exc.err})") from None
    if bgr is None or (bgr.shape[1], bgr.shape[0]) != size:
        raise ImageError(f"{where}image could not be decoded (corrupt data, {len(data)} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_resized(data: bytes | np.ndarray, size: int, frame_id: str | None = None) -> np.ndarray:
    """Decode a crop and resize it to ``size`` pixels (area filter when shrinking, as the model expects)."""
    image = decode_image(data, frame_id)
    if image.shape[0] == size:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)
