"""The self-training round loop, one for the driver and the experiments.

For each round k: pseudo-label every target frame with the current model -> keep the policy's
fraction -> read the kept frames -> adapt -> checkpoint -> evaluate -> commit. ``run_rounds`` runs
these steps in this order, times each, logs each, and builds the round's record; a
``RoundBackend`` does them. ``driver.RayRounds`` does them on Ray (Ray Data labeling, Ray Train
adaptation, evaluation on Ray Data actors, each round a committed ``RunDir`` stage): that is
``jobs/self_train.py``.
``experiments.InMemoryRounds`` does them in one process on frames held in memory, seeded: that is
``jobs/experiments.py``, whose tables the README shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from dfa_ray.method import metrics
from dfa_ray.method.policy import Policy

Log = Callable[[str], None]


class RoundBackend(Protocol):
    """The steps of one round, on some machinery; ``run_rounds`` calls them in order, once each."""

    num_target: int  # target frames each round labels

    def label(self, k: int) -> Any:
        """Pseudo-label every target frame with round ``k - 1``'s model; returns the labels."""

    def select(self, k: int, labels: Any, fraction: float) -> tuple[Any, dict]:
        """Keep the most confident ``fraction`` of ``labels``: the kept frames and the selection's
        statistics (``num_frames``, ``num_kept``, ``threshold``, ``num_failed``, ...)."""

    def read(self, k: int, kept: Any) -> Any:
        """The training inputs of the adaptation: source frames and the kept target frames."""

    def adapt(self, k: int, inputs: Any, selection: dict) -> dict:
        """Adapt round ``k - 1``'s model on ``inputs``; returns the last epoch's training record."""

    def save(self, k: int) -> str | None:
        """Checkpoint the adapted model; where it went (None when it stays in memory)."""

    def evaluate(self, k: int) -> dict:
        """The adapted model's ``evaluation`` record on the test frames."""

    def commit(self, k: int, record: dict) -> None:
        """Make round ``k`` final with its record (selection, training, evaluation, seconds)."""


@contextmanager
def timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    """Record the wall-clock seconds of the block as ``seconds[step]``: a driver stage's manifest
    keeps them, so a run says where its time went (``benchmarks/README.md``, time per round)."""
    start = time.perf_counter()
    yield
    seconds[step] = round(time.perf_counter() - start, 2)


def evaluation(stage: str, round_index: int, summary: dict) -> dict:
    """The record of one evaluation (a metrics.jsonl line): ``summary`` is ``metrics.aggregate``'s,
    on the actors (the driver) or in one process (``fitting.evaluate``, the experiments)."""
    return {"stage": stage, "round": round_index, **summary}


def result_line(result: dict) -> str:
    """An ``evaluation`` record as the log line of its stage."""
    name = "pretrain" if result["stage"] == "pretrain" else f"round {result['round']}"
    return f"{name:>9}: {metrics.describe(result)}  ({result['num_frames']} test frames)"


def run_rounds(
    backend: RoundBackend, policy: Policy, rounds: range, epochs: int, log: Log = print
) -> list[dict]:
    """Run ``rounds`` (numbered from 1) through ``backend``; returns the committed records in order.

    Round k keeps ``policy.fraction(k - 1)`` of the target frames; ``epochs`` is only for the log.
    """
    records = []
    for k in rounds:
        fraction = policy.fraction(k - 1)
        seconds: dict[str, float] = {}
        log(f"round {k}: labeling {backend.num_target} target frames")
        with timed(seconds, "label"):
            labels = backend.label(k)
        log(f"round {k}: labeled in {seconds['label']:.0f} s; selecting the top {fraction:.0%}")
        with timed(seconds, "select"):
            kept, selection = backend.select(k, labels, fraction)
        log(
            f"round {k}: kept {selection['num_kept']} of {selection['num_frames']} frames, threshold "
            f"{selection['threshold']}, {selection['num_failed']} could not be labeled"
        )
        with timed(seconds, "read"):
            inputs = backend.read(k, kept)
        log(f"round {k}: adapting for {epochs} epochs on {selection['num_kept']} target frames")
        with timed(seconds, "adapt"):
            training = backend.adapt(k, inputs, selection)
        with timed(seconds, "checkpoint"):
            where = backend.save(k)
        if where is not None:
            log(f"round {k}: checkpoint {where}")
        with timed(seconds, "evaluate"):
            result = backend.evaluate(k)
        record = {"selection": selection, "training": training, "evaluation": result, "seconds": seconds}
        backend.commit(k, record)
        records.append(record)
        log(result_line(result))
    return records
