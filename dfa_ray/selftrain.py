"""The driver loop: pretrain, then R rounds of pseudo-label -> select -> adapt -> evaluate.

``self_train(config, resume)`` is what ``jobs/self_train.py`` runs on a Ray cluster. Every stage
commits through ``RunDir`` (its manifest last), so a killed driver rerun with ``resume=True``
continues after the last committed stage and redoes the interrupted one from scratch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dfa_ray import checkpoints, storage
from dfa_ray import config as config_module
from dfa_ray.config import Config, DataConfig, RayConfig
from dfa_ray.data import synthetic
from dfa_ray.data.records import check_frame_ids, write_records
from dfa_ray.data.validation import InputError
from dfa_ray.model import PoseModel
from dfa_ray.rundir import RunDir
from dfa_ray.stages import label, train
from dfa_ray.training import Frames, evaluate, load_frames

Log = Callable[[str], None]

# Keys a resumed run may change: raising the failed-frame limit after a round failed on it is how
# that round is continued, and the limit changes no committed output.
RESUMABLE_KEYS = ("label.max_error_fraction",)


def connect(settings: RayConfig) -> None:
    """Join the job's cluster (``RAY_ADDRESS``, or ``ray.address``), else start a private local one."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = settings.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="warning")
    else:
        ray.init(
            address="local",
            num_cpus=settings.num_cpus,
            object_store_memory=settings.object_store_mb * 2**20,
            include_dashboard=False,
            logging_level="warning",
        )
    ray.data.DataContext.get_current().enable_progress_bars = False


def synthetic_name(domain: str, split: str, n: int, data: DataConfig) -> str:
    """The folder name of a rendered synthetic split (the renderer version included: no stale caches)."""
    version = synthetic.RENDERER_VERSION
    return f"{domain}-{split}-n{n}-seed{data.synthetic_seed}-px{data.synthetic_crop_size}-v{version}"


def synthetic_uri(storage_uri: str, domain: str, split: str, n: int, data: DataConfig) -> str:
    """Where a rendered synthetic split lives: ``<storage>/data/<synthetic_name>``."""
    return storage.join(storage_uri, "data", synthetic_name(domain, split, n, data))


def synthetic_dataset(storage_uri: str, domain: str, split: str, n: int, config: Config, log: Log) -> str:
    """``synthetic_uri``, rendered on first use; a marker file says it is complete."""
    data = config.data
    uri = synthetic_uri(storage_uri, domain, split, n, data)
    marker = storage.join(uri, "_COMPLETE")
    if storage.exists(marker):
        return uri
    storage.remove_tree(uri)  # a partial dataset from an interrupted run
    start = time.perf_counter()
    frames = synthetic.generate(
        domain, split, n, data.synthetic_seed, data.synthetic_crop_size, workers=min(4, os.cpu_count() or 1)
    )
    write_records(frames, uri)
    storage.write_bytes(marker, b"")
    log(f"rendered {n} {domain}/{split} frames to {uri} in {time.perf_counter() - start:.0f} s")
    return uri


def resolve_data(config: Config, log: Log) -> tuple[list[str], str, str]:
    """Source, target and test URIs: the config's, or the synthetic benchmark's (generated if absent)."""
    data, root = config.data, config.storage
    source = list(data.source) or [
        synthetic_dataset(root, "synthetic-source", "train", data.synthetic_source_frames, config, log)
    ]
    target = data.target or synthetic_dataset(
        root, "synthetic-real", "train", data.synthetic_target_frames, config, log
    )
    test = data.test or synthetic_dataset(
        root, "synthetic-real", "test", data.synthetic_test_frames, config, log
    )
    return source, target, test


def check_resume(run: RunDir, config: Config, resume: bool) -> None:
    """A new run must not exist (FileExistsError); a resumed one must have the same config (ConfigError)."""
    if not storage.exists(run.config):
        return
    if not resume:
        raise FileExistsError(
            f"run {run.root} exists; pass --resume to continue it, or choose another --run-name"
        )
    saved = config_module.from_dict(config_module.load_yaml_text(storage.read_bytes(run.config).decode()))
    differ = [k for k in config_module.differences(saved, config, ignore=("ray",)) if k not in RESUMABLE_KEYS]
    if differ:
        raise config_module.ConfigError(
            f"--resume with a config that differs from {run.config} in: {', '.join(differ)}"
        )


def check_inputs(config: Config) -> None:
    """Check the configured inputs before any stage starts (before Ray, too), naming the bad one.

    ``init_checkpoint`` must exist (InputError). Every dataset given in ``data`` must have rows, be
    schema v1 and have unique frame_ids (``check_frame_ids``, which reads the frame_id column
    alone): a repeated target frame would otherwise be labeled twice and fail the round only after
    the whole label stage. Synthetic datasets are rendered by ``resolve_data`` and need no check.
    """
    if config.init_checkpoint:
        path = checkpoints.checkpoint_file(config.init_checkpoint)
        if not storage.is_file(path):
            raise InputError(f"init_checkpoint {config.init_checkpoint}: {path} does not exist")
    data = config.data
    for uri in (*data.source, data.target, data.test):
        if uri:
            check_frame_ids(uri)


def open_run(config: Config, resume: bool) -> RunDir:
    """The run's directory, checked against ``resume`` (see check_resume), with its config saved.

    The storage and the inputs are checked first (storage.check_bucket, check_inputs): a bad one fails
    the run before anything is written, so fixing it needs no ``--resume`` or new run name.
    """
    storage.check_bucket(config.storage)
    run = RunDir(config.storage, config.run_name)
    check_resume(run, config, resume)
    check_inputs(config)
    try:
        storage.write_bytes(run.config, config_module.to_yaml(config).encode())
    except storage.StorageError as exc:
        raise storage.StorageError(f"storage {config.storage} is not writable: {exc}") from None
    return run


def load_inputs(config: Config, log: Log) -> tuple[list[str], str, Frames]:
    """Connect to Ray; the source and target URIs (rendered if synthetic and absent) and the test frames."""
    connect(config.ray)
    source, target, test_uri = resolve_data(config, log)
    return source, target, load_frames(test_uri, config.model.input_size)


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall-clock seconds of the block as ``seconds[stage]``: the manifest keeps them, so
    a run says where its time went (``benchmarks/README.md``, time per round)."""
    start = time.perf_counter()
    yield
    seconds[stage] = round(time.perf_counter() - start, 2)


def evaluation(model: PoseModel, test: Frames, stage: str, round_index: int) -> dict:
    """The metrics.jsonl record of one evaluation."""
    summary = evaluate(model, test)
    return {"stage": stage, "round": round_index, **summary}


def pretrain(config: Config, run: RunDir, source: list[str], test: Frames, log: Log = print) -> dict:
    """Stage 0: pretrain on ``source`` (or load ``init_checkpoint``), evaluate on ``test``, commit.

    Clears whatever an interrupted attempt left of ``run``'s pretrain stage first, and returns the
    committed evaluation. ``self_train`` and ``jobs/pretrain.py`` both run the stage through this.
    """
    run.clear(0)
    seconds: dict[str, float] = {}
    if config.init_checkpoint:
        model, _ = checkpoints.load(config.init_checkpoint)
        stats = {"init_checkpoint": config.init_checkpoint}
    else:
        log(f"pretrain: {config.pretrain.epochs} epochs on {', '.join(source)}")
        with timed(seconds, "read"):
            dataset = train.read_source(source)
            num_frames = dataset.count()
        with timed(seconds, "train"):
            model, stats = train.run_stage(
                config, config.pretrain, {"source": dataset}, num_frames, run.ray_storage(0), None
            )
    with timed(seconds, "checkpoint"):
        checkpoints.save(model, run.model(0), stage="pretrain")
    log(f"pretrain: checkpoint {run.model(0)}")
    with timed(seconds, "evaluate"):
        result = evaluation(model, test, "pretrain", 0)
    run.commit(0, {"training": stats, "evaluation": result, "seconds": seconds})
    log(_line(result))
    return result


def self_train(config: Config, resume: bool = False, log: Log = print) -> list[dict]:
    """Run (or resume) the whole method; returns the committed evaluations in order."""
    run = open_run(config, resume)
    source, target, test = load_inputs(config, log)
    done = run.committed_rounds()
    if done:
        log(f"resuming {run.root}: committed through {'pretrain' if done[-1] == 0 else f'round {done[-1]}'}")
        run.write_metrics()

    if 0 not in done:
        pretrain(config, run, source, test, log)

    policy = config.policy_schedule
    num_target = check_frame_ids(target)  # the label stage must write each of these exactly once
    for k in range(1, config.rounds + 1):
        if k in done:
            continue
        run.clear(k)
        previous = run.model(k - 1)
        fraction = policy.fraction(k - 1)
        seconds: dict[str, float] = {}
        log(f"round {k}: labeling {num_target} target frames with {config.label.actors} actors")
        with timed(seconds, "label"):
            label.label_frames(target, previous, run.labels(k), k, config.label, config.adapt.sigma)
        log(f"round {k}: labeled in {seconds['label']:.0f} s; selecting the top {fraction:.0%}")
        with timed(seconds, "select"):
            selection = label.select_labels(
                run.labels(k), run.selected(k), fraction, config.label.max_error_fraction, num_target
            )
        log(
            f"round {k}: kept {selection['num_kept']} of {selection['num_frames']} frames, threshold "
            f"{selection['threshold']}, {selection['num_failed']} could not be labeled"
        )
        with timed(seconds, "read"):
            datasets = {
                "source": train.read_source(source),
                "target": train.read_selected_target(target, run.selected(k), config.label.rows_per_block),
            }
        log(f"round {k}: adapting for {config.adapt.epochs} epochs on {selection['num_kept']} target frames")
        with timed(seconds, "adapt"):
            model, stats = train.run_stage(
                config, config.adapt, datasets, selection["num_kept"], run.ray_storage(k), previous
            )
        with timed(seconds, "checkpoint"):
            checkpoints.save(model, run.model(k), stage="round", round=k)
        log(f"round {k}: checkpoint {run.model(k)}")
        with timed(seconds, "evaluate"):
            result = evaluation(model, test, "round", k)
        run.commit(k, {"selection": selection, "training": stats, "evaluation": result, "seconds": seconds})
        log(_line(result))
    return [run.read_manifest(k)["evaluation"] for k in run.committed_rounds()]


def _line(result: dict) -> str:
    name = "pretrain" if result["stage"] == "pretrain" else f"round {result['round']}"
    return (
        f"{name:>9}: MPJPE {result['mpjpe']:.1f} mm  PA-MPJPE {result['pa_mpjpe']:.1f} mm  "
        f"({result['num_frames']} test frames)"
    )
