"""The driver loop: pretrain, then R rounds of pseudo-label -> select -> adapt -> evaluate.

``self_train(config, resume)`` is what ``jobs/self_train.py`` runs on a Ray cluster: the rounds are
``rounds.run_rounds``, the loop the experiments run too, with ``RayRounds`` doing each step. Every
stage commits through ``RunDir`` (its manifest last), so a killed driver rerun with ``resume=True``
continues after the last committed stage and redoes the interrupted one from scratch. A driver holds
the run's lease (``open_run``) while it runs it, so a second one on the same run is refused.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dfa_ray import config as config_module
from dfa_ray import storage
from dfa_ray.config import Config, DataConfig
from dfa_ray.data import synthetic
from dfa_ray.data.records import (
    annotated_2d,
    check_frame_ids,
    machine_labels,
    read_records,
    skeleton,
    write_records,
)
from dfa_ray.data.validation import InputError
from dfa_ray.method import checkpoints
from dfa_ray.method.fitting import dataset_mean_pose
from dfa_ray.method.model import PoseModel, create_model
from dfa_ray.method.policy import num_kept
from dfa_ray.method.rounds import evaluation, result_line, run_rounds, timed
from dfa_ray.ops.lease import RunLease
from dfa_ray.ops.raystart import connect
from dfa_ray.ops.rundir import RunDir
from dfa_ray.stages import detect, evaluate, label, train

Log = Callable[[str], None]
Style = Mapping[str, Any]  # DomainStyle fields changed: data.synthetic_source_styles' entries

# Keys a resumed run may change: raising the failed-frame limit after a round failed on it is how
# that round is continued, and the limit changes no committed output.
RESUMABLE_KEYS = ("label.max_error_fraction",)


def synthetic_name(domain: str, split: str, n: int, data: DataConfig, changes: Style | None = None) -> str:
    """The folder name of a rendered synthetic split (the renderer version included: no stale caches;
    a style's changes too, ``synthetic.style_tag``)."""
    version = synthetic.RENDERER_VERSION
    tag = synthetic.style_tag(changes or {})
    name = f"{domain}-{split}-n{n}-seed{data.synthetic_seed}-px{data.synthetic_crop_size}-v{version}"
    return f"{name}-{tag}" if tag else name


def synthetic_uri(
    storage_uri: str, domain: str, split: str, n: int, data: DataConfig, changes: Style | None = None
) -> str:
    """Where a rendered synthetic split lives: ``<storage>/data/<synthetic_name>``."""
    return storage.join(storage_uri, "data", synthetic_name(domain, split, n, data, changes))


def synthetic_dataset(
    storage_uri: str, domain: str, split: str, n: int, config: Config, log: Log, changes: Style | None = None
) -> str:
    """``synthetic_uri``, rendered on first use (in the domain's style with ``changes``); a marker file
    says it is complete."""
    data = config.data
    uri = synthetic_uri(storage_uri, domain, split, n, data, changes)
    marker = storage.join(uri, "_COMPLETE")
    if storage.exists(marker):
        return uri
    storage.remove_tree(uri)  # a partial dataset from an interrupted run
    start = time.perf_counter()
    style = synthetic.restyled(domain, changes) if changes else None
    frames = synthetic.generate(
        domain,
        split,
        n,
        data.synthetic_seed,
        data.synthetic_crop_size,
        workers=min(4, os.cpu_count() or 1),
        style=style,
    )
    write_records(frames, uri)
    storage.write_bytes(marker, b"")
    log(f"rendered {n} {domain}/{split} frames to {uri} in {time.perf_counter() - start:.0f} s")
    return uri


def source_2d_mix(data: DataConfig, log: Log) -> list[str]:
    """``data.source_2d``, each repeated as often as makes them about ``source_2d_share`` of the
    source (at least once); the source is shuffled as a whole, so a repeat is drawn like any frame."""
    if not data.source_2d or data.source_2d_share is None:
        return list(data.source_2d)
    share = data.source_2d_share
    frames_3d = sum(map(check_frame_ids, data.source)) if data.source else data.synthetic_source_total
    frames_2d = sum(map(check_frame_ids, data.source_2d))
    copies = max(1, round(share / max(1.0 - share, 1e-9) * frames_3d / frames_2d))
    log(
        f"source: the 2D-only data's {frames_2d} frames repeated {copies} times, "
        f"{copies * frames_2d / (copies * frames_2d + frames_3d):.0%} of the source "
        f"(data.source_2d_share {share:g}; {frames_3d} frames with 3D)"
    )
    return list(data.source_2d) * copies


def resolve_data(config: Config, log: Log) -> tuple[list[str], str, str]:
    """Source, target and test URIs: the config's, or the synthetic benchmark's (generated if absent)."""
    data, root = config.data, config.storage
    source = list(data.source) or [
        synthetic_dataset(
            root, "synthetic-source", "train", data.synthetic_source_frames, config, log, changes
        )
        for changes in data.synthetic_source_styles
    ]
    source += source_2d_mix(data, log)
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
    differ = config_module.differences(saved, config, ignore=("ray", "lease"))
    differ = [k for k in differ if k not in RESUMABLE_KEYS]
    if differ:
        raise config_module.ConfigError(
            f"--resume with a config that differs from {run.config} in: {', '.join(differ)}"
        )


def check_inputs(config: Config, ray_train: bool = True) -> None:
    """Check the configured inputs before any stage starts (before Ray, too), naming the bad one.

    The model: ``init_checkpoint`` must be a dfa-ray checkpoint (``check_init_checkpoint``); without
    one, a ``model.pretrained`` file must load into the encoder. Every dataset given in ``data`` must
    have rows, be schema v1 (every column's type) and have unique frame_ids (``check_frame_ids``,
    which reads the frame_id column alone): a repeated target frame would otherwise be labeled twice
    and fail the round only after the whole label stage. The test set must hold 3D labels, which
    every evaluation needs. With ``ray_train`` (stages trained by Ray Train workers: the driver and
    jobs/pretrain.py, not the experiments' one-process trials) the source must fill one pretraining
    step and the target frames the policy keeps in round 1 one adaptation step, as those stages will
    require (``train.steps_per_epoch``). Synthetic datasets are rendered by ``resolve_data``; only
    their configured sizes count.
    """
    if config.init_checkpoint:
        check_init_checkpoint(config)
    elif config.model.pretrained and not config.model.pretrained.startswith(("http://", "https://")):
        # A URL is downloaded by each worker that builds the model; a file is read here once.
        try:
            create_model(config.model)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    data = config.data
    source = sum(check_frame_ids(uri) for uri in data.source) if data.source else data.synthetic_source_total
    for uri in data.source_2d:
        source += check_frame_ids(uri)
        labels = read_records(uri, columns=["joints_2d", "joints_3d"], validate=False)
        if labels.column("joints_3d").null_count < len(labels):
            raise InputError(
                f"data.source_2d {uri}: has frames with joints_3d; give 3D sources as data.source"
            )
        if labels.column("joints_2d").null_count == len(labels):
            raise InputError(f"data.source_2d {uri}: none of its {len(labels)} frames has joints_2d")
    target = check_frame_ids(data.target) if data.target else data.synthetic_target_frames
    if data.test:
        check_frame_ids(data.test)
        labels = read_records(data.test, columns=["joints_3d"], validate=False).column("joints_3d")
        if labels.null_count == len(labels):
            raise InputError(f"data.test {data.test}: none of its {len(labels)} frames has joints_3d")
    if ray_train and not config.init_checkpoint:
        train.steps_per_epoch(source, config, config.pretrain, f"the source's {source} frames")
    if ray_train and config.rounds:
        kept = num_kept(target, config.policy_schedule.fraction(0))
        frames = f"the {kept} of {target} target frames that policy {config.policy!r} keeps in round 1"
        train.steps_per_epoch(kept, config, config.adapt, frames)


def check_init_checkpoint(config: Config) -> None:
    """``init_checkpoint`` must exist, load as a dfa-ray checkpoint and hold the configured model
    (``pretrained`` aside: it only says how the weights were first initialised). The rounds train
    and evaluate the checkpoint's network, at the config's input size: they must be the same."""
    path = checkpoints.checkpoint_file(config.init_checkpoint)
    if not storage.is_file(path):
        raise InputError(f"init_checkpoint {config.init_checkpoint}: {path} does not exist")
    try:
        model, _ = checkpoints.from_bytes(storage.read_bytes(path), f"init_checkpoint {path}")
    except ValueError as exc:
        raise InputError(str(exc)) from None
    saved, wanted = asdict(model.config), asdict(config.model)
    differ = [
        f"model.{key} is {wanted[key]!r} in the config, {saved[key]!r} in the checkpoint"
        for key in saved
        if key != "pretrained" and saved[key] != wanted[key]
    ]
    if differ:
        raise InputError(f"init_checkpoint {path} does not match the config: {'; '.join(differ)}")


@contextmanager
def open_run(config: Config, resume: bool, log: Log = print, ray_train: bool = True) -> Iterator[RunDir]:
    """Hold the run for the block: checked, leased, Ray up, config saved; the lease released after.

    The storage and the inputs are checked before anything is written (storage.check_bucket,
    check_inputs, which ``ray_train`` is passed to). Then the run's lease is taken
    (``dfa_ray.ops.lease``: a second driver on a live run stops here with LeaseHeld), the run checked
    against ``resume`` while it is held (check_resume), Ray started or joined (connect), and only
    then the config saved. A driver that fails before that
    (a bad input, a held run, Ray not starting) leaves nothing that changes what the same command
    does when it is run again.
    """
    storage.check_bucket(config.storage)
    check_inputs(config, ray_train)
    run = RunDir(config.storage, config.run_name)
    lease = RunLease(run.lease, config.lease.timeout_s, config.lease.heartbeat_s, log=log)
    try:
        lease.acquire()  # the run's first write
    except storage.StorageError as exc:
        raise storage.StorageError(f"storage {config.storage} is not writable: {exc}") from None
    try:
        check_resume(run, config, resume)
        connect(config.ray)
        storage.write_bytes(run.config, config_module.to_yaml(config).encode())
        run.holder = lease
        yield run
    finally:
        lease.release()


@dataclass(frozen=True)
class Inputs:
    """What a run reads: the source, target and test URIs, the test set's size, and the labeled
    source frames' mean pose (the baseline every evaluation is shown beside; None when no source
    frame has 3D)."""

    source: list[str]
    target: str
    test: str
    num_test: int
    mean_pose: np.ndarray | None


def load_inputs(config: Config, log: Log) -> Inputs:
    """The source, target and test URIs (rendered if synthetic and absent), the test set's size and
    the source's mean pose; Ray must be up (open_run)."""
    source, target, test = resolve_data(config, log)
    for uri in dict.fromkeys(source):
        made = machine_labels(uri)
        if made:
            log(f"source {uri}: {made}")
    return Inputs(source, target, test, check_frame_ids(test), dataset_mean_pose(source))


def evaluate_stage(config: Config, run: RunDir, inputs: Inputs, k: int) -> dict:
    """Stage ``k``'s checkpoint on the test set: evaluation actors (``stages.evaluate``, the label
    section's) write each frame's errors to the stage's ``eval/``, the driver aggregates them into
    the stage's ``evaluation`` record."""
    evaluate.evaluate_frames(
        inputs.test, run.model(k), run.evaluation(k), config.label, config.model.input_size, inputs.mean_pose
    )
    summary = evaluate.summarize_errors(run.evaluation(k), inputs.num_test)
    return evaluation("pretrain" if k == 0 else "round", k, summary)


def pretrain(config: Config, run: RunDir, inputs: Inputs, log: Log = print) -> dict:
    """Stage 0: pretrain on the source (or load ``init_checkpoint``), evaluate on the test frames, commit.

    Clears whatever an interrupted attempt left of ``run``'s pretrain stage first, and returns the
    committed evaluation. ``self_train`` and ``jobs/pretrain.py`` both run the stage through this.
    """
    run.clear(0)
    seconds: dict[str, float] = {}
    if config.init_checkpoint:
        model, _ = checkpoints.load(config.init_checkpoint)
        stats = {"init_checkpoint": config.init_checkpoint}
    else:
        log(f"pretrain: {config.pretrain.epochs} epochs on {', '.join(dict.fromkeys(inputs.source))}")
        with timed(seconds, "read"):
            dataset = train.read_source(inputs.source, seed=config.seed * 1000)
            num_frames = dataset.count()
        with timed(seconds, "train"):
            model, stats = train.run_stage(
                config, config.pretrain, {"source": dataset}, num_frames, run.ray_storage(0), None, "pretrain"
            )
    with timed(seconds, "checkpoint"):
        checkpoints.save(model, run.model(0), stage="pretrain", **checkpoints.pose_info(inputs.mean_pose))
    log(f"pretrain: checkpoint {run.model(0)}")
    with timed(seconds, "evaluate"):
        result = evaluate_stage(config, run, inputs, 0)
    run.commit(0, {"training": stats, "evaluation": result, "seconds": seconds})
    log(result_line(result))
    return result


class RayRounds:
    """The ``RoundBackend`` of the driver: Ray Data labels, Ray Train adapts, and each round is a
    ``RunDir`` stage, cleared before it starts and committed (manifest last) when it ends."""

    def __init__(self, config: Config, run: RunDir, inputs: Inputs) -> None:
        self.config, self.run, self.inputs = config, run, inputs
        # The label stage must write each of these frames exactly once.
        self.num_target = check_frame_ids(inputs.target)
        self.model: PoseModel | None = None
        # A model that learnt the target's machine-made 2D draws that detector's joints: its
        # checkpoints name their skeleton (predict.py's depth prior).
        data = config.data
        learnt = data.target_2d and data.target in data.source_2d and machine_labels(inputs.target)
        self.skeleton = skeleton(inputs.target) if learnt else None

    def label(self, k: int) -> str:
        """Clear what an interrupted attempt left of round ``k``, then label with ``PseudoLabeler`` actors."""
        self.run.clear(k)
        config = self.config
        label.label_frames(
            self.inputs.target, self.run.model(k - 1), self.run.labels(k), k, config.label,
            config.adapt.sigma, config.model.input_size,  # the checkpoint's size (check_init_checkpoint)
            anchor=config.data.target_2d and config.data.target in config.data.source_2d,
        )  # fmt: skip
        return self.run.labels(k)

    def select(self, k: int, labels: str, fraction: float) -> tuple[str, dict]:
        """The global top ``fraction``, written to ``selected.parquet``."""
        selection = label.select_labels(
            labels, self.run.selected(k), fraction, self.config.label.max_error_fraction, self.num_target
        )
        return self.run.selected(k), selection

    def read(self, k: int, kept: str) -> dict:
        """The source and the kept target frames as materialised Ray datasets."""
        return {
            "source": train.read_source(self.inputs.source, seed=self.config.seed * 1000 + k),
            "target": train.read_selected_target(self.inputs.target, kept, self.config.label.rows_per_block),
        }

    def adapt(self, k: int, inputs: dict, selection: dict) -> dict:
        """A Ray Train stage from round ``k - 1``'s checkpoint (round 0's with ``adapt.from_source``)."""
        start = 0 if self.config.adapt.from_source else k - 1
        self.model, stats = train.run_stage(
            self.config, self.config.adapt, inputs, selection["num_kept"], self.run.ray_storage(k),
            self.run.model(start), f"round {k}",
        )  # fmt: skip
        return stats

    def save(self, k: int) -> str:
        """Round ``k``'s ``checkpoint/model.pt``."""
        info = checkpoints.pose_info(self.inputs.mean_pose, self.skeleton)
        checkpoints.save(self.model, self.run.model(k), stage="round", round=k, **info)
        return self.run.model(k)

    def evaluate(self, k: int) -> dict:
        """Round ``k``'s checkpoint on the test set, on evaluation actors (``evaluate_stage``)."""
        return evaluate_stage(self.config, self.run, self.inputs, k)

    def commit(self, k: int, record: dict) -> None:
        """Write the round's manifest, which commits it."""
        self.run.commit(k, record)


def use_target_2d(config: Config, log: Log = print) -> Config:
    """``config`` with the target's machine-made 2D keypoints put to use (``data.target_2d``), else as is.

    Measured on real footage (docs/data.md): the source model places real people's joints in the
    image no better than a constant pose and has their left and right at random, while a detector's
    2D is close. Learnt as 2D labels, they teach the image; at the adaptation's rate (a tenth of
    pretraining's, set for pseudo-labels' noise) a few rounds barely move it, so the rounds train at
    ``pretrain.lr``, as supervised fine-tuning does. The labeler anchors the pseudo-labels to the same
    keypoints (``RayRounds``), or their image positions would pull against them.
    """
    data = config.data
    if not (data.target and data.target_2d):
        return config
    made = machine_labels(data.target)
    if not made:
        return config
    log(
        f"target {data.target}: {made}; they are its 2D labels (data.source_2d), anchor its pseudo-labels, "
        f"and the rounds train at pretrain.lr {config.pretrain.lr:g} (data.target_2d)"
    )
    source_2d = data.source_2d if data.target in data.source_2d else (*data.source_2d, data.target)
    return dataclasses.replace(
        config,
        data=dataclasses.replace(data, source_2d=source_2d),
        adapt=dataclasses.replace(config.adapt, lr=config.pretrain.lr),
    )


def detected_target_2d(config: Config, run: RunDir, inputs: Inputs, log: Log = print) -> Config:
    """``config`` with a copy of the target that holds MediaPipe's 2D as the target, where the target
    has no 2D at all and MediaPipe knows its domain (``stages.detect``), else as is.

    A target whose frames carry annotated 2D is a labeled dataset, renders or a capture, used as the
    paper uses Human3.6M: its labels unused, the rounds on their pseudo-labels alone. Its truth follows
    its own skeleton, not the detector's, and on the embedded benchmark's renders, given MediaPipe's
    2D, two rounds took the source model from 0.71x to 0.79x the mean pose's MPJPE where pseudo-labels
    alone took it to 0.68x (docs/driver.md).
    """
    data = config.data
    if not data.target_2d or data.detect_2d_min_found is None or machine_labels(inputs.target):
        return config
    detected = detect.detected(run.root)  # a decision recorded by this run, kept when it resumes
    if run.committed_rounds() and not detected:
        log(f"target 2D: {run.root} began without looking for it, and is resumed as it began")
        return config
    if not detected and annotated_2d(inputs.target):
        log(
            f"target 2D: {inputs.target} carries annotated 2D (a labeled dataset, renders or a capture): "
            "it stays unused, and the rounds learn from the pseudo-labels alone"
        )
        return config
    copy = detect.target_with_2d(inputs.target, run.root, config.label, data.detect_2d_min_found, log)
    if copy is None:
        return config
    return use_target_2d(dataclasses.replace(config, data=dataclasses.replace(data, target=copy)), log)


def self_train(config: Config, resume: bool = False, log: Log = print) -> list[dict]:
    """Run (or resume) the whole method, holding the run; returns the committed evaluations in order.

    The saved config is the one given (with the target's own machine-made 2D put to use); 2D a
    detector finds for the target is decided and recorded in the run (``detected_target_2d``)."""
    config = use_target_2d(config, log)
    with open_run(config, resume, log) as run:
        inputs = load_inputs(config, log)
        detected = detected_target_2d(config, run, inputs, log)
        if detected is not config:
            # The copy joins the source as 2D only: the test set and the mean pose stay as read.
            source, target, _ = resolve_data(detected, log)
            config, inputs = detected, dataclasses.replace(inputs, source=source, target=target)
        done = run.committed_rounds()
        if done:
            last = "pretrain" if done[-1] == 0 else f"round {done[-1]}"
            log(f"resuming {run.root}: committed through {last}")
            run.write_metrics()
        if 0 not in done:
            pretrain(config, run, inputs, log)
        # Committed stages are 0..n with no gap (``committed_rounds``): the rounds left start after them.
        first = max(done, default=0) + 1
        rounds = range(first, config.rounds + 1)
        run_rounds(RayRounds(config, run, inputs), config.policy_schedule, rounds, config.adapt.epochs, log)
        return [run.read_manifest(k)["evaluation"] for k in run.committed_rounds()]
