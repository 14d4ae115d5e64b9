"""The model on an actor's device, for inference only: label and evaluation actors run it through this.

``InferenceConfig`` holds the switches that make a GPU forward pass fast, each off by default and
each ignored on a CPU (``DeviceModel.switches``), so a CPU run computes exactly what it always did:

- ``amp``: autocast the forward pass to bfloat16 or float16 (soft-argmax stays in float32);
- ``channels_last``: NHWC memory layout, which cuDNN's tensor-core convolutions prefer;
- ``pin_memory``: page-locked host buffers, so the copy to the GPU is a DMA without a staging copy;
- ``non_blocking``: the copy returns at once and overlaps the host's next work (safe on one stream);
- ``compile``: ``torch.compile`` the model once per actor (minutes of compilation, paid per actor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dfa_ray import bounds
from dfa_ray.method.heatmaps import Marginals, soft_argmax
from dfa_ray.method.model import PoseModel, images_to_tensor, mirror_average, with_mirror

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class InferenceConfig:
    """GPU switches of an inference actor (see the module docstring); all ignored on a CPU."""

    amp: str = "off"  # "off", "bf16" or "fp16"
    channels_last: bool = False
    pin_memory: bool = False
    non_blocking: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.amp != "off" and self.amp not in AMP_DTYPES:
            raise bounds.FieldError("amp", f"must be 'off', 'bf16' or 'fp16', got {self.amp!r}")


class DeviceModel:
    """A model in eval mode on a GPU when ``use_gpu`` and one is visible, else on the CPU."""

    def __init__(self, model: PoseModel, config: InferenceConfig, use_gpu: bool) -> None:
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.switches = config if self.device.type == "cuda" else InferenceConfig()
        self.model = model.to(self.device).eval()
        if self.switches.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if self.switches.compile else self.model

    def to_device(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images ``(B, S, S, 3)`` as the model's input ``(B, 3, S, S)`` in ``[0, 1]`` on its device."""
        return images_to_tensor(
            images, self.device, pin_memory=self.switches.pin_memory, non_blocking=self.switches.non_blocking
        )

    @torch.no_grad()
    def predict(self, images: torch.Tensor, flip_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Normalised joints and per-axis variances ``(B, J, 3)`` of images already on the device; with
        ``flip_test``, averaged with the mirror images' (``model.mirror_average``)."""
        if flip_test:
            images = with_mirror(images)
        if self.switches.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        amp = self.switches.amp != "off"
        dtype = AMP_DTYPES.get(self.switches.amp)
        with torch.autocast(self.device.type, dtype=dtype, enabled=amp):
            logits = self.forward(images)
        coords, variance = soft_argmax(Marginals(*(m.float() for m in logits)))
        if flip_test:
            coords, variance = mirror_average(coords, variance)
        return coords.cpu().numpy(), variance.cpu().numpy()
