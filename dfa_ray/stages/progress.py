"""The driver's line per epoch of a Ray Train stage.

The workers print nothing per epoch (each would print its own shard's numbers), and Ray Train's
INFO lines, which show their reports as raw dicts, are off (``train.run_stage``). ``EpochLine`` is a
``ray.train.UserCallback``: Ray Train runs it in its controller, an actor on the driver's node, once
every worker has reported an epoch, and Ray forwards the line it prints to the driver's output,
prefixed ``(TrainController pid=...)``.
"""

from __future__ import annotations

import logging
from typing import Any

import ray.train


def epoch_line(stage: str, epochs: int, metrics: list[dict[str, Any]]) -> str:
    """One epoch from every worker's reported metrics (``train.train_loop``):
    ``round 1: epoch 1/2  loss 2.3839 (source 1.1662, target 1.2177)  52 images/s on 2 workers``.

    The loss is the workers' mean: each reports the mean over its shard, and DDP averages their
    gradients. Images per second add up over the workers. The first epoch after a worker group
    restarted says which checkpoint it resumed from.
    """

    def mean(key: str) -> float:
        return sum(m[key] for m in metrics) / len(metrics)

    first = metrics[0]
    text = f"{stage}: epoch {first['epoch']}/{epochs}  loss {mean('loss'):.4f}"
    if any(m["loss_target"] for m in metrics):  # pretraining has no target term
        text += f" (source {mean('loss_source'):.4f}, target {mean('loss_target'):.4f})"
    speed = sum(m["images_per_s_per_worker"] for m in metrics)
    workers = len(metrics)
    text += f"  {speed:.0f} images/s on {workers} worker{'s' if workers > 1 else ''}"
    resumed = first["resumed_from_epoch"]
    if resumed and first["epoch"] == resumed + 1:
        text += f"  (workers restarted from epoch {resumed}'s checkpoint)"
    return text


class EpochLine(ray.train.UserCallback):
    """Prints ``epoch_line`` after each epoch's reports."""

    def __init__(self, stage: str, epochs: int) -> None:
        self.stage, self.epochs = stage, epochs

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        """Called by Ray Train once every worker has reported (``ray.train.report``)."""
        print(epoch_line(self.stage, self.epochs, metrics), flush=True)


def quiet_worker_reports() -> None:
    """In a Ray Train worker: no INFO line per report. Ray Train 2.60 logs each report, a raw
    ``TrainingReport(...)``, under a logger named after its source file, which the stage's
    ``LoggingConfig`` level does not reach; ``EpochLine`` shows the reports instead."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)
