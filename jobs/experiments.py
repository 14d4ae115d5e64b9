"""The paper's Table 1 (method comparison) and Table 2 (curriculum policies), mean ± std over seeds.

    python jobs/experiments.py --config configs/experiments/bench.yaml     # the README's numbers
    python jobs/experiments.py --config configs/experiments/smoke.yaml --storage /tmp/runs
    ray job submit --working-dir . -- python jobs/experiments.py --config ... --storage s3://...

Every (method, seed) trial is a Ray task with ``experiments.trial_cpus`` / ``trial_gpus``; the
adapting methods of a seed start from that seed's "Only source" model (see ``dfa_ray.experiments``).
Writes ``<storage>/<run>/``: ``config.yaml``, ``trials/<method>-seed<k>.json`` as each trial ends
and its final model beside it (``.pt``, for ``jobs/evaluate.py`` and the benchmarks), ``results.json``
(with the example test frames the report draws) and ``tables.md``. ``--resume`` reuses finished trials.
Then ``python jobs/report.py <storage>/<run>`` draws the report.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dfa_ray import storage
from dfa_ray.cli import run_driver
from dfa_ray.config import Config
from dfa_ray.driver import open_run, resolve_data
from dfa_ray.experiments import (
    TABLE1,
    TrialData,
    adapt_trial,
    adapting_methods,
    example_frames,
    example_index,
    example_rows,
    markdown,
    pretrain_trial,
    table,
    table2_methods,
)
from dfa_ray.method.metrics import describe
from dfa_ray.ops.rundir import RunDir


def _log(method: str, seed: int) -> Callable[[str], None]:
    def log(line: str) -> None:
        print(f"[{method} seed {seed}] {line}", flush=True)

    return log


def _pretrain_task(seed: int, config: Config, data: TrialData) -> tuple[dict, bytes]:
    torch.set_num_threads(config.experiments.threads)
    return pretrain_trial(data, config, seed, _log("only-source", seed))


def _adapt_task(
    method: str, seed: int, config: Config, data: TrialData, pretrained: bytes
) -> tuple[dict, bytes]:
    torch.set_num_threads(config.experiments.threads)
    return adapt_trial(method, data, config, seed, pretrained, _log(method, seed))


def trial_uri(run: RunDir, method: str, seed: int, suffix: str = ".json") -> str:
    """Where a trial's result (or, with ``.pt``, its final model) is stored."""
    key = re.sub(r"[^a-z0-9]+", "-", method.lower()).strip("-")
    return storage.join(run.root, "trials", f"{key}-seed{seed}{suffix}")


def run_experiments(config: Config, resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run (or finish) every trial, holding the run (``open_run``), then write and return the tables."""
    start = time.perf_counter()
    with open_run(config, resume, log, ray_train=False) as run:  # each trial trains in one process
        return run_trials(config, run, resume, log, start)


def run_trials(config: Config, run: RunDir, resume: bool, log: Callable[[str], None], start: float) -> dict:
    """``run_experiments`` once the run is held and Ray is up; ``start`` is when the job began."""
    import ray

    source, target, test = resolve_data(config, log)
    frames = TrialData.load(source, target, test, config.model.input_size)
    data = ray.put(frames)
    resources = {"num_cpus": config.experiments.trial_cpus, "num_gpus": config.experiments.trial_gpus}
    pretrain_remote = ray.remote(_pretrain_task).options(num_returns=2, **resources)
    adapt_remote = ray.remote(_adapt_task).options(num_returns=2, **resources)

    results, pending = [], {}

    def saved(method: str, seed: int) -> dict | None:
        uri = trial_uri(run, method, seed)
        return json.loads(storage.read_bytes(uri)) if resume and storage.exists(uri) else None

    pretrained = {}
    for seed in config.experiments.seeds:
        result, model_uri = saved("only-source", seed), trial_uri(run, "only-source", seed, ".pt")
        if result is not None and storage.exists(model_uri):
            results.append(result)
            pretrained[seed] = ray.put(storage.read_bytes(model_uri))
        else:
            ref, pretrained[seed] = pretrain_remote.remote(seed, config, data)
            pending[ref] = ("only-source", seed, pretrained[seed])
    # Method by method (Table 1 first), so a run stopped early holds whole rows to --resume from.
    for method, seed in [(m, s) for m in adapting_methods(config) for s in config.experiments.seeds]:
        result = saved(method, seed)
        if result is not None:
            results.append(result)
        else:
            ref, model_ref = adapt_remote.remote(method, seed, config, data, pretrained[seed])
            pending[ref] = (method, seed, model_ref)

    total = len(results) + len(pending)
    log(f"{total} trials ({len(results)} already done), {config.experiments.trial_cpus} CPU each")
    while pending:
        [ref], _ = ray.wait(list(pending))
        method, seed, model_ref = pending.pop(ref)
        result = ray.get(ref)
        # The model first: a trial's JSON is what --resume takes as done.
        storage.write_bytes(trial_uri(run, method, seed, ".pt"), ray.get(model_ref))
        storage.write_bytes(trial_uri(run, method, seed), json.dumps(result).encode())
        results.append(result)
        scores = describe(result["rounds"][-1])
        log(f"trial {len(results)}/{total}: {method} seed {seed}  {scores}  ({result['seconds']:.0f} s)")

    example_ids = [frames.test.frame_ids[i] for i in example_index(frames.test, config.experiments.examples)]
    summary = {
        "table1": table(results, list(TABLE1), config),
        "table2": table(results, table2_methods(config), config),
        "wall_seconds": time.perf_counter() - start,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "data": {
            "source": [portable(uri) for uri in source],
            "target": portable(target),
            "test": portable(test),
        },
        # The skeleton figure's test frames, crops included: the report needs no data set.
        "examples": example_frames(example_rows(test, example_ids, ["frame_id", "image", "joints_3d"])),
        "trials": sorted(results, key=lambda r: (r["method"], r["seed"])),
    }
    storage.write_bytes(storage.join(run.root, "results.json"), json.dumps(summary, indent=1).encode())
    text = markdown(summary["table1"], "Table 1") + "\n\n" + markdown(summary["table2"], "Table 2 policy")
    storage.write_bytes(storage.join(run.root, "tables.md"), (text + "\n").encode())
    log(text)
    log(f"wrote {run.root}/results.json in {summary['wall_seconds'] / 60:.1f} min")
    return summary


def portable(uri: str) -> str:
    """``uri`` relative to the working directory where it lies below it, else as it is.

    results.json is committed and its report redrawn from other clones (``jobs/report.py``, run from
    the repository's root), while the driver made a local storage absolute for Ray's workers: an
    absolute path would name this machine's copy, which another clone may or may not have.
    """
    if "://" in uri:
        return uri
    try:
        return str(Path(uri).relative_to(Path.cwd()))
    except ValueError:
        return uri


def main(argv: list[str] | None = None) -> int:
    """Run the experiments; exit 2 on a bad config or an existing run."""
    return run_driver("experiments", __doc__, argv, run_experiments)


if __name__ == "__main__":
    sys.exit(main())
