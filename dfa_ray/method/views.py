"""The ensemble's views (Algorithm 1), each chosen in configuration by its kind (``label.views``).

A view is a transform of the input whose effect on the pose is known, so that a prediction on the
transformed image can be mapped back to the original frame and averaged with the others
(``pseudo_label``). A kind is a frozen dataclass: its fields are its sampling ranges (and ``kind``,
which names it in YAML), and it knows four things:

- ``sample``: one frame's transform, drawn from a generator;
- ``host``: the transformed uint8 images ``(B, S, S, 3)``, in numpy and OpenCV (``transforms``, the
  reference);
- ``device``: the same for a ``(B, 3, S, S)`` image tensor where it is (``device_views``);
- ``to_original``: predictions on the view (normalised joints ``(B, J, 3)`` and mean variances
  ``(B, J)``) back in the original frame.

The paper's ensemble is ``PAPER_VIEWS``: the original image, one invariance (colour) view and one
equivariance (rigid) view. CC-SSL's is five equivariance views without a flip
(``configs/cc_ssl_views.yaml``). A new kind is a class here added to ``KINDS`` (one made by a
transform names its three functions, as ``_Transform`` says); one with new pixel arithmetic also
puts its host reference in ``transforms`` and its batched twin in ``device_views``, where
``tests/test_device_views.py`` holds the two together.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch

from dfa_ray.method import device_views
from dfa_ray.method.transforms import (
    EquivarianceParams,
    EquivarianceRange,
    InvarianceParams,
    InvarianceRange,
    apply_equivariance,
    apply_invariance,
    equivariance_inverse,
    equivariance_inverse_variance,
    sample_equivariance,
    sample_invariance,
)


class View(Protocol):
    """What the ensemble asks of a kind of view (see the module's docstring)."""

    kind: str

    def sample(self, rng: np.random.Generator) -> Any: ...

    def host(self, images: np.ndarray, params: Sequence[Any]) -> np.ndarray: ...

    def device(self, images: torch.Tensor, params: Sequence[Any]) -> torch.Tensor: ...

    def to_original(
        self, coords: np.ndarray, spread: np.ndarray, params: Sequence[Any]
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class OriginalView:
    """The frame as it is."""

    kind: Literal["original"] = "original"

    def sample(self, rng: np.random.Generator) -> None:
        """Nothing to draw (and nothing drawn, so the other views' draws do not move)."""
        return None

    def host(self, images: np.ndarray, params: Sequence[None]) -> np.ndarray:
        return images

    def device(self, images: torch.Tensor, params: Sequence[None]) -> torch.Tensor:
        return images

    def to_original(
        self, coords: np.ndarray, spread: np.ndarray, params: Sequence[None]
    ) -> tuple[np.ndarray, np.ndarray]:
        return coords, spread


class _Transform:
    """A view made by a transform of ``transforms``: drawn by ``_draw(rng, ranges)``, applied image by
    image on the host by ``_apply`` and batch by batch on the device by ``_batched``."""

    _draw: Callable[[np.random.Generator, Any], Any]
    _apply: Callable[[np.ndarray, Any], np.ndarray]
    _batched: Callable[[torch.Tensor, Sequence[Any]], torch.Tensor]

    def sample(self, rng: np.random.Generator) -> Any:
        return self._draw(rng, self)

    def host(self, images: np.ndarray, params: Sequence[Any]) -> np.ndarray:
        return np.stack([self._apply(image, p) for image, p in zip(images, params)])

    def device(self, images: torch.Tensor, params: Sequence[Any]) -> torch.Tensor:
        return self._batched(images, params)


@dataclass(frozen=True)
class InvarianceView(_Transform, InvarianceRange):
    """A colour transform: pixels change, the pose does not, so predictions come back as they are."""

    kind: Literal["invariance"] = "invariance"
    _draw = staticmethod(sample_invariance)
    _apply = staticmethod(apply_invariance)
    _batched = staticmethod(device_views.invariance)

    def to_original(
        self, coords: np.ndarray, spread: np.ndarray, params: Sequence[InvarianceParams]
    ) -> tuple[np.ndarray, np.ndarray]:
        return coords, spread


@dataclass(frozen=True)
class EquivarianceView(_Transform, EquivarianceRange):
    """A rigid transform (rotation, scale, translation, flip): the pose moves with the image, and
    the exact inverse on coordinates (``transforms.equivariance_inverse``) brings it back."""

    kind: Literal["equivariance"] = "equivariance"
    _draw = staticmethod(sample_equivariance)
    _apply = staticmethod(apply_equivariance)
    _batched = staticmethod(device_views.equivariance)

    def to_original(
        self, coords: np.ndarray, spread: np.ndarray, params: Sequence[EquivarianceParams]
    ) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.stack([equivariance_inverse(c, p) for c, p in zip(coords, params)]),
            np.stack([equivariance_inverse_variance(s, p) for s, p in zip(spread, params)]),
        )


# Every kind ``label.views`` may name, told apart by ``kind``.
KINDS = (OriginalView, InvarianceView, EquivarianceView)

PAPER_VIEWS: tuple[View, ...] = (OriginalView(), InvarianceView(), EquivarianceView())


@dataclass(frozen=True)
class Views:
    """The ensemble's views of a batch: ``params[v][i]`` is view ``kinds[v]``'s transform of frame ``i``."""

    kinds: tuple[View, ...]
    params: tuple[tuple[Any, ...], ...]

    def __post_init__(self) -> None:
        counts = {len(p) for p in self.params}
        if len(self.params) != len(self.kinds) or len(counts) > 1:
            raise ValueError(
                f"{len(self.kinds)} views but transforms for {[len(p) for p in self.params]} frames"
            )

    def __len__(self) -> int:
        """Number of frames."""
        return len(self.params[0]) if self.params else 0


def sample_views(rngs: Sequence[np.random.Generator], kinds: Sequence[View] = PAPER_VIEWS) -> Views:
    """Every view's transform of each frame, frame ``i``'s drawn from ``rngs[i]`` in view order."""
    kinds = tuple(kinds)
    return Views(kinds, tuple(tuple(kind.sample(rng) for rng in rngs) for kind in kinds))


def host_views(images: np.ndarray, views: Views) -> np.ndarray:
    """The views of uint8 images ``(B, S, S, 3)`` as one ``(V*B, S, S, 3)`` batch, view by view, built
    on the host: the reference for ``tensor_views``."""
    return np.concatenate([kind.host(images, p) for kind, p in zip(views.kinds, views.params)])


def tensor_views(images: torch.Tensor, views: Views) -> torch.Tensor:
    """The views of a ``(B, 3, S, S)`` image tensor as one ``(V*B, 3, S, S)`` batch, built where the
    tensor is (the model's device)."""
    return torch.cat([kind.device(images, p) for kind, p in zip(views.kinds, views.params)])


def frame_views(frame_ids: Sequence[str], seed: int, round_index: int, kinds: Sequence[View]) -> Views:
    """Each frame's transforms of the views ``kinds`` (``label.views``), a pure function of (seed, round,
    frame_id): a rerun labels identically, and a frame gets the same views in any batch."""
    rngs = [np.random.default_rng([seed, round_index, zlib.crc32(str(f).encode())]) for f in frame_ids]
    return sample_views(rngs, kinds)
