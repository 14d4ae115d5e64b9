"""Curriculum policy for self-training: which fraction of pseudo-labelled target frames to keep.

A policy ``(initial, step, maximum)`` keeps, in round ``k`` (``k = 0`` is the first round), the
``min(initial + k * step, maximum)`` fraction of target frames with the most confident pseudo-labels,
so training starts from the frames it is surest about and widens as the model improves.

Selection must not depend on the order in which distributed workers return their rows, so frames
are ranked by a total order: descending confidence, then ascending frame id.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation

import numpy as np

# Float sums such as 0.6 + 3 * 0.05 land a few ulps off the decimal the user meant; rounding to
# this many places restores it (and 0.65 then compares equal to the literal 0.65).
_FRACTION_DECIMALS = 12
# fraction * num_frames may land just below an integer (0.29 * 100 = 28.999...); rounding to this
# many places before the floor keeps such products on the intended count.
_COUNT_DECIMALS = 9


def _check_fraction(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a finite number in [0, 1], else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a finite number in [0, 1], got {value!r}")
    return value


def _format_percent(value: float) -> str:
    """Format a fraction as a percentage without float noise: 0.05 -> '5%', 0.125 -> '12.5%'."""
    text = f"{value * 100:.9f}".rstrip("0").rstrip(".")
    return f"{text}%"


@dataclass(frozen=True)
class Policy:
    """Round ``k`` keeps the top ``min(initial + k * step, maximum)`` fraction of frames."""

    initial: float
    step: float
    maximum: float

    def __post_init__(self) -> None:
        """Validate the fields and store them as plain floats."""
        for field in fields(self):
            # Frozen dataclass: object.__setattr__ is the sanctioned way to normalise in __post_init__.
            object.__setattr__(self, field.name, _check_fraction(field.name, getattr(self, field.name)))
        if self.initial > self.maximum:
            raise ValueError(f"initial ({self.initial!r}) must not exceed maximum ({self.maximum!r})")
        if self.initial == 0:
            # Round k keeps at least the initial fraction, so 0 leaves the first round nothing to train on.
            raise ValueError("initial must be above 0: the first round would keep no frame")

    def fraction(self, k: int) -> float:
        """Fraction of frames kept in round ``k`` (0 for the first round)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"round k must be an integer >= 0, got {k!r}")
        return round(min(self.initial + int(k) * self.step, self.maximum), _FRACTION_DECIMALS)

    @classmethod
    def parse(cls, text: str) -> Policy:
        """Parse ``"0.6,0.05,0.99"`` or ``"60%,5%,99%"`` (optionally in parentheses) into a Policy."""
        if not isinstance(text, str):
            raise ValueError(f"policy must be a string like '0.6,0.05,0.99', got {text!r}")
        body = text.strip()
        if body.startswith("(") and body.endswith(")"):  # accepts what __str__ prints
            body = body[1:-1]
        parts = [part.strip() for part in body.split(",")]
        percent = [part.endswith("%") for part in parts]
        if len(parts) != 3 or (any(percent) and not all(percent)):
            raise ValueError(
                f"policy must be three fractions '0.6,0.05,0.99' or three percentages '60%,5%,99%', "
                f"got {text!r}"
            )
        values = []
        for name, part, is_percent in zip(("initial", "step", "maximum"), parts, percent, strict=True):
            try:
                number = Decimal(part[:-1] if is_percent else part)
            except InvalidOperation:
                raise ValueError(f"policy {name} {part!r} in {text!r} is not a number") from None
            # Decimal division keeps "5%" exactly 0.05 before the single rounding to float.
            values.append(float(number / 100 if is_percent else number))
        return cls(*values)

    def __str__(self) -> str:
        """Percent form, e.g. ``(60%, 5%, 99%)``."""
        return f"({', '.join(_format_percent(getattr(self, f.name)) for f in fields(self))})"


def num_kept(num_frames: int, fraction: float) -> int:
    """Largest frame count not exceeding ``fraction * num_frames``, immune to float rounding."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 0:
        raise ValueError(f"num_frames must be an integer >= 0, got {num_frames!r}")
    fraction = _check_fraction("fraction", fraction)
    return math.floor(round(fraction * int(num_frames), _COUNT_DECIMALS))


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy masks elementwise has no single truth value
class Selection:
    """Frames kept by :func:`select`."""

    mask: np.ndarray  # bool, True for a kept frame, in input row order
    threshold: float  # confidence of the last kept frame; inf when none is kept
    num_kept: int


def select(frame_ids: Sequence[str], confidences: Sequence[float], fraction: float) -> Selection:
    """Keep the ``num_kept`` most confident frames; ties go to the smaller frame id (as strings)."""
    # Python strings, not a numpy string array: numpy drops trailing NUL characters, so "a" and
    # "a\x00" would collide (found by the permutation property test).
    ids = [str(frame_id) for frame_id in frame_ids]
    conf = np.asarray(confidences, dtype=np.float64)
    if conf.ndim != 1:
        raise ValueError(f"confidences must be one-dimensional, got shape {conf.shape}")
    if len(ids) != conf.shape[0]:
        raise ValueError(f"frame_ids ({len(ids)}) and confidences ({conf.shape[0]}) differ in length")
    if np.isnan(conf).any():
        row = int(np.flatnonzero(np.isnan(conf))[0])
        raise ValueError(f"confidence of frame {ids[row]!r} (row {row}) is NaN")
    repeated = [frame_id for frame_id, n in Counter(ids).items() if n > 1]
    if repeated:
        raise ValueError(f"frame ids must be unique, {repeated[0]!r} occurs more than once")

    count = num_kept(len(ids), fraction)
    # Descending confidence, then ascending id: with unique ids a total order, so the kept set does
    # not depend on the input row order.
    order = sorted(range(len(ids)), key=lambda row: (-conf[row], ids[row]))
    kept_rows = np.asarray(order[:count], dtype=np.int64)
    mask = np.zeros(len(ids), dtype=bool)
    mask[kept_rows] = True
    mask.setflags(write=False)  # the Selection is frozen, so is its mask
    threshold = float(conf[kept_rows[-1]]) if count else math.inf
    return Selection(mask=mask, threshold=threshold, num_kept=count)
