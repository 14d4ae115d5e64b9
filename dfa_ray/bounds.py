"""Range checks for the typed config classes: a failure names the field and the value it got.

The classes (``config.Config`` and its sections, ``fitting.TrainConfig``, ``dann.DANNConfig``...)
run these in ``__post_init__``, so every way of making a config (a YAML file, ``--set``, Python)
refuses an unusable value at once, not in a Ray task minutes later. A section does not know its own
name (``TrainConfig`` is both ``pretrain`` and ``adapt``): ``config.from_dict`` puts it in front of
the field, so the message names the whole key (``pretrain.epochs must be at least 0, got -3``).
"""

from __future__ import annotations

import math


class FieldError(ValueError):
    """A config field holds an unusable value; ``field`` is its name within its section."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field


def at_least(config: object, minimum: int, *names: str) -> None:
    """Each of ``config``'s fields ``names`` must be a whole number >= ``minimum``."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise FieldError(name, f"must be at least {minimum}, got {value!r}")


def positive(config: object, *names: str) -> None:
    """Each of ``config``'s fields ``names`` must be a finite number > 0 (a learning rate, a width)."""
    for name in names:
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            raise FieldError(name, f"must be a finite number > 0, got {value!r}")


def non_negative(config: object, *names: str) -> None:
    """Each of ``config``'s fields ``names`` must be a finite number >= 0 (a weight, a resource)."""
    for name in names:
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            raise FieldError(name, f"must be a finite number >= 0, got {value!r}")


def fraction(config: object, *names: str) -> None:
    """Each of ``config``'s fields ``names`` must be a number in [0, 1] (a probability, a share)."""
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:  # NaN fails this too
            raise FieldError(name, f"must be in [0, 1], got {value!r}")
