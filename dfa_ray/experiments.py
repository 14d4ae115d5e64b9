"""The paper's Table 1 and Table 2 on one benchmark: every (method, seed) trial, then the tables.

A trial runs the method in one process with the same functions the distributed stages call
(``pseudo_label``, ``policy.select``, ``DFANet``/``train_step``), on frames held in memory and with
its own seed for weights, batch order and views, so a trial's numbers repeat exactly on a machine.
Every adapting method starts from its seed's source-pretrained model ("Only source"), so the rows
of one seed differ only in how they adapt. With ``init_checkpoint`` set (the shipped source model,
``models/source/``) every seed starts from that model, and seeds differ in how they adapt.
``jobs/experiments.py`` runs the trials as Ray tasks.

Methods (row names as in the paper):

    only-source  "Only source"   pretrained on labeled source frames, or init_checkpoint (lower bound)
    dann         "DANN"          source labels + a domain discriminator behind gradient reversal
    wo-dfa       "w/o DFA"       self-training whose target term trains the decoder too
    dfa          "Ours (DFA)"    self-training with the decoder frozen for the target term
    only-target  "Only target"   trained on the target frames' true labels instead of pseudo-labels,
                                 at the supervised rate ``pretrain.lr``, until a held-out tenth of
                                 them stops improving: the upper bound (the paper trains it from
                                 ImageNet alone)
    policy:<p>   "(60%, 0%, 60%)" ... Table 2: self-training with DFA under curriculum policy p

The adapting methods run ``rounds`` rounds of ``adapt.epochs`` epochs each; DANN has the same
budget and is evaluated at the same points. Self-training rounds run through ``rounds.run_rounds``,
the loop of the driver (``jobs/self_train.py``), with ``InMemoryRounds`` doing its steps. Every
evaluation is shown beside the mean-pose baseline (``metrics.summarize``), the tables too.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from dfa_ray.config import Config
from dfa_ray.data.records import read_records
from dfa_ray.data.schema import table_to_rows
from dfa_ray.method import checkpoints, metrics
from dfa_ray.method.dann import DANNNet, dann_fit
from dfa_ray.method.fitting import (
    Frames,
    PseudoLabeled,
    adapt_fit,
    concat_frames,
    evaluate,
    fit,
    load_frames,
    predict_mm,
    subset_frames,
    to_mm,
)
from dfa_ray.method.model import PoseModel, create_model, images_to_tensor, predict
from dfa_ray.method.policy import Policy, Selection, select
from dfa_ray.method.pseudo_label import PseudoLabels, pseudo_label, target_variance
from dfa_ray.method.rounds import evaluation, run_rounds
from dfa_ray.method.views import frame_views, tensor_views

Log = Callable[[str], None]

TABLE1 = {
    "only-source": "Only source",
    "dann": "DANN",
    "wo-dfa": "w/o DFA",
    "dfa": "Ours (DFA)",
    "only-target": "Only target",
}


@dataclass
class TrialData:
    """Decoded frames every trial reads: labeled source, target train (labels used only by the
    "Only target" bound and for diagnostics), and target test."""

    source: Frames
    target: Frames
    test: Frames

    @classmethod
    def load(cls, source: list[str], target: str, test: str, input_size: int) -> TrialData:
        """The datasets at these URIs, decoded at the model's ``input_size``."""
        sources = concat_frames([load_frames(uri, input_size) for uri in source])
        return cls(sources, load_frames(target, input_size), load_frames(test, input_size))

    @property
    def mean_pose(self) -> np.ndarray | None:
        """The labeled source frames' mean pose: the baseline every evaluation is shown beside."""
        return metrics.mean_pose(self.source.joints_3d) if self.source.has_3d.any() else None


# "Only target" holds out this share of the target's training frames to decide when to stop, after
# the first round that improves them by less than ONLY_TARGET_MIN_GAIN (target_label_rounds).
ONLY_TARGET_HELD_OUT = 0.1
ONLY_TARGET_MIN_GAIN = 0.01

# The baseline's row in both tables: the labeled source frames' mean pose, predicted for every frame.
MEAN_POSE = "mean-pose"


def policy_method(policy: str) -> str:
    """The method key of a Table 2 row."""
    return f"policy:{Policy.parse(policy)}"


def row_name(method: str) -> str:
    """The paper's name of a method's row."""
    if method == MEAN_POSE:
        return "Mean pose"
    return TABLE1.get(method) or method.removeprefix("policy:")


def table2_methods(config: Config) -> list[str]:
    """Table 2's rows; the row with Table 1's policy is the "Ours (DFA)" trial, not run twice."""
    return [policy_method(p) for p in config.experiments.policies]


def adapting_methods(config: Config) -> list[str]:
    """Every method that starts from a seed's pretrained model, each once."""
    ours = policy_method(config.policy)
    rows = ["only-target", "dann", "wo-dfa", "dfa"] + [m for m in table2_methods(config) if m != ours]
    return list(dict.fromkeys(rows))


def trial_method(config: Config, method: str) -> str:
    """The trial that produces ``method``'s numbers (Table 2's row with Table 1's policy is "dfa")."""
    return "dfa" if method == policy_method(config.policy) else method


def example_index(test: Frames, count: int) -> np.ndarray:
    """Evenly spaced test frames for the skeleton figure, fixed before any result is seen."""
    return np.unique(np.linspace(0, len(test) - 1, min(count, len(test))).round().astype(int))


def _evaluate(model: PoseModel, data: TrialData, round_index: int, **extra: object) -> dict:
    return {"round": round_index, **evaluate(model, data.test, mean_pose=data.mean_pose), **extra}


def example_rows(test_uri: str, frame_ids: list[str], columns: list[str]) -> list[dict]:
    """The test split's rows of ``frame_ids`` (``schema.table_to_rows``), in that order, with ``columns``
    (``frame_id`` among them)."""
    table = read_records(test_uri, columns=columns)
    rows = {
        row["frame_id"]: row
        for row in table_to_rows(table.filter(pc.is_in(table["frame_id"], value_set=pa.array(frame_ids))))
    }
    missing = sorted(set(frame_ids) - set(rows))
    if missing:
        raise ValueError(f"{test_uri} lacks the example frames {missing}")
    return [rows[f] for f in frame_ids]


def example_frames(rows: list[dict]) -> dict:
    """The example test frames as ``results.json`` carries them, from their ``example_rows``: their
    crops (the stored PNG/JPEG bytes, base64) and true joints (mm), so the report redraws from
    ``results.json`` alone."""
    return {
        "frame_ids": [row["frame_id"] for row in rows],
        "images": [base64.b64encode(row["image"]).decode("ascii") for row in rows],
        "joints_3d": [np.asarray(row["joints_3d"]).ravel().tolist() for row in rows],
    }


def _examples(model: PoseModel, test: Frames, index: np.ndarray) -> dict:
    frames = subset_frames(test, index)
    return {"frame_ids": frames.frame_ids, "joints_mm": predict_mm(model, frames).round(1).tolist()}


def label_target(
    model: PoseModel, target: Frames, config: Config, seed: int, round_index: int
) -> PseudoLabels:
    """The ensemble (``label.views``) over every target frame (views drawn per seed, round and frame)."""
    label = config.label
    floor = target_variance(model.config.heatmap_size, config.adapt.sigma)
    device = next(model.parameters()).device
    parts = []
    for i in range(0, len(target), label.batch_size):
        chunk = slice(i, i + label.batch_size)
        batch_views = frame_views(target.frame_ids[chunk], seed, round_index, label.views)
        images = images_to_tensor(target.images[chunk], device)
        # The views on the model's device, as the Ray stage's actors build them: the same labels.
        parts.append(
            pseudo_label(
                lambda x: predict(model, x), images, batch_views, floor, tensor_views, label.confidence
            )
        )
    fields = dataclasses.fields(PseudoLabels)
    return PseudoLabels(**{f.name: np.concatenate([getattr(part, f.name) for part in parts]) for f in fields})


def label_errors(labels: PseudoLabels, target: Frames) -> np.ndarray:
    """Each pseudo-label's MPJPE ``(N,)`` in mm against the target frames' true 3D: a diagnostic of
    the labels, never trained on."""
    return metrics.mpjpe(to_mm(target, labels.joints.astype(np.float64)), target.joints_3d).mean(axis=1)


def selection_stats(labels: PseudoLabels, selection: Selection, fraction: float, target: Frames) -> dict:
    """What the policy kept: counts, the confidence histogram, and (diagnostics only: the labels are
    never trained on) how far the kept and all pseudo-labels are from the target frames' truth."""
    kept = selection.mask
    histogram, edges = np.histogram(labels.confidence.astype(np.float64), bins=20, range=(0.0, 1.0))
    stats = {
        "num_frames": len(labels.confidence),
        "fraction": fraction,
        "num_kept": selection.num_kept,
        "num_failed": 0,  # frames in memory are decoded before any round: none can fail here
        "threshold": selection.threshold if selection.num_kept else None,
        "confidence_mean": float(labels.confidence.mean()),
        "confidence_histogram": {"edges": edges.round(3).tolist(), "counts": histogram.tolist()},
    }
    if target.has_3d.all():
        error = label_errors(labels, target)
        stats["label_mpjpe_all"] = float(error.mean())
        stats["label_mpjpe_kept"] = float(error[kept].mean()) if kept.any() else None
    return stats


class InMemoryRounds:
    """The ``RoundBackend`` of a trial: the driver's round loop on frames in memory, in one process,
    adapting ``model`` in place, every draw seeded by the trial's seed and the round."""

    def __init__(
        self, model: PoseModel, data: TrialData, config: Config, seed: int, dfa: bool, log: Log
    ) -> None:
        self.model, self.data, self.config, self.seed, self.log = model, data, config, seed, log
        self.stage = dataclasses.replace(config.adapt, dfa=dfa)
        self.num_target = len(data.target)
        self.history: list[dict] = []
        # Round 0's weights, for ``adapt.from_source``.
        self.source = copy.deepcopy(model.state_dict()) if config.adapt.from_source else None

    def label(self, k: int) -> PseudoLabels:
        """``label_target``: the three-view ensemble over every target frame."""
        return label_target(self.model, self.data.target, self.config, self.seed, k)

    def select(self, k: int, labels: PseudoLabels, fraction: float) -> tuple[PseudoLabeled, dict]:
        """``policy.select``'s global top ``fraction``, and its ``selection_stats``."""
        target = self.data.target
        selection = select(target.frame_ids, labels.confidence, fraction)
        kept = selection.mask
        frames = PseudoLabeled(target.images[kept], labels.joints[kept], labels.joint_confidence[kept])
        return frames, selection_stats(labels, selection, fraction, target)

    def read(self, k: int, kept: PseudoLabeled) -> PseudoLabeled:
        """The kept frames are in memory already."""
        return kept

    def adapt(self, k: int, inputs: PseudoLabeled, selection: dict) -> dict:
        """``adapt_fit`` on the source and the kept target frames, from round 0's weights with
        ``adapt.from_source``."""
        if self.source is not None:
            self.model.load_state_dict(self.source)
        training = adapt_fit(self.model, self.data.source, inputs, self.stage, self.seed * 1000 + k, self.log)
        return training[-1]

    def save(self, k: int) -> None:
        """The model stays in memory (the trial keeps its history, not its checkpoints)."""

    def evaluate(self, k: int) -> dict:
        """The adapted model on the target test frames."""
        return evaluation("round", k, evaluate(self.model, self.data.test, mean_pose=self.data.mean_pose))

    def commit(self, k: int, record: dict) -> None:
        """Append the round to the trial's history: its evaluation, with the rest of the record beside."""
        rest = {key: value for key, value in record.items() if key != "evaluation"}
        self.history.append({**record["evaluation"], **rest})


def self_train_rounds(
    model: PoseModel,
    data: TrialData,
    config: Config,
    seed: int,
    dfa: bool,
    policy: Policy,
    log: Log,
    backend_class: type[InMemoryRounds] = InMemoryRounds,
    first_round: int = 1,
) -> list[dict]:
    """Rounds ``first_round``..R of ``rounds.run_rounds`` (the driver's loop) in place on ``model``; a
    benchmark may pass a subclass of ``InMemoryRounds`` that changes one step and keeps the rest."""
    backend = backend_class(model, data, config, seed, dfa, log)
    run_rounds(backend, policy, range(first_round, config.rounds + 1), config.adapt.epochs, log)
    return backend.history


def dann_rounds(model: PoseModel, data: TrialData, config: Config, seed: int, log: Log) -> list[dict]:
    """DANN with the self-training budget (``rounds`` x ``adapt.epochs``), evaluated after each round."""
    net = DANNNet(model, config.experiments.dann).to(next(model.parameters()).device)
    stage = config.adapt
    history = []
    for k in range(1, config.rounds + 1):
        progress = ((k - 1) / config.rounds, k / config.rounds)
        training = dann_fit(
            net, data.source, data.target.images, stage, progress, config.experiments.dann.weight,
            seed * 1000 + k, log,
        )  # fmt: skip
        history.append(_evaluate(model, data, k, training=training[-1]))
        log(
            f"round {k}: discriminator loss {training[-1]['loss_domain']:.3f} "
            f"accuracy {training[-1]['domain_accuracy']:.2f}  {metrics.describe(history[-1])}"
        )
    return history


def pretrain_trial(data: TrialData, config: Config, seed: int, log: Log = print) -> tuple[dict, bytes]:
    """ "Only source": the source model every adapting method of ``seed`` starts from; the result and
    the model's bytes. It is ``init_checkpoint`` where the config names one, else trained here."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    if config.init_checkpoint:
        model, _ = checkpoints.load(config.init_checkpoint)
        model.to(device(config))
        history = [_evaluate(model, data, 0, init_checkpoint=config.init_checkpoint)]
    else:
        model = create_model(config.model).to(device(config))
        training = fit(model, data.source, config.pretrain, seed, log)
        history = [_evaluate(model, data, 0, training=training[-1])]
    return _result("only-source", seed, history, model, data, config, start)


def target_label_rounds(model: PoseModel, data: TrialData, config: Config, seed: int, log: Log) -> list[dict]:
    """ "Only target": trained on the target's true labels as a supervised model is, until it stops
    improving, the paper's upper bound (a model trained on the target domain's labels).

    Each round trains ``adapt.epochs`` epochs on the target frames but a held-out tenth, chosen at
    random once, the same for every seed; training stops after the first round that lowers the held-out
    frames' MPJPE by less than 1 %, or after ``experiments.only_target_max_rounds``. The test frames
    never decide it. Until the bound was given this rule it trained for the adaptation's ``rounds``
    and was still falling ~3 mm a round when they ended (docs/results.md): the bound of a budget,
    not of the labels. True labels train at ``pretrain.lr``, the rate the source model learnt its
    labels at, not at ``adapt.lr``, which is set for pseudo-labels' noise. Frames are held out one
    by one, which suits the benchmark's independent renders; on video, neighbouring frames would
    leak into the held-out tenth and stop it late.
    """
    # The source may mix in 2D-only frames (MPII); the upper bound needs the target's 3D truth.
    if not data.target.has_3d.all():
        missing = int((~data.target.has_3d).sum())
        raise ValueError(f"'Only target' needs 3D labels on every target frame; {missing} lack them")
    order = np.random.default_rng(0).permutation(len(data.target))
    cut = max(1, round(ONLY_TARGET_HELD_OUT * len(order)))
    held_out = subset_frames(data.target, np.sort(order[:cut]))
    train = subset_frames(data.target, np.sort(order[cut:]))
    stage = dataclasses.replace(config.adapt, lr=config.pretrain.lr)
    best = evaluate(model, held_out)["mpjpe"]
    history = []
    for k in range(1, config.experiments.only_target_max_rounds + 1):
        training = fit(model, train, stage, seed * 1000 + k, log)
        held_out_mpjpe = evaluate(model, held_out)["mpjpe"]
        history.append(_evaluate(model, data, k, training=training[-1], held_out_mpjpe=held_out_mpjpe))
        log(f"round {k}: {metrics.describe(history[-1])}; held-out target frames {held_out_mpjpe:.1f} mm")
        if held_out_mpjpe > (1 - ONLY_TARGET_MIN_GAIN) * best:
            break
        best = held_out_mpjpe
    return history


def adapt_trial(
    method: str,
    data: TrialData,
    config: Config,
    seed: int,
    pretrained: bytes,
    log: Log = print,
    backend_class: type[InMemoryRounds] = InMemoryRounds,
    first_round: int = 1,
) -> tuple[dict, bytes]:
    """An adapting method from the seed's source-pretrained model; round 0 is that model. The
    self-training methods' rounds run on ``backend_class`` (``self_train_rounds``). Returns the result
    and the final model's bytes, as ``pretrain_trial`` does.

    With ``first_round`` k > 1, ``pretrained`` is instead the trial's model after round k - 1 and the
    rounds go on from k: every draw of a round is seeded by the seed and the round, so they repeat
    the longer trial's (a test holds them to it)."""
    if first_round > 1 and (method in ("only-target", "dann") or config.adapt.from_source):
        # Neither the bound nor DANN runs through the round loop, and from_source needs round 0's model.
        raise ValueError(f"first_round={first_round} goes on with self-training alone, without from_source")
    start = time.perf_counter()
    torch.manual_seed(seed)
    model, _ = checkpoints.from_bytes(pretrained, f"the seed-{seed} pretrained model")
    model.to(device(config))
    history = [_evaluate(model, data, first_round - 1)]
    if method == "only-target":
        history += target_label_rounds(model, data, config, seed, log)
    elif method == "dann":
        history += dann_rounds(model, data, config, seed, log)
    elif method in ("dfa", "wo-dfa") or method.startswith("policy:"):
        table2 = method.startswith("policy:")  # Table 2: DFA under another curriculum policy
        policy = Policy.parse(method.removeprefix("policy:")) if table2 else config.policy_schedule
        dfa = method != "wo-dfa"
        history += self_train_rounds(model, data, config, seed, dfa, policy, log, backend_class, first_round)
    else:
        raise ValueError(f"unknown adapting method {method!r}")
    return _result(method, seed, history, model, data, config, start)


def device(config: Config) -> torch.device:
    """A trial's device: CUDA when it was given a GPU and one is visible."""
    use_cuda = config.experiments.trial_gpus > 0 and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def _result(
    method: str,
    seed: int,
    history: list[dict],
    model: PoseModel,
    data: TrialData,
    config: Config,
    start: float,
) -> tuple[dict, bytes]:
    """A trial's result, and its final model's bytes carrying the source's mean pose (the checkpoint
    ``jobs/evaluate.py`` and the benchmarks score beside it)."""
    examples = _examples(model, data.test, example_index(data.test, config.experiments.examples))
    result = {
        "method": method,
        "seed": seed,
        "rounds": history,
        "examples": examples,
        "seconds": time.perf_counter() - start,
    }
    info = checkpoints.pose_info(data.mean_pose)
    return result, checkpoints.to_bytes(model, stage=method, seed=seed, **info)


def _mean_std(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "values": array.round(2).tolist()}


def table(results: list[dict], methods: list[str], config: Config) -> list[dict]:
    """One row per method, after a "Mean pose" row (when the trials carry the baseline): final MPJPE
    and PA-MPJPE as mean ± sample std over seeds, MPJPE over the mean pose's, and the share of the
    source-only -> target-only MPJPE gap it closes (each per seed, then mean ± std)."""
    final = {(r["method"], r["seed"]): r["rounds"][-1] for r in results}
    for r in results:  # the baseline as if it were a trial; every trial of a seed evaluates the same one
        last = r["rounds"][-1]
        if last.get("mean_pose_mpjpe") is not None:
            baseline = {"mpjpe": last["mean_pose_mpjpe"], "pa_mpjpe": last["mean_pose_pa_mpjpe"]}
            final.setdefault((MEAN_POSE, r["seed"]), {**baseline, "mpjpe_over_mean_pose": 1.0})
    rows = []
    for method in [MEAN_POSE, *methods]:
        trial = trial_method(config, method)
        seeds = [s for s in config.experiments.seeds if (trial, s) in final]
        if not seeds:
            continue
        mpjpe = [final[trial, s]["mpjpe"] for s in seeds]
        ratio = [final[trial, s].get("mpjpe_over_mean_pose") for s in seeds]
        closed = [
            (final["only-source", s]["mpjpe"] - final[trial, s]["mpjpe"])
            / (final["only-source", s]["mpjpe"] - final["only-target", s]["mpjpe"])
            for s in seeds
            if ("only-source", s) in final and ("only-target", s) in final
        ]
        rows.append(
            {
                "method": method,
                "trial": trial,
                "row": row_name(method),
                "seeds": seeds,
                "mpjpe": _mean_std(mpjpe),
                "pa_mpjpe": _mean_std([final[trial, s]["pa_mpjpe"] for s in seeds]),
                "mpjpe_over_mean_pose": None if None in ratio else _mean_std(ratio),
                "gap_closed": _mean_std(closed) if len(closed) == len(seeds) else None,
            }
        )
    return rows


def table_cells(row: dict) -> list[str]:
    """A table row's cells after its name: MPJPE, PA-MPJPE (mean ± std, mm), MPJPE over the mean
    pose's, gap closed (blank where unknown)."""
    ratio, gap = row.get("mpjpe_over_mean_pose"), row["gap_closed"]
    return [
        f"{row['mpjpe']['mean']:.1f} ± {row['mpjpe']['std']:.1f}",
        f"{row['pa_mpjpe']['mean']:.1f} ± {row['pa_mpjpe']['std']:.1f}",
        "" if ratio is None else f"{ratio['mean']:.2f} ± {ratio['std']:.2f}",
        "" if gap is None else f"{gap['mean']:.0%} ± {gap['std']:.0%}",
    ]


TABLE_HEADER = ("MPJPE (mm)", "PA-MPJPE (mm)", "MPJPE / mean pose", "gap closed")


def markdown(rows: list[dict], title: str) -> str:
    """A table in Markdown: the row's name, then ``table_cells``."""
    lines = [f"| {' | '.join((title, *TABLE_HEADER))} |", "|" + " --- |" * (1 + len(TABLE_HEADER))]
    lines += [f"| {' | '.join([row['row'], *table_cells(row)])} |" for row in rows]
    return "\n".join(lines)
