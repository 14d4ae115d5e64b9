"""The paper's Table 1 and Table 2 on one benchmark: every (method, seed) trial, then the tables.

A trial runs the method in one process with the same functions the distributed stages call
(``pseudo_label``, ``policy.select``, ``DFANet``/``train_step``), on frames held in memory and with
its own seed for weights, batch order and views, so a trial's numbers repeat exactly on a machine.
Every adapting method starts from its seed's source-pretrained model ("Only source"), so the rows
of one seed differ only in how they adapt. ``jobs/experiments.py`` runs the trials as Ray tasks.

Methods (row names as in the paper):

    only-source  "Only source"   pretrain on labeled source frames (the lower bound)
    dann         "DANN"          source labels + a domain discriminator behind gradient reversal
    wo-dfa       "w/o DFA"       self-training whose target term trains the decoder too
    dfa          "Ours (DFA)"    self-training with the decoder frozen for the target term
    only-target  "Only target"   trained on the target frames' own labels (the upper bound)
    policy:<p>   "(60%, 0%, 60%)" ... Table 2: self-training with DFA under curriculum policy p

The adapting methods run ``rounds`` rounds of ``adapt.epochs`` epochs each; DANN has the same
budget and is evaluated at the same points.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dfa_ray import checkpoints, metrics
from dfa_ray.config import Config
from dfa_ray.dann import DANNNet, dann_fit
from dfa_ray.model import PoseModel, create_model, predict
from dfa_ray.policy import Policy, Selection, select
from dfa_ray.pseudo_label import PseudoLabels, Views, pseudo_label, target_variance
from dfa_ray.stages.label import frame_views
from dfa_ray.training import (
    Frames,
    PseudoLabeled,
    adapt_fit,
    evaluate,
    fit,
    predict_mm,
    subset_frames,
    to_mm,
)

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


def policy_method(policy: str) -> str:
    """The method key of a Table 2 row."""
    return f"policy:{Policy.parse(policy)}"


def row_name(method: str) -> str:
    """The paper's name of a method's row."""
    return TABLE1.get(method) or method.removeprefix("policy:")


def table2_methods(config: Config) -> list[str]:
    """Table 2's rows; the row with Table 1's policy is the "Ours (DFA)" trial, not run twice."""
    return [policy_method(p) for p in config.experiments.policies]


def adapting_methods(config: Config) -> list[str]:
    """Every method that starts from a seed's pretrained model, each once."""
    ours = policy_method(config.policy)
    rows = ["dann", "wo-dfa", "dfa"] + [m for m in table2_methods(config) if m != ours]
    return list(dict.fromkeys(rows))


def trial_method(config: Config, method: str) -> str:
    """The trial that produces ``method``'s numbers (Table 2's row with Table 1's policy is "dfa")."""
    return "dfa" if method == policy_method(config.policy) else method


def example_index(test: Frames, count: int) -> np.ndarray:
    """Evenly spaced test frames for the skeleton figure, fixed before any result is seen."""
    return np.unique(np.linspace(0, len(test) - 1, min(count, len(test))).round().astype(int))


def _evaluate(model: PoseModel, data: TrialData, round_index: int, **extra: object) -> dict:
    return {"round": round_index, **evaluate(model, data.test), **extra}


def _examples(model: PoseModel, test: Frames, index: np.ndarray) -> dict:
    frames = subset_frames(test, index)
    return {"frame_ids": frames.frame_ids, "joints_mm": predict_mm(model, frames).round(1).tolist()}


def label_target(
    model: PoseModel, target: Frames, config: Config, seed: int, round_index: int
) -> PseudoLabels:
    """The three-view ensemble over every target frame (views drawn per seed, round and frame)."""
    label = dataclasses.replace(config.label, seed=seed)
    floor = target_variance(model.config.heatmap_size, config.adapt.sigma)
    views = frame_views(target.frame_ids, label.seed, round_index, label)
    parts = []
    for i in range(0, len(target), label.batch_size):
        chunk = slice(i, i + label.batch_size)
        batch_views = Views(views.invariance[chunk], views.equivariance[chunk])
        parts.append(pseudo_label(lambda x: predict(model, x), target.images[chunk], batch_views, floor))
    fields = dataclasses.fields(PseudoLabels)
    return PseudoLabels(**{f.name: np.concatenate([getattr(part, f.name) for part in parts]) for f in fields})


def selection_stats(labels: PseudoLabels, selection: Selection, fraction: float, target: Frames) -> dict:
    """What the policy kept: counts, the confidence histogram, and (diagnostics only: the labels are
    never trained on) how far the kept and all pseudo-labels are from the target frames' truth."""
    kept = selection.mask
    histogram, edges = np.histogram(labels.confidence.astype(np.float64), bins=20, range=(0.0, 1.0))
    stats = {
        "num_frames": len(labels.confidence),
        "fraction": fraction,
        "num_kept": selection.num_kept,
        "threshold": selection.threshold if selection.num_kept else None,
        "confidence_mean": float(labels.confidence.mean()),
        "confidence_histogram": {"edges": edges.round(3).tolist(), "counts": histogram.tolist()},
    }
    if target.has_3d.all():
        error = metrics.mpjpe(to_mm(target, labels.joints.astype(np.float64)), target.joints_3d).mean(axis=1)
        stats["label_mpjpe_all"] = float(error.mean())
        stats["label_mpjpe_kept"] = float(error[kept].mean()) if kept.any() else None
    return stats


def self_train_rounds(
    model: PoseModel, data: TrialData, config: Config, seed: int, dfa: bool, policy: Policy, log: Log
) -> list[dict]:
    """Rounds 1..R of pseudo-label -> select -> adapt -> evaluate, in place on ``model``."""
    stage = dataclasses.replace(config.adapt, dfa=dfa)
    history = []
    for k in range(1, config.rounds + 1):
        labels = label_target(model, data.target, config, seed, k)
        fraction = policy.fraction(k - 1)
        selection = select(data.target.frame_ids, labels.confidence, fraction)
        kept = selection.mask
        target = PseudoLabeled(data.target.images[kept], labels.joints[kept], labels.joint_confidence[kept])
        training = adapt_fit(
            model, data.source, target, stage, config.label.invariance, seed * 1000 + k, log,
            config.label.equivariance,
        )  # fmt: skip
        stats = selection_stats(labels, selection, fraction, data.target)
        history.append(_evaluate(model, data, k, selection=stats, training=training[-1]))
        log(f"round {k}: kept {stats['num_kept']} ({fraction:.0%})  MPJPE {history[-1]['mpjpe']:.1f} mm")
    return history


def dann_rounds(model: PoseModel, data: TrialData, config: Config, seed: int, log: Log) -> list[dict]:
    """DANN with the self-training budget (``rounds`` x ``adapt.epochs``), evaluated after each round."""
    net = DANNNet(model, config.experiments.dann).to(next(model.parameters()).device)
    stage = config.adapt
    history = []
    for k in range(1, config.rounds + 1):
        progress = ((k - 1) / config.rounds, k / config.rounds)
        training = dann_fit(
            net, data.source, data.target.images, stage, progress, config.experiments.dann.weight,
            seed * 1000 + k, log, config.label.equivariance,
        )  # fmt: skip
        history.append(_evaluate(model, data, k, training=training[-1]))
        log(
            f"round {k}: discriminator loss {training[-1]['loss_domain']:.3f} "
            f"accuracy {training[-1]['domain_accuracy']:.2f}  MPJPE {history[-1]['mpjpe']:.1f} mm"
        )
    return history


def pretrain_trial(
    method: str, data: TrialData, config: Config, seed: int, log: Log = print
) -> tuple[dict, bytes]:
    """ "Only source" or "Only target": train from scratch; the result and the model's bytes."""
    if method not in ("only-source", "only-target"):
        raise ValueError(f"{method!r} is not a pretraining method")
    frames = data.source if method == "only-source" else data.target
    # The source may mix in 2D-only frames (MPII); the upper bound needs the target's 3D truth.
    if method == "only-target" and not frames.has_3d.all():
        missing = int((~frames.has_3d).sum())
        raise ValueError(f"'Only target' needs 3D labels on every target frame; {missing} lack them")
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = create_model(config.model).to(device(config))
    training = fit(model, frames, config.pretrain, seed, log, config.label.equivariance)
    result = _result(
        method, seed, [_evaluate(model, data, 0, training=training[-1])], model, data, config, start
    )
    return result, checkpoints.to_bytes(model, stage=method, seed=seed)


def adapt_trial(
    method: str, data: TrialData, config: Config, seed: int, pretrained: bytes, log: Log = print
) -> dict:
    """An adapting method from the seed's source-pretrained model; round 0 is that model."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    model, _ = checkpoints.from_bytes(pretrained, f"the seed-{seed} pretrained model")
    model.to(device(config))
    history = [_evaluate(model, data, 0)]
    if method == "dann":
        history += dann_rounds(model, data, config, seed, log)
    elif method in ("dfa", "wo-dfa"):
        history += self_train_rounds(model, data, config, seed, method == "dfa", config.policy_schedule, log)
    elif method.startswith("policy:"):
        policy = Policy.parse(method.removeprefix("policy:"))
        history += self_train_rounds(model, data, config, seed, True, policy, log)
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
) -> dict:
    examples = _examples(model, data.test, example_index(data.test, config.experiments.examples))
    return {
        "method": method,
        "seed": seed,
        "rounds": history,
        "examples": examples,
        "seconds": time.perf_counter() - start,
    }


def _mean_std(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "values": array.round(2).tolist()}


def table(results: list[dict], methods: list[str], config: Config) -> list[dict]:
    """One row per method: final MPJPE and PA-MPJPE as mean ± sample std over seeds, and the share
    of the source-only -> target-only MPJPE gap it closes (per seed, then mean ± std)."""
    final = {(r["method"], r["seed"]): r["rounds"][-1] for r in results}
    rows = []
    for method in methods:
        trial = trial_method(config, method)
        seeds = [s for s in config.experiments.seeds if (trial, s) in final]
        if not seeds:
            continue
        mpjpe = [final[trial, s]["mpjpe"] for s in seeds]
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
                "gap_closed": _mean_std(closed) if len(closed) == len(seeds) else None,
            }
        )
    return rows


def markdown(rows: list[dict], title: str) -> str:
    """A table in Markdown: row, MPJPE, PA-MPJPE (mean ± std, mm), gap closed."""
    lines = [
        f"| {title} | MPJPE (mm) | PA-MPJPE (mm) | gap closed |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        gap = row["gap_closed"]
        closed = "" if gap is None else f"{gap['mean']:.0%} ± {gap['std']:.0%}"
        lines.append(
            f"| {row['row']} | {row['mpjpe']['mean']:.1f} ± {row['mpjpe']['std']:.1f} "
            f"| {row['pa_mpjpe']['mean']:.1f} ± {row['pa_mpjpe']['std']:.1f} | {closed} |"
        )
    return "\n".join(lines)
