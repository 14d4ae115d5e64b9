"""Model checkpoints as single ``model.pt`` files on local paths or ``s3://``: weights plus their shape.

A checkpoint holds the ``ModelConfig`` beside the weights, so any tool can rebuild the network
without the run's config, and loads on any device (tensors are saved from the CPU). Its ``info``
says what it is (stage, round...) and, for a model trained on a labeled source, carries that
source's mean pose (``pose_info``): the baseline any later evaluation shows the errors beside.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
from typing import Any

import numpy as np
import torch

from dfa_ray import storage
from dfa_ray.model import ModelConfig, PoseModel

FILENAME = "model.pt"


def to_bytes(model: PoseModel, **info: Any) -> bytes:
    """Serialise ``model`` (unwrapped from DDP if needed) with JSON-able ``info`` (stage, round...)."""
    model = getattr(model, "module", model)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"model_config": dataclasses.asdict(model.config), "state_dict": state, "info": info}, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes, source: str = "checkpoint") -> tuple[PoseModel, dict]:
    """Rebuild the model and its ``info`` dict from ``to_bytes`` output."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        config = ModelConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in payload["model_config"].items()}
        )
        model = PoseModel(config)
        model.load_state_dict(payload["state_dict"])
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which would run code from the file.
        raise ValueError(
            f"{source} is not a dfa-ray model checkpoint: it is not a torch file of plain tensors"
        ) from None
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError) as exc:
        raise ValueError(f"{source} is not a dfa-ray model checkpoint: {exc}") from None
    return model, payload.get("info", {})


def pose_info(mean_pose: np.ndarray | None) -> dict[str, Any]:
    """The ``info`` entry holding the source's mean root-relative pose ``(17, 3)`` in mm (nothing
    when there is none); ``info["mean_pose"]`` reads back as nested lists."""
    return {} if mean_pose is None else {"mean_pose": np.round(mean_pose, 1).tolist()}


def save(model: PoseModel, uri: str | os.PathLike, **info: Any) -> None:
    """Write a checkpoint file to ``uri`` (a ``.pt`` path, or a directory that gets ``model.pt``)."""
    storage.write_bytes(checkpoint_file(uri), to_bytes(model, **info))


def load(uri: str | os.PathLike) -> tuple[PoseModel, dict]:
    """Read a checkpoint written by ``save`` (or a Ray Train checkpoint directory holding model.pt)."""
    path = checkpoint_file(uri)
    return from_bytes(storage.read_bytes(path), path)


def checkpoint_file(uri: str | os.PathLike) -> str:
    """``uri`` itself if it names a ``.pt`` file, else ``uri/model.pt``."""
    return str(uri) if str(uri).endswith(".pt") else storage.join(uri, FILENAME)
