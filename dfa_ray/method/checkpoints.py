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
import zipfile
from typing import Any

import numpy as np
import torch

from dfa_ray import storage
from dfa_ray.method.model import ModelConfig, PoseModel

FILENAME = "model.pt"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def to_bytes(model: PoseModel, **info: Any) -> bytes:
    """Serialise ``model`` (unwrapped from DDP if needed) with JSON-able ``info`` (stage, round...)."""
    model = getattr(model, "module", model)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"model_config": dataclasses.asdict(model.config), "state_dict": state, "info": info}, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes, source: str = "checkpoint") -> tuple[PoseModel, dict]:
    """Rebuild the model and its ``info`` dict from ``to_bytes`` output; a ValueError naming
    ``source`` says what is wrong with anything else."""
    problem = _archive_problem(data)
    if problem:
        raise ValueError(f"{source} is not a dfa-ray model checkpoint: {problem}")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which would run code from the file.
        raise ValueError(
            f"{source} is not a dfa-ray model checkpoint: it is not a torch file of plain tensors"
        ) from None
    except Exception as exc:  # a zip that is no torch archive, or one torch's unpickler chokes on
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        raise ValueError(
            f"{source} is not a dfa-ray model checkpoint: torch cannot read it ({reason})"
        ) from None
    if not isinstance(payload, dict) or not {"model_config", "state_dict"} <= payload.keys():
        found = list(payload)[:5] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{source} is not a dfa-ray model checkpoint: it holds {found}, not model_config and state_dict"
        )
    try:
        config = ModelConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in payload["model_config"].items()}
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"{source} has a model_config this version cannot use: {exc}") from None
    model = PoseModel(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError) as exc:
        # torch lists every missing or misshapen tensor on lines of their own.
        raise ValueError(
            f"{source} has weights that do not fit its model_config: {' '.join(str(exc).split())}"
        ) from None
    return model, payload.get("info", {})


def _archive_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole ``torch.save`` archive (a zip file), or None if it is one.

    Asked first because torch reports a text or truncated file in its unpickler's or zip reader's
    terms ("KeyError: 101", "failed finding central directory").
    """
    if not data:
        return "the file is empty"
    if not data.startswith(_ZIP_MAGIC):
        try:
            text = data[:40].decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if text and " ".join(text.split()).isprintable():
            return f"it is a text file (it begins {text!r}), not a torch.save archive"
        return f"it is not a torch.save archive (it begins {data[:16]!r})"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            damaged = archive.testzip()  # reads every member and checks its CRC
    except (zipfile.BadZipFile, EOFError, OSError):
        return f"it is truncated or damaged: {len(data)} bytes without a readable zip directory at the end"
    if damaged:
        return f"it is damaged: {damaged} fails its checksum"
    return None


def describe_info(info: dict[str, Any]) -> str:
    """A checkpoint's info in one short line: its scalar entries, and whether it carries a mean pose
    (17 x 3 numbers that would drown the line)."""
    if not info:
        return "no info"
    parts = [f"{key} {value}" for key, value in info.items() if key != "mean_pose"]
    if info.get("mean_pose") is not None:
        parts.append("with its source's mean pose")
    return ", ".join(parts)


def pose_info(mean_pose: np.ndarray | None, skeleton: str | None = None) -> dict[str, Any]:
    """The ``info`` entries holding the source's mean root-relative pose ``(17, 3)`` in mm (nothing
    when there is none; ``info["mean_pose"]`` reads back as nested lists) and, where the model learnt
    a detector's 2D, the ``skeleton`` its joints follow (``skeleton.BONE_PRIORS``: ``predict.py`` sizes
    its poses by it)."""
    info: dict[str, Any] = {} if mean_pose is None else {"mean_pose": np.round(mean_pose, 1).tolist()}
    return info if skeleton is None else {**info, "skeleton": skeleton}


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
