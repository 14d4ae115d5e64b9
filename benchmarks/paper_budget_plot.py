"""MPJPE after each round of ``benchmarks/paper_budget.sh``'s two sets, beside Only source (round 0),
Only target and the mean pose: what 20 rounds buy, and which change holds the rounds from drifting.

    python benchmarks/paper_budget_plot.py docs/results/paper_budget.json \
        docs/results/paper_budget_drift.json --out docs/results/paper_budget.png

The inputs are the sets' results as committed: ``{"runs": {name: anchored_rounds.py's JSON}}``. The
drift set runs no Only target on the as-rendered target; ``--as-rendered-bound`` (default
``docs/results/cue_target.json``, ``target_variants.py``'s run on the same frames, on the CPU) gives it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"dfa": "Ours (DFA)", "wo-dfa": "w/o DFA"}
DRIFT = {"": "paper's policy (60%, 5%, 99%)", "-fixed60": "fixed 60%", "-from-source": "from source",
         "-both": "fixed 60%, from source"}  # fmt: skip


def rounds(trial: dict) -> tuple[list[int], list[float]]:
    """The trial's round numbers and test MPJPE after each."""
    return [r["round"] for r in trial["rounds"]], [r["mpjpe"] for r in trial["rounds"]]


def baselines(ax: plt.Axes, trial: dict, only_target: float, where: str = "") -> None:
    """Only source (round 0), the mean pose and Only target as level lines; the
    axis spans the curves, so a mean pose far above them is named in the legend, not drawn."""
    first = trial["rounds"][0]
    low, high = ax.get_ylim()
    ax.axhline(first["mpjpe"], color="grey", ls="--", lw=1, label=f"Only source {first['mpjpe']:.1f}")
    ax.axhline(only_target, color="tab:green", ls="--", lw=1, label=f"Only target {only_target:.1f}{where}")
    low = min(low, only_target - 5)
    mean_pose = first["mean_pose_mpjpe"]
    above = mean_pose > high + 20
    ax.axhline(
        mean_pose,
        color="black",
        ls=":",
        lw=1,
        label=f"mean pose {mean_pose:.1f}" + (" (above)" if above else ""),
    )
    ax.set_ylim(low, high if above else max(high, mean_pose + 5))


def main() -> None:
    """Draw the budget set's two targets on top, the drift set's two below."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("budget", type=Path)
    parser.add_argument("drift", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--as-rendered-bound", type=Path, default=Path("docs/results/cue_target.json"))
    args = parser.parse_args()
    cpu_rows = json.loads(args.as_rendered_bound.read_text())["targets"]["as-rendered"]["rows"]
    budget = json.loads(args.budget.read_text())["runs"]
    drift = json.loads(args.drift.read_text())["runs"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 9), sharex=True)
    titles = {"bench": "benchmark target, test split", "low_contrast": "low-contrast target, S14-S15"}
    only_target = {}
    for ax, (name, title) in zip(axes[0], titles.items()):
        trials = {t["method"]: t for t in budget[name]["trials"]}
        only_target[name] = rounds(trials["only-target"])[1][-1]
        for method in ("dfa", "wo-dfa"):
            ax.plot(*rounds(trials[method]), marker=".", label=LABELS[method])
        baselines(ax, trials["dfa"], only_target[name])
        ax.set_title(f"20 rounds, {title}")
    bounds = (
        ("as-rendered", cpu_rows["only-target"]["mpjpe"], " (target_variants.py, CPU)"),
        ("low-contrast", only_target["low_contrast"], ""),
    )
    for ax, (target, bound, where) in zip(axes[1], bounds):
        for suffix, label in DRIFT.items():
            (trial,) = drift[target + suffix]["trials"]
            ax.plot(*rounds(trial), marker=".", label=label)
        baselines(ax, trial, bound, where)
        ax.set_title(f"12 rounds of DFA, {target} target, S14-S15")
    for ax in axes.flat:
        ax.set_ylabel("MPJPE (mm)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("round (0: the source model)")
    fig.suptitle("Self-training rounds on a GPU, seed 0 (benchmarks/paper_budget.sh)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)


if __name__ == "__main__":
    main()
